// Reports page: one report window (1 minute or 1 hour; the newest by default), stepped back and
// forth, with the series of the windows before it, TOP 10 TCP and UDP ports, web servers and
// clients, and download links. While it shows the newest window it follows the live stream of
// that interval, so an open (provisional) window fills in and the next one takes its place.

import {api, apiUrl, follow, now} from "./api.js";
import {$, fill, finality, h, segmented} from "./dom.js";
import {barTable, COLORS, elapsedSeconds, triple, WindowChart} from "./charts.js";
import {exact, intervalLabel, intervalMs, percent, rate, service, span, total} from "./format.js";
import {boot, readParams, viewPicker, writeParams} from "./page.js";

const METRICS = [["flows", "flows"], ["packets", "packets"], ["bytes", "bytes"]];
const PROTOCOLS = ["tcp", "udp", "icmp", "other"];
const WINDOWS_SHOWN = 60;

const state = {
  cfg: null,
  interval: "1m",
  durationMs: 60_000,
  view: "all",
  time: null, // start of the shown window; null: follow the newest
  by: "flows",
  result: null, // the shown window's report, or null when there is none
  points: [],
  stream: null,
  loading: 0,
  charts: [],
};

function toPoint(result) {
  const t = result.totals;
  return {start_ms: result.start_ms, end_ms: result.end_ms, final: result.final, seen_ms: result.seen_ms,
    flows: t.flows, packets: t.packets,
    bytes: t.bytes, by_protocol: t.by_protocol, web: {flows: result.web.flows, packets: result.web.packets,
      bytes: result.web.bytes}};
}

function shownStart() {
  if (state.result) return state.result.start_ms;
  if (state.time !== null) return state.time;
  const t = now();
  return t - (t % state.durationMs);
}

// ------------------------------------------------------------------------------ loading

async function load() {
  const ticket = ++state.loading;
  // /results (not /report): a window without traffic is an empty list, not a 404.
  const params = {interval: state.interval, view: state.view, limit: 1};
  if (state.time !== null) Object.assign(params, {from: state.time, to: state.time + state.durationMs});
  const body = await api("results", params);
  if (ticket !== state.loading) return; // a newer request replaced this one
  state.result = body.results[body.results.length - 1] || null;
  state.problem = state.result ? null : (state.time === null ? `no ${intervalLabel(state.interval)} report yet`
    : "no traffic in this window");
  await loadSeries(ticket);
  render();
}

async function loadSeries(ticket = state.loading) {
  const end = shownStart() + state.durationMs;
  const from = end - WINDOWS_SHOWN * state.durationMs;
  const body = await api("series", {interval: state.interval, view: state.view, from, to: end, fill: true,
    limit: WINDOWS_SHOWN});
  if (ticket !== state.loading) return;
  state.points = body.points;
}

function upsertPoint(point) {
  const i = state.points.findIndex(p => p.start_ms === point.start_ms);
  if (i >= 0) state.points[i] = point;
  else {
    state.points.push(point);
    state.points.sort((a, b) => a.start_ms - b.start_ms);
    while (state.points.length > WINDOWS_SHOWN) state.points.shift();
  }
}

function onStreamResult(result) {
  result.seen_ms = now();
  const shown = state.result;
  if (state.time === null && (!shown || result.start_ms >= shown.start_ms)) {
    const moved = shown && result.start_ms !== shown.start_ms;
    state.result = result;
    state.problem = null;
    upsertPoint(toPoint(result));
    if (moved) loadSeries().then(render).catch(() => {});
    render();
  } else if (shown && result.start_ms === shown.start_ms) {
    state.result = result; // the shown window is still open: it keeps filling
    upsertPoint(toPoint(result));
    render();
  } else if (state.points.some(p => p.start_ms === result.start_ms)) {
    upsertPoint(toPoint(result));
    state.charts.forEach(c => c.update(state.points, {selected: shownStart()}));
  }
}

function connect() {
  if (state.stream) state.stream.close();
  state.stream = follow({interval: state.interval, view: state.view}, {
    onOpen: () => { load().catch(() => {}); },
    onResult: onStreamResult,
  });
}

function go(time) {
  state.time = time;
  writeParams({time: time === null ? null : new Date(time).toISOString()});
  load().catch(() => {});
}

// ------------------------------------------------------------------------------ rendering

function card(label, value, sub, title) {
  return h("div", {class: "card", title}, h("div", {class: "card-label"}, label),
    h("div", {class: "card-value"}, value), h("div", {class: "card-sub"}, sub));
}

function renderPeriod() {
  const start = shownStart();
  const latestStart = now() - (now() % state.durationMs);
  fill($("#period"), span(start, start + state.durationMs), " ",
    state.result ? finality(state.result.final) : h("span", {class: "badge estimate"}, "no data"));
  $("#period").dataset.start = String(start);
  $("#next").disabled = start >= latestStart;
  $("#latest").setAttribute("aria-pressed", String(state.time === null));
  const local = new Date(start - new Date(start).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  $("#goto").value = local;
}

function renderCards() {
  const r = state.result;
  if (!r) {
    fill($("#cards"), card("No report", "–", state.problem || "no traffic in this window"));
    return;
  }
  const seconds = elapsedSeconds(r);
  const t = r.totals;
  const protocols = PROTOCOLS.map(p => `${p.toUpperCase()} ${percent(t.by_protocol[p].bytes, t.bytes)}`).join(" · ");
  fill($("#cards"),
    card("Flows", total("flows", t.flows), `${rate("flows", t.flows / seconds)} average`, `${exact(t.flows)} flows`),
    card("Packets", total("packets", t.packets), `${rate("packets", t.packets / seconds)} average`,
      `${exact(t.packets)} packets`),
    card("Bytes", total("bytes", t.bytes), `${rate("bytes", t.bytes / seconds)} average`, `${exact(t.bytes)} bytes`),
    card("Protocols (bytes)", h("span", {class: "stacked", style: "display:flex;margin-top:8px"},
      PROTOCOLS.map(p => h("span", {style: `width:${t.bytes ? (100 * t.by_protocol[p].bytes) / t.bytes : 0}%;` +
        `background:${COLORS[p]}`}))), protocols),
    card("Late flows", exact(r.late_flows), "arrived after their window closed, counted here",
      "flows whose own window had already closed; folded into this one"),
    card("Window", finality(r.final), span(r.start_ms, r.end_ms),
      r.final ? "closed: final numbers" : "still open: the numbers grow until it closes"));
}

function portRows(entries, protocol) {
  return entries.map(e => ({key: e.port, label: String(e.port), sub: service(protocol, e.port), value: e[state.by],
    title: triple(e)}));
}

function renderTables() {
  const r = state.result;
  const format = v => total(state.by, v);
  for (const protocol of ["tcp", "udp"]) {
    const node = $(`#report-${protocol}`);
    node.dataset.start = r ? String(r.start_ms) : "";
    node.dataset.by = state.by;
    fill(node, r ? barTable(portRows(r.top_ports[protocol][state.by].slice(0, 10), protocol),
      {format, keyHeader: "port", valueHeader: state.by}) : h("p", {class: "empty"}, "no report"));
  }
  fill($("#ports-window"), r ? [span(r.start_ms, r.end_ms), " ", finality(r.final)] : "");
  const hostRows = list => list.map(e => ({key: e.address, label: e.address, value: e[state.by], title: triple(e)}));
  if (!r) {
    fill($("#web-summary"), "");
    fill($("#web-servers"), h("p", {class: "empty"}, "no report"));
    fill($("#web-clients"), h("p", {class: "empty"}, "no report"));
    return;
  }
  const web = r.web;
  fill($("#web-summary"), `${total("flows", web.flows)}, ${total("packets", web.packets)}, ${total("bytes", web.bytes)}`,
    ` (${percent(web.bytes, r.totals.bytes)} of the bytes)`);
  fill($("#web-servers"), barTable(hostRows(web.top_servers[state.by]), {format, keyHeader: "server",
    valueHeader: state.by}));
  fill($("#web-clients"), barTable(hostRows(web.top_clients[state.by]), {format, keyHeader: "client",
    valueHeader: state.by}));
}

function renderDownloads() {
  const start = shownStart();
  const base = {interval: state.interval, view: state.view, time: start};
  const end = start + state.durationMs;
  const range = {interval: state.interval, view: state.view, from: end - WINDOWS_SHOWN * state.durationMs, to: end};
  const link = (label, path, params, title) => h("a", {href: apiUrl(path, params).href, title, download: ""}, label);
  fill($("#downloads"),
    h("span", {class: "muted"}, "This report: "),
    state.result ? [
      link("CSV", "report", {...base, format: "csv"}, "every number of the report, one per row"),
      link("JSON", "report", {...base, format: "json", download: true}, "the report as in docs/report-schema.md"),
    ] : h("span", {class: "muted"}, "none (no traffic in this window) "),
    h("span", {class: "muted"}, " · The shown series: "),
    link("series CSV", "series", {...range, format: "csv", limit: WINDOWS_SHOWN}, "one row per window"),
    link("results CSV", "results", {...range, format: "csv", limit: WINDOWS_SHOWN},
      "totals, protocols and web per window"),
    link("results JSON", "results", {...range, format: "json", download: true, limit: WINDOWS_SHOWN},
      "the full results of the windows"));
}

function render() {
  renderPeriod();
  renderCards();
  renderTables();
  renderDownloads();
  const label = intervalLabel(state.interval);
  fill($("#series-title"), `Traffic per ${label} window — the ${WINDOWS_SHOWN} windows up to the selected one`);
  const start = shownStart();
  const range = [start + state.durationMs - WINDOWS_SHOWN * state.durationMs, start + state.durationMs];
  for (const chart of state.charts) chart.update(state.points, {range, selected: start});
}

// ------------------------------------------------------------------------------ start

boot(async cfg => {
  state.cfg = cfg;
  const reports = cfg.intervals.filter(i => i.name !== cfg.live_interval).map(i => i.name);
  const choices = reports.length ? reports : cfg.intervals.map(i => i.name);
  const params = readParams();
  state.interval = choices.includes(params.interval) ? params.interval
    : (choices.includes(cfg.report_interval) ? cfg.report_interval : choices[0]);
  state.durationMs = intervalMs(state.interval);
  state.view = cfg.views.some(v => v.name === params.view) ? params.view : "all";
  state.by = ["flows", "packets", "bytes"].includes(params.by) ? params.by : "flows";
  const at = params.time ? Date.parse(params.time) : NaN;
  state.time = Number.isNaN(at) ? null : at - (at % state.durationMs);

  fill($("#interval"), segmented(choices.map(c => [c, intervalLabel(c)]), state.interval, value => {
    state.interval = value;
    state.durationMs = intervalMs(value);
    state.time = state.time === null ? null : state.time - (state.time % state.durationMs);
    writeParams({interval: value});
    state.points = [];
    connect();
  }, "report length"));
  viewPicker($("#view"), cfg, state.view, view => {
    state.view = view;
    writeParams({view: view === "all" ? null : view});
    connect();
  });
  fill($("#by"), segmented(METRICS, state.by, value => {
    state.by = value;
    writeParams({by: value === "flows" ? null : value});
    renderTables();
  }, "rank by"));
  $("#prev").addEventListener("click", () => go(shownStart() - state.durationMs));
  $("#next").addEventListener("click", () => {
    const next = shownStart() + state.durationMs;
    go(next >= now() - (now() % state.durationMs) ? null : next);
  });
  $("#latest").addEventListener("click", () => go(null));
  $("#goto").addEventListener("change", () => {
    const value = Date.parse($("#goto").value); // local time
    if (!Number.isNaN(value)) go(value - (value % state.durationMs));
  });
  const pick = point => go(point.start_ms);
  const sync = "report";
  state.charts = [
    new WindowChart($("#chart-flows"), {metric: "flows", bars: true, sync, height: 170, onPick: pick,
      series: [{label: "flows/s", color: COLORS.flows, get: p => p.flows}], caption: "flows per second"}),
    new WindowChart($("#chart-packets"), {metric: "packets", bars: true, sync, height: 170, onPick: pick,
      series: [{label: "pkt/s", color: COLORS.packets, get: p => p.packets}], caption: "packets per second"}),
    new WindowChart($("#chart-bits"), {metric: "bytes", bars: true, sync, height: 170, onPick: pick,
      series: [{label: "bit/s", color: COLORS.bytes, get: p => p.bytes}], caption: "bits per second"}),
  ];
  render();
  connect();
});
