// What the lesion panel can take as a lesion besides a tap (issue 15): structures of the current revision, the
// lesion classes first (a network pack's tumour/cyst classes: category "lesion" in the terminology table,
// appliance/core/data/terminology/structures.json, or in the revision), then any other structure the surgeon
// chooses. Margin shells and lesions that already have shells are not offered.
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

/** Fill the panel's structure choice (kept when still offered). */
export function fillLesionSources(select, structures, displayName) {
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
  select.replaceChildren(none, ...groups);
  select.value = [...classes, ...others].includes(kept) ? kept : (classes[0] || '');
}
