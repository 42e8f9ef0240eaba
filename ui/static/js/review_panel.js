// Review on the case screen: each structure row shows its review state in the current revision (automatic,
// correction requested, corrected, approved); the surgeon approves or requests a correction with a note, posted to
// POST /api/jobs/<id>/structures/<name>/review for the current revision (audited by the service). Without the
// review routes (demo, test double) the buttons keep the older approve/reject audit record (/ui/api/review).
import { el, postJSON, t } from './common.js';

/** Put the review state badge on every structure row (`data-review-state` holds the API's word). */
export function showStates(revisions) {
  for (const row of document.querySelectorAll('#structures .structure')) {
    const state = revisions.state(row.dataset.structure);
    let badge = row.querySelector('.review-state');
    if (!badge) {
      badge = el('span', { class: 'review-state' });
      row.querySelector('.toggle').append(badge);
    }
    badge.dataset.reviewState = state;
    badge.textContent = t(`review_state.${state}`);
    const note = revisions.record?.review?.[row.dataset.structure]?.note;
    badge.title = note || '';
  }
}

/** Wire the approve / request-correction buttons of the structure editor. `ctx`: jobId, selected(), study(),
 * displayName(), revisions (a RevisionView or null), afterDecision(). */
export function wireReview(ctx) {
  const note = document.getElementById('review-note');
  const out = document.getElementById('review-msg');
  for (const b of document.querySelectorAll('.quick-note')) {
    b.addEventListener('click', () => { note.value = [note.value, t(b.dataset.noteKey)].filter(Boolean).join(' '); });
  }
  const tell = (text, ok) => { out.textContent = text; out.className = `message ${ok ? 'ok' : 'bad'}`; };
  const send = async (decision) => {
    const name = ctx.selected();
    if (!name) return;
    if (decision !== 'approve' && !note.value.trim()) {
      tell(t(ctx.revisions ? 'case_review.need_note' : 'review.need_note'), false);
      return;
    }
    out.className = 'message hidden';  // the previous answer goes while this one is on its way
    if (!ctx.revisions) {
      const r = await postJSON('/ui/api/review', {
        job_id: ctx.jobId, structure: name, decision, note: note.value, study_hash: ctx.study()?.study_hash ?? null,
      });
      tell(r.ok ? t(decision === 'approve' ? 'review.approved' : 'review.rejected', { name: ctx.displayName(name) })
        : t('review.failed'), r.ok);
      return;
    }
    const r = await postJSON(`/api/jobs/${ctx.jobId}/structures/${encodeURIComponent(name)}/review`, {
      revision: ctx.revisions.current, decision, note: note.value,
    });
    if (r.ok) {
      const n = ctx.revisions.current;
      note.value = '';
      await ctx.afterDecision();  // the row's state first, then the word that it is done
      tell(t(decision === 'approve' ? 'case_review.approved' : 'case_review.correction_requested',
        { name: ctx.displayName(name), n }), true);
    } else {
      tell(t('case_review.refused', { why: r.data.error || r.status }), false);
    }
  };
  document.getElementById('approve-btn').addEventListener('click', () => send('approve'));
  document.getElementById('reject-btn').addEventListener('click', () => send(ctx.revisions ? 'request_correction' : 'reject'));
}
