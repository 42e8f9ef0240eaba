// The surgeon's lesion panel (issue 15, docs/lesions.md): tap the lesion on the slice view, "Mark lesion here" grows
// it from the crosshair with the modality's window preset (POST /api/jobs/<id>/lesions, the answer is a new
// revision), shows it (mesh swapped in, shells see-through), its volume and the margin table. Wider/narrower window
// and bigger/smaller bound, and another margin choice, re-run the growing in place of the previous attempt (undo
// the attempt, post on the same base: no pile of attempts). Tap a row of the table to bring that structure forward.
// Or take an existing structure ("from_structure": a network pack's lesion class first) or a label file brought on
// USB ("from_usb_label") as the lesion (lesion_source.js), its margins made the same way. The name is typed on the
// on-screen keyboard (touch_keyboard.js).
import { el, getJSON, postJSON, t } from './common.js';
import { attachKeyboard, cleanName } from './touch_keyboard.js';
import { fillLesionSources, usbLabelOf } from './lesion_source.js';

const WINDOW_STEP = 1.25;  // per tap, around the window's centre (engines/lesion_growing.py does the same)
const BOUND_STEP_MM = 5;
const BOUND_MM = [3, 150];

/** The first free name lesion_1, lesion_2, ... among `names`. */
export function nextLesionName(names) {
  for (let i = 1; ; i += 1) if (!names.has(`lesion_${i}`)) return `lesion_${i}`;
}

/** The window scaled by `factor` around its centre, shifted to keep the seed's value `v` inside. */
export function scaleWindow([lo, hi], factor, v) {
  const centre = (lo + hi) / 2;
  const half = (hi - lo) * factor / 2;
  let [a, b] = [centre - half, centre + half];
  if (v < a) { b += v - a; a = v; }
  if (v > b) { a += v - b; b = v; }
  return [Math.round(a * 10) / 10, Math.round(b * 10) / 10];
}

const fmt = (v, digits = 1) => Number(v).toFixed(digits);

/** `ctx`: jobId, viewer, slices(), crosshairLps(), revisions, reload(), select(name), displayName(name). */
export function wireLesionPanel(ctx) {
  const out = document.getElementById('lesion-msg');
  const nameInput = document.getElementById('lesion-name');
  const markBtn = document.getElementById('lesion-mark');
  const adjustBtns = [...document.querySelectorAll('.lesion-adjust')];
  const marginBtns = [...document.querySelectorAll('.lesion-margin')];
  let attempt = null;  // {seed, seedValue, name, window, radius, revision, base}
  let busy = false;
  const tell = (text, kind) => { out.textContent = text; out.className = `message ${kind}`; out.classList.toggle('hidden', !text); };
  const margins = () => {
    const on = marginBtns.find((b) => b.getAttribute('aria-pressed') === 'true');
    return !on || on.dataset.mm === 'all' ? null : [Number(on.dataset.mm)];
  };
  const sourceSelect = document.getElementById('lesion-source');
  const takeBtn = document.getElementById('lesion-take');
  const suggestName = () => { if (!attempt) nameInput.value = nextLesionName(new Set(ctx.viewer.structures.keys())); };
  ctx.onReload.push(suggestName);
  ctx.onReload.push(async () => {
    let usb = [];
    try { usb = (await getJSON(`/api/jobs/${ctx.jobId}/usb-labels`, { background: true })).labels || []; } catch { usb = []; }
    fillLesionSources(sourceSelect, ctx.revisions.structures(), ctx.displayName, usb);
  });
  attachKeyboard(nameInput);

  async function post(body) {
    const r = await postJSON(`/api/jobs/${ctx.jobId}/lesions`, body);
    if (!r.ok) throw Object.assign(new Error(r.data.error || String(r.status)), { answer: r });
    return r.data;
  }

  async function run(settings, replacing) {
    busy = true;
    for (const b of [markBtn, takeBtn, ...adjustBtns, ...marginBtns]) b.disabled = true;
    tell(t('lesion.working'), 'warn');
    let undone = false;
    try {
      if (replacing) {
        const u = await ctx.revisions.move('undo');
        if (!u.ok) throw Object.assign(new Error(u.data.error || String(u.status)), { answer: u });
        undone = true;
      }
      const usb = settings.source ? usbLabelOf(settings.source) : null;
      const body = usb ? { from_usb_label: usb, name: settings.name, base: settings.base, reason: t('lesion.reason_usb') }
        : settings.source ? { from_structure: settings.source, name: settings.name, base: settings.base, reason: t('lesion.reason_structure') }
          : { seed_lps: settings.seed, name: settings.name, base: settings.base, reason: t('lesion.reason') };
      if (settings.window) body.window = settings.window;
      if (settings.radius) body.max_radius_mm = settings.radius;
      const m = margins();
      if (m) body.margins_mm = m;
      const answer = await post(body);
      const grow = answer.revision.ops.find((o) => o.op === 'grow_from_seed') || {};
      attempt = { ...settings, window: answer.window, radius: grow.max_radius_mm ?? settings.radius, revision: answer.revision.revision };
      await ctx.reload();
      show(answer);
      tell(t('lesion.done', { name: answer.lesion, n: answer.revision.revision }), 'ok');
    } catch (err) {
      if (undone) await ctx.revisions.move('redo');  // the previous attempt comes back: nothing is lost
      await ctx.reload();
      const r = err.answer;
      tell(r?.status === 409 ? t('edit.stale', { n: ctx.revisions.current })
        : t('lesion.refused', { why: r?.data?.error || err.message }), 'bad');
    } finally {
      busy = false;
      markBtn.disabled = false;
      takeBtn.disabled = false;
      for (const b of marginBtns) b.disabled = false;
      for (const b of adjustBtns) b.disabled = !attempt || Boolean(attempt.source);  // window and bound: grown only
    }
  }

  /** Re-run the attempt with changed settings, in its place (only while it is still the current revision). */
  function rerun(change) {
    if (!attempt || busy) return;
    if (ctx.revisions.current !== attempt.revision) {
      attempt = null;
      tell(t('lesion.moved_on'), 'bad');
      return;
    }
    run({ ...attempt, ...change(attempt) }, true);
  }

  /** The name of a new lesion: the one typed, unless it is still the previous lesion's (then the next free one). */
  function newName() {
    const typed = cleanName(nameInput.value.trim());
    const free = nextLesionName(new Set(ctx.viewer.structures.keys()));
    const name = !typed || (attempt && typed === attempt.name) ? free : typed;
    nameInput.value = name;
    return name;
  }

  markBtn.addEventListener('click', () => {
    if (busy) return;
    const lps = ctx.crosshairLps();
    if (!lps) { tell(t('lesion.need_crosshair'), 'bad'); return; }
    const name = newName();
    attempt = null;
    run({ seed: lps, seedValue: ctx.slices().crosshairValue().value, name, window: null, radius: null, base: ctx.revisions.current }, false);
  });
  takeBtn.addEventListener('click', () => {
    if (busy) return;
    if (!sourceSelect.value) { tell(t('lesion.need_structure'), 'bad'); return; }
    const name = newName();
    attempt = null;
    run({ source: sourceSelect.value, name, base: ctx.revisions.current }, false);
  });
  const adjust = {
    wider: (a) => ({ window: scaleWindow(a.window, WINDOW_STEP, a.seedValue) }),
    narrower: (a) => ({ window: scaleWindow(a.window, 1 / WINDOW_STEP, a.seedValue) }),
    bigger: (a) => ({ radius: Math.min(BOUND_MM[1], a.radius + BOUND_STEP_MM) }),
    smaller: (a) => ({ radius: Math.max(BOUND_MM[0], a.radius - BOUND_STEP_MM) }),
  };
  for (const b of adjustBtns) b.addEventListener('click', () => rerun(adjust[b.dataset.adjust]));
  for (const b of marginBtns) {
    b.addEventListener('click', () => {
      for (const o of marginBtns) o.setAttribute('aria-pressed', String(o === b));
      rerun(() => ({}));
    });
  }

  function show(answer) {
    const [volume, diameter] = answer.measurements;
    const vol = document.getElementById('lesion-volume');
    vol.textContent = t('lesion.volume', { name: answer.lesion, ml: fmt(volume.value, 2), mm: fmt(diameter.value) });
    vol.dataset.ml = String(volume.value);
    vol.classList.remove('hidden');
    const table = document.getElementById('margin-table');
    const mt = answer.margin_table;
    const head = el('tr');
    for (const key of ['lesion.col_structure', 'lesion.col_shell', 'lesion.col_distance', 'lesion.col_inside']) head.append(el('th', { scope: 'col' }, t(key)));
    table.tHead.replaceChildren(head);
    const rows = [];
    mt.margins_mm.forEach((mm, i) => {
      for (const r of mt.rows) {
        if (r.category === 'margin' || !(r.volume_within_ml[i] > 0)) continue;
        const tr = el('tr', { 'data-structure': r.structure, 'data-shell-mm': String(mm), tabindex: '0' });
        tr.append(el('td', {}, ctx.displayName(r.structure)), el('td', {}, `${fmt(mm, 0)} mm`),
          el('td', { 'data-value': String(r.min_distance_mm) }, fmt(r.min_distance_mm)),
          el('td', { 'data-value': String(r.volume_within_ml[i]) }, fmt(r.volume_within_ml[i], 2)));
        tr.addEventListener('click', () => highlight(r.structure, tr));
        rows.push(tr);
      }
    });
    if (!rows.length) {
      const tr = el('tr');
      tr.append(el('td', { colspan: '4' }, t('lesion.none_touched')));
      rows.push(tr);
    }
    table.tBodies[0].replaceChildren(...rows);
    table.classList.remove('hidden');
    const remnant = document.getElementById('lesion-remnant');
    remnant.classList.toggle('hidden', !mt.remnant);
    if (mt.remnant) {
      const parts = mt.margins_mm.map((mm, i) => t('lesion.remnant_part', { mm: fmt(mm, 0), ml: fmt(mt.remnant.remnant_ml[i]), pct: fmt(mt.remnant.remnant_percent[i]) }));
      remnant.textContent = t('lesion.remnant', { organ: ctx.displayName(mt.remnant.organ), parts: parts.join('; ') });
    }
  }

  function highlight(name, tr) {
    const on = tr.getAttribute('aria-selected') !== 'true';
    for (const o of document.querySelectorAll('#margin-table tbody tr')) o.setAttribute('aria-selected', 'false');
    if (on && ctx.viewer.structures.has(name)) {
      tr.setAttribute('aria-selected', 'true');
      ctx.select(name);
      ctx.viewer.highlight(name);
    } else {
      ctx.viewer.highlight(null);
    }
  }
}
