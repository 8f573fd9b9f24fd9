// Exporters page: every exporter and observation domain with what it sent (datagrams, flows,
// packets, bytes), its health (sequence loss, decode errors, dropped datagrams), its templates,
// sampling rates and interface names, and when it was last heard from. Interface names and other
// strings come from the exporters themselves: they are only ever put in the page as text.
// Refreshed when the live stream reports a closed window (at most every 2 s).

import {api, follow, now, throttle} from "./api.js";
import {$, fill, h} from "./dom.js";
import {ago, exact, total, when} from "./format.js";
import {boot} from "./page.js";

const state = {data: null, loadedAt: null};

function chips(map, {bad = false, empty = "–"} = {}) {
  const entries = Object.entries(map || {}).filter(([, v]) => v);
  if (!entries.length) return h("span", {class: "muted"}, empty);
  return h("span", {class: "chips"}, entries.map(([k, v]) => h("span", {class: bad ? "chip bad" : "chip"},
    `${k} ${exact(v)}`)));
}

function sum(map) {
  return Object.values(map || {}).reduce((a, v) => a + v, 0);
}

function seen(ms) {
  return h("span", {class: "nowrap last-seen", dataset: {ms: ms === null ? "" : String(ms)},
    title: ms === null ? "" : when(ms)}, ago(ms, now()));
}

function versions(list) {
  const names = {5: "v5", 9: "v9", 10: "IPFIX", 1: "v1", 7: "v7"};
  return list.map(v => names[v] || `v${v}`).join(", ");
}

function templates(list) {
  if (!list.length) return h("span", {class: "muted"}, "–");
  return h("span", {class: "chips"}, list.map(t => h("span", {class: "chip",
    title: `${t.fields} fields${t.options ? `, options (${t.scope_fields} scope)` : ""}`},
  `${t.id}${t.options ? " opt" : ""}`)));
}

function sampling(s) {
  if (!s) return h("span", {class: "muted", title: "the exporter announced no sampling rate"}, "–");
  const bySampler = Object.entries(s.by_sampler || {});
  return h("span", null, s.rate ? `1:${exact(s.rate)}` : "",
    bySampler.length ? h("span", {class: "chips"}, bySampler.map(([id, rate]) =>
      h("span", {class: "chip"}, `sampler ${id}: 1:${exact(rate)}`))) : null);
}

function interfaces(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h("span", {class: "muted"}, "–");
  return h("span", {class: "chips interfaces"}, entries.map(([index, name]) =>
    h("span", {class: "chip", dataset: {ifindex: index}}, `${index}: `, h("span", {class: "if-name"}, name))));
}

function exporterRows(e) {
  const lost = sum(e.sequence_lost);
  const main = h("tr", {class: "exporter", dataset: {address: e.address}},
    h("td", {class: "address"}, h("b", null, e.address)),
    h("td", null, seen(e.last_seen_ms)),
    h("td", {class: "num", title: `${exact(e.datagram_bytes)} bytes`}, exact(e.datagrams)),
    h("td", null, chips(Object.fromEntries(Object.entries(e.packets_by_version).map(([v, n]) =>
      [versions([Number(v)]), n])))),
    h("td", {class: "num", title: `${exact(e.flows)} flows`}, total("flows", e.flows)),
    h("td", {class: "num", title: `${exact(e.packets)} packets`}, total("packets", e.packets)),
    h("td", {class: "num", title: `${exact(e.bytes)} bytes`}, total("bytes", e.bytes)),
    h("td", {class: "num"}, lost ? h("span", {class: "badge bad"}, exact(lost)) : "0",
      lost ? h("div", null, chips(e.sequence_lost)) : null),
    h("td", {class: "num decode-errors"}, e.decode_errors_total ? h("span", {class: "badge bad"},
      exact(e.decode_errors_total)) : "0", e.decode_errors_total ? h("div", null, chips(e.decode_errors, {bad: true}))
      : null),
    h("td", null, chips(e.templates)),
    h("td", null, chips({...e.dropped, ...Object.fromEntries(Object.entries(e.pending_dropped).map(([k, v]) =>
      [`pending ${k}`, v]))}, {bad: true})));
  const domains = e.domains.map(d => {
    const seq = d.sequence;
    return h("tr", {class: "domain", dataset: {domain: d.domain}},
      h("td", null, `domain ${d.domain}`, d.versions.length ? h("span", {class: "muted"}, ` · ${versions(d.versions)}`)
        : null),
      h("td", null, seen(d.last_seen_ms)),
      h("td", null, ""),
      h("td", null, h("span", {class: "muted"}, "sampling "), sampling(d.sampling)),
      h("td", {class: "num", title: `${exact(d.flows)} flows`}, total("flows", d.flows)),
      h("td", {class: "num", title: `${exact(d.packets)} packets`}, total("packets", d.packets)),
      h("td", {class: "num", title: `${exact(d.bytes)} bytes`}, total("bytes", d.bytes)),
      h("td", {class: "num"}, seq ? h("span", {title: `received ${exact(seq.received)}, reordered ${exact(seq.reordered)}`},
        seq.lost ? h("span", {class: "badge bad"}, exact(seq.lost)) : "0") : h("span", {class: "muted"}, "–")),
      h("td", null, ""),
      h("td", null, templates(d.templates)),
      h("td", null, h("span", {class: "muted"}, "interfaces "), interfaces(d.interfaces)));
  });
  return [main, ...domains];
}

function render() {
  const data = state.data;
  if (!data) return;
  const list = data.exporters;
  const totals = key => list.reduce((a, e) => a + (typeof e[key] === "number" ? e[key] : 0), 0);
  const lost = list.reduce((a, e) => a + sum(e.sequence_lost), 0);
  const card = (label, value, sub, bad = false) => h("div", {class: "card"}, h("div", {class: "card-label"}, label),
    h("div", {class: bad ? "card-value error-text" : "card-value"}, value), h("div", {class: "card-sub"}, sub));
  const domains = list.reduce((a, e) => a + e.domains.length, 0);
  fill($("#cards"),
    card("Exporters", exact(list.length), `${exact(domains)} observation domains`),
    card("Datagrams", exact(totals("datagrams")), total("bytes", totals("datagram_bytes"))),
    card("Flows", total("flows", totals("flows")), `${total("packets", totals("packets"))}, ${total("bytes", totals("bytes"))}`),
    card("Sequence loss", exact(lost), "records or packets missing from sequence numbers", lost > 0),
    card("Decode errors", exact(totals("decode_errors_total")), "malformed or unknown data, by kind below",
      totals("decode_errors_total") > 0));
  const note = $("#decoder-note");
  note.hidden = data.decoder_state === "live";
  if (data.decoder_state === "workers") {
    fill(note, "The collector runs in worker processes: their templates, sequence numbers, sampling rates and " +
      "interface names are not visible here; the counters are.");
  } else if (data.decoder_state !== "live") {
    fill(note, "The decoder state is not available in this process: only counters are shown.");
  }
  const head = h("thead", null, h("tr", null, ["Exporter", "Last seen", "Datagrams", "Versions / sampling", "Flows",
    "Packets", "Bytes", "Sequence loss", "Decode errors", "Templates", "Dropped / interfaces"].map((t, i) =>
    h("th", {class: [2, 4, 5, 6, 7, 8].includes(i) ? "num" : null}, t))));
  fill($("#exporters"), list.length ? h("table", {class: "grid", id: "exporter-table"}, head,
    h("tbody", null, list.map(exporterRows)))
    : h("p", {class: "empty"}, "No exporter has sent anything yet. Point a router or probe at the collector, " +
      "or try: flowscope replay --generate --to 127.0.0.1:2055"));
  fill($("#updated"), `as of ${when(data.time_ms)}`);
}

async function load() {
  state.data = await api("exporters");
  render();
}

boot(async cfg => {
  $("#refresh").addEventListener("click", () => { load().catch(() => {}); });
  await load();
  const again = throttle(() => { load().catch(() => {}); }, 2000);
  follow({interval: cfg.live_interval, compact: true, final: true}, {onResult: again});
  // "12 s ago" moves with the clock; nothing is fetched for it.
  setInterval(() => {
    for (const node of document.querySelectorAll(".last-seen")) {
      const ms = node.dataset.ms;
      node.textContent = ms ? ago(Number(ms), now()) : "never";
    }
  }, 1000);
});
