// Correction tools of the edit panel that take more than one tap (docs/review.md, docs/ui.md):
// - fill between: "Mark first slice" keeps the slice view's crosshair (patient LPS) and its view; at the other end
//   of the range "Fill between here" sends {"op": "fill_between", "view", "from_lps", "to_lps"}: the server fills
//   only the empty slices between drawn slices inside that range.
// - scissors: a polygon drawn by touch on the 3D view; each screen point is carried along its camera ray onto the
//   plane through the view's centre normal to the viewing direction, given in the model frame (LPS mm) with the
//   camera's direction: {"op": "scissors", "polygon_lps", "view_direction", "keep"}.
// Operations only, never voxels; submitEdit (edit_panel.js) posts them on the current revision.
import * as THREE from 'three';
import { t } from './common.js';
import { submitEdit, tellEdit } from './edit_submit.js';

/** Fewest pixels between two recorded points of a drawn outline. */
const MIN_STEP_PX = 4;
/** Most corners sent (the server takes up to 256): a long outline is thinned evenly. */
const MAX_CORNERS = 200;

/** The drawn outline (client px) as LPS points on the plane through the view's centre, and the view direction
 * (camera into the scene) in the model frame. */
export function outlineToLps(viewer, points) {
  const rect = viewer.canvas.getBoundingClientRect();
  const target = viewer.controls.target.clone();
  const dirWorld = target.clone().sub(viewer.camera.position).normalize();
  const plane = new THREE.Plane().setFromNormalAndCoplanarPoint(dirWorld, target);
  const ray = new THREE.Raycaster();
  const step = Math.max(1, Math.ceil(points.length / MAX_CORNERS));
  const polygon = [];
  for (let i = 0; i < points.length; i += step) {
    const p = points[i];
    ray.setFromCamera(new THREE.Vector2((p.x - rect.left) / rect.width * 2 - 1, -((p.y - rect.top) / rect.height) * 2 + 1), viewer.camera);
    const hit = new THREE.Vector3();
    if (ray.ray.intersectPlane(plane, hit)) polygon.push(viewer.toModel(hit).toArray());
  }
  const a = viewer.toModel(target);
  const b = viewer.toModel(target.clone().add(dirWorld));
  return { polygon, direction: b.sub(a).normalize().toArray() };
}

/** Drawing on the 3D view: a canvas over it takes the touches while the scissors are on. */
class OutlineDrawing {
  constructor(wrap, onDrawn) {
    this.wrap = wrap;
    this.onDrawn = onDrawn;
    this.points = [];
    this.canvas = null;
  }

  start() {
    if (this.canvas) return;
    const c = document.createElement('canvas');
    c.id = 'scissors-overlay';
    c.style.touchAction = 'none';
    c.style.cursor = 'crosshair';
    this.wrap.append(c);
    this.canvas = c;
    this.points = [];
    let drawing = false;
    c.addEventListener('pointerdown', (e) => { drawing = true; this.points = [{ x: e.clientX, y: e.clientY }]; c.setPointerCapture?.(e.pointerId); this.draw(false); });
    c.addEventListener('pointermove', (e) => {
      if (!drawing) return;
      const last = this.points[this.points.length - 1];
      if (Math.hypot(e.clientX - last.x, e.clientY - last.y) >= MIN_STEP_PX) { this.points.push({ x: e.clientX, y: e.clientY }); this.draw(false); }
    });
    c.addEventListener('pointerup', () => { drawing = false; this.draw(true); this.onDrawn(this.points.length >= 3 ? this.points : null); });
  }

  stop() {
    this.canvas?.remove();
    this.canvas = null;
    this.points = [];
  }

  draw(closed) {
    const c = this.canvas;
    const rect = c.getBoundingClientRect();
    c.width = Math.round(rect.width);
    c.height = Math.round(rect.height);
    const g = c.getContext('2d');
    g.clearRect(0, 0, c.width, c.height);
    if (!this.points.length) return;
    g.strokeStyle = '#ffe119';
    g.fillStyle = 'rgba(255, 225, 25, 0.15)';
    g.lineWidth = 3;
    g.beginPath();
    this.points.forEach((p, i) => (i ? g.lineTo(p.x - rect.left, p.y - rect.top) : g.moveTo(p.x - rect.left, p.y - rect.top)));
    if (closed) { g.closePath(); g.fill(); }
    g.stroke();
  }
}

function wireFillBetween(ctx) {
  const markBtn = document.getElementById('fill-mark');
  const applyBtn = document.getElementById('fill-apply');
  let mark = null;  // { lps, view }
  markBtn.addEventListener('click', () => {
    const lps = ctx.crosshairLps();
    if (!ctx.selected()) return;
    if (!lps) { tellEdit(t('edit.need_crosshair'), 'bad'); return; }
    const slices = ctx.slices();
    mark = { lps, view: slices.axis };
    applyBtn.disabled = false;
    tellEdit(t('edit.fill_marked', { mm: slices.positionMm().toFixed(1), view: t(`axis.${slices.axis}`) }), 'ok');
  });
  applyBtn.addEventListener('click', async () => {
    const structure = ctx.selected();
    const lps = ctx.crosshairLps();
    if (!structure || !mark) return;
    if (!lps) { tellEdit(t('edit.need_crosshair'), 'bad'); return; }
    if (ctx.slices().axis !== mark.view) { tellEdit(t('edit.fill_other_view', { view: t(`axis.${mark.view}`) }), 'bad'); return; }
    const op = { op: 'fill_between', structure, view: mark.view, from_lps: mark.lps, to_lps: lps };
    const r = await submitEdit(ctx, structure, [op], t('edit.reason_fill_between'));
    if (r?.ok) { mark = null; applyBtn.disabled = true; }
  });
}

function wireScissors(ctx) {
  const toggle = document.getElementById('scissors-btn');
  const cut = document.getElementById('scissors-cut');
  const keep = document.getElementById('scissors-keep');
  let outline = null;
  const drawing = new OutlineDrawing(document.getElementById('wrap3d'), (points) => {
    outline = points;
    cut.disabled = keep.disabled = !points;
    tellEdit(t(points ? 'edit.scissors_drawn' : 'edit.scissors_draw'), points ? 'ok' : 'warn');
  });
  const stop = () => { drawing.stop(); outline = null; cut.disabled = keep.disabled = true; toggle.setAttribute('aria-pressed', 'false'); };
  toggle.addEventListener('click', () => {
    if (toggle.getAttribute('aria-pressed') === 'true') { stop(); tellEdit('', 'hidden'); return; }
    if (!ctx.selected()) return;
    if (document.getElementById('wrap3d').classList.contains('hidden')) { tellEdit(t('edit.scissors_need_3d'), 'bad'); return; }
    toggle.setAttribute('aria-pressed', 'true');
    drawing.start();
    tellEdit(t('edit.scissors_draw'), 'warn');
  });
  for (const [button, keepInside] of [[cut, false], [keep, true]]) {
    button.addEventListener('click', async () => {
      const structure = ctx.selected();
      if (!structure || !outline) return;
      const { polygon, direction } = outlineToLps(ctx.viewer, outline);
      const op = { op: 'scissors', structure, polygon_lps: polygon, view_direction: direction, keep: keepInside };
      const r = await submitEdit(ctx, structure, [op], t(keepInside ? 'edit.reason_scissors_keep' : 'edit.reason_scissors_cut'));
      if (r?.ok) stop();
    });
  }
  document.getElementById('mode-2d').addEventListener('click', stop);  // the outline belongs to the 3D view
}

/** Wire fill between and scissors (`ctx` as for wireEditTools). */
export function wireCorrectionTools(ctx) {
  wireFillBetween(ctx);
  wireScissors(ctx);
}
