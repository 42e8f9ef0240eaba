// Sending an edit from the edit panel (edit_panel.js, correction_tools.js): the operations are POSTed on the
// current revision; a 409 (someone edited meanwhile) reloads the newest revision and says so; a success reloads
// (the re-meshed structure is swapped in) and says which revision was made and how the structure's volume changed.
import { postJSON, t } from './common.js';

/** Say something in the edit panel's message line (`kind`: ok, warn, bad). */
export function tellEdit(text, kind) {
  const out = document.getElementById('edit-msg');
  out.textContent = text;
  out.className = `message ${kind}`;
}

/** Volume change text of a structure from a revision's answer (`volume_change_ml`), or ''. */
function volumeText(data, structure) {
  const v = data.volume_change_ml?.[structure];
  if (!v) return '';
  const sign = v.change > 0 ? '+' : '';
  return ` ${t('edit.volume_change', { before: v.before.toFixed(1), after: v.after.toFixed(1), change: `${sign}${v.change.toFixed(1)}` })}`;
}

/** POST `ops` for `structure` on the current revision with `reason`; reload and say what happened. Every edit
 * button is disabled meanwhile. Returns the API's answer (or null when it could not be sent). */
export async function submitEdit(ctx, structure, ops, reason) {
  const buttons = [...document.querySelectorAll('.edit-op, .edit-tool')];
  const was = buttons.map((b) => b.disabled);
  for (const o of buttons) o.disabled = true;
  tellEdit(t('edit.working'), 'warn');
  let r = null;
  try {
    r = await postJSON(`/api/jobs/${ctx.jobId}/revisions`, { base: ctx.revisions.current, ops, reason });
    if (r.status === 409) {
      await ctx.reload();
      tellEdit(t('edit.stale', { n: ctx.revisions.current }), 'bad');
    } else if (!r.ok) {
      tellEdit(t('edit.refused', { why: r.data.error || r.status }), 'bad');
    } else {
      await ctx.reload();
      const changed = (r.data.changed || []).includes(structure);
      const text = t(changed ? 'edit.done' : 'edit.unchanged', { name: ctx.displayName(structure), n: r.data.revision });
      tellEdit(text + (changed ? volumeText(r.data, structure) : ''), changed ? 'ok' : 'warn');
    }
  } catch (err) {
    tellEdit(t('edit.failed'), 'bad');
    console.info(err);
  } finally {
    buttons.forEach((b, i) => { b.disabled = was[i]; });
  }
  return r;
}
