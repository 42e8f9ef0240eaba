// Edit tools of the case screen (surgeon, modelling engineer): for the selected structure, at the slice view's
// crosshair, one operation per button (docs/review.md): brush paint / erase (a ball of 2, 5 or 10 mm, or its disc on the slice shown; paint
// optionally limited to a CT window preset), remove or keep the island under the crosshair, grow / shrink by 1 mm,
// smooth. Each is POSTed on the current revision (base = current); a 409 (someone edited meanwhile) reloads the
// newest revision and says so. The browser sends operations, never voxels; the re-meshed structure is swapped in by
// the caller's reload(). Fill between, scissors and the ghosted comparison are wired from here too.
import { t } from './common.js';
import { submitEdit, tellEdit } from './edit_submit.js';
import { wireCorrectionTools } from './correction_tools.js';
import { wireCompare } from './compare.js';

const AT_CROSSHAIR = new Set(['paint', 'erase', 'remove_island', 'keep_island']);
/** Windows (HU) that can limit the brush paint: only voxels of the image within it join the structure. */
export const PAINT_WINDOWS = { bone: { min: 200, max: 3000 }, soft: { min: -100, max: 200 }, vessel: { min: 150, max: 600 } };

/** The operation JSON of a button for `structure`, at `lps` (patient LPS mm) with the brush `radius` (mm) and
 * (paint only) the window preset `window` (`any` or a key of PAINT_WINDOWS), (smooth only) the Gaussian's sigma,
 * (paint and erase) `sliceView`: the slice view (axial, coronal, sagittal) the brush is limited to, or null (a ball). */
export function operation(kind, structure, lps, radius, window = 'any', sigma = 1, sliceView = null) {
  if (kind === 'paint' || kind === 'erase') {
    const op = { op: kind, structure, sphere: { center_lps: lps, radius_mm: radius } };
    if (sliceView) op.slice_view = sliceView;  // the in-plane brush: the ball's voxels on the crosshair's slice
    if (kind === 'paint' && PAINT_WINDOWS[window]) op.window = { ...PAINT_WINDOWS[window] };
    return op;
  }
  if (kind === 'remove_island' || kind === 'keep_island') return { op: kind, structure, point_lps: lps };
  if (kind === 'smooth') return { op: 'smooth', structure, method: 'gaussian', sigma_mm: sigma };
  return { op: kind, structure, mm: 1 };
}

/** `ctx`: jobId, selected(), crosshairLps() (null without the slice view), slices(), viewer, revisions, reload(),
 * displayName(). */
export function wireEditTools(ctx) {
  let radius = 5;
  let paintWindow = 'any';
  let brushShape = 'ball';
  for (const b of document.querySelectorAll('.brush-shape')) {
    b.addEventListener('click', () => {
      brushShape = b.dataset.shape;
      for (const o of document.querySelectorAll('.brush-shape')) o.setAttribute('aria-pressed', String(o === b));
    });
  }
  for (const b of document.querySelectorAll('.brush-radius')) {
    b.addEventListener('click', () => {
      radius = Number(b.dataset.mm);
      for (const o of document.querySelectorAll('.brush-radius')) o.setAttribute('aria-pressed', String(o === b));
    });
  }
  for (const b of document.querySelectorAll('.paint-window')) {
    b.addEventListener('click', () => {
      paintWindow = b.dataset.window;
      for (const o of document.querySelectorAll('.paint-window')) o.setAttribute('aria-pressed', String(o === b));
    });
  }
  for (const b of document.querySelectorAll('.edit-op')) {
    b.addEventListener('click', async () => {
      const structure = ctx.selected();
      const kind = b.dataset.op;
      if (!structure) return;
      const lps = ctx.crosshairLps();
      if (AT_CROSSHAIR.has(kind) && !lps) { tellEdit(t('edit.need_crosshair'), 'bad'); return; }
      const windowed = kind === 'paint' && PAINT_WINDOWS[paintWindow];
      if (windowed && ctx.slices()?.modality !== 'CT') { tellEdit(t('edit.window_ct_only'), 'bad'); return; }
      const reason = windowed ? t('edit.reason_paint_window', { window: t(`edit.window_${paintWindow}`) }) : t(`edit.reason_${kind}`);
      const sliceView = brushShape === 'slice' && (kind === 'paint' || kind === 'erase') ? ctx.slices()?.axis : null;
      if (brushShape === 'slice' && (kind === 'paint' || kind === 'erase') && !sliceView) { tellEdit(t('edit.need_crosshair'), 'bad'); return; }
      await submitEdit(ctx, structure, [operation(kind, structure, lps, radius, paintWindow, Number(b.dataset.sigma || 1), sliceView)], reason);
    });
  }
  wireCorrectionTools(ctx);
  wireCompare(ctx);
}
