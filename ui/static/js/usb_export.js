// "Export to USB" on a finished case: chosen structures as STL/3MF/AMF and the PDF report, verified on the stick.
import { getJSON, postJSON, t } from './common.js';

const panel = document.getElementById('usb-export');
const jobId = panel ? panel.dataset.jobId : '';
const mediumSelect = document.getElementById('usb-medium');
const structuresBox = document.getElementById('usb-structures');
const statusBox = document.getElementById('usb-status');
const go = document.getElementById('usb-go');

function say(text, kind = '') {
  statusBox.textContent = text;
  statusBox.className = `message ${kind}`.trim();
  statusBox.classList.toggle('hidden', !text);
}

async function loadMedia() {
  let media = [];
  try {
    media = (await getJSON('/api/usb/media', { background: true })).media;
  } catch (err) {
    media = [];
  }
  mediumSelect.replaceChildren(...media.filter((m) => m.writable).map((m) => {
    const opt = document.createElement('option');
    opt.value = m.name;
    opt.textContent = `${m.name} (${(m.free_bytes / 1e9).toFixed(1)} GB)`;
    return opt;
  }));
  go.disabled = !mediumSelect.options.length;
  if (!mediumSelect.options.length) say(t('usb.no_medium'), 'warn');
  else if (statusBox.classList.contains('warn')) say('');
}

async function loadStructures() {
  const manifest = await getJSON(`/api/jobs/${jobId}/files/manifest.json`, { background: true });
  for (const s of manifest.structures || []) {
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.name = 'structure';
    box.value = s.name;
    box.checked = true;
    label.append(box, ` ${s.name.replace(/_/g, ' ')}`);
    structuresBox.append(label);
  }
}

function checked(name) {
  return [...panel.querySelectorAll(`input[name="${name}"]:checked`)].map((el) => el.value);
}

async function exportNow() {
  const structures = checked('structure');
  const formats = checked('format');
  if (!structures.length || !formats.length) {
    say(t('usb.choose_structure'), 'warn');
    return;
  }
  go.disabled = true;
  say(t('usb.writing'), 'warn');
  const r = await postJSON(`/api/jobs/${jobId}/usb-export`, {
    medium: mediumSelect.value, structures, formats,
  });
  go.disabled = false;
  if (r.ok && r.data.safe_to_remove) {
    say(t('usb.done', { n: r.data.files.length, folder: r.data.folder }), 'ok');
  } else {
    say(t('usb.failed', { why: r.data.error || `HTTP ${r.status}` }), 'bad');
  }
}

async function start() {
  if (!panel) return;
  try {
    await loadStructures();
  } catch (err) {
    return;  // not a finished case: no export
  }
  panel.classList.remove('hidden');
  document.getElementById('usb-refresh').addEventListener('click', loadMedia);
  go.addEventListener('click', exportNow);
  await loadMedia();
}

start();
