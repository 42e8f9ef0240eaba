// The model over the slices (NiiVue): the image volume in grey, each structure's mesh cut by the slice plane
// (NiiVue draws mesh triangles within half a voxel of the plane), axial/coronal/sagittal and a slice slider.
/* global niivue */

const AXES = { sagittal: 0, coronal: 1, axial: 2 };  // index into NiiVue's crosshair fraction (RAS order)

export class SliceViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.axis = 'axial';
    this.ready = false;
    this.nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.7, 1, 1], crosshairWidth: 1, show3Dcrosshair: false,
      isOrientCube: false, isColorbar: false, loadingText: '', isRadiologicalConvention: true, isResizeCanvas: true,
      textHeight: 0.04, dragAndDropEnabled: false,
    });
  }

  /** Load the volume and the meshes (model frame = LPS mm; NiiVue's world is RAS mm). */
  async load(volumeUrl, meshes) {
    await this.nv.attachToCanvas(this.canvas);
    await this.nv.loadVolumes([{ url: volumeUrl, colormap: 'gray' }]);
    const vol = this.nv.volumes[0];
    const spacing = vol.hdr.pixDims.slice(1, 4).map(Math.abs);
    this.voxelMm = Math.min(...spacing);
    for (const m of meshes) this.addMesh(m);
    this.nv.setSliceMM(true);
    this.nv.setMeshThicknessOn2D(this.voxelMm / 2);
    this.setAxis('axial');
    this.ready = true;
  }

  addMesh({ name, pts, tris, srgb, visible }) {
    const ras = new Float32Array(pts.length);
    for (let i = 0; i < pts.length; i += 3) { ras[i] = -pts[i]; ras[i + 1] = -pts[i + 1]; ras[i + 2] = pts[i + 2]; }
    const rgb = srgb.replace('#', '').match(/../g).map((h) => parseInt(h, 16));
    const mesh = new niivue.NVMesh(ras, tris, name, new Uint8Array([...rgb, 255]), 1.0, visible, this.nv.gl);
    this.nv.addMesh(mesh);
  }

  setMeshVisible(name, visible) {
    const mesh = this.nv.meshes.find((m) => m.name === name);
    if (mesh) { mesh.visible = visible; this.nv.drawScene(); }
  }

  setMeshColour(name, hex) {
    const mesh = this.nv.meshes.find((m) => m.name === name);
    if (!mesh) return;
    const rgb = hex.replace('#', '').match(/../g).map((h) => parseInt(h, 16));
    mesh.rgba255 = new Uint8Array([...rgb, 255]);
    mesh.updateMesh(this.nv.gl);
    this.nv.drawScene();
  }

  setAxis(axis) {
    this.axis = axis;
    const types = { axial: niivue.SLICE_TYPE.AXIAL, coronal: niivue.SLICE_TYPE.CORONAL, sagittal: niivue.SLICE_TYPE.SAGITTAL };
    this.nv.setSliceType(types[axis]);
  }

  /** Fraction 0..1 of the current slice along the current axis. */
  position() { return this.nv.scene.crosshairPos[AXES[this.axis]]; }

  setPosition(frac) {
    const pos = [...this.nv.scene.crosshairPos];
    pos[AXES[this.axis]] = Math.max(0, Math.min(1, frac));
    this.nv.scene.crosshairPos = pos;
    this.nv.drawScene();
    this.nv.createOnLocationChange?.();
  }

  step(delta) {
    const v = [0, 0, 0];
    v[AXES[this.axis]] = delta;
    this.nv.moveCrosshairInVox(...v);
  }

  /** Slice position in mm along the current axis (RAS world). */
  positionMm() {
    const mm = this.nv.frac2mm(this.nv.scene.crosshairPos);
    return mm[AXES[this.axis]];
  }
}
