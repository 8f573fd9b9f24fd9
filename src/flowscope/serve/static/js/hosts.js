// Hosts page: look up one host (watched, or in a local network) — communication partners, what it
// sent and received, its most used ports, TCP flags, its series — and watch or unwatch hosts.
// Watched hosts are counted exactly; other local hosts come from sketches (estimates). The page
// refreshes when the server pushes a new result for the chosen interval (no polling loop).

import {api, ApiError, del, follow, post, throttle} from "./api.js";
import {$, fill, finality, h, segmented} from "./dom.js";
import {barTable, COLORS, WindowChart} from "./charts.js";
import {TCP_FLAGS, duration, exact, intervalLabel, rate, service, span, total} from "./format.js";
import {boot, readParams, writeParams} from "./page.js";

const SERIES_WINDOWS = 60;

const state = {
  cfg: null,
  interval: "1m",
  address: null,
  lookup: null, // /hosts/{address}
  problem: null,
  overview: null, // /hosts
  series: [],
  localBy: "flows",
  stream: null,
  charts: [],
};

// ------------------------------------------------------------------------------ loading

async function loadOverview() {
  state.overview = await api("hosts", {interval: state.interval});
  renderSide();
}

async function loadHost() {
  const address = state.address;
  if (!address) {
    state.lookup = null;
    renderHost();
    return;
  }
  try {
    const [lookup, series] = await Promise.all([
      api(`hosts/${encodeURIComponent(address)}`, {interval: state.interval}),
      api(`hosts/${encodeURIComponent(address)}/series`, {interval: state.interval, limit: SERIES_WINDOWS}),
    ]);
    if (address !== state.address) return;
    state.lookup = lookup;
    state.series = series.points;
    state.problem = null;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status >= 500) throw error;
    if (address !== state.address) return;
    state.lookup = null;
    state.series = [];
    state.problem = error;
  }
  renderHost();
}

function refresh() {
  return Promise.all([loadOverview(), loadHost()]).catch(() => {});
}

function choose(address) {
  state.address = address;
  $("#address").value = address || "";
  writeParams({address});
  loadHost().catch(() => {});
}

async function watch(address, on) {
  try {
    if (on) await post("hosts/watched", {address});
    else await del(`hosts/watched/${encodeURIComponent(address)}`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    fill($("#host"), h("p", {class: "error-text"}, error.message));
    return;
  }
  await refresh();
}

function connect() {
  if (state.stream) state.stream.close();
  const again = throttle(refresh, state.interval === state.cfg.live_interval ? 2000 : 1000);
  state.stream = follow({interval: state.interval, compact: true}, {
    onOpen: () => { refresh(); },
    onResult: () => again(),
  });
}

// ------------------------------------------------------------------------------ rendering

function renderSide() {
  const o = state.overview;
  const watched = o ? o.watched : [];
  fill($("#watched"), watched.length ? watched.map(address => h("li", {dataset: {address}},
    h("a", {href: `?address=${encodeURIComponent(address)}`, onclick: event => {
      event.preventDefault();
      choose(address);
    }}, address),
    h("button", {type: "button", title: `stop watching ${address}`, "aria-label": `unwatch ${address}`,
      onclick: () => watch(address, false)}, "✕")))
    : h("li", {class: "muted"}, "none: look a host up and press Watch"));
  if (!o) return;
  const local = o.local;
  const networks = o.local_networks.length ? o.local_networks.join(", ") : "none configured (stats.local_networks)";
  const metric = state.localBy;
  const top = local && local.top && local.top[metric] ? local.top[metric] : [];
  const rows = top.map(e => ({key: e.address, label: e.address,
    value: metric === "partners" ? e.partners : e.sent[metric] + e.received[metric],
    title: `${exact(e.partners)} partners, ${exact(e.sent.flows + e.received.flows)} flows`}));
  const format = metric === "partners" ? v => `${exact(v)} partners` : v => total(metric, v);
  fill($("#local"),
    h("p", {class: "muted"}, "Networks: ", h("span", {class: "mono"}, networks)),
    o.window ? h("p", {class: "muted"}, local ? `${exact(local.hosts)} hosts active in ` : "", span(o.window.start_ms,
      o.window.end_ms), " ", finality(o.window.final)) : null,
    barTable(rows, {format, keyHeader: "host", valueHeader: metric === "partners" ? metric : `${metric} in + out`,
      empty: "no local host seen in this window", onPick: r => choose(r.key)}));
}

function volume(label, side) {
  return h("div", {class: "card"}, h("div", {class: "card-label"}, label),
    h("div", {class: "card-value"}, total("bytes", side.bytes)),
    h("div", {class: "card-sub"}, `${total("flows", side.flows)} · ${total("packets", side.packets)}`));
}

function renderHost() {
  const panel = $("#host");
  const charts = $("#host-charts");
  if (!state.address) {
    charts.hidden = true;
    fill(panel, h("p", {class: "empty"}, "Look up a host above, or pick a watched or local host on the left."));
    return;
  }
  const address = state.address;
  if (state.problem) {
    charts.hidden = true;
    const notTracked = state.problem.status === 404;
    fill(panel, h("div", {class: "host-title"}, h("h2", null, address)),
      h("p", {class: "error-text", id: "host-problem"}, state.problem.message),
      notTracked ? h("button", {type: "button", class: "primary", onclick: () => watch(address, true)},
        "Watch this host") : null);
    return;
  }
  const l = state.lookup;
  if (!l) return;
  const s = l.stats;
  const title = h("div", {class: "host-title"},
    h("h2", {id: "host-address"}, l.address),
    l.watched ? h("span", {class: "badge watched"}, "watched") : null,
    l.local ? h("span", {class: "badge local"}, "local network") : null,
    s ? (s.exact ? h("span", {class: "badge final", title: "counted exactly (watched host)"}, "exact")
      : h("span", {class: "badge estimate", title: "estimated from sketches (local host): partners and ports are " +
        "approximate"}, "estimate")) : null,
    l.window ? h("span", {class: "hint"}, span(l.window.start_ms, l.window.end_ms), " ", finality(l.window.final))
      : null,
    h("span", {style: "margin-left:auto"}),
    l.watched ? h("button", {type: "button", id: "unwatch", onclick: () => watch(address, false)}, "Unwatch")
      : h("button", {type: "button", class: "primary", id: "watch", onclick: () => watch(address, true)}, "Watch"));
  if (!s) {
    fill(panel, title, h("p", {class: "empty", id: "host-empty"}, l.window
      ? `No traffic of ${address} in this ${intervalLabel(state.interval)} window.`
      : `No ${intervalLabel(state.interval)} window stored yet.`));
  } else {
    const seconds = l.window ? (l.window.end_ms - l.window.start_ms) / 1000 : 1;
    const ports = s.top_ports.map(p => ({key: p.port, label: String(p.port), sub: service("tcp", p.port) ||
      service("udp", p.port), value: p.flows}));
    fill(panel, title,
      h("div", {class: "cards"},
        h("div", {class: "card"}, h("div", {class: "card-label"}, "Partners"),
          h("div", {class: "card-value", id: "host-partners", dataset: {value: s.partners}}, exact(s.partners)),
          h("div", {class: "card-sub"}, "distinct hosts it talked to")),
        volume("Sent", s.sent), volume("Received", s.received),
        h("div", {class: "card"}, h("div", {class: "card-label"}, "Destination ports"),
          h("div", {class: "card-value", id: "host-dst-ports"}, exact(s.dst_ports)),
          h("div", {class: "card-sub"}, "distinct ports it connected to")),
        h("div", {class: "card"}, h("div", {class: "card-label"}, "Mean flow duration"),
          h("div", {class: "card-value"}, duration(s.mean_duration_ms)),
          h("div", {class: "card-sub"}, `${rate("bytes", (s.sent.bytes + s.received.bytes) / seconds)} in + out`))),
      h("div", {class: "grid2"},
        h("div", null, h("h3", null, "Most used ports"), barTable(ports, {format: v => total("flows", v),
          keyHeader: "port", valueHeader: "flows", empty: "no ports"})),
        h("div", null, h("h3", null, "TCP flags (flows with the flag)"), h("div", {class: "chips"},
          TCP_FLAGS.map(f => h("span", {class: "chip", dataset: {flag: f}}, `${f} ${exact(s.tcp_flags[f] || 0)}`))),
        h("h3", null, "Source"), h("p", {class: "muted"}, {watched: "the watched hosts of the stored window (exact)",
          local_top: "the top local hosts of the stored window (estimate)",
          engine: "the open window in the engine"}[l.source] || String(l.source)))));
  }
  charts.hidden = false;
  fill($("#series-hint"), `${intervalLabel(state.interval)} windows, the last ${SERIES_WINDOWS} stored`);
  const exactSeries = l.watched;
  const points = state.series.map(p => ({...p, missing: !p.stats && !exactSeries}));
  for (const chart of state.charts) chart.update(points);
}

// ------------------------------------------------------------------------------ start

boot(async cfg => {
  state.cfg = cfg;
  const params = readParams();
  const names = cfg.intervals.map(i => i.name);
  state.interval = names.includes(params.interval) ? params.interval : cfg.report_interval;
  state.address = params.address || null;
  $("#address").value = state.address || "";
  fill($("#interval"), segmented(names.map(n => [n, intervalLabel(n)]), state.interval, value => {
    state.interval = value;
    writeParams({interval: value});
    connect();
  }, "window length"));
  fill($("#local-by"), segmented([["flows", "flows"], ["bytes", "bytes"], ["partners", "partners"]], state.localBy, value => {
    state.localBy = value;
    renderSide();
  }, "rank local hosts by"));
  $("#lookup").addEventListener("submit", event => {
    event.preventDefault();
    const text = $("#address").value.trim();
    choose(text || null);
  });
  const sync = "host";
  const side = (key, metric) => p => (p.stats ? p.stats[key][metric] : 0);
  state.charts = [
    new WindowChart($("#chart-host-bytes"), {metric: "bytes", sync, height: 160,
      series: [{label: "sent", color: COLORS.sent, get: side("sent", "bytes")},
        {label: "received", color: COLORS.received, get: side("received", "bytes")}]}),
    new WindowChart($("#chart-host-flows"), {metric: "flows", sync, height: 160,
      series: [{label: "sent", color: COLORS.sent, get: side("sent", "flows")},
        {label: "received", color: COLORS.received, get: side("received", "flows")}]}),
  ];
  renderHost();
  connect();
});
