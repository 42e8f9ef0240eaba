// USB sticks on the inbox: each recent stick's import, "safe to remove" once the box has released (unmounted) it,
// or what failed: a stick whose import failed stays mounted and is never released silently. Fed by /api/imports.
import { el, getJSON, t } from './common.js';

const list = document.getElementById('usb-sticks');
const SHOWN_FOR_S = 15 * 60;  // a stick's line stays this long after its import finished

/** One stick's line: released (safe to remove), being released, or kept with what failed. */
function stickLine(report) {
  const { device, state, problem } = report.release;
  const values = { device, n: report.stored + report.already_present, problem };
  const kind = { released: 'ok', releasing: 'info' }[state] || 'refusal';
  const line = el('li', { class: kind, 'data-state': state, 'data-device': device }, t(`sticks.${state}`, values));
  if (kind === 'refusal') line.setAttribute('role', 'alert');
  return line;
}

async function showSticks() {
  let reports = [];
  try {
    reports = (await getJSON('/api/imports', { background: true })).imports || [];
  } catch {
    return;  // the inbox's own error box says when the service does not answer
  }
  const now = Date.now() / 1000;
  const latest = new Map();  // device -> its newest report (the API lists the newest first)
  for (const r of reports) {
    if (r.release && !latest.has(r.release.device) && now - (r.finished_at || now) < SHOWN_FOR_S) latest.set(r.release.device, r);
  }
  list.replaceChildren(...[...latest.values()].map(stickLine));
}

showSticks();
setInterval(showSticks, 3000);
