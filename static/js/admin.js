// The admin page: a live view of the hub (admin SSE feed, polling as a fallback), running
// answers and connections that can be ended, usage reports (usage.js), documents (drag and drop upload), tenants and
// API keys. It shows what the key may administer (`GET /api/v1/whoami`): an operator sees
// every tenant and may create tenants and operator keys; a tenant admin sees its own tenant.

import { api, session, ApiError } from './api.js';
import { streamEvents } from './sse.js';
import { Backoff } from './transports.js';
import { signIn } from './signin.js';
import { el, $, clear, formatMs, formatNumber, formatDate, confirmButton, toast } from './ui.js';
import { LineChart } from './charts.js';
import { UsageView } from './usage.js';

const page = {
  status: $('#status'),
  statusText: $('#status .status-text'),
  retryNow: $('#status .retry-now'),
  signout: $('#signout'),
  forbidden: $('#forbidden'),
  switchKey: $('#switch-key'),
  panels: ['#live', '#streams-panel', '#load-panel', '#connections-panel', '#usage-panel', '#documents-panel', '#tenants-panel', '#keys-panel'].map((s) => $(s)),
  cards: $('#cards'),
  charts: $('#charts'),
  chartsTitle: $('#charts-title'),
  updated: $('#live-updated'),
  streams: $('#streams tbody'),
  connections: $('#connections tbody'),
  byTenant: $('#by-tenant'),
  byUser: $('#by-user'),
  dropzone: $('#dropzone'),
  fileInput: $('#file-input'),
  uploads: $('#uploads'),
  documents: $('#documents tbody'),
  documentsMore: $('#documents-more'),
  tenants: $('#tenants tbody'),
  tenantForm: $('#tenant-form'),
  tenantName: $('#tenant-name'),
  keysTenant: $('#keys-tenant'),
  keys: $('#keys tbody'),
  keyForm: $('#key-form'),
  keyName: $('#key-name'),
  keyAdmin: $('#key-admin'),
  keyOperator: $('#key-operator'),
  keyOperatorLabel: $('#key-operator-label'),
  role: $('#role'),
  secret: $('#new-secret'),
  secretName: $('#new-secret-name'),
  secretValue: $('#new-secret-value'),
  copySecret: $('#copy-secret'),
  hideSecret: $('#hide-secret'),
};

const names = { tenants: new Map(), keys: new Map() };
let feed = null;
/** `GET /api/v1/whoami` of the signed-in key; null until known. */
let me = null;
let tenantsListed = [];

// ---------------------------------------------------------------------------------------------
// Helpers

function showError(e) {
  if (e instanceof ApiError && e.code === 'unauthorized') {
    keyRejected(e);
    return;
  }
  toast(e instanceof ApiError ? e.friendly : String(e), 'error', 6000);
}

function tenantName(id) {
  return names.tenants.get(id) || (id ? `${String(id).slice(0, 8)}…` : '–');
}

function userName(id) {
  const key = names.keys.get(id);
  return key ? key.name : (id ? `${String(id).slice(0, 8)}…` : '–');
}

/** Keyed table rows: rows are updated in place, so focus and pending clicks survive updates. */
function syncRows(tbody, items, { key, create, update, empty, columns }) {
  const existing = new Map([...tbody.querySelectorAll('tr[data-key]')].map((tr) => [tr.dataset.key, tr]));
  const placeholder = tbody.querySelector('tr.empty');
  if (!items.length) {
    existing.forEach((tr) => tr.remove());
    if (!placeholder) tbody.append(el('tr.empty', {}, el('td', { colspan: columns }, empty)));
    else placeholder.firstChild.textContent = empty;
    return;
  }
  if (placeholder) placeholder.remove();
  let previous = null;
  for (const item of items) {
    const k = String(key(item));
    let tr = existing.get(k);
    if (tr) {
      existing.delete(k);
    } else {
      tr = create(item);
      tr.dataset.key = k;
    }
    update(tr, item);
    const want = previous ? previous.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    previous = tr;
  }
  existing.forEach((tr) => tr.remove());
}

function setCell(tr, index, value) {
  const td = tr.children[index];
  const text = String(value);
  if (td.textContent !== text) td.textContent = text;
}

const usage = new UsageView({ tenantName, keyName: userName, onError: showError });

// ---------------------------------------------------------------------------------------------
// Status pill (the live feed)

const STATUS_TEXT = {
  idle: 'Not signed in',
  connecting: 'Connecting…',
  connected: 'Live',
  polling: 'Live (polling)',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  forbidden: 'Not an admin key',
};

let statusTicker = null;
function showStatus(status, retryAt = 0, attempt = 0) {
  page.status.dataset.status = status === 'polling' ? 'connected' : status;
  page.status.dataset.feed = status;
  clearInterval(statusTicker);
  const paint = () => {
    let text = STATUS_TEXT[status] || status;
    const left = retryAt - Date.now();
    if (status === 'reconnecting' && left > 0) text = `Reconnecting in ${Math.ceil(left / 1000)} s (attempt ${attempt})`;
    page.statusText.textContent = text;
  };
  paint();
  if (status === 'reconnecting') statusTicker = setInterval(paint, 500);
  page.retryNow.hidden = status !== 'reconnecting';
}

page.retryNow.addEventListener('click', () => feed && feed.retryNow());

// ---------------------------------------------------------------------------------------------
// Live feed: `GET /api/v1/admin/events` (SSE, one `stats` event a second); when the hub has no
// such endpoint (404), poll `/admin/stats` and `/admin/connections` instead.

const WATCHDOG_MS = 8000;
const POLL_MS = 2000;

class LiveFeed {
  constructor(onData, onHistory) {
    this.onData = onData;
    this.onHistory = onHistory;
    this.backoff = new Backoff({ base: 500, cap: 10000 });
    this.controller = null;
    this.timer = null;
    this.stopped = false;
    this.mode = 'sse';
    this.wake = null;
    this.onOnline = () => this.retryNow();
    this.onOffline = () => {
      if (this.controller) this.controller.abort();
      showStatus('offline');
    };
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
  }

  start() {
    showStatus('connecting');
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    clearTimeout(this.timer);
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
  }

  retryNow() {
    if (this.wake) this.wake();
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  async loop() {
    while (!this.stopped) {
      if (!navigator.onLine) {
        showStatus('offline');
        await this.sleep(2000);
        continue;
      }
      try {
        if (this.mode === 'sse') await this.streamOnce();
        else await this.pollOnce();
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && e.status === 404 && this.mode === 'sse') {
          this.mode = 'poll';
          continue;
        }
        if (e instanceof ApiError && (e.code === 'unauthorized' || e.status === 403)) {
          this.stop();
          if (e.status === 403) showForbidden();
          else keyRejected(e);
          return;
        }
        const delay = this.backoff.next();
        showStatus('reconnecting', Date.now() + delay, this.backoff.attempt);
        await this.sleep(delay);
        continue;
      }
      if (this.mode === 'poll') await this.sleep(POLL_MS);
    }
  }

  /** One admin event stream until it ends; throws why it ended when it broke. */
  async streamOnce() {
    const controller = new AbortController();
    this.controller = controller;
    let watchdog = null;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), WATCHDOG_MS);
    };
    try {
      await streamEvents('/api/v1/admin/events', {
        signal: controller.signal,
        onOpen: () => {
          kick();
          this.backoff.reset();
          showStatus('connected');
        },
        onComment: kick,
        onEvent: ({ event, data }) => {
          kick();
          if (event !== 'stats' && event !== 'message' && event !== 'history') return;
          try {
            if (event === 'history') this.onHistory(JSON.parse(data));
            else this.onData(JSON.parse(data));
          } catch (err) {
            console.warn(`ragstream admin: bad ${event} event`, err);
          }
        },
      });
      throw new ApiError({ network: true, code: 'network', message: 'the admin feed ended' });
    } catch (e) {
      if (e && e.name === 'AbortError') {
        throw new ApiError({ network: true, code: 'network', message: 'the admin feed went silent' });
      }
      throw e;
    } finally {
      clearTimeout(watchdog);
      this.controller = null;
    }
  }

  async pollOnce() {
    const after = charts.lastSeq;
    const [stats, connections, streams, history] = await Promise.all([
      api('/api/v1/admin/stats'),
      api('/api/v1/admin/connections').catch(() => ({ connections: null })),
      api('/api/v1/admin/streams').catch(() => ({ streams: null, metrics: null })),
      api(`/api/v1/admin/history${after === null ? '' : `?after=${after}`}`).catch(() => null),
    ]);
    this.backoff.reset();
    showStatus('polling');
    if (history) this.onHistory({ ...history, full: after === null });
    this.onData({
      stats,
      connections: connections && connections.connections,
      streams: streams && streams.streams,
      metrics: streams && streams.metrics,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Charts: the hub's samples of the last 15 minutes (the feed's first `history` event holds
// them all, each later one the new samples).

const CHART_SAMPLES = 180;
// Counts on an axis whose top is 1 have a half-way line of 0.5.
const count = (v) => formatNumber(v, Number.isInteger(v) ? 0 : 1);

const charts = {
  samples: [],
  intervalMs: 5000,
  /** The newest sample's seq; null before the first history (the poll asks for them all). */
  lastSeq: null,
  views: [
    new LineChart({ id: 'streams', title: 'Answers streaming', series: [{ key: 'streams', label: 'streaming' }], format: count }),
    new LineChart({ id: 'tokens', title: 'Tokens per second', series: [{ key: 'tokensPerSecond', label: 'tokens/s' }], format: (v) => formatNumber(v, v < 10 && v > 0 ? 1 : 0) }),
    new LineChart({
      id: 'ttft',
      title: 'Time to first token',
      series: [{ key: 'ttftMsP50', label: 'p50' }, { key: 'ttftMsP95', label: 'p95' }],
      format: (v) => formatMs(v),
      minTop: 10,
    }),
    new LineChart({ id: 'errors', title: 'Errors per minute', series: [{ key: 'errorsPerMinute', label: 'errors/min' }], format: count }),
  ],
};

function renderHistory(history) {
  if (!history || !Array.isArray(history.samples)) return;
  if (Number(history.intervalMs) > 0) charts.intervalMs = Number(history.intervalMs);
  // A full history replaces ours: the hub may have restarted and counts from 1 again.
  if (history.full) charts.samples = [];
  const last = charts.samples.length ? charts.samples[charts.samples.length - 1].seq : 0;
  for (const s of history.samples) {
    if (s && Number(s.seq) > last) charts.samples.push(s);
  }
  if (charts.samples.length > CHART_SAMPLES) charts.samples.splice(0, charts.samples.length - CHART_SAMPLES);
  charts.lastSeq = charts.samples.length ? charts.samples[charts.samples.length - 1].seq : 0;
  if (!page.charts.firstChild) page.charts.append(...charts.views.map((c) => c.figure));
  const windowMs = CHART_SAMPLES * charts.intervalMs;
  page.chartsTitle.textContent = `Last ${formatNumber(windowMs / 60000, windowMs % 60000 ? 1 : 0)} minutes`;
  for (const chart of charts.views) chart.update(charts.samples, { intervalMs: charts.intervalMs, windowMs });
  page.charts.dataset.samples = String(charts.samples.length);
}

// ---------------------------------------------------------------------------------------------
// Rendering the live view

const history = [];
const HISTORY_POINTS = 60;

const SVG = 'http://www.w3.org/2000/svg';
function sparkline(values) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 100 28');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  if (values.length < 2) return svg;
  const max = Math.max(1, ...values);
  const step = 100 / (HISTORY_POINTS - 1);
  const offset = (HISTORY_POINTS - values.length) * step;
  const points = values.map((v, i) => [offset + i * step, 26 - (v / max) * 24]);
  const line = points.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(2)},${y.toFixed(2)}`).join(' ');
  const area = document.createElementNS(SVG, 'path');
  area.setAttribute('class', 'area');
  area.setAttribute('d', `${line} L${points.at(-1)[0].toFixed(2)},28 L${points[0][0].toFixed(2)},28 Z`);
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('class', 'line');
  path.setAttribute('d', line);
  svg.append(area, path);
  return svg;
}

function card(id, label, value, sub, extra) {
  let node = page.cards.querySelector(`[data-card="${id}"]`);
  if (!node) {
    node = el('div.card', { dataset: { card: id } }, el('div.label', {}, label), el('div.value'), el('div.sub'));
    page.cards.append(node);
  }
  node.querySelector('.value').textContent = value;
  node.querySelector('.sub').textContent = sub || '';
  const old = node.querySelector('svg');
  if (old) old.remove();
  if (extra) node.append(extra);
}

function bars(list, entries, nameOf) {
  clear(list);
  const sorted = Object.entries(entries || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  if (!sorted.length) {
    list.append(el('li.muted', {}, 'none'));
    return;
  }
  const max = Math.max(...sorted.map(([, n]) => n));
  for (const [id, n] of sorted.slice(0, 12)) {
    const fill = el('span');
    fill.style.width = `${Math.max(4, (n / max) * 100)}%`;
    list.append(el('li', {}, el('span.name', { title: id }, nameOf(id)), el('span.bar', {}, fill), el('span.count', {}, String(n))));
  }
}

function sum(obj) {
  return Object.values(obj || {}).reduce((a, b) => a + (Number(b) || 0), 0);
}

let askingRole = false;
/** A page started while the hub was unreachable learns the key's role once it answers. */
function learnRole() {
  if (me || askingRole) return;
  askingRole = true;
  api('/api/v1/whoami')
    .then((who) => showRole(who))
    .catch(() => {})
    .finally(() => { askingRole = false; });
}

function renderLive(data) {
  learnRole();
  const stats = data.stats || {};
  const metrics = data.metrics || null;
  history.push(Number(stats.activeStreams) || 0);
  if (history.length > HISTORY_POINTS) history.shift();
  page.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;

  card('connections', 'Connections', formatNumber(stats.connections),
    `${formatNumber(stats.wsConnections)} WebSocket · ${formatNumber(stats.sseConnections)} SSE`);
  card('streams', 'Answers streaming', formatNumber(stats.activeStreams), 'last minute', sparkline(history));
  card('admitted', 'Admitted', formatNumber(stats.admittedTotal),
    `${formatNumber(stats.refusedTotal)} refused (429) · ${formatNumber(stats.releasedTotal)} released`);
  if (metrics) {
    usage.answersEnded(Number(metrics.answersTotal));
    card('answers', 'Answers', formatNumber(metrics.answersTotal), `${formatNumber(metrics.cancelledTotal)} cancelled`);
    card('ttft', 'Time to first token', metrics.ttftMsP50 == null ? '–' : formatMs(metrics.ttftMsP50),
      metrics.ttftMsP95 == null ? 'p50 · no answers yet' : `p50 · p95 ${formatMs(metrics.ttftMsP95)}`);
    card('rate', 'Token rate', metrics.tokensPerSecond == null ? '–' : `${formatNumber(metrics.tokensPerSecond, 1)}`, 'tokens per second');
    const errors = Object.entries(metrics.errorsByCode || {}).sort((a, b) => b[1] - a[1]);
    card('errors', 'Errors', formatNumber(sum(metrics.errorsByCode)),
      errors.length ? errors.slice(0, 3).map(([code, n]) => `${code} ${n}`).join(' · ') : 'none');
  }

  bars(page.byTenant, stats.streamsByTenant, tenantName);
  bars(page.byUser, stats.streamsByUser, userName);

  if (Array.isArray(data.streams)) {
    syncRows(page.streams, data.streams, {
      // Several hubs (a cluster) number their streams each on their own.
      key: (s) => `${s.hub || ''}:${s.id}`,
      columns: 6,
      empty: 'No answer is streaming.',
      create: (s) => {
        const end = el('button.danger.small', { type: 'button', text: 'End', 'aria-label': `End stream ${s.id}` });
        end.addEventListener('click', () => endStream(s.id, s.hub, end));
        return el('tr', {}, el('td.mono.opt'), el('td'), el('td.opt'), el('td'), el('td.num'), el('td.actions', {}, end));
      },
      update: (tr, s) => {
        setCell(tr, 0, s.hub ? `${s.hub} · ${s.id}` : s.id);
        setCell(tr, 1, userName(s.user));
        setCell(tr, 2, tenantName(s.tenant));
        // A detached answer lost its connection and waits for a resume.
        setCell(tr, 3, s.detached ? `${s.transport || '–'} · detached` : (s.transport || '–'));
        setCell(tr, 4, formatMs(s.ageMs));
      },
    });
  } else {
    syncRows(page.streams, [], { columns: 6, empty: 'This hub does not list running answers (no admin events endpoint).' });
  }

  if (Array.isArray(data.connections)) {
    syncRows(page.connections, data.connections, {
      key: (c) => `${c.hub || ''}:${c.id}`,
      columns: 7,
      empty: 'No WebSocket or SSE client is connected.',
      create: (c) => {
        const close = el('button.ghost.small', { type: 'button', text: 'Close', 'aria-label': `Close connection ${c.id}` });
        close.addEventListener('click', () => endConnection(c.id, c.hub, close));
        return el('tr', {}, el('td.mono'), el('td'), el('td'), el('td.opt'), el('td.num'), el('td.num.opt'), el('td.actions', {}, close));
      },
      update: (tr, c) => {
        setCell(tr, 0, c.hub ? `${c.hub} · ${c.id}` : c.id);
        setCell(tr, 1, c.protocol ? `${c.kind} · ${c.protocol}` : c.kind);
        setCell(tr, 2, userName(c.user));
        setCell(tr, 3, tenantName(c.tenant));
        setCell(tr, 4, formatNumber(c.activeStreams));
        setCell(tr, 5, formatMs(c.connectedMs));
      },
    });
  }
}

/** `?hub=` for an entry of a hub in a cluster, which may be another than the one serving. */
function onHub(hub) {
  return hub ? `?hub=${encodeURIComponent(hub)}` : '';
}

async function endStream(id, hub, button) {
  button.disabled = true;
  try {
    await api(`/api/v1/admin/streams/${encodeURIComponent(id)}${onHub(hub)}`, { method: 'DELETE' });
    toast(`Answer ${id} ended.`, 'ok');
    button.closest('tr')?.remove();
  } catch (e) {
    button.disabled = false;
    if (e instanceof ApiError && e.status === 404) toast(`Answer ${id} had already ended.`);
    else showError(e);
  }
}

async function endConnection(id, hub, button) {
  button.disabled = true;
  try {
    await api(`/api/v1/admin/connections/${encodeURIComponent(id)}${onHub(hub)}`, { method: 'DELETE' });
    toast(`Connection ${id} closed.`, 'ok');
    button.closest('tr')?.remove();
  } catch (e) {
    button.disabled = false;
    if (e instanceof ApiError && e.status === 404) toast(`Connection ${id} had already gone.`);
    else showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Documents

const ACCEPTED = /\.(md|markdown|txt)$/i;
// The hub lists documents a page at a time, and takes at most 20 files per upload (its
// default RAGSTREAM_MAX_FILES_PER_UPLOAD): more are sent in several uploads.
const DOCUMENT_PAGE = 50;
const FILES_PER_UPLOAD = 20;
let documentsShown = DOCUMENT_PAGE;

/** As many pages as are shown (one, until "Show more" is pressed), following `next`. */
async function loadDocuments() {
  let docs = [];
  let total = 0;
  let next = `/api/v1/documents?limit=${DOCUMENT_PAGE}`;
  while (next && docs.length < documentsShown) {
    const body = await api(next);
    docs = docs.concat((body && body.documents) || []);
    total = body && Number.isFinite(body.total) ? body.total : docs.length;
    next = (body && body.next) || null;
  }
  syncRows(page.documents, docs, {
    key: (d) => d.id,
    columns: 5,
    empty: 'No documents yet: drop .md or .txt files above.',
    create: (d) => el('tr', {}, el('td'), el('td.num.opt'), el('td.num'), el('td.opt'),
      el('td.actions', {}, confirmButton('Delete', 'Really delete?', () => deleteDocument(d)))),
    update: (tr, d) => {
      setCell(tr, 0, d.title || 'Untitled');
      setCell(tr, 1, formatNumber(d.chars));
      setCell(tr, 2, formatNumber(d.chunkCount));
      setCell(tr, 3, formatDate(d.createdAt));
    },
  });
  page.documentsMore.hidden = !next;
  page.documentsMore.textContent = `Show more (${formatNumber(Math.max(0, total - docs.length))} older)`;
}

async function deleteDocument(doc) {
  try {
    await api(`/api/v1/documents/${encodeURIComponent(doc.id)}`, { method: 'DELETE' });
    toast(`Deleted “${doc.title}”.`, 'ok');
  } catch (e) {
    showError(e);
  }
  await loadDocuments().catch(showError);
}

// Files of a drop go up together, up to the hub's files per upload and this many bytes: a
// large file goes alone, so its progress is its own and a refusal names it.
const BATCH_BYTES = 1024 * 1024;
// Errors about one file of an upload: the files of a refused upload are then sent one by
// one, so each gets its own verdict.
const PER_FILE_CODES = new Set(['payload_too_large', 'unsupported_media_type', 'empty_document', 'title_too_long', 'invalid_utf8', 'too_many_files']);
const UPLOAD_ROWS = 30;

function formatBytes(n) {
  if (n < 1024) return `${formatNumber(n)} B`;
  if (n < 1024 * 1024) return `${formatNumber(n / 1024, 1)} KiB`;
  return `${formatNumber(n / (1024 * 1024), 1)} MiB`;
}

/** Batches of at most FILES_PER_UPLOAD files and BATCH_BYTES bytes (a larger file alone). */
function batchesOf(files) {
  const batches = [];
  let batch = [];
  let bytes = 0;
  for (const f of files) {
    if (batch.length && (batch.length === FILES_PER_UPLOAD || bytes + f.size > BATCH_BYTES)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(f);
    bytes += f.size;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

async function uploadFiles(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  const accepted = files.filter((f) => ACCEPTED.test(f.name));
  for (const f of files.filter((x) => !ACCEPTED.test(x.name))) {
    page.uploads.prepend(el('li', { dataset: { state: 'error' } }, `${f.name}: only .md and .txt files can be uploaded.`));
  }
  // Every file is listed at once, waiting its turn.
  const rows = new Map(accepted.map((f) => [f, new UploadRow(f)]));
  for (const f of [...accepted].reverse()) page.uploads.prepend(rows.get(f).li);
  for (const batch of batchesOf(accepted)) {
    await uploadBatch(batch.map((f) => rows.get(f)));
  }
  while (page.uploads.children.length > Math.max(UPLOAD_ROWS, accepted.length)) page.uploads.lastElementChild.remove();
  await loadDocuments().catch(showError);
}

/** One file's line under the drop zone: its name, a progress bar and what is happening. */
class UploadRow {
  constructor(file) {
    this.file = file;
    this.bar = el('progress', { max: '1', value: '0', 'aria-label': `Upload of ${file.name}` });
    this.detail = el('span.detail', {}, `waiting · ${formatBytes(file.size)}`);
    this.li = el('li.upload', { dataset: { state: 'queued', file: file.name } }, el('span.name', {}, file.name), this.bar, this.detail);
    this.ticker = null;
  }

  sending(sent) {
    const size = this.file.size;
    this.li.dataset.state = 'uploading';
    this.bar.value = size ? sent / size : 1;
    this.li.dataset.sent = String(Math.round(sent));
    const percent = size ? Math.floor((sent / size) * 100) : 100;
    this.detail.textContent = `sending ${formatBytes(sent)} of ${formatBytes(size)} (${percent}%)`;
  }

  /** Every byte is sent: the hub chunks and indexes; the seconds count so it never looks stuck. */
  indexing() {
    if (this.li.dataset.state === 'indexing') return;
    this.li.dataset.state = 'indexing';
    this.bar.removeAttribute('value');
    const since = Date.now();
    const paint = () => {
      const secs = Math.floor((Date.now() - since) / 1000);
      this.detail.textContent = `chunking and indexing…${secs ? ` ${secs} s` : ''}`;
    };
    paint();
    this.ticker = setInterval(paint, 1000);
  }

  done(doc) {
    clearInterval(this.ticker);
    this.li.dataset.state = 'done';
    this.bar.value = 1;
    const chunks = doc && Number.isFinite(doc.chunkCount) ? doc.chunkCount : 0;
    this.detail.textContent = `Added “${(doc && doc.title) || this.file.name}” (${formatNumber(chunks)} chunk${chunks === 1 ? '' : 's'}).`;
  }

  failed(error) {
    clearInterval(this.ticker);
    this.li.dataset.state = 'error';
    this.li.dataset.code = error instanceof ApiError ? error.code : 'error';
    this.bar.remove();
    this.detail.textContent = `could not be uploaded: ${error instanceof ApiError ? error.friendly : String(error)}`;
  }
}

/** A hub error from a finished XMLHttpRequest, as `errorFrom` makes one from a fetch. */
function xhrError(xhr) {
  let code = `http_${xhr.status}`;
  let message = xhr.statusText || '';
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's page): keep the status.
  }
  if (xhr.status === 401) code = 'unauthorized';
  const retry = Number.parseInt(xhr.getResponseHeader('Retry-After') || '', 10);
  return new ApiError({ status: xhr.status, code, message, retryAfter: Number.isFinite(retry) ? retry : null });
}

/**
 * POSTs the files as one multipart upload with XMLHttpRequest, whose upload events (unlike
 * fetch's) tell how many bytes went out. Resolves to the created documents, in order.
 */
function send(rows) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const r of rows) form.append('files', r.file, r.file.name);
    const sizes = rows.map((r) => r.file.size);
    const payload = sizes.reduce((a, b) => a + b, 0);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1/documents');
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (ev) => {
      if (!ev.lengthComputable || !ev.total) return;
      // The files go out in order; the multipart framing is spread over them.
      let at = (ev.loaded / ev.total) * payload;
      rows.forEach((r, i) => {
        r.sending(Math.max(0, Math.min(sizes[i], at)));
        at -= sizes[i];
      });
    });
    xhr.upload.addEventListener('load', () => rows.forEach((r) => r.indexing()));
    xhr.addEventListener('load', () => {
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(xhrError(xhr));
        return;
      }
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // A 2xx without JSON is the hub's odd answer: the list below shows what was stored.
      }
      resolve(Array.isArray(body && body.documents) ? body.documents : [body]);
    });
    const broken = () => reject(new ApiError({ network: true, code: 'network', message: 'the upload broke off' }));
    xhr.addEventListener('error', broken);
    xhr.addEventListener('abort', broken);
    rows.forEach((r) => r.sending(0));
    xhr.send(form);
  });
}

async function uploadBatch(rows) {
  try {
    const docs = await send(rows);
    rows.forEach((r, i) => r.done(docs[i]));
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unauthorized') {
      rows.forEach((r) => r.failed(e));
      keyRejected(e);
      return;
    }
    if (rows.length > 1 && e instanceof ApiError && PER_FILE_CODES.has(e.code)) {
      // One file spoiled the upload: each goes alone, to learn which.
      for (const r of rows) await uploadBatch([r]);
      return;
    }
    rows.forEach((r) => r.failed(e));
  }
}

page.documentsMore.addEventListener('click', () => {
  documentsShown += DOCUMENT_PAGE;
  loadDocuments().catch(showError);
});

function setUpDropzone() {
  const zone = page.dropzone;
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes('Files');
  zone.addEventListener('dragenter', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth += 1;
    zone.classList.add('over');
  });
  zone.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove('over');
  });
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    depth = 0;
    zone.classList.remove('over');
    if (ev.dataTransfer && ev.dataTransfer.files.length) uploadFiles(ev.dataTransfer.files);
  });
  // A file dropped beside the zone must not navigate away from the page.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());
  zone.addEventListener('click', () => page.fileInput.click());
  zone.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      page.fileInput.click();
    }
  });
  page.fileInput.addEventListener('change', () => {
    uploadFiles(page.fileInput.files);
    page.fileInput.value = '';
  });
}

// ---------------------------------------------------------------------------------------------
// Tenants and keys

async function loadTenants() {
  const body = await api('/api/v1/admin/tenants');
  const tenants = (body && body.tenants) || [];
  names.tenants = new Map(tenants.map((t) => [t.id, t.name]));
  tenantsListed = tenants;
  usage.setScope(isOperator(), tenants);
  syncRows(page.tenants, tenants, {
    key: (t) => t.id,
    columns: 4,
    empty: 'No tenants.',
    create: (t) => el('tr', {}, el('td'), el('td.mono.opt'), el('td.opt'),
      el('td.actions', {}, el('button.ghost.small', { type: 'button', text: 'Keys', onclick: () => selectTenant(t.id, true) }))),
    update: (tr, t) => {
      setCell(tr, 0, t.name);
      setCell(tr, 1, t.id);
      setCell(tr, 2, formatDate(t.createdAt));
      tr.classList.toggle('selected', t.id === page.keysTenant.value);
    },
  });
  const selected = page.keysTenant.value;
  clear(page.keysTenant);
  for (const t of tenants) page.keysTenant.append(el('option', { value: t.id }, t.name));
  if (selected && names.tenants.has(selected)) page.keysTenant.value = selected;
  return tenants;
}

function selectTenant(id, focus = false) {
  page.keysTenant.value = id;
  for (const tr of page.tenants.querySelectorAll('tr[data-key]')) tr.classList.toggle('selected', tr.dataset.key === id);
  loadKeys().catch(showError);
  if (focus) page.keyName.focus();
}

async function loadAllKeys() {
  const body = await api('/api/v1/admin/keys');
  names.keys = new Map(((body && body.keys) || []).map((k) => [k.id, k]));
}

async function loadKeys() {
  const tenantId = page.keysTenant.value;
  if (!tenantId) return;
  const body = await api(`/api/v1/admin/keys?tenantId=${encodeURIComponent(tenantId)}`);
  const keys = (body && body.keys) || [];
  for (const k of keys) names.keys.set(k.id, k);
  syncRows(page.keys, keys, {
    key: (k) => `${k.id}:${k.revokedAt ? 'r' : 'a'}`,
    columns: 4,
    empty: 'No keys for this tenant yet.',
    create: (k) => el('tr', {}, el('td'), el('td'), el('td.opt'),
      el('td.actions', {}, k.revokedAt
        ? el('span.badge.revoked', { title: formatDate(k.revokedAt) }, 'revoked')
        : confirmButton('Revoke', 'Really revoke?', () => revokeKey(k)))),
    update: (tr, k) => {
      setCell(tr, 0, k.name);
      const rights = tr.children[1];
      const role = k.isOperator ? 'operator' : (k.isAdmin ? 'admin' : 'user');
      if (!rights.firstChild) rights.append(el(`span.badge${role === 'user' ? '' : '.admin'}`, {}, role));
      setCell(tr, 2, formatDate(k.createdAt));
    },
  });
}

async function revokeKey(k) {
  try {
    await api(`/api/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
    toast(`Key “${k.name}” revoked.`, 'ok');
  } catch (e) {
    showError(e);
  }
  await loadKeys().catch(showError);
}

page.tenantForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = page.tenantName.value.trim();
  if (!name) return;
  try {
    const tenant = await api('/api/v1/admin/tenants', { method: 'POST', body: { name } });
    page.tenantName.value = '';
    toast(`Tenant “${tenant.name}” added.`, 'ok');
    await loadTenants();
    selectTenant(tenant.id, true);
  } catch (e) {
    showError(e);
  }
});

page.keysTenant.addEventListener('change', () => selectTenant(page.keysTenant.value));

page.keyForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = page.keyName.value.trim();
  const tenantId = page.keysTenant.value;
  if (!name || !tenantId) return;
  try {
    const body = { tenantId, name, admin: page.keyAdmin.checked };
    if (isOperator()) body.operator = page.keyOperator.checked;
    const created = await api('/api/v1/admin/keys', { method: 'POST', body });
    page.keyName.value = '';
    page.keyAdmin.checked = false;
    page.keyOperator.checked = false;
    page.secretName.textContent = `${created.name} (${tenantName(created.tenantId)})`;
    page.secretValue.value = created.key;
    page.secret.hidden = false;
    page.secretValue.focus();
    page.secretValue.select();
    await loadKeys();
  } catch (e) {
    showError(e);
  }
});

page.copySecret.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(page.secretValue.value);
    page.copySecret.textContent = 'Copied';
  } catch {
    page.secretValue.select();
    page.copySecret.textContent = 'Press Ctrl+C';
  }
  setTimeout(() => { page.copySecret.textContent = 'Copy'; }, 2000);
});

page.hideSecret.addEventListener('click', () => {
  page.secretValue.value = '';
  page.secret.hidden = true;
  page.keyName.focus();
});

// ---------------------------------------------------------------------------------------------
// Sign-in and start

function showPanels(on) {
  page.panels.forEach((p) => { p.hidden = !on; });
}

function showForbidden() {
  if (feed) feed.stop();
  feed = null;
  usage.stop();
  showPanels(false);
  page.forbidden.hidden = false;
  page.signout.hidden = false;
  showStatus('forbidden');
  page.status.dataset.status = 'offline';
  page.switchKey.focus();
}

function isOperator() {
  return Boolean(me && me.role === 'operator');
}

/** Shows only what the key may do; until its role is known, nothing that needs an operator. */
function showRole(who) {
  me = who;
  const operator = isOperator();
  page.tenantForm.hidden = !operator;
  page.keyOperatorLabel.hidden = !operator;
  if (!operator) page.keyOperator.checked = false;
  usage.setScope(operator, tenantsListed);
  page.role.hidden = !me;
  if (me) {
    page.role.textContent = operator ? 'operator · every tenant' : `admin · ${me.tenantName || me.tenantId}`;
    page.role.classList.toggle('admin', operator);
  }
}

/** Checks the signed-in key: resolves to its whoami (an admin or an operator), or
 * 'forbidden'; rejects for 401 and network errors. */
async function checkAccess() {
  const who = await api('/api/v1/whoami');
  return who.role === 'admin' || who.role === 'operator' ? who : 'forbidden';
}

async function start(role) {
  page.signout.hidden = false;
  if (role === 'forbidden') {
    showRole(null);
    showForbidden();
    return;
  }
  showRole(typeof role === 'object' ? role : null);
  page.forbidden.hidden = true;
  showPanels(true);
  await Promise.all([
    loadTenants().then(() => {
      if (!page.keysTenant.value && page.keysTenant.options.length) page.keysTenant.selectedIndex = 0;
      return loadKeys();
    }),
    loadAllKeys(),
    loadDocuments(),
  ]).catch(showError);
  charts.samples = [];
  charts.lastSeq = null;
  feed = new LiveFeed(renderLive, renderHistory);
  feed.start();
  // After the names: the report shows tenants and keys by name.
  usage.start();
}

async function requireSignIn(message = '', elsewhere = null) {
  if (feed) feed.stop();
  feed = null;
  usage.stop();
  showPanels(false);
  showRole(null);
  page.forbidden.hidden = true;
  page.signout.hidden = true;
  showStatus('idle');
  const role = await signIn({
    title: 'ragstream admin',
    lead: 'Sign in with an admin API key.',
    message,
    validate: checkAccess,
    signedIn: elsewhere,
  });
  start(role);
}

let rejecting = false;
function keyRejected(error) {
  if (rejecting) return;
  rejecting = true;
  session.forget();
  requireSignIn(error.friendly).finally(() => {
    rejecting = false;
  });
}

/** Signs out on the hub (the cookie stops working for every tab), then asks for a key. */
async function signOut(button) {
  button.disabled = true;
  try {
    await session.end();
  } catch (e) {
    toast(`Not signed out: ${e instanceof ApiError ? e.friendly : String(e)}`, 'error', 6000);
    return;
  } finally {
    button.disabled = false;
  }
  requireSignIn();
}

page.signout.addEventListener('click', () => signOut(page.signout));
page.switchKey.addEventListener('click', () => signOut(page.switchKey));

async function boot() {
  setUpDropzone();
  if (!session.probably) {
    // Not signed in from this tab: ask at once, unless the hub says another tab signed in.
    requireSignIn('', session.current().then(Boolean, () => false));
    return;
  }
  try {
    if (!(await session.current())) {
      requireSignIn();
      return;
    }
    start(await checkAccess());
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unauthorized') {
      session.forget();
      requireSignIn(e.friendly);
    } else if (session.probably) {
      // The hub is unreachable right now: show the page and let the feed reconnect (the
      // role is learnt once the hub answers; the hub enforces it either way).
      start('unknown');
    } else {
      requireSignIn(e instanceof ApiError ? e.friendly : String(e));
    }
  }
}

boot();
