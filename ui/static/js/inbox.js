// Nurse inbox: studies with series and findings in plain words, reconstruct with a preset, job progress.
import { el, getJSON, postJSON, t, tOr } from './common.js';
import { FINAL_STATES, JobTracker } from './progress.js';

const list = document.getElementById('studies');
const tpl = document.getElementById('study-tpl');
const errorBox = document.getElementById('inbox-error');
const trackers = new Map();  // job id -> JobTracker
const cards = new Map();     // study uid -> card element

// The service's sentence is the most specific; other languages get the catalogue's sentence for the code.
const LANG = document.documentElement.lang;
function findingText(f) {
  const values = Object.fromEntries(Object.entries(f.details || {}).map(([k, v]) => [k, v ?? '—']));
  return LANG === 'en' ? (f.message || tOr(`finding.${f.code}`, f.code, values)) : tOr(`finding.${f.code}`, f.message || f.code, values);
}

/** A finding as a list item: the sentence, then the requirement it is checked against (shown before the model is made). */
function findingItem(f) {
  const li = el('li', { class: f.severity || 'info', 'data-code': f.code || '' }, findingText(f));
  if (f.requirement) li.append(' ', el('span', { class: 'muted requirement' }, t('inbox.requirement', { id: f.requirement })));
  return li;
}

// The picker's presets come from the service (GET /api/presets: the engines' registry), never from a list here.
let presetsPromise = null;
function loadPresets() {
  if (!presetsPromise) presetsPromise = getJSON('/api/presets', { background: true }).catch((err) => { presetsPromise = null; throw err; });
  return presetsPromise;
}

/** A preset's label: the catalogue's words for it (`preset.ct_default` for `ct-default`), else its own name. */
function presetLabel(name) {
  return tOr(`preset.${name.replace(/[^A-Za-z0-9]+/g, '_')}`, name);
}

async function fillPicker(select, button) {
  try {
    const data = await loadPresets();
    select.replaceChildren(...data.presets.map((p) => el('option', { value: p.name }, presetLabel(p.name))));
    select.value = data.default;
  } catch (err) {
    button.disabled = true;
    showError(t('inbox.api_unavailable'), 'api');
    console.info(err.message);
  }
}

function stageText(stage) {
  return stage ? tOr(`stage.${stage}`, stage) : '';
}

function renderJob(card, job) {
  const box = card.querySelector('.job');
  box.classList.remove('hidden');
  box.dataset.jobId = job.id;
  box.dataset.state = job.state;
  const pct = Math.round(100 * Math.max(0, Math.min(1, Number(job.progress) || 0)));
  const shown = job.state === 'done' ? 100 : pct;
  card.querySelector('.job-state').textContent = t(`state.${job.state}`);
  // viewable: the models can be opened while the files for printing, PACS and the report are written (never "done")
  const stage = job.state === 'viewable' ? t('job.exports_pending') : stageText(job.stage);
  card.querySelector('.job-stage').textContent = ['running', 'viewable'].includes(job.state) ? stage : '';
  card.querySelector('.job-pct').textContent = `${shown}%`;
  const bar = card.querySelector('.progress');
  bar.setAttribute('aria-valuenow', String(shown));
  bar.firstElementChild.style.width = `${shown}%`;
  const why = card.querySelector('.job-why');
  if (job.state === 'refused' || job.state === 'failed') {
    const reasons = (job.findings || []).filter((f) => ['refusal', 'error'].includes(f.severity)).map(findingText);
    if (job.error) reasons.push(job.error);
    why.textContent = `${t(job.state === 'refused' ? 'job.refused_because' : 'job.failed_because')} ${reasons.join(' ') || t('job.no_reason')}`;
    why.classList.remove('hidden');
  } else {
    why.classList.add('hidden');
  }
  const open = card.querySelector('.open-case');
  open.classList.toggle('hidden', job.state !== 'done' && job.state !== 'viewable');
  open.href = `/cases/${job.id}`;
  card.querySelector('.reconstruct').disabled = !FINAL_STATES.has(job.state);
}

function follow(card, job) {
  renderJob(card, job);
  if (FINAL_STATES.has(job.state) || trackers.has(job.id)) return;
  trackers.set(job.id, new JobTracker(job.id, (j) => renderJob(card, j)).start());
}

function renderStudy(study) {
  const card = tpl.content.firstElementChild.cloneNode(true);
  card.dataset.studyUid = study.study_instance_uid;
  card.querySelector('.patient').textContent = (study.patient_name || '').split('=')[0].replace(/\^+/g, ' ').trim() || t('inbox.unnamed');
  const meta = [study.study_date, study.description, tOr(`source.${study.source}`, study.source || '')];
  card.querySelector('.study-meta').textContent = meta.filter(Boolean).join(' · ');
  const seriesList = card.querySelector('.series-list');
  const thumbs = card.querySelector('.thumbs');
  for (const s of study.series || []) {
    const n = s.n_instances ?? s.instances ?? '';
    seriesList.append(el('li', { class: 'series' }, `${s.modality || ''} ${s.description || ''} — ${t('inbox.images', { n })}`));
    if (s.thumbnail) {  // the series' middle image from the API (pixel data only, no patient text)
      const img = el('img', { class: 'thumb', src: s.thumbnail, alt: s.description || s.modality || '', 'data-series-uid': s.series_instance_uid });
      img.addEventListener('error', () => img.remove());
      thumbs.append(img);
    }
  }
  const findings = card.querySelector('.findings');
  for (const f of study.findings || []) findings.append(findingItem(f));
  fillPicker(card.querySelector('.preset'), card.querySelector('.reconstruct'));
  const button = card.querySelector('.reconstruct');
  button.addEventListener('click', async () => {  // (the event's currentTarget is gone after the first await)
    button.disabled = true;
    showError('');
    const preset = card.querySelector('.preset').value;
    const r = await postJSON(`/api/studies/${encodeURIComponent(study.study_instance_uid)}/reconstruct`, { preset, actor: document.body.dataset.role });
    const job = r.data.job || r.data;
    if (r.ok && job && job.id !== undefined) follow(card, job);
    else {
      button.disabled = false;
      showError(r.data.error || t('inbox.reconstruct_failed'));
      if (job && job.state === 'refused') renderJob(card, job);
    }
  });
  return card;
}

// What the error box says: a refusal of the service stays until the next tap; "not answering" until it answers.
let errorKind = '';
function showError(text, kind = 'refusal') {
  errorKind = text ? kind : '';
  errorBox.textContent = text;
  errorBox.classList.toggle('hidden', !text);
}

async function showImportStatus() {
  const box = document.getElementById('import-status');
  const alarms = document.getElementById('alarms');
  try {
    const health = await getJSON('/api/health', { background: true });
    const imp = health.import || health.usb;
    if (imp) {
      const state = imp.state || (imp.enabled === false ? 'off' : 'idle');
      const parts = [t('inbox.import_status', { state: tOr(`import.${state}`, state) })];
      if (imp.imported !== undefined) parts.push(t('inbox.import_counts', { imported: imp.imported, skipped: imp.skipped ?? 0 }));
      box.textContent = parts.join(' ');
    }
    box.classList.toggle('hidden', !imp);
    alarms.replaceChildren(...(health.alarms || []).map((a) => el('li', { class: 'refusal' }, tOr(`alarm.${a.code}`, a.message || a.code))));
  } catch { box.classList.add('hidden'); }
}

export async function load() {
  try {
    const [studiesRes, jobsRes] = await Promise.all([getJSON('/api/studies', { background: true }), getJSON('/api/jobs', { background: true })]);
    const studies = Array.isArray(studiesRes) ? studiesRes : studiesRes.studies || [];
    const jobs = jobsRes.jobs || [];
    if (errorKind === 'api') showError('');
    document.getElementById('inbox-empty').classList.toggle('hidden', studies.length > 0);
    for (const study of studies) {
      let card = cards.get(study.study_instance_uid);
      if (!card) {
        card = renderStudy(study);
        cards.set(study.study_instance_uid, card);
        list.append(card);
      }
      const mine = jobs.filter((j) => j.study_instance_uid === study.study_instance_uid).sort((a, b) => b.id - a.id);
      if (mine.length) follow(card, mine[0]);
    }
  } catch (err) {
    showError(t('inbox.api_unavailable'), 'api');
    console.info(err.message);
  }
  showImportStatus();
}

document.getElementById('refresh-btn').addEventListener('click', load);
load();
setInterval(load, 10000);
