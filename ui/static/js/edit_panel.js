// Edit tools of the case screen (surgeon, modelling engineer): for the selected structure, at the slice view's
// crosshair, one operation per button (docs/review.md): brush paint / erase (a sphere of 2, 5 or 10 mm), remove or
// keep the island under the crosshair, grow / shrink by 1 mm. Each is POSTed on the current revision (base =
// current); a 409 (someone edited meanwhile) reloads the newest revision and says so. The browser sends operations,
// never voxels; the re-meshed structure is swapped in by the caller's reload().
import { postJSON, t } from './common.js';

const AT_CROSSHAIR = new Set(['paint', 'erase', 'remove_island', 'keep_island']);

/** The operation JSON of a button for `structure`, at `lps` (patient LPS mm) with the brush `radius` (mm). */
export function operation(kind, structure, lps, radius) {
  if (kind === 'paint' || kind === 'erase') return { op: kind, structure, sphere: { center_lps: lps, radius_mm: radius } };
  if (kind === 'remove_island' || kind === 'keep_island') return { op: kind, structure, point_lps: lps };
  return { op: kind, structure, mm: 1 };
}

/** `ctx`: jobId, selected(), crosshairLps() (null without the slice view), revisions, reload(), displayName(). */
export function wireEditTools(ctx) {
  const out = document.getElementById('edit-msg');
  const tell = (text, kind) => { out.textContent = text; out.className = `message ${kind}`; };
  let radius = 5;
  for (const b of document.querySelectorAll('.brush-radius')) {
    b.addEventListener('click', () => {
      radius = Number(b.dataset.mm);
      for (const o of document.querySelectorAll('.brush-radius')) o.setAttribute('aria-pressed', String(o === b));
    });
  }
  const buttons = [...document.querySelectorAll('.edit-op')];
  for (const b of buttons) {
    b.addEventListener('click', async () => {
      const structure = ctx.selected();
      const kind = b.dataset.op;
      if (!structure) return;
      const lps = ctx.crosshairLps();
      if (AT_CROSSHAIR.has(kind) && !lps) { tell(t('edit.need_crosshair'), 'bad'); return; }
      const base = ctx.revisions.current;
      for (const o of buttons) o.disabled = true;
      tell(t('edit.working'), 'warn');
      try {
        const r = await postJSON(`/api/jobs/${ctx.jobId}/revisions`, {
          base, ops: [operation(kind, structure, lps, radius)], reason: t(`edit.reason_${kind}`),
        });
        if (r.status === 409) {
          await ctx.reload();
          tell(t('edit.stale', { n: ctx.revisions.current }), 'bad');
        } else if (!r.ok) {
          tell(t('edit.refused', { why: r.data.error || r.status }), 'bad');
        } else {
          await ctx.reload();
          const changed = (r.data.changed || []).includes(structure);
          tell(t(changed ? 'edit.done' : 'edit.unchanged', { name: ctx.displayName(structure), n: r.data.revision }), changed ? 'ok' : 'warn');
        }
      } catch (err) {
        tell(t('edit.failed'), 'bad');
        console.info(err);
      } finally {
        for (const o of buttons) o.disabled = false;
      }
    });
  }
}
