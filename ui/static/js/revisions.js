// The case screen shows the job's CURRENT revision (docs/review.md): the job's scene.glb is revision 0; the
// structures a later revision re-meshed are swapped in from that revision's binary STL files, structures it removed
// are dropped, and the badge says which revision is shown and who made it. Undo/redo move the current pointer.
import * as THREE from 'three';
import { mergeVertices } from 'three/addons/utils/BufferGeometryUtils.js';
import { getJSON, postJSON, t } from './common.js';
import { actorName } from './people.js';
import { toHex } from './viewer3d.js';

const STL_HEADER = 80;
const STL_RECORD = 50;

/** Geometry of a binary STL (what appliance.export.stl writes: LPS mm), vertices welded for smooth shading. */
export function parseStl(buffer) {
  const view = new DataView(buffer);
  const n = buffer.byteLength >= STL_HEADER + 4 ? view.getUint32(STL_HEADER, true) : -1;
  if (n < 0 || buffer.byteLength < STL_HEADER + 4 + n * STL_RECORD) throw new Error('not a binary STL');
  const pos = new Float32Array(n * 9);
  for (let i = 0; i < n; i += 1) {
    const at = STL_HEADER + 4 + i * STL_RECORD + 12;  // after the facet normal
    for (let j = 0; j < 9; j += 1) pos[i * 9 + j] = view.getFloat32(at + j * 4, true);
  }
  const soup = new THREE.BufferGeometry();
  soup.setAttribute('position', new THREE.BufferAttribute(pos, 3));
  const welded = mergeVertices(soup, 1e-4);
  welded.computeVertexNormals();
  return welded;
}

export class RevisionView {
  constructor(jobId, viewer) {
    this.jobId = jobId;
    this.viewer = viewer;
    this.shown = new Map();  // structure -> mesh path (under the store) the viewer shows now
    this.current = null;
    this.record = null;  // the current revision's record with `review` (state of each structure)
    this.events = [];
  }

  /** URL of a mesh given as a path under the job's store (`rev-0003/meshes/bone.stl`). */
  meshUrl(storePath) {
    const [folder, ...rest] = storePath.split('/');
    return `/api/jobs/${this.jobId}/revisions/${Number(folder.slice(4))}/files/${rest.map(encodeURIComponent).join('/')}`;
  }

  /** Read the current revision and swap what differs from what is shown; returns the names that changed. */
  async refresh() {
    const list = await getJSON(`/api/jobs/${this.jobId}/revisions`, { background: true });
    if (this.current === null) {  // what scene.glb shows is revision 0
      const first = list.revisions.find((r) => r.revision === 0);
      for (const [name, path] of Object.entries(first?.meshes || {})) if (this.viewer.structures.has(name)) this.shown.set(name, path);
    }
    const record = await getJSON(`/api/jobs/${this.jobId}/revisions/${list.current}`, { background: true });
    const changed = [];
    const names = new Set(record.structures.map((s) => s.name));
    for (const name of [...this.viewer.structures.keys()]) {
      if (!names.has(name) || !record.meshes[name]) {
        this.viewer.removeStructure(name);
        this.shown.delete(name);
        changed.push(name);
      }
    }
    const swaps = record.structures.filter((s) => record.meshes[s.name] && this.shown.get(s.name) !== record.meshes[s.name]);
    const geometries = await Promise.all(swaps.map(async (s) => {
      const res = await fetch(this.meshUrl(record.meshes[s.name]), { cache: 'no-store', headers: { 'X-Background': '1' } });
      if (!res.ok) throw new Error(`mesh of ${s.name}: HTTP ${res.status}`);
      return parseStl(await res.arrayBuffer());
    }));
    swaps.forEach((s, i) => {
      this.viewer.replaceMesh(s.name, geometries[i], toHex(s.color || [200, 200, 200]));
      this.shown.set(s.name, record.meshes[s.name]);
      changed.push(s.name);
    });
    this.current = list.current;
    this.events = list.events;
    this.record = record;
    this.revisions = list.revisions;
    return changed;
  }

  /** The structures of the current revision in its order, with their categories. */
  structures() { return this.record ? this.record.structures : []; }

  /** The review state of a structure in the current revision (`automatic` when unknown). */
  state(name) { return this.record?.review?.[name]?.state || 'automatic'; }

  /** Whether the current revision has a parent (undo) or was left by an undo (redo). */
  canUndo() { return this.record !== null && this.record.parent !== null; }

  canRedo() { return this.events.some((e) => e.event === 'undo' && e.revision === this.current); }

  /** Undo or redo on the current revision: `{ok, status, data}` of the API. */
  move(kind) { return postJSON(`/api/jobs/${this.jobId}/revisions/${kind}`, { base: this.current }); }

  /** Badge text: "Revision 3 · by Dr Li (Surgeon)"; revision 0 is the automatic segmentation (its record's author
   * is only whoever first opened the revisions). */
  badge() {
    if (!this.record) return '';
    if (this.record.parent === null) return t('case_rev.badge_original', { n: this.current });
    return t('case_rev.badge', { n: this.current, who: actorName(this.record.author) });
  }
}
