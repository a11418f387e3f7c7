// The admin page's usage view: `GET /api/v1/admin/usage` for a range of UTC days and a
// grouping, as a table sortable by any column, the same report as a CSV download (a plain
// link: the session cookie signs it in, and the hub sends it as an attachment), and each
// monthly output-token budget beside this month's use. The hub scopes every report: a tenant
// admin gets its own tenant's whatever the page asks.

import { api, ApiError } from './api.js';
import { el, $, $$, clear, formatMs, formatNumber } from './ui.js';

/** `groupBy` names, in the order the form offers them, with the report's field for each. */
const GROUPS = {
  tenant: { field: 'tenantId', label: 'Tenant' },
  key: { field: 'keyId', label: 'Key' },
  provider: { field: 'provider', label: 'Provider' },
  model: { field: 'model', label: 'Model' },
  day: { field: 'day', label: 'Day' },
  transport: { field: 'transport', label: 'Transport' },
};

const FIGURES = [
  { field: 'answers', label: 'Answers' },
  // Output first: the figure budgets count, so it stays in view on a phone.
  { field: 'outputTokens', label: 'Output tokens', title: 'The provider\'s count, or the text deltas the hub relayed where it reported none' },
  { field: 'inputTokens', label: 'Input tokens', title: 'The provider\'s count, or the hub\'s estimate where it reported none' },
  { field: 'errors', label: 'Errors' },
  { field: 'cancelled', label: 'Cancelled' },
  { field: 'detached', label: 'Detached', title: 'Answers whose connection was lost while they ran' },
  { field: 'ttftMsAvg', label: 'TTFT avg', ms: true, title: 'Mean time to the first token' },
  { field: 'durationMsAvg', label: 'Duration avg', ms: true },
];

// New answers reach the store in batches about a second apart (and the live feed tells of
// them up to a second late): a report asked for sooner would not have them yet.
const AFTER_ANSWERS_MS = 2500;
// The hub sums the range's answer records for every report (and this month's for the
// budgets): an open page asks at most this often by itself, however busy the hub is.
const MIN_GAP_MS = 10000;
// Answers of other hubs of a cluster do not move this page's live counters.
const EVERY_MS = 60000;

function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

function compare(a, b, numeric) {
  // Rows without a value (no answer had a first token) go last either way.
  const missingA = a === null || a === undefined || a === '';
  const missingB = b === null || b === undefined || b === '';
  if (missingA || missingB) return missingA === missingB ? 0 : (missingA ? 1 : -1);
  if (numeric) return Number(a) - Number(b);
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: 'base' });
}

export class UsageView {
  /**
   * `tenantName(id)` and `keyName(id)` show ids as names; `onError(e)` handles what the
   * view cannot (a rejected session).
   */
  constructor({ tenantName, keyName, onError }) {
    this.tenantName = tenantName;
    this.keyName = keyName;
    this.onError = onError;
    this.form = $('#usage-form');
    this.from = $('#usage-from');
    this.to = $('#usage-to');
    this.tenant = $('#usage-tenant');
    this.tenantLabel = $('#usage-tenant-label');
    this.csv = $('#usage-csv');
    this.status = $('#usage-status');
    this.head = $('#usage thead tr');
    this.body = $('#usage tbody');
    this.foot = $('#usage tfoot');
    this.budgets = $('#budgets');
    this.budgetList = $('#budget-list');
    this.report = null;
    this.sort = { field: 'outputTokens', dir: 'desc' };
    this.shownGroups = '';
    this.controller = null;
    this.timer = null;
    this.ticker = null;
    this.answersSeen = null;
    this.lastMove = 0;
    this.lastLoad = 0;
    // A report came due while the tab was hidden.
    this.stale = false;
    this.onVisible = null;

    const today = new Date();
    this.from.value = `${utcDay(today).slice(0, 8)}01`;
    this.to.value = utcDay(today);
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.load();
    });
    this.form.addEventListener('change', () => {
      if (!this.groups().length) $('input[name="group"][value="day"]', this.form).checked = true;
      this.updateLink();
      this.load();
    });
    this.updateLink();
  }

  groups() {
    return $$('input[name="group"]', this.form).filter((c) => c.checked).map((c) => c.value);
  }

  params() {
    const q = new URLSearchParams({ from: this.from.value, to: this.to.value, groupBy: this.groups().join(',') });
    if (!this.tenantLabel.hidden && this.tenant.value) q.set('tenantId', this.tenant.value);
    return q;
  }

  updateLink() {
    const q = this.params();
    q.set('format', 'csv');
    this.csv.href = `/api/v1/admin/usage?${q}`;
  }

  /** Operators may pick one tenant (or all); a tenant admin's reports are its tenant's. */
  setScope(operator, tenants) {
    this.tenantLabel.hidden = !operator;
    const chosen = this.tenant.value;
    while (this.tenant.options.length > 1) this.tenant.lastElementChild.remove();
    for (const t of tenants || []) this.tenant.append(el('option', { value: t.id }, t.name));
    this.tenant.value = [...this.tenant.options].some((o) => o.value === chosen) ? chosen : '';
    this.updateLink();
  }

  start() {
    this.stop();
    if (!this.onVisible) {
      this.onVisible = () => {
        if (document.visibilityState === 'visible' && this.stale && this.ticker) this.load();
      };
      document.addEventListener('visibilitychange', this.onVisible);
    }
    this.ticker = setInterval(() => {
      if (document.visibilityState === 'visible' && Date.now() - this.lastLoad >= MIN_GAP_MS) this.load();
    }, EVERY_MS);
    this.load();
  }

  stop() {
    clearInterval(this.ticker);
    this.ticker = null;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.controller) this.controller.abort();
    this.answersSeen = null;
    // The next key to sign in must not glimpse this one's report.
    this.report = null;
    this.shownGroups = '';
    clear(this.head);
    clear(this.body);
    clear(this.foot);
    clear(this.budgetList);
    this.budgets.hidden = true;
    this.status.textContent = '';
    delete this.status.dataset.state;
  }

  /** The live feed's count of answers ended on this hub: when it moves, the report will. */
  answersEnded(total) {
    if (!Number.isFinite(total)) return;
    const moved = this.answersSeen !== null && total !== this.answersSeen;
    this.answersSeen = total;
    if (!moved) return;
    this.lastMove = Date.now();
    this.schedule();
  }

  /** One report after the last answers' records are stored, and no sooner than MIN_GAP_MS. */
  schedule() {
    if (this.timer) return;
    const due = Math.max(this.lastMove + AFTER_ANSWERS_MS, this.lastLoad + MIN_GAP_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (document.visibilityState !== 'visible') {
        // Hidden: the ticker's next turn (or showing the tab, see start) catches up.
        this.stale = true;
        return;
      }
      this.load();
      // Answers that ended while this one waited its turn get a report of their own.
      if (this.lastMove + AFTER_ANSWERS_MS > this.lastLoad) this.schedule();
    }, Math.max(0, due - Date.now()));
  }

  async load() {
    this.lastLoad = Date.now();
    this.stale = false;
    this.updateLink();
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    const signal = controller.signal;
    this.status.dataset.state = 'loading';
    try {
      const [report] = await Promise.all([
        api(`/api/v1/admin/usage?${this.params()}`, { signal }),
        // Budgets are a side note: without them the report still shows.
        this.loadBudgets(signal).catch(() => {}),
      ]);
      if (signal.aborted) return;
      this.report = report;
      this.render();
      const rows = (report && report.rows) || [];
      this.status.dataset.state = 'ok';
      this.status.textContent = `${formatNumber(rows.length)} row${rows.length === 1 ? '' : 's'} · ${report.from} to ${report.to} (UTC) · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (signal.aborted || (e && e.name === 'AbortError')) return;
      this.status.dataset.state = 'error';
      this.status.textContent = `No report: ${e instanceof ApiError ? e.friendly : String(e)}`;
      if (e instanceof ApiError && e.code === 'unauthorized') this.onError(e);
    }
  }

  columns() {
    const groups = (this.report && this.report.groupBy) || [];
    return [
      ...groups.filter((g) => GROUPS[g]).map((g) => ({ ...GROUPS[g], group: g })),
      ...FIGURES.map((f) => ({ ...f, numeric: true })),
    ];
  }

  /** What a group cell shows: names for tenant and key ids. */
  text(column, value) {
    if (value === null || value === undefined) return '–';
    if (column.group === 'tenant') return this.tenantName(value);
    if (column.group === 'key') return this.keyName(value);
    return String(value);
  }

  render() {
    const columns = this.columns();
    if (!columns.some((c) => c.field === this.sort.field)) this.sort = { field: 'outputTokens', dir: 'desc' };
    const signature = columns.map((c) => c.field).join(',');
    if (signature !== this.shownGroups) {
      this.shownGroups = signature;
      clear(this.head);
      for (const c of columns) {
        const button = el('button.sort', { type: 'button', title: c.title, dataset: { field: c.field } }, c.label);
        button.addEventListener('click', () => this.sortBy(c));
        this.head.append(el(`th${c.numeric ? '.num' : ''}`, { scope: 'col', dataset: { field: c.field } }, button));
      }
    }
    for (const th of this.head.children) {
      if (th.dataset.field === this.sort.field) th.setAttribute('aria-sort', this.sort.dir === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }

    const rows = [...((this.report && this.report.rows) || [])];
    const column = columns.find((c) => c.field === this.sort.field);
    const sign = this.sort.dir === 'asc' ? 1 : -1;
    const sortValue = (row) => {
      const v = row[column.field];
      return column.numeric || v === null || v === undefined ? v : this.text(column, v);
    };
    rows.sort((a, b) => {
      const va = sortValue(a);
      const vb = sortValue(b);
      const missing = va === null || va === undefined;
      if (missing || vb === null || vb === undefined) return compare(va, vb, column.numeric);
      return sign * compare(va, vb, column.numeric);
    });

    clear(this.body);
    if (!rows.length) {
      this.body.append(el('tr.empty', {}, el('td', { colspan: columns.length }, 'No answers in this range.')));
    }
    for (const row of rows) {
      const tr = el('tr', { dataset: { key: columns.filter((c) => c.group).map((c) => row[c.field] ?? '').join('|') } });
      for (const c of columns) {
        const v = row[c.field];
        const shown = c.numeric ? (c.ms ? formatMs(v) : formatNumber(v)) : this.text(c, v);
        const attrs = { dataset: { field: c.field, value: v ?? '' } };
        if (c.group === 'tenant' || c.group === 'key') attrs.title = String(v ?? '');
        tr.append(el(`td${c.numeric ? '.num' : ''}`, attrs, shown));
      }
      this.body.append(tr);
    }

    clear(this.foot);
    const totals = (this.report && this.report.totals) || {};
    const groups = columns.filter((c) => c.group).length;
    const tr = el('tr');
    if (groups) tr.append(el('td', { colspan: groups }, 'Total'));
    for (const c of columns.filter((x) => x.numeric)) {
      const v = totals[c.field];
      tr.append(el('td.num', { dataset: { field: c.field, value: v ?? '' } }, c.ms ? formatMs(v) : formatNumber(v)));
    }
    this.foot.append(tr);
  }

  /** A new column sorts largest (or A) first; the same column again reverses. */
  sortBy(column) {
    if (this.sort.field === column.field) {
      this.sort.dir = this.sort.dir === 'asc' ? 'desc' : 'asc';
    } else {
      this.sort = { field: column.field, dir: column.numeric ? 'desc' : 'asc' };
    }
    this.render();
  }

  /** Budgets of the tenants and keys this admin sees, against this month's output tokens. */
  async loadBudgets(signal) {
    const [tenants, keys, month] = await Promise.all([
      api('/api/v1/admin/tenants', { signal }),
      api('/api/v1/admin/keys', { signal }),
      // No range: this month (UTC), as the budgets count.
      api('/api/v1/admin/usage?groupBy=tenant,key', { signal }),
    ]);
    if (signal.aborted) return;
    const used = { tenant: new Map(), key: new Map() };
    for (const r of (month && month.rows) || []) {
      used.tenant.set(r.tenantId, (used.tenant.get(r.tenantId) || 0) + (Number(r.outputTokens) || 0));
      used.key.set(r.keyId, (used.key.get(r.keyId) || 0) + (Number(r.outputTokens) || 0));
    }
    const items = [];
    for (const t of (tenants && tenants.tenants) || []) {
      if (t.monthlyOutputTokenBudget != null) items.push({ kind: 'tenant', id: t.id, name: `${t.name} (tenant)`, budget: t.monthlyOutputTokenBudget });
    }
    for (const k of (keys && keys.keys) || []) {
      if (k.monthlyOutputTokenBudget != null && !k.revokedAt) {
        items.push({ kind: 'key', id: k.id, name: `${k.name} (key, ${this.tenantName(k.tenantId)})`, budget: k.monthlyOutputTokenBudget });
      }
    }
    this.budgets.hidden = !items.length;
    clear(this.budgetList);
    for (const item of items) {
      const spent = used[item.kind].get(item.id) || 0;
      const share = item.budget > 0 ? spent / item.budget : (spent > 0 ? 1 : 0);
      const fill = el(`span${share >= 1 ? '.over' : ''}`);
      fill.style.width = `${Math.min(100, share * 100)}%`;
      this.budgetList.append(el('li', { dataset: { kind: item.kind, id: item.id, used: spent, budget: item.budget } },
        el('span.name', { title: item.id }, item.name),
        el('span.bar', { role: 'img', 'aria-label': `${Math.round(share * 100)}% of the budget` }, fill),
        el('span.count', {}, `${formatNumber(spent)} / ${formatNumber(item.budget)}`)));
    }
  }
}
