// Live page: flows/s, packets/s, bits/s of the finest windows (1 s), moved by the server's
// Server-Sent Events: one event per window update, never one per flow, so the page costs the
// same at 100 flows/s and at a million. The x axis advances with the (server's) clock each
// second; the page does not poll the API. Top ports and web servers come from the current report
// window (1 minute, provisional while it is open), also pushed by the server.

import {api, follow, now} from "./api.js";
import {$, fill, finality, h, segmented} from "./dom.js";
import {barTable, COLORS, triple, WindowChart} from "./charts.js";
import {exact, intervalMs, percent, rate, service, span, total} from "./format.js";
import {boot, readParams, viewPicker, writeParams} from "./page.js";

const METRICS = [["flows", "flows"], ["packets", "packets"], ["bytes", "bytes"]];
const PROTOCOLS = ["tcp", "udp", "icmp", "other"];

const state = {
  cfg: null,
  view: "all",
  spanMs: 5 * 60_000,
  liveMs: 1000,
  points: new Map(), // start_ms → compact point (series / stream)
  liveSince: null, // while the stream is open: windows from here on without a result had no traffic
  report: null, // the newest report-interval result (full), for top ports and web servers
  portsBy: "flows",
  protocolsBy: "bytes",
  streams: [],
  charts: {},
  frame: 0,
};

function metricOf(point, metric) {
  return point[metric] || 0;
}

function zero(start) {
  const z = {flows: 0, packets: 0, bytes: 0};
  return {start_ms: start, end_ms: start + state.liveMs, final: true, filled: true, ...z,
    by_protocol: Object.fromEntries(PROTOCOLS.map(p => [p, {...z}])), web: {...z}};
}

/** The windows of the shown span, oldest first: results, zero for quiet closed windows, gaps. */
function windows() {
  const step = state.liveMs;
  const t = now();
  const grace = state.cfg.grace_ms;
  const last = t - (t % step);
  const first = last - state.spanMs + step;
  const list = [];
  for (let start = first; start <= last; start += step) {
    const point = state.points.get(start);
    if (point) list.push(point);
    else if (state.liveSince !== null && start >= state.liveSince && start + step + grace < t) list.push(zero(start));
    else list.push({start_ms: start, end_ms: start + step, final: false, missing: true});
  }
  return list;
}

function forget() {
  const oldest = now() - state.spanMs - 60_000;
  for (const start of state.points.keys()) if (start < oldest) state.points.delete(start);
}

// ------------------------------------------------------------------------------ rendering

function render() {
  state.frame = 0;
  const list = windows();
  const t = now();
  const range = [t - state.spanMs, t];
  for (const chart of Object.values(state.charts)) chart.update(list, {range});
  renderCards(list);
  renderProtocols(list);
}

function schedule() {
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

function lastMinute(list) {
  const cutoff = now() - 60_000;
  return list.filter(p => !p.missing && p.final && p.start_ms >= cutoff);
}

function card(label, value, sub, title) {
  return h("div", {class: "card", title}, h("div", {class: "card-label"}, label),
    h("div", {class: "card-value"}, value), h("div", {class: "card-sub"}, sub));
}

function renderCards(list) {
  const known = list.filter(p => !p.missing);
  const closed = known.filter(p => p.final);
  const latest = closed[closed.length - 1];
  const open = known.filter(p => !p.final).pop();
  const minute = lastMinute(list);
  const seconds = Math.max(1, minute.length * state.liveMs / 1000);
  const sum = metric => minute.reduce((a, p) => a + metricOf(p, metric), 0);
  const peak = metric => Math.max(0, ...minute.map(p => metricOf(p, metric)));
  const perSecond = (metric, point) => (point ? metricOf(point, metric) / (state.liveMs / 1000) : null);
  const cards = METRICS.map(([metric]) => card(
    {flows: "Flows/s", packets: "Packets/s", bytes: "Bits/s"}[metric],
    latest ? rate(metric, perSecond(metric, latest)) : "–",
    `1 min avg ${rate(metric, sum(metric) / seconds)} · peak ${rate(metric, peak(metric) / (state.liveMs / 1000))}`,
    latest ? `last closed window ${span(latest.start_ms, latest.end_ms)}: ${exact(metricOf(latest, metric))} ${metric}`
      : "no closed window yet"));
  const webBytes = minute.reduce((a, p) => a + (p.web ? p.web.bytes : 0), 0);
  cards.push(card("Web share", percent(webBytes, sum("bytes")), `of bytes, last minute (${total("bytes", webBytes)})`,
    "connections with web servers (stats.web ports)"));
  cards.push(card("Open window", open ? total("flows", open.flows) : "–",
    open ? h("span", null, finality(false), " ", span(open.start_ms, open.end_ms)) : "waiting for traffic",
    "the window still being filled: its numbers grow until it closes"));
  fill($("#cards"), cards);
}

function renderProtocols(list) {
  const minute = lastMinute(list);
  const metric = state.protocolsBy;
  const sums = Object.fromEntries(PROTOCOLS.map(p => [p, minute.reduce((a, pt) =>
    a + ((pt.by_protocol && pt.by_protocol[p]) ? pt.by_protocol[p][metric] : 0), 0)]));
  const whole = PROTOCOLS.reduce((a, p) => a + sums[p], 0);
  const seconds = Math.max(1, minute.length * state.liveMs / 1000);
  const stacked = h("div", {class: "stacked", role: "img", "aria-label": "protocol shares"},
    PROTOCOLS.map(p => h("div", {style: `width:${whole ? (100 * sums[p]) / whole : 0}%;background:${COLORS[p]}`,
      title: `${p.toUpperCase()}: ${percent(sums[p], whole)}`})));
  fill($("#protocols-body"), stacked, h("table", {class: "plain"},
    h("tbody", null, PROTOCOLS.map(p => h("tr", {dataset: {protocol: p, value: sums[p]}},
      h("td", null, h("span", {class: "swatch", style: `background:${COLORS[p]}`}), p.toUpperCase()),
      h("td", {class: "num"}, rate(metric, sums[p] / seconds)),
      h("td", {class: "num"}, total(metric, sums[p])),
      h("td", {class: "num"}, percent(sums[p], whole)))))));
}

function portRows(entries, protocol, metric) {
  return entries.map(e => ({key: e.port, label: String(e.port), sub: service(protocol, e.port), value: e[metric],
    title: triple(e)}));
}

function renderReport() {
  const result = state.report;
  const metric = state.portsBy;
  if (!result) {
    fill($("#ports-window"), "waiting for the first window");
    fill($("#top-tcp"), h("p", {class: "empty"}, "no traffic yet"));
    fill($("#top-udp"), h("p", {class: "empty"}, "no traffic yet"));
    for (const id of ["#web-body", "#web-servers", "#web-clients"]) fill($(id), h("p", {class: "empty"}, "no traffic yet"));
    return;
  }
  const where = [span(result.start_ms, result.end_ms), " ", finality(result.final)];
  fill($("#ports-window"), ...where);
  const format = v => total(metric, v);
  for (const protocol of ["tcp", "udp"]) {
    const node = $(`#top-${protocol}`);
    node.dataset.start = String(result.start_ms);
    fill(node, barTable(portRows(result.top_ports[protocol][metric], protocol, metric),
      {format, keyHeader: "port", valueHeader: metric}));
  }
  const web = result.web;
  const hostRows = list => list.map(e => ({key: e.address, label: e.address, value: e[metric], title: triple(e)}));
  fill($("#web-hint"), ...where);
  fill($("#web-body"), h("p", {class: "summary"},
    `This window: ${total("flows", web.flows)}, ${total("packets", web.packets)}, ${total("bytes", web.bytes)}`,
    ` — ${percent(web.bytes, result.totals.bytes)} of the bytes.`));
  fill($("#web-servers"), barTable(hostRows(web.top_servers[metric]), {format, keyHeader: "server", valueHeader: metric}));
  fill($("#web-clients"), barTable(hostRows(web.top_clients[metric]), {format, keyHeader: "client", valueHeader: metric}));
}

// ------------------------------------------------------------------------------ data

async function backfill() {
  const minutes = Math.ceil(state.spanMs / 60_000);
  const body = await api("series", {interval: state.cfg.live_interval, view: state.view, from: `-${minutes + 1}m`,
    limit: Math.min(10_000, (state.spanMs + 120_000) / state.liveMs), fill: true});
  for (const point of body.points) {
    const known = state.points.get(point.start_ms);
    if (!known || (!known.final && point.final) || (known.final === point.final && point.flows >= known.flows)) {
      state.points.set(point.start_ms, point);
    }
  }
  schedule();
}

async function loadReport() {
  // /results (not /report): an empty answer rather than a 404 before the first window.
  const body = await api("results", {interval: state.cfg.report_interval, view: state.view, limit: 1});
  const newest = body.results[body.results.length - 1] || null;
  if (newest && (!state.report || newest.start_ms >= state.report.start_ms)) state.report = newest;
  renderReport();
}

function connect() {
  for (const s of state.streams) s.close();
  state.liveSince = null;
  const live = follow({interval: state.cfg.live_interval, view: state.view, compact: true}, {
    onOpen: () => {
      const t = now();
      backfill().then(() => { state.liveSince = t - (t % state.liveMs); schedule(); }).catch(() => {});
    },
    onResult: point => {
      point.seen_ms = now();
      state.points.set(point.start_ms, point);
      schedule();
    },
    onDropped: () => { backfill().catch(() => {}); }, // this page fell behind: fetch what it missed
  });
  const report = follow({interval: state.cfg.report_interval, view: state.view}, {
    onOpen: () => { loadReport().catch(() => {}); },
    onResult: result => {
      if (!state.report || result.start_ms >= state.report.start_ms) {
        state.report = result;
        renderReport();
      }
    },
  });
  state.streams = [live, report];
}

boot(async cfg => {
  state.cfg = cfg;
  state.liveMs = intervalMs(cfg.live_interval);
  const params = readParams();
  state.view = cfg.views.some(v => v.name === params.view) ? params.view : "all";
  const spanMinutes = Number(params.span) || 5;
  state.spanMs = Math.min(60, Math.max(1, spanMinutes)) * 60_000;
  $("#span").value = String(state.spanMs / 60_000);
  $("#span").addEventListener("change", () => {
    state.spanMs = Number($("#span").value) * 60_000;
    writeParams({span: $("#span").value});
    backfill().catch(() => {});
  });
  viewPicker($("#view"), cfg, state.view, view => {
    state.view = view;
    writeParams({view: view === "all" ? null : view});
    state.points.clear();
    state.report = null;
    renderReport();
    connect();
  });
  fill($("#ports-by"), segmented(METRICS, state.portsBy, m => { state.portsBy = m; renderReport(); }, "rank by"));
  fill($("#protocols-by"), segmented(METRICS, state.protocolsBy, m => { state.protocolsBy = m; schedule(); },
    "protocol shares by"));
  const sync = "live";
  state.charts = {
    flows: new WindowChart($("#chart-flows"), {metric: "flows", sync, height: 150, caption: "flows per second",
      series: [{label: "flows/s", color: COLORS.flows, get: p => p.flows}]}),
    packets: new WindowChart($("#chart-packets"), {metric: "packets", sync, height: 150, caption: "packets per second",
      series: [{label: "pkt/s", color: COLORS.packets, get: p => p.packets}]}),
    bits: new WindowChart($("#chart-bits"), {metric: "bytes", sync, height: 150, caption: "bits per second",
      series: [{label: "bit/s", color: COLORS.bytes, get: p => p.bytes}]}),
    web: new WindowChart($("#chart-web"), {metric: "bytes", sync, height: 130, caption: "web bits per second",
      series: [{label: "all", color: COLORS.bytes, get: p => p.bytes},
        {label: "web", color: COLORS.web, get: p => (p.web ? p.web.bytes : 0)}]}),
  };
  renderReport();
  connect();
  // The time axis moves with the clock even when no traffic arrives (nothing is fetched here).
  setInterval(() => { forget(); schedule(); }, 1000);
});
