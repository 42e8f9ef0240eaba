// Login: role buttons, the person buttons of roles with named accounts, a USB badge reader (it types the badge
// and Enter), and the PIN keypad (no keyboard in the operating room).
import { postJSON, t } from './common.js';

let pin = '';
let role = document.querySelector('.role-btn[aria-pressed="true"]')?.dataset.role || '';
let person = '';
let badge = '';
let typed = '';
const display = document.getElementById('pin-display');
const msg = document.getElementById('login-msg');
const badgeMsg = document.getElementById('badge-msg');

function peopleOf(r) { return document.querySelector(`.people[data-people-role="${r}"]`); }

function showPeople() {
  for (const group of document.querySelectorAll('.people')) {
    group.classList.toggle('hidden', group.dataset.peopleRole !== role);
  }
  person = '';
  for (const b of document.querySelectorAll('.person-btn')) b.setAttribute('aria-pressed', 'false');
}

for (const btn of document.querySelectorAll('.person-btn')) {
  btn.addEventListener('click', () => {
    person = btn.dataset.person;
    for (const b of document.querySelectorAll('.person-btn')) b.setAttribute('aria-pressed', String(b === btn));
  });
}

// A badge reader is a keyboard: it types the badge string and Enter.
document.addEventListener('keydown', (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement) return;
  if (ev.key === 'Enter') {
    if (typed.length >= 4) {
      badge = typed;
      badgeMsg.classList.remove('hidden');
    }
    typed = '';
    ev.preventDefault();
  } else if (ev.key.length === 1 && typed.length < 200) {
    typed += ev.key;
  }
});

function show(text, kind) {
  msg.textContent = text;
  msg.className = `message ${kind}`;
}

function render() { display.textContent = '•'.repeat(pin.length); }

for (const btn of document.querySelectorAll('.role-btn')) {
  btn.addEventListener('click', () => {
    role = btn.dataset.role;
    for (const b of document.querySelectorAll('.role-btn')) b.setAttribute('aria-pressed', String(b === btn));
    showPeople();
  });
}

async function submit() {
  if (!pin || (!role && !badge)) return;
  let body = { role, pin };
  if (badge) body = { badge, pin };
  else if (peopleOf(role)) {
    if (!person) {
      pin = '';
      render();
      show(t('login.choose_person_first'), 'warn');
      return;
    }
    body = { role, person, pin };
  }
  const r = await postJSON('/auth/login', body);
  pin = '';
  badge = '';
  badgeMsg.classList.add('hidden');
  render();
  if (r.ok) {
    const next = document.getElementById('next-path').value;
    window.location.assign(next || r.data.redirect);
  } else if (r.data.error === 'locked_out') {
    show(t('login.locked_out', { seconds: r.data.retry_after_s }), 'bad');
  } else if (r.data.error === 'person_required') {
    show(t('login.choose_person_first'), 'warn');
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
