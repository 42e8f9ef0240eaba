// "Find on PACS" in the nurse's inbox: search a configured PACS (/api/pacs), fetch a study to the box, progress.
import { getJSON, postJSON, t } from './common.js';

const panel = document.getElementById('pacs-panel');
const form = document.getElementById('pacs-form');
const nodeSelect = document.getElementById('pacs-node');
const results = document.getElementById('pacs-results');
const statusBox = document.getElementById('pacs-status');
const tpl = document.getElementById('pacs-study-tpl');
const CRITERIA = ['patient_id', 'accession', 'name', 'date_from', 'date_to'];

function say(text, kind = '') {
  statusBox.textContent = text;
  statusBox.className = `message ${kind}`.trim();
  statusBox.classList.toggle('hidden', !text);
}

function personName(name) {
  return (name || '').split('=')[0].replace(/\^+/g, ' ').trim();
}

function showRetrieval(item, r) {
  const bar = item.querySelector('.progress');
  const line = item.querySelector('.fetch-status');
  const subs = r.suboperations || {};
  const done = (subs.completed || 0) + (subs.failed || 0) + (subs.warning || 0);
  const pct = Math.round(100 * (Number(r.progress) || 0));
  bar.classList.remove('hidden');
  bar.setAttribute('aria-valuenow', String(pct));
  bar.firstElementChild.style.width = `${pct}%`;
  line.classList.remove('hidden', 'ok', 'bad');
  if (r.state === 'running') {
    line.textContent = t('pacs.retrieving', { done, total: done + (subs.remaining || 0) });
  } else if (r.state === 'done') {
    line.textContent = t('pacs.retrieved', { n: r.instances_on_box });
    line.classList.add('ok');
    document.getElementById('refresh-btn')?.click();  // the study is now in the inbox
  } else {
    line.textContent = t('pacs.retrieve_failed', { why: r.message });
    line.classList.add('bad');
  }
}

async function follow(item, first) {
  let r = first;
  showRetrieval(item, r);
  while (r.state === 'running') {
    await new Promise((ok) => setTimeout(ok, 500));
    try {
      r = await getJSON(`/api/pacs/retrievals/${first.id}`, { background: true });
    } catch (err) {
      continue;  // a missed poll is retried; the retrieval goes on in the service
    }
    showRetrieval(item, r);
  }
  item.querySelector('.retrieve').disabled = r.state === 'done';
}

function renderStudy(node, study) {
  const item = tpl.content.firstElementChild.cloneNode(true);
  item.dataset.studyUid = study.study_instance_uid;
  item.querySelector('.who').textContent = `${personName(study.patient_name)} · ${study.patient_id}`;
  const parts = [study.study_date, study.description, (study.modalities || []).join('/')];
  if (study.n_instances != null) parts.push(t('inbox.images', { n: study.n_instances }));
  item.querySelector('.what').textContent = parts.filter(Boolean).join(' · ');
  const button = item.querySelector('.retrieve');
  button.addEventListener('click', async () => {
    button.disabled = true;
    const r = await postJSON(`/api/pacs/${encodeURIComponent(node)}/retrieve`, {
      study_instance_uid: study.study_instance_uid,
    });
    if (!r.ok) {
      button.disabled = false;
      showRetrieval(item, { state: 'failed', message: r.data.error || `HTTP ${r.status}`, progress: 0 });
      return;
    }
    follow(item, r.data);
  });
  return item;
}

async function search(ev) {
  ev.preventDefault();
  const data = new FormData(form);
  const query = new URLSearchParams();
  for (const key of CRITERIA) {
    const value = String(data.get(key) || '').trim();
    if (value) query.set(key, value);
  }
  results.replaceChildren();
  if (![...query.keys()].length) {
    say(t('pacs.need_criterion'), 'warn');
    return;
  }
  const node = nodeSelect.value;
  say(t('pacs.searching'));
  const res = await fetch(`/api/pacs/${encodeURIComponent(node)}/studies?${query}`, { cache: 'no-store' });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    say(t('pacs.failed', { why: body.error || `HTTP ${res.status}` }), 'bad');
    return;
  }
  if (!body.studies.length) {
    say(t('pacs.none_found'));
    return;
  }
  say(body.truncated ? t('pacs.truncated', { n: body.studies.length }) : '', body.truncated ? 'warn' : '');
  results.replaceChildren(...body.studies.map((s) => renderStudy(node, s)));
}

async function start() {
  let nodes = [];
  try {
    nodes = (await getJSON('/api/pacs', { background: true })).nodes;
  } catch (err) {
    return;  // no PACS API (demo) or no access: the panel stays hidden
  }
  if (!nodes.length) return;
  for (const n of nodes) {
    const opt = document.createElement('option');
    opt.value = n.name;
    opt.textContent = n.name;
    nodeSelect.append(opt);
  }
  form.addEventListener('submit', search);
  panel.classList.remove('hidden');
}

start();
