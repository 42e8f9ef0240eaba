// 3D model viewer (three.js): structures from scene.glb, visibility/opacity/colour per structure, clipping plane,
// standard views, rotate/zoom by touch (OrbitControls: one finger rotates, two fingers pinch-zoom) and by buttons,
// and two-tap measurement in millimetres (snapped to the nearest mesh vertex within reach of a gloved finger).
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const MODEL_ROOT = 'patient_lps_mm';  // root node of the appliance's GLB: children hold LPS millimetre vertices
// Directions in the model frame (LPS): x = patient left, y = posterior, z = superior.
const LPS = { L: [1, 0, 0], R: [-1, 0, 0], P: [0, 1, 0], A: [0, -1, 0], S: [0, 0, 1], I: [0, 0, -1] };
const VIEWS = {  // camera direction from the target, and the camera's up
  anterior: ['A', 'S'], posterior: ['P', 'S'], left: ['L', 'S'], right: ['R', 'S'], superior: ['S', 'A'], inferior: ['I', 'A'],
};
const CLIP_NORMALS = { axial: 'I', coronal: 'P', sagittal: 'L' };  // the side kept; the flip button reverses it
const SNAP_PX = 24;
const TAP_MOVE_PX = 10;
const TAP_MS = 600;

export class ModelViewer {
  constructor(canvas, { onMeasure = () => {}, onChange = () => {}, onSelect = () => {} } = {}) {
    this.canvas = canvas;
    this.onMeasure = onMeasure;
    this.onSelect = onSelect;
    this.onChange = onChange;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.localClippingEnabled = true;
    this.renderer.setClearColor(0x000000, 1);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(35, 1, 0.001, 1000);
    this.scene.add(this.camera);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x404040, 1.6));
    const head = new THREE.DirectionalLight(0xffffff, 1.8);
    head.position.set(0.3, 0.5, 1);
    this.camera.add(head);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = false;
    this.controls.rotateSpeed = 0.8;
    // Only gestures that have buttons: one finger rotates, two fingers pinch-zoom (and rotate); no panning
    // (the view stays centred on the model; "Reset view" re-centres after zooming).
    this.controls.enablePan = false;
    this.controls.touches = { ONE: THREE.TOUCH.ROTATE, TWO: THREE.TOUCH.DOLLY_ROTATE };
    this.controls.addEventListener('change', () => this.requestRender());
    this.structures = new Map();  // name -> { mesh, material, srgb }
    this.root = null;
    this.clipPlane = new THREE.Plane(new THREE.Vector3(0, -1, 0), 0);
    this.clip = { enabled: false, axis: 'axial', position: 0.5, flipped: false };
    this.measureMode = false;
    this.points = [];
    this.markers = new THREE.Group();
    this.scene.add(this.markers);
    this.frames = 0;
    this.firstFrameAt = null;
    this.pending = false;
    this.raycaster = new THREE.Raycaster();
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    this.installTap();
    this.resize();
  }

  // ---------------------------------------------------------------- loading
  async load(url) {
    this.timings = { loadStart: performance.now() };
    const gltf = await new GLTFLoader().loadAsync(url);
    this.timings.glbParsed = performance.now();
    this.root = gltf.scene.getObjectByName(MODEL_ROOT) || gltf.scene;
    gltf.scene.traverse((obj) => {
      if (!obj.isMesh) return;
      const name = obj.name || obj.parent?.name || `structure_${this.structures.size + 1}`;
      const material = obj.material.clone();
      material.side = THREE.DoubleSide;
      material.clippingPlanes = [];
      const srgb = material.userData?.srgb || `#${material.color.getHexString(THREE.SRGBColorSpace)}`;
      obj.material = material;
      this.structures.set(name, { mesh: obj, material, srgb: toHex(srgb) });
    });
    this.scene.add(gltf.scene);
    gltf.scene.updateMatrixWorld(true);
    this.bounds = new THREE.Box3().setFromObject(gltf.scene);
    this.setView('anterior');
    return [...this.structures.keys()];
  }

  /** Model frame (LPS mm) direction as a world direction. */
  worldDir(code) {
    const v = new THREE.Vector3(...LPS[code]);
    return this.root ? v.transformDirection(this.root.matrixWorld) : v;
  }

  toModel(world) { return this.root ? this.root.worldToLocal(world.clone()) : world.clone(); }

  toWorld(model) { return this.root ? this.root.localToWorld(new THREE.Vector3(...model)) : new THREE.Vector3(...model); }

  // ---------------------------------------------------------------- rendering
  resize() {
    const w = this.canvas.parentElement.clientWidth || 1;
    const h = this.canvas.parentElement.clientHeight || 1;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  requestRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.renderNow(); });
  }

  renderNow() {
    this.renderer.render(this.scene, this.camera);
    this.frames += 1;
    if (this.firstFrameAt === null && this.structures.size) {
      const gl = this.renderer.getContext();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));  // wait for the GPU to finish
      this.timings.firstFrame = performance.now();
      this.firstFrameAt = performance.timeOrigin + this.timings.firstFrame;
      window.dispatchEvent(new CustomEvent('viewer-first-frame', { detail: { epochMs: this.firstFrameAt } }));
    }
    this.onChange();
  }

  // ---------------------------------------------------------------- structures
  setVisible(name, visible) { this.structures.get(name).mesh.visible = visible; this.requestRender(); }

  isVisible(name) { return this.structures.get(name).mesh.visible; }

  setOpacity(name, opacity) {
    const m = this.structures.get(name).material;
    m.opacity = opacity;
    m.transparent = opacity < 1;
    m.depthWrite = opacity >= 1;
    m.needsUpdate = true;
    this.requestRender();
  }

  opacity(name) { return this.structures.get(name).material.opacity; }

  setColour(name, hex) {
    const s = this.structures.get(name);
    s.material.color.set(hex);  // sRGB hex, converted to linear by three's colour management
    s.srgb = hex;
    this.requestRender();
  }

  colour(name) { return this.structures.get(name).srgb; }

  /** Show `geometry` (model frame, LPS mm: a revision's re-meshed STL) as the structure `name`: an existing
   * structure keeps its colour, opacity and visibility; a new one gets `srgb` and joins the model. */
  replaceMesh(name, geometry, srgb) {
    const s = this.structures.get(name);
    if (s) {
      s.mesh.geometry.dispose();
      s.mesh.geometry = geometry;
    } else {
      const material = new THREE.MeshStandardMaterial({ color: srgb, side: THREE.DoubleSide, roughness: 0.6, metalness: 0 });
      material.clippingPlanes = this.clip.enabled ? [this.clipPlane] : [];
      const mesh = new THREE.Mesh(geometry, material);
      mesh.name = name;
      (this.root || this.scene).add(mesh);
      this.structures.set(name, { mesh, material, srgb });
    }
    this.requestRender();
  }

  /** Take a structure out of the model (a revision removed it). */
  removeStructure(name) {
    const s = this.structures.get(name);
    if (!s) return;
    s.mesh.parent?.remove(s.mesh);
    s.mesh.geometry.dispose();
    this.structures.delete(name);
    if (this.highlighted === name) this.highlight(null);
    this.requestRender();
  }

  /** Bring one structure forward: every other one dimmed (null: all back as they were). */
  highlight(name) {
    this.highlighted = name;
    for (const [n, s] of this.structures) {
      if (s.dimmedFrom !== undefined) { const o = s.dimmedFrom; delete s.dimmedFrom; this.setOpacity(n, o); }
    }
    if (!name) return;
    for (const [n, s] of this.structures) {
      if (n === name) continue;
      s.dimmedFrom = s.material.opacity;
      this.setOpacity(n, Math.min(s.material.opacity, 0.12));
    }
  }

  // ---------------------------------------------------------------- camera
  setView(name) {
    if (!this.bounds) return;
    const [dirCode, upCode] = VIEWS[name === 'reset' ? 'anterior' : name];
    const centre = this.bounds.getCenter(new THREE.Vector3());
    const radius = this.bounds.getBoundingSphere(new THREE.Sphere()).radius || 1;
    const dist = radius / Math.sin(THREE.MathUtils.degToRad(this.camera.fov / 2)) * 1.1;
    this.camera.near = dist / 100;
    this.camera.far = dist * 10;
    this.camera.updateProjectionMatrix();
    this.camera.up.copy(this.worldDir(upCode));
    this.camera.position.copy(centre).addScaledVector(this.worldDir(dirCode), dist);
    this.controls.target.copy(centre);
    this.controls.update();
    this.requestRender();
  }

  rotate(direction, degrees = 15) {
    const offset = this.camera.position.clone().sub(this.controls.target);
    const angle = THREE.MathUtils.degToRad(direction === 'left' || direction === 'up' ? -degrees : degrees);
    const axis = direction === 'left' || direction === 'right'
      ? this.camera.up.clone().normalize()
      : new THREE.Vector3().crossVectors(offset, this.camera.up).normalize();
    const q = new THREE.Quaternion().setFromAxisAngle(axis, angle);
    offset.applyQuaternion(q);
    if (direction === 'up' || direction === 'down') this.camera.up.applyQuaternion(q);
    this.camera.position.copy(this.controls.target).add(offset);
    this.camera.lookAt(this.controls.target);
    this.controls.update();
    this.requestRender();
  }

  zoom(direction) {
    const offset = this.camera.position.clone().sub(this.controls.target);
    offset.multiplyScalar(direction === 'in' ? 0.8 : 1.25);
    this.camera.position.copy(this.controls.target).add(offset);
    this.controls.update();
    this.requestRender();
  }

  cameraDistance() { return this.camera.position.distanceTo(this.controls.target); }

  // ---------------------------------------------------------------- clipping
  setClip({ enabled = this.clip.enabled, axis = this.clip.axis, position = this.clip.position, flipped = this.clip.flipped } = {}) {
    this.clip = { enabled, axis, position, flipped };
    if (this.bounds) {
      const n = this.worldDir(CLIP_NORMALS[axis]);
      if (flipped) n.negate();
      // position 0..1 runs along the normal across the model's extent
      const corners = boxCorners(this.bounds).map((c) => c.dot(n));
      const lo = Math.min(...corners);
      const hi = Math.max(...corners);
      this.clipPlane.set(n, -(lo + position * (hi - lo)));
    }
    for (const s of this.structures.values()) {
      s.material.clippingPlanes = enabled ? [this.clipPlane] : [];
      s.material.needsUpdate = true;
    }
    this.requestRender();
  }

  // ---------------------------------------------------------------- measurement
  setMeasureMode(on) { this.measureMode = on; if (!on) this.clearMeasurement(); }

  clearMeasurement() {
    this.points = [];
    this.markers.clear();
    this.onMeasure(null);
    this.requestRender();
  }

  installTap() {
    let down = null;
    this.canvas.addEventListener('pointerdown', (e) => {
      if (e.isPrimary) down = { x: e.clientX, y: e.clientY, t: performance.now(), id: e.pointerId, multi: false };
      else if (down) down.multi = true;
    });
    this.canvas.addEventListener('pointerup', (e) => {
      if (!down || e.pointerId !== down.id) return;
      const moved = Math.hypot(e.clientX - down.x, e.clientY - down.y);
      const quick = performance.now() - down.t < TAP_MS;
      const tap = !down.multi && moved < TAP_MOVE_PX && quick;
      down = null;
      if (tap && this.measureMode) this.pick(e.clientX, e.clientY);
      else if (tap) { const hit = this.hitAt(e.clientX, e.clientY); if (hit) this.onSelect(this.nameOf(hit.object)); }
    });
  }

  /** Screen (client px) position of a model-frame point, for tests and the measurement labels. */
  projectModelPoint(xyz) {
    const rect = this.canvas.getBoundingClientRect();
    const p = this.toWorld(xyz).project(this.camera);
    return { x: rect.left + (p.x + 1) / 2 * rect.width, y: rect.top + (1 - p.y) / 2 * rect.height };
  }

  /** The nearest visible, unclipped surface under a screen point (or null). */
  hitAt(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2((clientX - rect.left) / rect.width * 2 - 1, -((clientY - rect.top) / rect.height) * 2 + 1);
    this.raycaster.setFromCamera(ndc, this.camera);
    const targets = [...this.structures.values()].filter((s) => s.mesh.visible && s.material.opacity > 0.05).map((s) => s.mesh);
    const hits = this.raycaster.intersectObjects(targets, false)
      .filter((h) => !this.clip.enabled || this.clipPlane.distanceToPoint(h.point) >= 0);
    return hits[0] || null;
  }

  nameOf(mesh) {
    for (const [name, s] of this.structures) if (s.mesh === mesh) return name;
    return null;
  }

  pick(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const hit = this.hitAt(clientX, clientY);
    if (!hit) return null;
    let world = hit.point.clone();
    // snap to the nearest vertex of the hit triangle when it is within a fingertip of the tap
    const pos = hit.object.geometry.attributes.position;
    let best = SNAP_PX;
    for (const idx of [hit.face.a, hit.face.b, hit.face.c]) {
      const v = new THREE.Vector3().fromBufferAttribute(pos, idx).applyMatrix4(hit.object.matrixWorld);
      const s = v.clone().project(this.camera);
      const d = Math.hypot(rect.left + (s.x + 1) / 2 * rect.width - clientX, rect.top + (1 - s.y) / 2 * rect.height - clientY);
      if (d < best) { best = d; world = v; }
    }
    if (this.points.length === 2) this.clearMeasurement();
    this.addPoint(world);
    return world;
  }

  /** Add one measurement point (world frame): a marker, and the distance once there are two. */
  addPoint(world) {
    this.points.push(world);
    const radius = (this.bounds ? this.bounds.getSize(new THREE.Vector3()).length() : 1) / 150;
    const dot = new THREE.Mesh(new THREE.SphereGeometry(radius, 16, 12), new THREE.MeshBasicMaterial({ color: 0xffff00, depthTest: false }));
    dot.position.copy(world);
    dot.renderOrder = 10;
    this.markers.add(dot);
    if (this.points.length === 2) {
      const line = new THREE.Line(new THREE.BufferGeometry().setFromPoints(this.points),
        new THREE.LineBasicMaterial({ color: 0xffff00, depthTest: false }));
      line.renderOrder = 10;
      this.markers.add(line);
      const mm = this.toModel(this.points[0]).distanceTo(this.toModel(this.points[1]));
      this.onMeasure(mm);
    } else {
      this.onMeasure(undefined);
    }
    this.requestRender();
  }

  /** Measurement points in the model frame (LPS mm), e.g. to keep them across a page reload. */
  measurement() { return this.points.map((p) => this.toModel(p).toArray()); }

  /** Replace the measurement by points given in the model frame. */
  setMeasurement(points) {
    this.clearMeasurement();
    for (const p of points.slice(0, 2)) this.addPoint(this.toWorld(p));
  }

  /** Camera position, up vector and orbit target (world frame), to restore the same view later. */
  cameraState() {
    return { position: this.camera.position.toArray(), up: this.camera.up.toArray(), target: this.controls.target.toArray() };
  }

  setCameraState({ position, up, target }) {
    this.camera.position.fromArray(position);
    this.camera.up.fromArray(up);
    this.controls.target.fromArray(target);
    this.camera.lookAt(this.controls.target);
    this.controls.update();
    this.requestRender();
  }

  /** Triangles and vertices of each structure (model frame), for the slice overlay. */
  meshData() {
    const out = [];
    for (const [name, s] of this.structures) {
      const geom = s.mesh.geometry;
      const local = new THREE.Matrix4();
      if (this.root) local.copy(this.root.matrixWorld).invert().multiply(s.mesh.matrixWorld);
      else local.copy(s.mesh.matrixWorld);
      const pos = geom.attributes.position;
      const pts = new Float32Array(pos.count * 3);
      const v = new THREE.Vector3();
      for (let i = 0; i < pos.count; i += 1) {
        v.fromBufferAttribute(pos, i).applyMatrix4(local);
        pts[3 * i] = v.x; pts[3 * i + 1] = v.y; pts[3 * i + 2] = v.z;
      }
      const tris = geom.index ? Uint32Array.from(geom.index.array) : Uint32Array.from({ length: pos.count }, (_, i) => i);
      out.push({ name, pts, tris, srgb: s.srgb, visible: s.mesh.visible });
    }
    return out;
  }
}

function boxCorners(box) {
  const out = [];
  for (const x of [box.min.x, box.max.x]) for (const y of [box.min.y, box.max.y]) for (const z of [box.min.z, box.max.z]) out.push(new THREE.Vector3(x, y, z));
  return out;
}

export function toHex(colour) {
  if (Array.isArray(colour)) return `#${colour.slice(0, 3).map((c) => Math.round(c).toString(16).padStart(2, '0')).join('')}`;
  return String(colour);
}
