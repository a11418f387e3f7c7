// Line charts in plain SVG for the admin page: no library, nothing inline (the pages' CSP),
// colours from the stylesheet. A chart draws the hub's samples (`GET /api/v1/admin/history`
// and the feed's `history` events) over a fixed window that ends at the newest sample, so
// the server's clock places them, never the browser's.

const SVG = 'http://www.w3.org/2000/svg';

// The drawing's own units; the SVG scales to its box keeping its proportions, so text
// stays legible at phone width.
const W = 320;
const H = 132;
const PAD = { left: 34, right: 6, top: 8, bottom: 18 };

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** 1, 2 or 5 times a power of ten, at least `value` (the axis' top). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/**
 * The path of one series: `M`/`L` segments through the samples that have a value, broken
 * where a value is missing (no answer, no time to first token) or samples are missing (the
 * hub restarted).
 */
export function linePath(samples, value, { x, y, gapMs }) {
  let d = '';
  let previous = null;
  for (const s of samples) {
    const v = value(s);
    if (v === null || v === undefined || !Number.isFinite(Number(v))) {
      previous = null;
      continue;
    }
    const joined = previous && s.at - previous.at <= gapMs;
    // `h0` after a move: a lone value (one sample with answers) shows as a dot (round caps).
    d += `${joined ? 'L' : 'M'}${x(s.at).toFixed(1)},${y(Number(v)).toFixed(1)}${joined ? '' : ' h0'} `;
    previous = s;
  }
  return d.trim();
}

export class LineChart {
  /**
   * @param {object} o
   * @param {string} o.id          data-chart of the figure
   * @param {string} o.title       heading
   * @param {{key: string, label: string}[]} o.series  sample fields drawn, one line each
   * @param {(v: number) => string} o.format  a value as people read it (axis and now)
   * @param {number} [o.minTop]   the axis' least top, so a quiet chart's labels differ
   */
  constructor({ id, title, series, format, minTop = 1 }) {
    this.series = series;
    this.format = format;
    this.minTop = minTop;
    this.figure = document.createElement('figure');
    this.figure.className = 'chart';
    this.figure.dataset.chart = id;
    const head = document.createElement('figcaption');
    const name = document.createElement('span');
    name.className = 'chart-title';
    name.textContent = title;
    this.now = document.createElement('span');
    this.now.className = 'chart-now';
    head.append(name, this.now);
    this.svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg' });
    this.svg.dataset.samples = '0';
    this.label = svgEl('title');
    this.svg.append(this.label);
    this.grid = svgEl('g', { class: 'grid' });
    this.lines = svgEl('g', { class: 'lines' });
    this.svg.append(this.grid, this.lines);
    this.paths = series.map((s, i) => {
      const path = svgEl('path', { class: `line series-${i}` });
      path.dataset.series = s.key;
      this.lines.append(path);
      return path;
    });
    this.figure.append(head, this.svg);
    if (series.length > 1) {
      const legend = document.createElement('div');
      legend.className = 'chart-legend';
      series.forEach((s, i) => {
        const item = document.createElement('span');
        item.className = `series-${i}`;
        item.textContent = s.label;
        legend.append(item);
      });
      this.figure.append(legend);
    }
  }

  /** Draws `samples` (oldest first) in the window of `windowMs` that ends at the newest. */
  update(samples, { intervalMs, windowMs }) {
    const end = samples.length ? samples[samples.length - 1].at : Date.now();
    const start = end - windowMs;
    const shown = samples.filter((s) => s.at >= start);
    let max = 0;
    for (const s of shown) {
      for (const { key } of this.series) {
        const v = Number(s[key]);
        if (Number.isFinite(v) && v > max) max = v;
      }
    }
    const top = niceCeiling(Math.max(max, this.minTop));
    const x = (at) => PAD.left + ((at - start) / windowMs) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    this.drawGrid(top, y, windowMs, x, start);
    // A missing sample or two is a late tick; more is a gap in the data.
    const gapMs = intervalMs * 2.5;
    this.paths.forEach((path, i) => {
      const key = this.series[i].key;
      path.setAttribute('d', linePath(shown, (s) => s[key], { x, y, gapMs }));
      const last = shown.length ? shown[shown.length - 1][key] : null;
      path.dataset.last = last === null || last === undefined ? '' : String(last);
      path.dataset.sum = String(shown.reduce((a, s) => a + (Number(s[key]) || 0), 0));
    });
    this.svg.dataset.samples = String(shown.length);
    this.svg.dataset.lastSeq = shown.length ? String(shown[shown.length - 1].seq) : '';
    const latest = shown.length ? shown[shown.length - 1] : null;
    const nowText = this.series
      .map(({ key, label }) => {
        const v = latest ? latest[key] : null;
        const text = v === null || v === undefined ? '–' : this.format(Number(v));
        return this.series.length > 1 ? `${label} ${text}` : text;
      })
      .join(' · ');
    this.now.textContent = nowText;
    this.label.textContent = `${this.figure.querySelector('.chart-title').textContent}, last ${Math.round(windowMs / 60000)} minutes: now ${nowText}, at most ${this.format(max)}`;
  }

  drawGrid(top, y, windowMs, x, start) {
    while (this.grid.firstChild) this.grid.firstChild.remove();
    for (const v of [0, top / 2, top]) {
      const yy = y(v).toFixed(1);
      this.grid.append(svgEl('line', { x1: PAD.left, x2: W - PAD.right, y1: yy, y2: yy }));
      const label = svgEl('text', { x: PAD.left - 4, y: Number(yy) + 3, 'text-anchor': 'end' });
      label.textContent = this.format(v);
      this.grid.append(label);
    }
    const minutes = Math.round(windowMs / 60000);
    const step = minutes > 10 ? 5 : Math.max(1, Math.round(minutes / 3));
    for (let m = minutes; m >= 0; m -= step) {
      const xx = x(start + windowMs - m * 60000);
      const label = svgEl('text', { x: xx.toFixed(1), y: H - 4, 'text-anchor': m === minutes ? 'start' : (m === 0 ? 'end' : 'middle') });
      label.textContent = m === 0 ? 'now' : `−${m} min`;
      this.grid.append(label);
    }
  }
}
