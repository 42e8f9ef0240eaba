// The model over the slices: NiiVue shows the job's image volume (the manifest's files.image: the CT in HU or the
// MR the model was made from; grey, nearest-neighbour voxels) in axial, coronal or sagittal view with a slice
// slider and window presets; on a 2D canvas above it we draw where each visible structure's surface crosses the
// slice plane (exact triangle/plane intersection, in the structure's colour). NiiVue's own mesh display is not
// used in 2D: it clips meshes to a slab and draws nothing for faces seen edge-on. A tap places the crosshair and
// reports the image value under it (HU for CT).
/* global niivue */

const AXIS_INDEX = { sagittal: 0, coronal: 1, axial: 2 };  // RAS component normal to the slice
const SCREEN_AXES = [[0, 1], [0, 2], [1, 2]];  // NiiVue axCorSag 0/1/2 -> RAS components across/up the tile

/** CT window presets as [level, width] in HU. */
export const CT_WINDOWS = { soft: [40, 400], bone: [400, 1800], lung: [-600, 1500], brain: [40, 80] };
/** Percentiles of the non-zero voxels that bound the automatic (MR) window. */
export const AUTO_PERCENTILES = [1, 99];

/** The window presets offered for a modality: CT gets the HU presets, anything else the automatic window. */
export function windowPresets(modality) {
  return String(modality).toUpperCase() === 'CT' ? Object.keys(CT_WINDOWS) : ['auto'];
}

/** A mesh of the model frame (LPS mm) as the overlay keeps it (RAS mm). */
function rasMesh({ name, pts, tris, srgb, visible }) {
  const ras = new Float32Array(pts.length);
  for (let i = 0; i < pts.length; i += 3) { ras[i] = -pts[i]; ras[i + 1] = -pts[i + 1]; ras[i + 2] = pts[i + 2]; }
  return { name, ras, tris, rgb: srgb, visible };
}

export class SliceViewer {
  constructor(canvas, overlay, { onValue = () => {} } = {}) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.onValue = onValue;
    this.axis = 'axial';
    this.window = null;
    this.ready = false;
    this.meshes = [];  // { name, ras: Float32Array, tris: Uint32Array, rgb: '#rrggbb', visible }
    this.segmentsDrawn = 0;
    this.nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.7, 1, 1], crosshairWidth: 1, show3Dcrosshair: false,
      isOrientCube: false, isColorbar: false, loadingText: '', isRadiologicalConvention: true, isResizeCanvas: true,
      dragAndDropEnabled: false, meshThicknessOn2D: 0,
    });
  }

  /** Load the volume; `meshes` are in the model frame (LPS mm) and are converted to NiiVue's RAS mm. */
  async load(volumeUrl, meshes, { modality = 'CT' } = {}) {
    await this.nv.attachToCanvas(this.canvas);
    // Gestures limited to those with buttons: a tap/drag places the crosshair, a pinch scrolls slices (as the
    // previous/next buttons and the slider do); no windowing or panning by drag.
    const { DRAG_MODE } = niivue;
    this.nv.setTouchEventConfig({ singleTouch: DRAG_MODE.crosshair, doubleTouch: DRAG_MODE.none });
    this.nv.setMouseEventConfig({ leftButton: { primary: DRAG_MODE.crosshair }, rightButton: DRAG_MODE.none,
      centerButton: DRAG_MODE.none });
    // NiiVue resets the window to its own robust range on a long touch or a double tap; the window is only ever
    // set by the preset buttons here.
    this.nv.resetBriCon = () => {};
    this.installTap();
    await this.nv.loadVolumes([{ url: volumeUrl, colormap: 'gray' }]);
    this.nv.setInterpolation(true);  // nearest neighbour: voxel edges stay where they are
    const vol = this.nv.volumes[0];
    this.voxelMm = Math.min(...vol.hdr.pixDims.slice(1, 4).map(Math.abs));
    this.modality = String(modality).toUpperCase();
    this.presets = windowPresets(this.modality);
    this.meshes = meshes.map(rasMesh);
    const draw = this.nv.drawScene.bind(this.nv);
    this.nv.drawScene = (...args) => { const r = draw(...args); this.drawOverlay(); return r; };
    this.nv.onLocationChange = (data) => { this.drawOverlay(); this.reportValue(data); };
    this.setWindow(this.presets[0]);
    this.setAxis('axial');
    this.ready = true;
  }

  /** Image value (scaled to the modality's units) at a RAS voxel index of the volume. */
  valueAtVoxel(vox) {
    const vol = this.nv.volumes[0];
    return this.scaled(vol.getValue(vox[0], vox[1], vox[2]));
  }

  scaled(raw) {
    const h = this.nv.volumes[0].hdr;
    const slope = Number.isFinite(h.scl_slope) && h.scl_slope !== 0 ? h.scl_slope : 1;
    const inter = Number.isFinite(h.scl_inter) ? h.scl_inter : 0;
    return raw * slope + inter;
  }

  /** Value and position under the crosshair (after a tap, a slice step or a slider move). */
  crosshairValue() {
    const vol = this.nv.volumes[0];
    const mm = this.nv.frac2mm(this.nv.scene.crosshairPos);
    const vox = vol.mm2vox([mm[0], mm[1], mm[2]]);
    return { value: this.valueAtVoxel(vox), mm: [mm[0], mm[1], mm[2]], vox: [...vox] };
  }

  reportValue() {
    if (this.ready) this.onValue(this.crosshairValue());
  }

  /** Apply a window preset: a CT [level, width] in HU, or `auto` (percentiles of the non-zero voxels). */
  setWindow(name) {
    const vol = this.nv.volumes[0];
    let lo;
    let hi;
    if (CT_WINDOWS[name]) {
      const [level, width] = CT_WINDOWS[name];
      [lo, hi] = [level - width / 2, level + width / 2];
    } else {
      [lo, hi] = this.autoWindow();
    }
    vol.cal_min = lo;
    vol.cal_max = hi;
    this.window = name;
    this.nv.updateGLVolume();
  }

  /** [low, high] display range of the current window. */
  windowRange() { const v = this.nv.volumes[0]; return [v.cal_min, v.cal_max]; }

  /** 1st and 99th percentile of the non-zero voxels (sampled), in the modality's units. */
  autoWindow() {
    if (this.auto) return this.auto;
    const img = this.nv.volumes[0].img;
    const stride = Math.max(1, Math.floor(img.length / 200000));
    const sample = [];
    for (let i = 0; i < img.length; i += stride) if (img[i] !== 0) sample.push(this.scaled(img[i]));
    if (!sample.length) sample.push(0, 1);
    const sorted = Float64Array.from(sample).sort();
    const at = (p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(p / 100 * (sorted.length - 1))))];
    let [lo, hi] = AUTO_PERCENTILES.map(at);
    if (hi <= lo) hi = lo + 1;
    this.auto = [lo, hi];
    return this.auto;
  }

  /** What a language switch (a page reload) must give back: axis, crosshair, window. */
  state() { return { axis: this.axis, crosshair: [...this.nv.scene.crosshairPos], window: this.window }; }

  restore({ axis, crosshair, window: win }) {
    if (win && (this.presets.includes(win))) this.setWindow(win);
    if (axis) this.setAxis(axis);
    if (Array.isArray(crosshair) && crosshair.length === 3) {
      this.nv.scene.crosshairPos = crosshair.map((v) => Math.max(0, Math.min(1, Number(v))));
      this.nv.drawScene();
    }
  }

  /** A quick tap of a finger places the crosshair there (NiiVue itself only follows a touch that moves). */
  installTap() {
    let down = null;
    this.canvas.addEventListener('pointerdown', (e) => {
      if (e.pointerType === 'touch' && e.isPrimary) down = { x: e.clientX, y: e.clientY, t: performance.now(), id: e.pointerId };
    });
    this.canvas.addEventListener('pointerup', (e) => {
      if (!down || e.pointerId !== down.id) return;
      const tap = Math.hypot(e.clientX - down.x, e.clientY - down.y) < 12 && performance.now() - down.t < 600;
      down = null;
      if (tap && this.ready) this.placeCrosshair(e.clientX, e.clientY);
    });
  }

  /** Move the crosshair to a screen point (client px) inside the slice, then report the value there. */
  placeCrosshair(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const scale = this.canvas.width / rect.width;
    const frac = this.nv.canvasPos2frac([(clientX - rect.left) * scale, (clientY - rect.top) * scale]);
    if (!frac || frac[0] < 0) return;
    this.nv.scene.crosshairPos = [...frac];
    this.nv.drawScene();
    this.reportValue();
  }

  mesh(name) { return this.meshes.find((m) => m.name === name); }

  /** Replace the outlines drawn over the slices (the 3D viewer's meshData() after a revision swapped meshes). */
  setMeshes(meshes) { this.meshes = meshes.map(rasMesh); if (this.ready) this.drawOverlay(); }

  /** The crosshair in patient LPS mm (NiiVue works in RAS: LPS = [-x, -y, z]), what edit operations take. */
  crosshairLps() {
    const { mm } = this.crosshairValue();
    return [-mm[0], -mm[1], mm[2]];
  }

  setMeshVisible(name, visible) { const m = this.mesh(name); if (m) { m.visible = visible; this.drawOverlay(); } }

  setMeshColour(name, hex) { const m = this.mesh(name); if (m) { m.rgb = hex; this.drawOverlay(); } }

  setAxis(axis) {
    this.axis = axis;
    const types = { axial: niivue.SLICE_TYPE.AXIAL, coronal: niivue.SLICE_TYPE.CORONAL, sagittal: niivue.SLICE_TYPE.SAGITTAL };
    this.nv.setSliceType(types[axis]);
    this.nv.drawScene();
  }

  /** Fraction 0..1 of the current slice along the current axis. */
  position() { return this.nv.scene.crosshairPos[AXIS_INDEX[this.axis]]; }

  setPosition(frac) {
    const pos = [...this.nv.scene.crosshairPos];
    pos[AXIS_INDEX[this.axis]] = Math.max(0, Math.min(1, frac));
    this.nv.scene.crosshairPos = pos;
    this.nv.drawScene();
  }

  step(delta) {
    const v = [0, 0, 0];
    v[AXIS_INDEX[this.axis]] = delta;
    this.nv.moveCrosshairInVox(...v);
    this.nv.drawScene();
  }

  /** Slice position in mm (RAS) along the current axis. */
  positionMm() { return this.nv.frac2mm(this.nv.scene.crosshairPos)[AXIS_INDEX[this.axis]]; }

  /** CSS pixel (relative to the canvas) where a patient point (LPS mm) lies in the current slice view. */
  screenOfLps(lps) {
    const tile = this.nv.screenSlices?.[0];
    const [x, y] = this.toScreen(tile, [-lps[0], -lps[1], lps[2]]);
    const scale = this.canvas.width / this.canvas.clientWidth;
    return [x / scale, y / scale];
  }

  /** Canvas pixel of a RAS point in the current 2D tile. */
  toScreen(tile, ras) {
    const [h, v] = SCREEN_AXES[tile.axCorSag];
    const [left, top, width, height] = tile.leftTopWidthHeight;
    return [
      left + (ras[h] - tile.leftTopMM[0]) / tile.fovMM[0] * width,
      top + height - (ras[v] - tile.leftTopMM[1]) / tile.fovMM[1] * height,
    ];
  }

  drawOverlay() {
    const o = this.overlay;
    if (o.width !== this.canvas.width || o.height !== this.canvas.height) {
      o.width = this.canvas.width;
      o.height = this.canvas.height;
    }
    const ctx = o.getContext('2d');
    ctx.clearRect(0, 0, o.width, o.height);
    const tile = this.nv.screenSlices?.[0];
    if (!tile || !this.ready) return;
    const n = [2, 1, 0][tile.axCorSag];  // RAS component normal to this tile
    const c = this.nv.frac2mm(this.nv.scene.crosshairPos)[n];
    ctx.lineWidth = Math.max(2, Math.round(window.devicePixelRatio || 1) * 2);
    ctx.lineCap = 'round';
    let segments = 0;
    for (const m of this.meshes) {
      if (!m.visible) continue;
      ctx.strokeStyle = m.rgb;
      ctx.beginPath();
      const p = m.ras;
      const t = m.tris;
      for (let i = 0; i < t.length; i += 3) {
        const a = 3 * t[i], b = 3 * t[i + 1], d = 3 * t[i + 2];
        const da = p[a + n] - c, db = p[b + n] - c, dd = p[d + n] - c;
        const pos = (da >= 0) + (db >= 0) + (dd >= 0);
        if (pos === 0 || pos === 3) continue;
        const pts = [];
        for (const [u, du, w, dw] of [[a, da, b, db], [b, db, d, dd], [d, dd, a, da]]) {
          if ((du >= 0) !== (dw >= 0)) {
            const s = du / (du - dw);
            pts.push([p[u] + s * (p[w] - p[u]), p[u + 1] + s * (p[w + 1] - p[u + 1]), p[u + 2] + s * (p[w + 2] - p[u + 2])]);
          }
        }
        if (pts.length === 2) {
          const [x0, y0] = this.toScreen(tile, pts[0]);
          const [x1, y1] = this.toScreen(tile, pts[1]);
          ctx.moveTo(x0, y0);
          ctx.lineTo(x1, y1);
          segments += 1;
        }
      }
      ctx.stroke();
    }
    this.segmentsDrawn = segments;
  }
}
