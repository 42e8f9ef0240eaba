// Follows one reconstruction job: Server-Sent Events from /api/jobs/<id>/events, with a polling fallback
// (/api/jobs/<id>) when the stream fails, and a re-check of the job after every reconnect so a missed
// "done" is never lost.
import { getJSON } from './common.js';

export const FINAL_STATES = new Set(['done', 'failed', 'refused']);

export class JobTracker {
  /** `onUpdate(job)` is called with every job JSON seen (state, stage, progress, ...). */
  constructor(jobId, onUpdate, { pollMs = 1500, maxStreamErrors = 3 } = {}) {
    this.jobId = jobId;
    this.onUpdate = onUpdate;
    this.pollMs = pollMs;
    this.maxStreamErrors = maxStreamErrors;
    this.errors = 0;
    this.source = null;
    this.timer = null;
    this.finished = false;
    this.mode = 'none';
  }

  start() {
    if (typeof EventSource === 'function') this.openStream(); else this.startPolling();
    return this;
  }

  deliver(job) {
    if (!job || typeof job.state !== 'string' || this.finished) return;  // e.g. the stream's final "end" event
    this.onUpdate(job);
    if (FINAL_STATES.has(job.state)) this.stop();
  }

  openStream() {
    this.mode = 'sse';
    const src = new EventSource(`/api/jobs/${this.jobId}/events`);
    this.source = src;
    const handle = (ev) => {
      this.errors = 0;
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      this.deliver(data.job && typeof data.job === 'object' ? data.job : data);
    };
    src.onmessage = handle;
    for (const name of ['job', 'progress', 'state', 'stage', 'done', 'update']) src.addEventListener(name, handle);
    src.onopen = () => { this.refresh(); };  // after a reconnect: catch up on anything missed
    src.onerror = () => {
      this.errors += 1;
      this.refresh();
      if (src.readyState === EventSource.CLOSED || this.errors >= this.maxStreamErrors) {
        src.close();
        this.source = null;
        if (!this.finished) this.startPolling();
      }
    };
  }

  startPolling() {
    this.mode = 'poll';
    if (this.timer) return;
    this.timer = setInterval(() => this.refresh(), this.pollMs);
    this.refresh();
  }

  async refresh() {
    if (this.finished) return;
    try {
      this.deliver(await getJSON(`/api/jobs/${this.jobId}`, { background: true }));
    } catch (err) {
      console.info(`job ${this.jobId}: ${err.message}`);  // transient while the service restarts
    }
  }

  stop() {
    this.finished = true;
    if (this.source) { this.source.close(); this.source = null; }
    if (this.timer) { clearInterval(this.timer); this.timer = null; }
  }
}
