// Touch-target and text-size audit run in the page by test_ui_flows.py (a custom check: axe-core's
// target-size rule alone accepts 24 px targets).
() => {
  const sel = 'button, a[href], input:not([type=hidden]), select, textarea, [role=button], [tabindex]:not([tabindex="-1"])';
  const els = [...document.querySelectorAll(sel)].filter((e) => {
    const r = e.getBoundingClientRect(); const cs = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
  });
  const name = (e) => `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].join('.')}[${(e.textContent || '').trim().slice(0, 20)}]`;
  const rects = els.map((e) => e.getBoundingClientRect());
  const small = [], close = [];
  els.forEach((e, i) => {
    const r = rects[i]; const min = e.classList.contains('primary') ? 64 : 48;
    if (r.width < min - 0.5 || r.height < min - 0.5) small.push(`${name(e)} ${r.width.toFixed(0)}x${r.height.toFixed(0)}`);
  });
  for (let i = 0; i < els.length; i += 1) for (let j = i + 1; j < els.length; j += 1) {
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const a = rects[i], b = rects[j];
    const gap = Math.max(b.left - a.right, a.left - b.right, b.top - a.bottom, a.top - b.bottom);
    if (gap < 7.5) close.push(`${name(els[i])} / ${name(els[j])}: ${gap.toFixed(1)} px`);
  }
  const tiny = [...document.querySelectorAll('body *')].filter((e) => {
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const r = e.getBoundingClientRect();
    return own && r.width > 0 && parseFloat(getComputedStyle(e).fontSize) < 18;
  }).map((e) => `${name(e)} ${getComputedStyle(e).fontSize}`);
  return { count: els.length, small, close, tiny };
}
