// The model over the slices: NiiVue shows the image volume (grey, nearest-neighbour voxels) in axial, coronal or
// sagittal view with a slice slider; on a 2D canvas above it we draw where each visible structure's surface
// crosses the slice plane (exact triangle/plane intersection, in the structure's colour). NiiVue's own mesh
// display is not used in 2D: it clips meshes to a slab and draws nothing for faces seen edge-on.
/* global niivue */

const AXIS_INDEX = { sagittal: 0, coronal: 1, axial: 2 };  // RAS component normal to the slice
const SCREEN_AXES = [[0, 1], [0, 2], [1, 2]];  // NiiVue axCorSag 0/1/2 -> RAS components across/up the tile

export class SliceViewer {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.axis = 'axial';
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
  async load(volumeUrl, meshes) {
    await this.nv.attachToCanvas(this.canvas);
    // Gestures limited to those with buttons: a tap/drag places the crosshair, a pinch scrolls slices (as the
    // previous/next buttons and the slider do); no windowing or panning by drag.
    const { DRAG_MODE } = niivue;
    this.nv.setTouchEventConfig({ singleTouch: DRAG_MODE.crosshair, doubleTouch: DRAG_MODE.none });
    this.nv.setMouseEventConfig({ leftButton: { primary: DRAG_MODE.crosshair }, rightButton: DRAG_MODE.none,
      centerButton: DRAG_MODE.none });
    await this.nv.loadVolumes([{ url: volumeUrl, colormap: 'gray' }]);
    this.nv.setInterpolation(true);  // nearest neighbour: voxel edges stay where they are
    const vol = this.nv.volumes[0];
    this.voxelMm = Math.min(...vol.hdr.pixDims.slice(1, 4).map(Math.abs));
    this.meshes = meshes.map(({ name, pts, tris, srgb, visible }) => {
      const ras = new Float32Array(pts.length);
      for (let i = 0; i < pts.length; i += 3) { ras[i] = -pts[i]; ras[i + 1] = -pts[i + 1]; ras[i + 2] = pts[i + 2]; }
      return { name, ras, tris, rgb: srgb, visible };
    });
    const draw = this.nv.drawScene.bind(this.nv);
    this.nv.drawScene = (...args) => { const r = draw(...args); this.drawOverlay(); return r; };
    this.nv.onLocationChange = () => this.drawOverlay();
    this.setAxis('axial');
    this.ready = true;
  }

  mesh(name) { return this.meshes.find((m) => m.name === name); }

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
