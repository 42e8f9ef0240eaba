// Service screen: machine health, queue, versions, update mechanism, log tail (no patient data).
import { el, getJSON, postJSON, t } from './common.js';

function fill(dl, rows) {
  dl.replaceChildren();
  for (const [key, value] of rows) {
    const row = el('div', { class: 'row' });
    row.append(el('dt', {}, t(key)), el('dd', {}, String(value)));
    dl.append(row);
  }
}

async function refresh() {
  try {
    const h = await getJSON('/ui/api/health', { background: true });
    const rows = [
      ['health.cpu', `${h.cpu_percent}% · ${h.cpu_count} · ${h.load_average.join(' / ')}`],
      ['health.memory', `${h.memory_used_mb} / ${h.memory_total_mb} MB`],
      ['health.disk', `${h.disk_free_gb} / ${h.disk_total_gb} GB (${h.disk_path})`],
      ['health.uptime', `${Math.round(h.uptime_s / 3600)} h`],
    ];
    if (!h.gpus.length) rows.push(['health.gpu', t('health.no_gpu')]);
    for (const g of h.gpus) rows.push(['health.gpu', `${g.name} · ${g.temperature_c} °C · ${g.memory_used_mb} / ${g.memory_total_mb} MB · ${g.utilisation_percent}%`]);
    fill(document.getElementById('health'), rows);
  } catch { fill(document.getElementById('health'), [['health.unavailable', '—']]); }
  try {
    const s = await getJSON('/api/health', { background: true });
    const rows = [['service.status', `${s.status} · ${s.version || ''}`]];
    if (s.dicom) rows.push(['service.dicom', s.dicom.enabled ? `${s.dicom.ae_title} :${s.dicom.port}` : t('service.off')]);
    if (s.import) rows.push(['service.import', s.import.enabled === false ? t('service.off') : t('service.on')]);
    if (s.storage) rows.push(['service.storage', `${(s.storage.stored_bytes / 1e9).toFixed(1)} GB · ${(s.storage.free_bytes / 1e9).toFixed(1)} GB`]);
    for (const a of s.alarms || []) rows.push(['service.alarm', a.message || a.code]);
    fill(document.getElementById('service-state'), rows);
    // Queue counts come from /api/health: the job list itself is patient data, refused to this role.
    const count = (state) => (s.jobs && s.jobs[state]) || 0;
    document.getElementById('queue').textContent = t('service.queue_counts', { queued: count('queued'), running: count('running') + count('viewable'), failed: count('failed') });
  } catch {
    fill(document.getElementById('service-state'), [['service.api_unavailable', '—']]);
    document.getElementById('queue').textContent = t('service.api_unavailable');
  }
  try {
    const v = await getJSON('/ui/api/versions', { background: true });
    const rows = [['versions.appliance', v.appliance], ['versions.python', v.python], ['versions.os', v.os],
      ['versions.browser', navigator.userAgent.match(/Chrom(e|ium)\/[\d.]+/)?.[0] || navigator.userAgent]];
    for (const [name, ver] of Object.entries(v.packages)) rows.push(['versions.package', `${name} ${ver}`]);
    for (const p of v.vendored) rows.push(['versions.vendored', p]);
    rows.push(['versions.model_packs', v.model_packs.length ? v.model_packs.map((p) => `${p.name} ${p.version || ''}`).join(', ') : t('versions.none')]);
    fill(document.getElementById('versions'), rows);
  } catch { /* shown as empty */ }
  try {
    const u = await getJSON('/ui/api/update', { background: true });
    const parts = [!u.mechanism ? t('update.no_mechanism')
      : u.repository ? t('update.repository', { repository: u.repository }) : t('update.no_repository')];
    for (const [kind, v] of Object.entries(u.installed || {})) parts.push(t('update.installed', { kind, current: v.current || '—', previous: v.previous || '—' }));
    document.getElementById('update-status').textContent = parts.join(' ');
    document.getElementById('update-check').classList.toggle('hidden', !u.can_check);
  } catch { /* shown as empty */ }
  try {
    const logs = await getJSON('/ui/api/logs?lines=200', { background: true });
    document.getElementById('logs').textContent = logs.file ? `${logs.file}\n${logs.lines.join('\n')}` : t('service.no_logs');
  } catch { /* shown as empty */ }
}

document.getElementById('update-check').addEventListener('click', async () => {
  const list = document.getElementById('update-releases');
  list.replaceChildren(el('li', {}, t('update.checking')));
  const r = await postJSON('/ui/api/update/check');
  list.replaceChildren();
  if (!r.ok) { list.append(el('li', {}, t('update.check_failed', { error: r.data.error || r.status }))); return; }
  if (!r.data.releases.length) list.append(el('li', {}, t('update.no_releases')));
  for (const rel of r.data.releases) list.append(el('li', {}, `${rel.kind} ${rel.name} ${rel.version}`));
});
document.getElementById('service-refresh').addEventListener('click', refresh);
refresh();
