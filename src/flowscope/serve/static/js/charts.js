// Charts: time series of windows (uPlot, vendored) and bar lists (plain HTML).
//
// A window chart plots one number per window as a rate per second (flows/s, pkt/s, bit/s), so a
// 1-second series and a 1-hour report read in the same units. Windows still open (provisional)
// are drawn over an amber hatched band; a selected window over a blue one. Hovering shows a
// tooltip with the window, its rate and its total.

import {h, fill} from "./dom.js";
import {now} from "./api.js";
import {UNITS, exact, rate, si, span, timeTicks, total} from "./format.js";

const uPlot = globalThis.uPlot;

export const COLORS = {
  flows: "#2563eb", packets: "#7c3aed", bytes: "#0f9d58", web: "#ea580c",
  tcp: "#2563eb", udp: "#0f9d58", icmp: "#d97706", other: "#6b7280",
  sent: "#2563eb", received: "#db2777",
};

const PROVISIONAL_FILL = "rgba(245, 158, 11, 0.16)";
const PROVISIONAL_LINE = "rgba(217, 119, 6, 0.9)";
const SELECTED_FILL = "rgba(37, 99, 235, 0.13)";

/**
 * The seconds a window's numbers cover: its length, or for a window still open the part that had
 * elapsed when its numbers were published (`seen_ms`, stamped when the page received them; else
 * now), so the rate of an open window is not understated. At least a tenth of the window counts,
 * so a window that has just opened does not show a wild estimate.
 */
export function elapsedSeconds(point) {
  const length = point.end_ms - point.start_ms;
  if (point.final || point.filled) return length / 1000;
  const at = point.seen_ms || now();
  return Math.min(length, Math.max(length / 10, at - point.start_ms)) / 1000;
}

function cssPixels(value) {
  return value * (window.devicePixelRatio || 1);
}

/**
 * A chart of windows. opts:
 *   metric: "flows" | "packets" | "bytes" (the unit of every series)
 *   series: [{label, color, get(point) → number}]
 *   height (px), bars (draw bars instead of lines), sync (cursor sync key),
 *   onPick(point) (click on a window), caption (aria label)
 */
export class WindowChart {
  constructor(el, opts) {
    this.el = el;
    this.opts = opts;
    this.points = [];
    this.selected = null;
    this.range = null;
    el.classList.add("chart");
    this.tip = h("div", {class: "chart-tip", hidden: true, role: "tooltip"});
    this.plotHost = h("div", {class: "chart-plot", role: "img", "aria-label": opts.caption || opts.metric});
    fill(el, this.plotHost, this.tip);
    const unit = UNITS[opts.metric];
    const series = [{}].concat(opts.series.map(s => ({
      label: s.label,
      stroke: s.color,
      width: opts.bars ? 0 : 1.6,
      fill: opts.bars ? s.color + "cc" : s.color + "22",
      points: {show: false},
      spanGaps: false,
      paths: opts.bars ? uPlot.paths.bars({size: [0.85, Infinity, 1], align: 1}) : undefined,
    })));
    const chart = this;
    this.plot = new uPlot({
      width: Math.max(200, el.clientWidth || 600),
      height: opts.height || 180,
      series,
      legend: {show: opts.series.length > 1, live: false},
      cursor: {drag: {x: false, y: false, setScale: false}, sync: opts.sync ? {key: opts.sync} : undefined,
        points: {show: !opts.bars}},
      scales: {
        x: {time: true, range: (u, min, max) => chart.range || [min, max]},
        y: {range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1]},
      },
      axes: [
        {stroke: "#555", grid: {stroke: "#eee", width: 1}, ticks: {stroke: "#ddd"}, values: timeTicks, space: 60},
        {stroke: "#555", grid: {stroke: "#eee", width: 1}, ticks: {stroke: "#ddd"}, size: 62,
          label: unit.rate, labelSize: 18, labelFont: "12px system-ui, sans-serif",
          values: (u, splits) => splits.map(v => si(v).trim())},
      ],
      hooks: {
        drawClear: [u => chart.drawBands(u)],
        setCursor: [u => chart.showTip(u)],
      },
    }, this.data(), this.plotHost);
    this.plot.over.addEventListener("click", () => {
      const i = this.plot.cursor.idx;
      if (i !== null && i !== undefined && this.opts.onPick && this.points[i]) this.opts.onPick(this.points[i]);
    });
    this.plot.over.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    new ResizeObserver(() => {
      const width = Math.max(200, this.el.clientWidth);
      if (width !== this.plot.width) this.plot.setSize({width, height: this.plot.height});
    }).observe(el);
  }

  /** Rate per second of a point's number. */
  rateOf(point, value) {
    if (value === null || value === undefined) return null;
    return (value * UNITS[this.opts.metric].scale) / elapsedSeconds(point);
  }


  data() {
    const xs = this.points.map(p => p.start_ms / 1000);
    const ys = this.opts.series.map(s => this.points.map(p => (p.missing ? null : this.rateOf(p, s.get(p)))));
    return [xs, ...ys];
  }

  /**
   * points: windows oldest first ({start_ms, end_ms, final, ...}; `missing: true` for a gap);
   * range: [fromMs, toMs] shown on the x axis (default: the points'); selected: a start_ms.
   */
  update(points, {range = null, selected = null} = {}) {
    this.points = points;
    this.selected = selected;
    if (!range && points.length) range = [points[0].start_ms, points[points.length - 1].end_ms];
    this.range = range ? [range[0] / 1000, range[1] / 1000] : null;
    this.plot.setData(this.data(), true);
    const known = points.filter(p => !p.missing);
    this.el.dataset.points = String(known.length);
    this.el.dataset.nonzero = String(known.filter(p => this.opts.series.some(s => s.get(p) > 0)).length);
    this.el.dataset.provisional = String(known.filter(p => !p.final).length);
    this.el.dataset.total = String(known.reduce((a, p) => a + (this.opts.series[0].get(p) || 0), 0));
    if (known.length) this.el.dataset.lastStart = String(known[known.length - 1].start_ms);
  }

  drawBands(u) {
    const {ctx, bbox} = u;
    const band = (startMs, endMs, color, stripe) => {
      let x0 = u.valToPos(startMs / 1000, "x", true);
      let x1 = u.valToPos(endMs / 1000, "x", true);
      x0 = Math.max(bbox.left, x0);
      x1 = Math.min(bbox.left + bbox.width, x1);
      if (x1 <= x0) return;
      ctx.save();
      ctx.fillStyle = color;
      ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
      if (stripe) {
        ctx.strokeStyle = stripe;
        ctx.lineWidth = cssPixels(1);
        ctx.setLineDash([cssPixels(4), cssPixels(3)]);
        ctx.beginPath();
        ctx.moveTo(x0, bbox.top);
        ctx.lineTo(x0, bbox.top + bbox.height);
        ctx.stroke();
        if (x1 - x0 > cssPixels(30)) {
          ctx.fillStyle = stripe;
          ctx.font = `${cssPixels(11)}px system-ui, sans-serif`;
          ctx.textBaseline = "top";
          ctx.fillText("open", x0 + cssPixels(3), bbox.top + cssPixels(2));
        }
      }
      ctx.restore();
    };
    for (const p of this.points) {
      if (this.selected !== null && p.start_ms === this.selected) band(p.start_ms, p.end_ms, SELECTED_FILL, null);
    }
    const open = this.points.filter(p => !p.missing && !p.final);
    if (open.length) {
      band(open[0].start_ms, open[open.length - 1].end_ms, PROVISIONAL_FILL, PROVISIONAL_LINE);
    }
  }

  showTip(u) {
    const i = u.cursor.idx;
    const point = i === null || i === undefined ? null : this.points[i];
    if (!point || u.cursor.left < 0) {
      this.tip.hidden = true;
      return;
    }
    const rows = this.opts.series.map(s => {
      const value = point.missing ? null : s.get(point);
      return h("div", {class: "tip-row"},
        h("span", {class: "swatch", style: `background:${s.color}`}), `${s.label}: `,
        h("b", null, value === null ? "no data" : rate(this.opts.metric, this.rateOf(point, value) /
          UNITS[this.opts.metric].scale)),
        value === null ? null : h("span", {class: "muted"}, ` (${total(this.opts.metric, value)} in the window)`));
    });
    fill(this.tip,
      h("div", {class: "tip-title"}, span(point.start_ms, point.end_ms)),
      rows,
      point.missing ? h("div", {class: "muted"}, "not known yet")
        : h("div", {class: point.final ? "muted" : "tip-provisional"},
          point.final ? "final" : "provisional: the window is still open"));
    this.tip.hidden = false;
    const width = this.tip.offsetWidth;
    const left = u.cursor.left + u.over.offsetLeft;
    const x = left + 14 + width > this.el.clientWidth ? left - width - 14 : left + 14;
    this.tip.style.left = `${Math.max(0, x)}px`;
    this.tip.style.top = `${Math.max(0, u.cursor.top + u.over.offsetTop - 10)}px`;
  }
}

/**
 * A ranked list as horizontal bars: rows [{key, label, sub, value, title}], value formatted by
 * `format`. The table keeps the exact numbers in data attributes (and the tests read them).
 */
export function barTable(rows, {format, keyHeader, valueHeader, empty = "no traffic", onPick = null}) {
  if (!rows.length) return h("p", {class: "empty"}, empty);
  const max = Math.max(...rows.map(r => r.value), 1);
  return h("table", {class: "bars"},
    h("thead", null, h("tr", null, h("th", {class: "rank"}, "#"), h("th", null, keyHeader),
      h("th", {class: "bar-col"}, valueHeader), h("th", {class: "num"}, ""))),
    h("tbody", null, rows.map((r, i) => h("tr", {dataset: {key: r.key, value: r.value}, title: r.title || null,
      class: onPick ? "pickable" : null, onclick: onPick ? () => onPick(r) : null},
    h("td", {class: "rank"}, String(i + 1)),
    h("td", {class: "key"}, r.label, r.sub ? h("span", {class: "sub"}, ` ${r.sub}`) : null),
    h("td", {class: "bar-col"}, h("div", {class: "bar", style: `width:${(100 * r.value) / max}%`})),
    h("td", {class: "num"}, format(r.value))))));
}

/** Exact numbers for a title attribute: "1 234 flows, 5 678 packets, 9 012 bytes". */
export function triple(entry) {
  return `${exact(entry.flows)} flows, ${exact(entry.packets)} packets, ${exact(entry.bytes)} bytes`;
}
