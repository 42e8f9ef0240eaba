// "Send to PACS" on a reviewed case (docs/ui.md): POST /api/jobs/<id>/export {"destination"}: the service sends the
// de-identified SEG and Encapsulated STLs of each structure's approved revision. A 409 names the unapproved
// structures; sending them anyway needs a reason (audited by the service and printed on the report).
import { postJSON, t } from './common.js';

const panel = document.getElementById('pacs-export');
const statusBox = document.getElementById('pacs-export-status');
const override = document.getElementById('pacs-export-override');

function say(text, kind) {
  statusBox.textContent = text;
  statusBox.className = `message ${kind}`;
}

async function send(extra = {}) {
  const buttons = panel.querySelectorAll('button');
  for (const b of buttons) b.disabled = true;
  say(t('pacs_export.sending'), 'warn');
  const destination = document.getElementById('pacs-export-destination').value;
  try {
    const r = await postJSON(`/api/jobs/${panel.dataset.jobId}/export`, { destination, ...extra });
    if (r.status === 409 && Array.isArray(r.data.unapproved)) {
      override.classList.remove('hidden');
      say(t('pacs_export.unapproved', { names: r.data.unapproved.join(', ') }), 'bad');
    } else if (r.ok && (r.data.statuses || []).every((s) => s === 0)) {
      override.classList.add('hidden');
      say(t(extra.override_unapproved ? 'pacs_export.sent_override' : 'pacs_export.sent', { n: r.data.files.length, destination }), 'ok');
    } else {
      say(t('pacs_export.failed', { why: r.data.error || (r.data.statuses || []).join(', ') || r.status }), 'bad');
    }
  } catch (err) {
    say(t('pacs_export.failed', { why: String(err) }), 'bad');
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

if (panel) {
  document.getElementById('pacs-export-go').addEventListener('click', () => send());
  document.getElementById('pacs-export-anyway').addEventListener('click', () => {
    const reason = document.getElementById('pacs-export-reason').value.trim();
    if (!reason) { say(t('pacs_export.need_reason'), 'bad'); return; }
    send({ override_unapproved: true, reason });
  });
}
