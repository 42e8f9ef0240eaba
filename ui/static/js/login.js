// Login: role buttons and the PIN keypad (no keyboard in the operating room).
import { postJSON, t } from './common.js';

let pin = '';
let role = document.querySelector('.role-btn[aria-pressed="true"]')?.dataset.role || '';
const display = document.getElementById('pin-display');
const msg = document.getElementById('login-msg');

function show(text, kind) {
  msg.textContent = text;
  msg.className = `message ${kind}`;
}

function render() { display.textContent = '•'.repeat(pin.length); }

for (const btn of document.querySelectorAll('.role-btn')) {
  btn.addEventListener('click', () => {
    role = btn.dataset.role;
    for (const b of document.querySelectorAll('.role-btn')) b.setAttribute('aria-pressed', String(b === btn));
  });
}

async function submit() {
  if (!role || !pin) return;
  const r = await postJSON('/auth/login', { role, pin });
  pin = '';
  render();
  if (r.ok) {
    const next = document.getElementById('next-path').value;
    window.location.assign(next || r.data.redirect);
  } else if (r.data.error === 'locked_out') {
    show(t('login.locked_out', { seconds: r.data.retry_after_s }), 'bad');
  } else if (r.data.error === 'wrong_pin') {
    show(t('login.wrong_pin', { left: r.data.attempts_left }), 'warn');
  } else {
    show(t('login.failed'), 'bad');
  }
}

document.getElementById('keypad').addEventListener('click', (ev) => {
  const key = ev.target.closest('button')?.dataset.key;
  if (!key) return;
  if (key === 'clear') pin = '';
  else if (key === 'ok') { submit(); return; }
  else if (pin.length < 12) pin += key;
  render();
});
