// The kiosk's on-screen keyboard for structure names (issue 15): the touchscreen has no physical keyboard, so a
// name field gets a "Keyboard" button and a keyboard of latin letters, digits, "-", space and backspace. Names are
// limited to what the service accepts for a structure (1-64 ASCII letters, digits, "_" and "-";
// engines/lesions.py): space types "_", and anything else typed into the field (a USB keyboard) is dropped.
import { el, t } from './common.js';

const ROWS = ['1234567890', 'qwertyuiop', 'asdfghjkl-', 'zxcvbnm'];
/** Characters a structure name may hold (engines/lesions.py, the service's structure-name rule). */
export const NAME_CHARS = /[A-Za-z0-9_-]/;

/** `text` as a structure name may hold it: spaces become "_", other characters are dropped, at most `max`. */
export function cleanName(text, max = 64) {
  return [...text.replace(/ /g, '_')].filter((c) => NAME_CHARS.test(c)).join('').slice(0, max);
}

/** Give `input` an on-screen keyboard (shown by its "Keyboard" button or a tap on the field); returns the keyboard. */
export function attachKeyboard(input) {
  const max = Number(input.getAttribute('maxlength')) || 64;
  const id = `${input.id}-keyboard`;
  const toggle = el('button', { type: 'button', class: 'keyboard-toggle', 'aria-controls': id, 'aria-expanded': 'false', 'data-i18n': 'kbd.open' }, t('kbd.open'));
  const board = el('div', { class: 'touch-keyboard hidden', id, role: 'group', 'aria-label': t('kbd.title'), 'data-i18n-aria': 'kbd.title' });
  const set = (value) => {
    input.value = cleanName(value, max);
    input.dispatchEvent(new Event('change', { bubbles: true }));
  };
  const show = (on) => {
    board.classList.toggle('hidden', !on);
    toggle.setAttribute('aria-expanded', String(on));
  };
  for (const row of ROWS) {
    const line = el('div', { class: 'row keys' });
    for (const c of row) {
      const key = el('button', { type: 'button', class: 'key', 'data-key': c }, c);
      key.addEventListener('click', () => set(input.value + c));
      line.append(key);
    }
    board.append(line);
  }
  const last = el('div', { class: 'row keys' });
  const keys = [['space', 'kbd.space', () => set(`${input.value}_`)], ['backspace', 'kbd.backspace', () => set(input.value.slice(0, -1))],
    ['done', 'kbd.done', () => show(false)]];
  for (const [name, label, act] of keys) {
    const key = el('button', { type: 'button', class: `key key-${name}`, 'data-key': name, 'data-i18n': label }, t(label));
    key.addEventListener('click', act);
    last.append(key);
  }
  board.append(last);
  input.setAttribute('inputmode', 'none');  // no system keyboard on top of this one
  input.addEventListener('input', () => { const v = cleanName(input.value, max); if (v !== input.value) input.value = v; });
  input.addEventListener('focus', () => show(true));
  toggle.addEventListener('click', () => show(board.classList.contains('hidden')));
  input.after(toggle, board);
  return board;
}
