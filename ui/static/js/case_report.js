// The case screen's "Report" link once the job entered review (issue 15, docs/review.md): the report of the case as
// it is exported (GET /api/jobs/<id>/report: approved revision of each structure, review history, lesions with
// their margin tables, measurements), not the reconstruction's first report. A reviewed case with unapproved
// structures is refused by the service (409 naming them): the panel says which, and offers the draft report, which
// the service makes on the audited override (reason "draft report viewed at the kiosk") and prints in red.
import { el, t } from './common.js';

/** The report's address; `reason` (a draft of a case with unapproved structures) adds the audited override. */
export function reportUrl(jobId, reason = null) {
  const base = `/api/jobs/${jobId}/report`;
  return reason ? `${base}?override_unapproved=true&reason=${encodeURIComponent(reason)}` : base;
}

/** Point the report link at the case's report; `ctx`: jobId, displayName(name). */
export function wireCaseReport(ctx) {
  const link = document.getElementById('report-link');
  if (!link) return;
  const msg = el('p', { class: 'message hidden', id: 'report-msg', role: 'status' });
  const draft = el('a', { class: 'button hidden', id: 'report-draft', href: reportUrl(ctx.jobId, t('report.draft_reason')) },
    t('report.open_draft'));
  link.closest('.row').after(msg, draft);
  ctx.onReload.push(() => { link.href = reportUrl(ctx.jobId); });  // after case.js set the job's own report
  let busy = false;
  link.addEventListener('click', async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    msg.textContent = t('report.making');
    msg.className = 'message warn';
    try {
      const res = await fetch(reportUrl(ctx.jobId), { cache: 'no-store' });
      if (res.ok) { window.location.assign(reportUrl(ctx.jobId)); return; }
      let data = {};
      try { data = await res.json(); } catch { data = {}; }
      if (res.status === 409 && Array.isArray(data.unapproved)) {
        msg.textContent = t('report.unapproved', { names: data.unapproved.map(ctx.displayName).join(', ') });
        msg.className = 'message bad';
        draft.classList.remove('hidden');
      } else {
        msg.textContent = t('report.refused', { why: data.error || String(res.status) });
        msg.className = 'message bad';
      }
    } catch (err) {
      msg.textContent = t('report.refused', { why: err.message });
      msg.className = 'message bad';
    } finally {
      busy = false;
    }
  });
}
