// Accounts on the service screen (ui/views/accounts.py): the people who sign in on the kiosk, added, disabled and
// given a new PIN here or with `appliance users`; every change is audited with the service person's name. PINs
// and badges go to the box once and are never shown or sent back.
import { el, getJSON, postJSON, t } from './common.js';

const table = document.querySelector('#accounts-table tbody');
const msg = document.getElementById('accounts-msg');

function say(text, kind) {
  msg.textContent = text;
  msg.className = `message ${kind}`;
}

/** The answer of a change: success text, or the refusal naming the field. */
function report(r, okKey, name) {
  if (r.ok) { say(t(okKey, { name }), 'ok'); return true; }
  say(t('accounts.refused', { why: r.data.error || r.status }), 'bad');
  msg.dataset.field = r.data.field || '';
  return false;
}

function row(a) {
  const tr = el('tr', { 'data-account': a.name, 'data-enabled': String(a.enabled) });
  tr.append(el('td', {}, a.name), el('td', {}, t(`role.${a.role}`)), el('td', {}, a.badge ? t('accounts.yes') : t('accounts.no')),
    el('td', {}, t(a.enabled ? 'accounts.enabled' : 'accounts.disabled')));
  const actions = el('td', { class: 'row' });
  if (a.enabled) {
    const off = el('button', { type: 'button', class: 'account-disable danger' }, t('accounts.disable'));
    off.addEventListener('click', async () => {
      if (report(await postJSON(`/ui/api/accounts/${encodeURIComponent(a.name)}/disable`, {}), 'accounts.disabled_done', a.name)) await load();
    });
    actions.append(off);
  }
  const pin = el('input', { type: 'password', inputmode: 'numeric', maxlength: '12', class: 'account-new-pin', 'aria-label': t('accounts.new_pin_for', { name: a.name }) });
  const reset = el('button', { type: 'button', class: 'account-reset' }, t('accounts.reset_pin'));
  reset.addEventListener('click', async () => {
    const r = await postJSON(`/ui/api/accounts/${encodeURIComponent(a.name)}/reset-pin`, { pin: pin.value });
    pin.value = '';
    if (report(r, 'accounts.pin_done', a.name)) await load();
  });
  actions.append(pin, reset);
  tr.append(actions);
  return tr;
}

async function load() {
  try {
    const data = await getJSON('/ui/api/accounts', { background: true });
    table.replaceChildren(...data.accounts.map(row));
    if (!data.accounts.length) table.append(el('tr', {}, t('accounts.none')));
  } catch {
    say(t('accounts.unavailable'), 'bad');
  }
  document.getElementById('accounts').dataset.loaded = '1';
}

document.getElementById('account-add').addEventListener('submit', async (e) => {
  e.preventDefault();
  const value = (id) => document.getElementById(id).value;
  const body = { name: value('account-name').trim(), role: value('account-role'), pin: value('account-pin') };
  if (value('account-badge')) body.badge = value('account-badge');
  const r = await postJSON('/ui/api/accounts', body);
  document.getElementById('account-pin').value = '';
  document.getElementById('account-badge').value = '';
  if (report(r, 'accounts.added', body.name)) { document.getElementById('account-name').value = ''; await load(); }
});

load();
