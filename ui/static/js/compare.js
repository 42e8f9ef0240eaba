// Ghosted comparison (docs/ui.md): the selected structure as it was in an earlier revision, shown together with the
// current one, see-through and in another colour. The earlier revisions offered are those on the current
// revision's line of ancestry whose mesh of the structure differs (nearest first); the mesh is fetched with
// GET /api/jobs/<id>/revisions/<n>/files/meshes/<name>.stl. The ghost follows the current revision after an edit,
// undo or redo, and goes when the button is pressed again.
import * as THREE from 'three';
import { el, t } from './common.js';
import { parseStl } from './revisions.js';

/** Colour and opacity of the earlier revision's mesh. */
export const GHOST = { colour: '#42d4f4', opacity: 0.3 };

/** Earlier revisions [{ n, path }] holding another mesh of `name` than the current one, nearest first. */
export function earlierMeshes(revisions, name) {
  const byNumber = new Map((revisions.revisions || []).map((r) => [r.revision, r]));
  const seen = new Set([revisions.record?.meshes?.[name]]);
  const out = [];
  for (let n = revisions.record?.parent; n !== null && n !== undefined; n = byNumber.get(n)?.parent) {
    const path = byNumber.get(n)?.meshes?.[name];
    if (path && !seen.has(path)) { out.push({ n, path }); seen.add(path); }
  }
  return out;
}

/** `ctx` as for wireEditTools (viewer, revisions, selected(), displayName(), onReload). */
export function wireCompare(ctx) {
  const button = document.getElementById('compare-btn');
  const choice = document.getElementById('compare-rev');
  const msg = document.getElementById('compare-msg');
  let ghost = null;
  const say = (text) => { msg.textContent = text; msg.classList.toggle('hidden', !text); };

  const remove = () => {
    if (!ghost) return;
    ghost.parent?.remove(ghost);
    ghost.geometry.dispose();
    ghost.material.dispose();
    ghost = null;
    button.dataset.revision = '';
    ctx.viewer.requestRender();
  };

  const show = async (name, n, path) => {
    const res = await fetch(ctx.revisions.meshUrl(path), { cache: 'no-store', headers: { 'X-Background': '1' } });
    if (!res.ok) throw new Error(`mesh of ${name} in revision ${n}: HTTP ${res.status}`);
    const geometry = parseStl(await res.arrayBuffer());
    remove();
    const material = new THREE.MeshStandardMaterial({ color: GHOST.colour, transparent: true, opacity: GHOST.opacity,
      depthWrite: false, side: THREE.DoubleSide, roughness: 0.6, metalness: 0 });
    ghost = new THREE.Mesh(geometry, material);
    ghost.name = `compare:${name}`;
    ghost.renderOrder = 1;
    (ctx.viewer.root || ctx.viewer.scene).add(ghost);
    ctx.viewer.requestRender();
    button.dataset.revision = String(n);
    button.dataset.structure = name;
    say(t('compare.shown', { name: ctx.displayName(name), n }));
  };

  const refresh = async (wanted = null) => {
    const name = ctx.selected();
    const options = name ? earlierMeshes(ctx.revisions, name) : [];
    choice.replaceChildren(...options.map((o) => el('option', { value: String(o.n) }, t('compare.option', { n: o.n }))));
    choice.classList.toggle('hidden', options.length < 2);
    if (!options.length) {
      remove();
      button.setAttribute('aria-pressed', 'false');
      say(name ? t('compare.none', { name: ctx.displayName(name) }) : '');
      return;
    }
    const pick = options.find((o) => o.n === wanted) || options[0];
    choice.value = String(pick.n);
    try {
      await show(name, pick.n, pick.path);
    } catch (err) {
      say(t('compare.failed'));
      console.info(err);
    }
  };

  button.addEventListener('click', async () => {
    const on = button.getAttribute('aria-pressed') !== 'true';
    button.setAttribute('aria-pressed', String(on));
    if (on) await refresh();
    else { remove(); say(''); }
  });
  choice.addEventListener('change', () => refresh(Number(choice.value)));
  const again = () => { if (button.getAttribute('aria-pressed') === 'true') refresh(); };
  ctx.onReload?.push(again);
  // another structure selected (the editor's title changes): compare that one
  const title = document.getElementById('editor-title');
  if (title) new MutationObserver(again).observe(title, { childList: true, characterData: true, subtree: true });
}
