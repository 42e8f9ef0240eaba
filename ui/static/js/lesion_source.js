// What the lesion panel can take as a lesion besides a tap (issue 15): structures of the current revision, the
// lesion classes first (a network pack's tumour/cyst classes: category "lesion" in the terminology table,
// appliance/core/data/terminology/structures.json, or in the revision), then any other structure the surgeon
// chooses; then the label files brought on USB with the case's study (GET /api/jobs/<id>/usb-labels, option value
// "usb:<id>": the service checks the file's geometry against the case's image). Margin shells and lesions that
// already have shells are not offered.
import { el, t } from './common.js';

const termsEl = document.getElementById('structure-terms');
const TERMS = termsEl ? JSON.parse(termsEl.textContent) : { categories: {}, margin: { regex: '$^' } };
const MARGIN_RE = new RegExp(TERMS.margin.regex);

/** Whether a structure of the revision (`{name, category}`) is a lesion class. */
export function isLesionClass(s) {
  return s.category === 'lesion' || TERMS.categories?.[s.name] === 'lesion';
}

/** The structures that can be taken as a lesion: [lesion classes, other structures] (names). */
export function lesionSources(structures) {
  const names = structures.map((s) => s.name);
  const hasShells = (n) => names.some((m) => MARGIN_RE.exec(m)?.groups?.base === n);
  const usable = structures.filter((s) => !MARGIN_RE.test(s.name) && !hasShells(s.name));
  return [usable.filter(isLesionClass).map((s) => s.name), usable.filter((s) => !isLesionClass(s)).map((s) => s.name)];
}

/** The USB label id of a choice ("usb:<id>"), or null for a structure. */
export function usbLabelOf(value) { return value.startsWith('usb:') ? value.slice(4) : null; }

/** Fill the panel's choice (kept when still offered); `usbLabels`: [{id, file, with_this_study}]. */
export function fillLesionSources(select, structures, displayName, usbLabels = []) {
  const kept = select.value;
  const [classes, others] = lesionSources(structures);
  const groups = [];
  const none = el('option', { value: '' }, t('lesion.pick_structure'));
  for (const [key, names] of [['lesion.group_classes', classes], ['lesion.group_other', others]]) {
    if (!names.length) continue;
    const group = el('optgroup', { label: t(key), 'data-group': key });
    for (const n of names) group.append(el('option', { value: n }, displayName(n)));
    groups.push(group);
  }
  if (usbLabels.length) {
    const group = el('optgroup', { label: t('lesion.group_usb'), 'data-group': 'lesion.group_usb' });
    for (const x of usbLabels) {
      group.append(el('option', { value: `usb:${x.id}` }, t(x.with_this_study ? 'lesion.usb_label' : 'lesion.usb_label_unlinked', { file: x.file })));
    }
    groups.push(group);
  }
  select.replaceChildren(none, ...groups);
  const offered = [...select.querySelectorAll('option')].map((o) => o.value);
  select.value = kept && offered.includes(kept) ? kept : (classes[0] || '');
}
