// Surgeon's case page: loads a finished job's outputs through the service API and wires the viewers' controls.
// A job whose models can be shown before its exports are written (state "viewable") is shown from viewable.json with
// the "exports still being written" banner and no approval/export controls; the page follows the job and loads again
// (keeping the screen's state) once it is done, or says by name that writing the files failed (REQ-FUNC-1891).
import { el, getJSON, onLanguageSwitch, t } from './common.js';
import { FINAL_STATES, JobTracker } from './progress.js';
import { ModelViewer } from './viewer3d.js';
import { SliceViewer, windowPresets } from './slices.js';
import { RevisionView } from './revisions.js';
import { showStates, wireReview } from './review_panel.js';
import { wireEditTools } from './edit_panel.js';
import { wireLesionPanel } from './lesion_panel.js';
import { wireCaseReport } from './case_report.js';

const root = document.getElementById('case-viewer');
const jobId = Number(root.dataset.jobId);
const canReview = root.dataset.canReview === '1';
const flag = (name) => root.dataset[name] === '1';
const fileUrl = (p) => `/api/jobs/${jobId}/files/${p.split('/').map(encodeURIComponent).join('/')}`;
const PALETTE = [
  ['colour.red', '#e6194b'], ['colour.green', '#3cb44b'], ['colour.yellow', '#ffe119'], ['colour.blue', '#4363d8'],
  ['colour.orange', '#f58231'], ['colour.purple', '#911eb4'], ['colour.cyan', '#42d4f4'], ['colour.white', '#f2f2f2'],
];
const msg = document.getElementById('viewer-msg');
const readout = document.getElementById('measure-readout');
let selected = null;
let slices = null;
let study = null;
const meta = new Map();  // structure name -> manifest entry
// Structure names in the page's language, from appliance.core.terminology (the same table the report uses).
const TERMS = JSON.parse(document.getElementById('structure-terms').textContent);
const MARGIN_RE = new RegExp(TERMS.margin.regex);
const STATE_KEY = `case-state-${jobId}`;  // the screen's state kept across a language switch (sessionStorage)
// Each time this screen showed the models, across its reloads (sessionStorage; read by the browser tests and the
// first-frame benchmark): the job's state then (e.g. viewable, then done) and what the screen said beside them.
const SHOWN_KEY = `case-shown-${jobId}`;
const pending = document.getElementById('exports-pending');

function say(text, kind = 'bad') {
  msg.textContent = text;
  msg.className = `message ${kind}`;
  msg.classList.toggle('hidden', !text);
}

const viewer = new ModelViewer(document.getElementById('canvas3d'), {
  onSelect: (name) => { if (name) select(name); },
  onMeasure: (mm) => {
    if (mm === null) readout.textContent = '';
    else if (mm === undefined) readout.textContent = t('measure.second_point');
    else readout.textContent = t('measure.result', { mm: mm.toFixed(1) });
    readout.dataset.mm = typeof mm === 'number' ? mm.toFixed(2) : '';
  },
});
window.viewer = viewer;  // for the browser tests and the first-frame benchmark
// The job's current revision (only where the service runs the review routes; the demo shows the job's outputs).
const revisions = flag('revisions') ? new RevisionView(jobId, viewer) : null;
window.revisions = revisions;

/** DICOM person name (FAMILY^GIVEN) as shown on screen. */
export function personName(pn) { return (pn || '').split('=')[0].replace(/\^+/g, ' ').trim(); }

/** A margin shell's distance in mm (manifest entry, else its name `<base>_margin_<mm>mm`), or null. */
function marginMm(name, entry) {
  if (entry && typeof entry.margin_mm === 'number') return entry.margin_mm;
  const m = MARGIN_RE.exec(name);
  return m ? Number(m.groups.mm.replace('p', '.')) : null;
}

/** The structure's name in the page's language (terminology table; unknown: the identifier, spaced). */
export function displayName(name) {
  if (name in TERMS.names) return TERMS.names[name];
  const m = MARGIN_RE.exec(name);
  if (m) return TERMS.margin.text.replace('{base}', displayName(m.groups.base)).replace('{mm}', m.groups.mm.replace('p', '.'));
  return name.replace(/_/g, ' ');
}

/** More structures than this (a TotalSegmentator-size scene) are listed by category, each group folded, with
 * show/hide per group; fewer stay one flat list. */
const GROUP_ABOVE = 12;

function categoryOf(name) {
  if (MARGIN_RE.test(name)) return TERMS.margin_category || 'lesion';
  return TERMS.categories[name] || 'other';
}

function structureRow(name) {
  const row = el('div', { class: 'structure', 'data-structure': name });
  const toggle = el('button', { type: 'button', class: 'toggle', 'aria-pressed': String(viewer.isVisible(name)) });
  const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
  swatch.style.background = viewer.colour(name);
  toggle.append(swatch, el('span', { class: 'label' }, displayName(name)));
  toggle.addEventListener('click', () => {
    const on = !viewer.isVisible(name);
    viewer.setVisible(name, on);
    slices?.setMeshVisible(name, on);
    toggle.setAttribute('aria-pressed', String(on));
    syncGroups();
  });
  const adjust = el('button', { type: 'button', class: 'adjust', 'aria-label': t('viewer.adjust_named', { name: displayName(name) }) }, t('viewer.adjust'));
  adjust.addEventListener('click', () => select(name));
  row.append(toggle, adjust);
  return row;
}

/** A group's show/hide button is pressed while any of its structures is visible. */
function syncGroups() {
  for (const group of document.querySelectorAll('#structures .structure-group')) {
    const names = [...group.querySelectorAll('.structure')].map((r) => r.dataset.structure);
    group.querySelector('.group-toggle').setAttribute('aria-pressed', String(names.some((n) => viewer.isVisible(n))));
  }
}

function structureGroup(category, names) {
  const group = el('section', { class: 'structure-group', 'data-category': category });
  const label = t(`category.${category}`);
  const toggle = el('button', {
    type: 'button', class: 'group-toggle', 'aria-pressed': 'true',
    'aria-label': t('viewer.group_toggle', { category: label, count: names.length }),
  }, `${label} · ${names.length}`);
  const rows = el('div', { class: 'group-rows col hidden', id: `group-${category}` });
  const fold = el('button', {
    type: 'button', class: 'group-fold', 'aria-expanded': 'false', 'aria-controls': rows.id,
    'aria-label': t('viewer.group_expand_named', { category: label }),
  }, t('viewer.group_expand'));
  toggle.addEventListener('click', () => {
    const on = toggle.getAttribute('aria-pressed') !== 'true';
    for (const name of names) {
      viewer.setVisible(name, on);
      slices?.setMeshVisible(name, on);
    }
    for (const b of rows.querySelectorAll('.structure .toggle')) b.setAttribute('aria-pressed', String(on));
    toggle.setAttribute('aria-pressed', String(on));
  });
  fold.addEventListener('click', () => {
    const open = fold.getAttribute('aria-expanded') !== 'true';
    fold.setAttribute('aria-expanded', String(open));
    rows.classList.toggle('hidden', !open);
  });
  for (const name of names) rows.append(structureRow(name));
  const head = el('div', { class: 'group-head' });
  head.append(toggle, fold);
  group.append(head, rows);
  return group;
}

function buildList(names) {
  const list = document.getElementById('structures');
  list.replaceChildren();
  if (names.length <= GROUP_ABOVE) {
    for (const name of names) list.append(structureRow(name));
    return;
  }
  buildGroups(list, names);
  syncGroups();
}

function buildGroups(list, names) {
  const byCategory = new Map();
  for (const name of names) {
    const category = categoryOf(name);
    if (!byCategory.has(category)) byCategory.set(category, []);
    byCategory.get(category).push(name);
  }
  const order = TERMS.category_order || [];
  const categories = [...byCategory.keys()].sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  for (const category of categories) list.append(structureGroup(category, byCategory.get(category)));
}

function select(name) {
  selected = name;
  document.getElementById('editor').classList.remove('hidden');
  document.getElementById('editor-title').textContent = displayName(name);
  document.getElementById('opacity').value = String(Math.round(viewer.opacity(name) * 100));
  for (const b of document.querySelectorAll('#swatches button')) b.setAttribute('aria-pressed', String(b.dataset.colour === viewer.colour(name)));
  const note = document.getElementById('review-note');
  if (note) note.value = '';
  document.getElementById('review-msg')?.classList.add('hidden');
}

function setOpacity(pct) {
  if (!selected) return;
  const v = Math.max(0, Math.min(100, pct));
  document.getElementById('opacity').value = String(v);
  viewer.setOpacity(selected, v / 100);
}

function buildEditor() {
  const box = document.getElementById('swatches');
  for (const [key, hex] of PALETTE) {
    const b = el('button', { type: 'button', 'data-colour': hex, 'aria-label': t(key), 'aria-pressed': 'false' });
    b.style.background = hex;
    b.addEventListener('click', () => {
      if (!selected) return;
      viewer.setColour(selected, hex);
      slices?.setMeshColour(selected, hex);
      document.querySelector(`.structure[data-structure="${CSS.escape(selected)}"] .swatch`).style.background = hex;
      for (const o of box.querySelectorAll('button')) o.setAttribute('aria-pressed', String(o === b));
    });
    box.append(b);
  }
  document.getElementById('opacity').addEventListener('input', (e) => setOpacity(Number(e.target.value)));
  document.getElementById('opacity-down').addEventListener('click', () => setOpacity(Number(document.getElementById('opacity').value) - 25));
  document.getElementById('opacity-up').addEventListener('click', () => setOpacity(Number(document.getElementById('opacity').value) + 25));
  if (canReview) {
    wireReview({ jobId, revisions, selected: () => selected, study: () => study, displayName, afterDecision: reloadRevision });
  }
}

function wireToolbar() {
  for (const b of document.querySelectorAll('[data-view]')) b.addEventListener('click', () => viewer.setView(b.dataset.view));
  for (const b of document.querySelectorAll('[data-rotate]')) b.addEventListener('click', () => viewer.rotate(b.dataset.rotate));
  for (const b of document.querySelectorAll('[data-zoom]')) b.addEventListener('click', () => viewer.zoom(b.dataset.zoom));
  const clipBtn = document.getElementById('clip-btn');
  const clipCtl = document.querySelectorAll('.clip-axis, .clip-ctl');
  clipBtn.addEventListener('click', () => {
    const on = clipBtn.getAttribute('aria-pressed') !== 'true';
    clipBtn.setAttribute('aria-pressed', String(on));
    for (const c of clipCtl) c.classList.toggle('hidden', !on);
    viewer.setClip({ enabled: on, position: Number(document.getElementById('clip-pos').value) / 1000 });
  });
  for (const b of document.querySelectorAll('.clip-axis')) {
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('.clip-axis')) o.setAttribute('aria-pressed', String(o === b));
      viewer.setClip({ axis: b.dataset.axis });
    });
  }
  const flip = document.getElementById('clip-flip');
  flip.addEventListener('click', () => {
    const on = flip.getAttribute('aria-pressed') !== 'true';
    flip.setAttribute('aria-pressed', String(on));
    viewer.setClip({ flipped: on });
  });
  document.getElementById('clip-pos').addEventListener('input', (e) => viewer.setClip({ position: Number(e.target.value) / 1000 }));
  const measureBtn = document.getElementById('measure-btn');
  measureBtn.addEventListener('click', () => {
    const on = measureBtn.getAttribute('aria-pressed') !== 'true';
    measureBtn.setAttribute('aria-pressed', String(on));
    viewer.setMeasureMode(on);
    readout.textContent = on ? t('measure.first_point') : '';
  });
  document.getElementById('measure-clear').addEventListener('click', () => viewer.clearMeasurement());
  document.getElementById('mode-3d').addEventListener('click', () => setMode('3d'));
  document.getElementById('mode-2d').addEventListener('click', () => setMode('2d'));
  for (const b of document.querySelectorAll('.slice-axis')) {
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('.slice-axis')) o.setAttribute('aria-pressed', String(o === b));
      slices?.setAxis(b.dataset.axis);
      syncSlider();
    });
  }
  document.getElementById('slice-pos').addEventListener('input', (e) => { slices?.setPosition(Number(e.target.value) / 1000); syncSlider(); });
  document.getElementById('slice-prev').addEventListener('click', () => { slices?.step(-1); syncSlider(); });
  document.getElementById('slice-next').addEventListener('click', () => { slices?.step(1); syncSlider(); });
  for (const b of document.querySelectorAll('.window-preset')) b.addEventListener('click', () => setWindow(b.dataset.window));
}

function syncSlider() {
  if (!slices?.ready) return;
  syncReadout();
  showValue(slices.crosshairValue());
}

function setWindow(name) {
  if (!slices?.ready) return;
  slices.setWindow(name);
  for (const b of document.querySelectorAll('.window-preset')) b.setAttribute('aria-pressed', String(b.dataset.window === name));
}

/** The image value under the crosshair (a tap moves it there): HU for CT, with the position (RAS mm). */
function showValue({ value, mm }) {
  const out = document.getElementById('slice-value');
  const isCt = String(manifest.input?.modality || '').toUpperCase() === 'CT';
  const shown = isCt ? Math.round(value).toString() : (Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3));
  out.textContent = t(isCt ? 'slice.value_hu' : 'slice.value', { value: shown });
  out.dataset.value = String(value);
  out.dataset.mm = mm.map((v) => v.toFixed(1)).join(',');
}

let manifest = {};
async function setMode(mode) {
  const is3d = mode === '3d';
  document.getElementById('mode-3d').setAttribute('aria-pressed', String(is3d));
  document.getElementById('mode-2d').setAttribute('aria-pressed', String(!is3d));
  for (const id of ['wrap3d', 'toolbar3d']) document.getElementById(id).classList.toggle('hidden', !is3d);
  for (const id of ['wrap2d', 'toolbar2d']) document.getElementById(id).classList.toggle('hidden', is3d);
  if (is3d) { viewer.resize(); return; }
  if (!slices) {
    const image = (manifest.files || {}).image;  // the one documented key (appliance.export.image.IMAGE_KEY)
    if (typeof image !== 'string') { say(t('slice.no_image')); return; }
    await loadScript(root.dataset.niivue);  // NiiVue is only fetched when the slices are first shown
    slices = new SliceViewer(document.getElementById('canvas2d'), document.getElementById('overlay2d'),
      { onValue: (v) => { showValue(v); syncReadout(); } });
    window.slices = slices;
    try {
      const modality = manifest.input?.modality || 'OT';
      await slices.load(fileUrl(image), viewer.meshData(), { modality });
      const presets = windowPresets(modality);
      for (const b of document.querySelectorAll('.window-preset')) b.classList.toggle('hidden', !presets.includes(b.dataset.window));
      setWindow(presets[0]);
      syncSlider();
    } catch (err) {
      say(t('viewer.slices_failed'));
      console.info(err);
    }
  }
}

function syncReadout() {
  if (!slices?.ready) return;
  document.getElementById('slice-pos').value = String(Math.round(slices.position() * 1000));
  document.getElementById('slice-readout').textContent = t('slice.readout', { mm: slices.positionMm().toFixed(1) });
}

function loadScript(src) {
  if (window.niivue) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const s = el('script', { src });
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

// ------------------------------------------------------------------ the current revision, lesions, edits
const onReload = [];  // panels that follow the current revision (e.g. the next free lesion name)

/** Show the job's current revision: swap changed meshes, rebuild the list, badge, review states, undo/redo. */
async function reloadRevision() {
  if (!revisions) return;
  const had = new Set(viewer.structures.keys());
  try {
    const changed = await revisions.refresh();
    if (changed.length) {
      for (const s of revisions.structures()) {
        if (!had.has(s.name) && viewer.structures.has(s.name) && (s.category === 'margin' || MARGIN_RE.test(s.name))) viewer.setOpacity(s.name, 0.35);
      }
      buildList([...viewer.structures.keys()]);
      slices?.setMeshes(viewer.meshData());
      if (selected && !viewer.structures.has(selected)) { selected = null; document.getElementById('editor').classList.add('hidden'); }
    }
    showStates(revisions);
    const badge = document.getElementById('revision-badge');
    badge.textContent = revisions.badge();
    badge.dataset.revision = String(revisions.current);
    document.getElementById('undo-btn').disabled = !revisions.canUndo();
    document.getElementById('redo-btn').disabled = !revisions.canRedo();
    for (const f of onReload) f();
    root.dataset.revision = String(revisions.current);
  } catch (err) {
    say(t('case_rev.failed'));
    console.info(err);
  }
}

function wireRevisions() {
  if (!revisions) return;
  for (const kind of ['undo', 'redo']) {
    document.getElementById(`${kind}-btn`).addEventListener('click', async () => {
      const r = await revisions.move(kind);
      await reloadRevision();
      say(r.ok ? '' : t(r.status === 409 ? 'edit.stale' : 'case_rev.move_refused', { n: revisions.current, why: r.data.error || r.status }));
    });
  }
  const ctx = {
    jobId, viewer, revisions, onReload, displayName, select,
    selected: () => selected,
    slices: () => slices,
    crosshairLps: () => (slices?.ready && pressed('mode-2d') ? slices.crosshairLps() : null),
    reload: reloadRevision,
  };
  if (flag('canEdit')) wireEditTools(ctx);
  if (flag('canMark')) wireLesionPanel(ctx);
  wireCaseReport(ctx);  // the report of the case as exported (lesions, review), once it can enter review
}

/** Keep what the surgeon set up and load the page again: a job that became done gets its full controls. */
function reloadKeepingState() {
  sessionStorage.setItem(STATE_KEY, JSON.stringify(screenState()));
  window.location.reload();
}

/** Notes that the models are on screen: the job's state, the structures listed, which banner and report link show. */
function recordShown(state) {
  let shown = [];
  try { shown = JSON.parse(sessionStorage.getItem(SHOWN_KEY) || '[]'); } catch { shown = []; }
  const visible = (id) => { const node = document.getElementById(id); return !!node && !node.classList.contains('hidden'); };
  shown.push({
    state, at: Date.now(), structures: viewer.structures.size, pending: visible('exports-pending'),
    pendingText: visible('exports-pending') ? pending.textContent.trim() : '', report: visible('report-link'),
  });
  sessionStorage.setItem(SHOWN_KEY, JSON.stringify(shown));
}

let loading = null;  // the models' load, started once
/** Follows a job that is not done: loads the models when they can be shown, reloads when done, names a failure. */
function follow(first) {
  const onJob = (job) => {
    root.dataset.jobState = job.state;
    if (job.state === 'viewable' && !loading) {
      say('');
      loading = showCase(job);
    } else if (job.state === 'done') {
      if (loading) loading.then(reloadKeepingState); else reloadKeepingState();
    } else if (job.state === 'failed' || job.state === 'refused') {
      pending.classList.add('hidden');
      root.dataset.exports = 'failed';
      say(t(loading ? 'viewer.exports_failed' : 'viewer.not_done', { error: job.error || t('job.no_reason'), state: t(`state.${job.state}`) }));
    } else if (!loading) {
      say(t('viewer.not_done', { state: t(`state.${job.state}`) }), 'warn');
    }
  };
  onJob(first);
  if (!FINAL_STATES.has(first.state)) new JobTracker(jobId, onJob).start();
}

async function start() {
  buildEditor();
  wireToolbar();
  wireRevisions();
  let job;
  try {
    job = await getJSON(`/api/jobs/${jobId}`, { background: true });
  } catch {
    say(t('viewer.job_unavailable'));
    return;
  }
  if (job.state === 'done' && !flag('jobDone')) { reloadKeepingState(); return; }  // done since the page was made
  if (job.state !== 'done') { follow(job); return; }
  await showCase(job);
}

/** Shows the job's models: from manifest.json when done, from viewable.json while its exports are written. */
async function showCase(job) {
  const early = job.state !== 'done';
  try { study = await getJSON(`/api/studies/${encodeURIComponent(job.study_instance_uid)}`, { background: true }); } catch { study = null; }
  const s = study && (study.study || study);
  if (s) {
    study = s;
    const title = document.getElementById('case-title');
    const text = [personName(s.patient_name), s.description].filter(Boolean).join(' · ');
    if (text) { title.textContent = text; delete title.dataset.i18n; }  // patient data, not a label
  }
  try { manifest = await getJSON(fileUrl(early ? 'viewable.json' : 'manifest.json'), { background: true }); } catch { manifest = {}; }
  for (const entry of manifest.structures || []) meta.set(entry.name, entry);
  const files = manifest.files || {};
  const failed = () => root.dataset.exports === 'failed';  // the job failed while this screen was loading
  if (early) {  // never shown as done: no report, no approval, no export until every file is written
    if (!failed()) {
      pending.classList.remove('hidden');
      root.dataset.exports = 'pending';
    }
  } else {
    const report = document.getElementById('report-link');
    report.href = fileUrl(files.report || 'report.html');
    report.classList.remove('hidden');
    root.dataset.exports = 'done';
  }
  try {
    const names = await viewer.load(fileUrl(files.glb || files.scene || 'scene.glb'));
    buildList(names);
    for (const name of names) {
      const mm = marginMm(name, meta.get(name));
      if (mm !== null && viewer.opacity(name) >= 1) viewer.setOpacity(name, 0.35);
    }
    recordShown(job.state);
  } catch (err) {
    if (!failed()) say(t('viewer.model_failed'));  // (a job done meanwhile loads again: its tracker reloads the page)
    console.info(err);
  }
  await reloadRevision();
  const wanted = new URLSearchParams(window.location.search).get('structure');  // from the engineer's worklist
  if (wanted && viewer.structures.has(wanted)) select(wanted);
  const saved = takeState();
  if (saved) {
    try { await restoreState(saved); } catch (err) { console.info('state not restored', err); }
  }
  root.dataset.loaded = '1';
}

// ------------------------------------------------------------------ the screen's state across a language switch
function pressed(id) { return document.getElementById(id).getAttribute('aria-pressed') === 'true'; }

/** Everything the surgeon set up on this screen: view, slice, window, structures, clip, measurement. */
function screenState() {
  const structures = {};
  for (const name of viewer.structures.keys()) {
    structures[name] = { visible: viewer.isVisible(name), opacity: viewer.opacity(name), colour: viewer.colour(name) };
  }
  return {
    mode: pressed('mode-2d') ? '2d' : '3d',
    camera: viewer.cameraState(),
    structures,
    clip: { ...viewer.clip },
    measuring: pressed('measure-btn'),
    measurement: viewer.measurement(),
    selected,
    slices: slices?.ready ? slices.state() : null,
  };
}

function takeState() {
  const text = sessionStorage.getItem(STATE_KEY);
  sessionStorage.removeItem(STATE_KEY);
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

async function restoreState(state) {
  for (const [name, s] of Object.entries(state.structures || {})) {
    if (!viewer.structures.has(name)) continue;
    viewer.setVisible(name, s.visible);
    viewer.setOpacity(name, s.opacity);
    viewer.setColour(name, s.colour);
    const row = document.querySelector(`.structure[data-structure="${CSS.escape(name)}"]`);
    row.querySelector('.toggle').setAttribute('aria-pressed', String(s.visible));
    row.querySelector('.swatch').style.background = s.colour;
  }
  syncGroups();
  if (state.camera) viewer.setCameraState(state.camera);
  if (state.clip) {
    const c = state.clip;
    viewer.setClip(c);
    document.getElementById('clip-btn').setAttribute('aria-pressed', String(c.enabled));
    for (const node of document.querySelectorAll('.clip-axis, .clip-ctl')) node.classList.toggle('hidden', !c.enabled);
    for (const b of document.querySelectorAll('.clip-axis')) b.setAttribute('aria-pressed', String(b.dataset.axis === c.axis));
    document.getElementById('clip-flip').setAttribute('aria-pressed', String(c.flipped));
    document.getElementById('clip-pos').value = String(Math.round(c.position * 1000));
  }
  if (state.measuring) {
    document.getElementById('measure-btn').setAttribute('aria-pressed', 'true');
    viewer.setMeasureMode(true);
    readout.textContent = t('measure.first_point');
    if (state.measurement?.length) viewer.setMeasurement(state.measurement);
  }
  if (state.selected && viewer.structures.has(state.selected)) select(state.selected);
  if (state.mode === '2d') {
    await setMode('2d');
    if (slices?.ready && state.slices) {
      slices.restore(state.slices);
      for (const b of document.querySelectorAll('.slice-axis')) b.setAttribute('aria-pressed', String(b.dataset.axis === slices.axis));
      if (state.slices.window) setWindow(state.slices.window);
      syncSlider();
    }
  }
}

onLanguageSwitch(() => sessionStorage.setItem(STATE_KEY, JSON.stringify(screenState())));

start();
