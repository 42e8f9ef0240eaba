// Shared by every kiosk page: message catalogue, JSON helpers, idle lock, lock button, language switch.
const catalogueEl = document.getElementById('i18n-data');
export const I18N = catalogueEl ? JSON.parse(catalogueEl.textContent) : {};

/** Translate `key`, filling `{name}` placeholders; an unknown key is shown as itself (and logged once). */
export function t(key, values = {}) {
  let text = I18N[key];
  if (text === undefined) {
    console.warn(`missing message ${key}`);
    text = key;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

/** Text for a key if the catalogue has it, else the fallback (e.g. an English finding sentence). */
export function tOr(key, fallback, values = {}) {
  return key in I18N ? t(key, values) : fallback;
}

export async function getJSON(url, { background = false } = {}) {
  const res = await fetch(url, { headers: background ? { 'X-Background': '1' } : {}, cache: 'no-store' });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

export async function postJSON(url, body) {
  const res = await fetch(url, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body ?? {}),
  });
  let data = {};
  try { data = await res.json(); } catch { data = {}; }
  return { ok: res.ok, status: res.status, data };
}

export function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------ idle lock (hides patient data)
const role = document.body.dataset.role;
const idleSeconds = Number(document.body.dataset.idleLock || 300);
let lastActivity = Date.now();
let lastPing = Date.now();
let locking = false;

async function lockNow(reason) {
  if (locking) return;
  locking = true;
  document.body.classList.add('locked');
  const main = document.getElementById('main');
  if (main) main.replaceChildren();  // patient data leaves the page, not just the view
  const { data } = await postJSON('/auth/lock', { reason });
  window.location.replace(data.redirect || '/login?locked=1');
}

if (role) {
  for (const type of ['pointerdown', 'keydown', 'wheel', 'touchstart']) {
    window.addEventListener(type, () => {
      lastActivity = Date.now();
      if (lastActivity - lastPing > 15000) {
        lastPing = lastActivity;
        postJSON('/auth/activity').then((r) => { if (r.status === 401) lockNow('idle'); });
      }
    }, { capture: true, passive: true });
  }
  setInterval(() => {
    if (Date.now() - lastActivity > idleSeconds * 1000) lockNow('idle');
  }, 500);
  const lockBtn = document.getElementById('lock-btn');
  if (lockBtn) lockBtn.addEventListener('click', () => lockNow('manual'));
}

// A language switch reloads the page; a page registers what it must keep across it (see case.js).
const beforeLanguageSwitch = [];

/** Run `save` just before the page reloads in the other language (keep the screen's state with it). */
export function onLanguageSwitch(save) { beforeLanguageSwitch.push(save); }

const langBtn = document.getElementById('lang-switch');
if (langBtn) {
  langBtn.addEventListener('click', async () => {
    const r = await postJSON('/ui/lang', { lang: langBtn.dataset.targetLang });
    if (!r.ok) return;
    for (const save of beforeLanguageSwitch) {
      try { save(); } catch (err) { console.info('state not kept', err); }
    }
    window.location.reload();
  });
}
