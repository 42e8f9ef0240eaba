// The modelling engineer's worklist (GET /api/review/worklist): every structure whose correction a surgeon requested
// in its job's current revision, with the surgeon's note; a tap opens the case with that structure selected.
import { el, getJSON, t } from './common.js';
import { actorName } from './people.js';

const box = document.getElementById('worklist');
const items = document.getElementById('worklist-items');
const msg = document.getElementById('worklist-msg');
// Structure names in the page's language (appliance.core.terminology, the table the case page uses).
const TERMS = JSON.parse(document.getElementById('structure-terms').textContent);
const nameOf = (name) => TERMS.names[name] || name.replace(/_/g, ' ');

async function load() {
  if (box.dataset.revisions !== '1') { msg.textContent = t('worklist.unavailable'); msg.className = 'message bad'; return; }
  let data;
  try {
    data = await getJSON('/api/review/worklist', { background: true });
  } catch (err) {
    msg.textContent = t('worklist.failed');
    msg.className = 'message bad';
    console.info(err);
    return;
  }
  msg.classList.add('hidden');
  const cards = data.corrections.map((c) => {
    const a = el('a', {
      class: 'button work-item', href: `/cases/${c.job_id}?structure=${encodeURIComponent(c.structure)}`,
      'data-job-id': String(c.job_id), 'data-structure': c.structure,
    });
    a.append(el('strong', {}, t('worklist.item', { structure: nameOf(c.structure), job: c.job_id, n: c.revision })),
      el('span', { class: 'note' }, c.note), el('span', { class: 'muted' }, t('worklist.by', { who: actorName(c.actor), at: c.at || '' })));
    return a;
  });
  items.replaceChildren(...cards);
  document.getElementById('worklist-empty').classList.toggle('hidden', cards.length > 0);
  box.dataset.loaded = '1';
}

document.getElementById('worklist-refresh').addEventListener('click', load);
load();
