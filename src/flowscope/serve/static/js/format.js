// Number, unit and time formatting. Decimal SI prefixes (k = 1000) for everything: flows,
// packets, bits and bytes, as network tools do for rates.

const PREFIXES = ["", "k", "M", "G", "T", "P", "E"];

/** 1234567 → "1.23 M" (three significant digits; small integers stay exact). */
export function si(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const sign = value < 0 ? "-" : "";
  let v = Math.abs(value);
  if (v < 1000) {
    let text = Number.isInteger(v) ? String(v) : v.toPrecision(digits);
    if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
    return `${sign}${text} `;
  }
  let i = 0;
  while (v >= 1000 && i < PREFIXES.length - 1) {
    v /= 1000;
    i += 1;
  }
  let text = v.toPrecision(digits);
  if (text.includes("e")) text = String(Math.round(v));
  return `${sign}${text.replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "")} ${PREFIXES[i]}`;
}

export const UNITS = {
  flows: {rate: "flows/s", total: "flows", scale: 1},
  packets: {rate: "pkt/s", total: "packets", scale: 1},
  bytes: {rate: "bit/s", total: "B", scale: 8}, // rates of bytes are shown in bits per second
};

/** A rate of `metric` per second: flows/s, pkt/s, bit/s (bytes × 8). */
export function rate(metric, perSecond) {
  const unit = UNITS[metric];
  return join(si(perSecond * unit.scale), unit.rate, metric === "bytes");
}

// "1.2 k" + "flows/s" → "1.2 k flows/s"; "1.2 M" + "bit/s" → "1.2 Mbit/s" (prefix glued to a unit symbol).
function join(number, unit, glue) {
  return glue || number.endsWith(" ") ? `${number}${unit}` : `${number} ${unit}`;
}

/** A total of `metric`: "1.2 k flows", "3.4 M packets", "5.6 GB". */
export function total(metric, value) {
  return join(si(value), UNITS[metric].total, metric === "bytes");
}

/** An exact integer with thin-space thousands separators: 1 234 567. */
export function exact(value) {
  if (value === null || value === undefined) return "–";
  return Math.round(value).toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
}

export function percent(part, whole) {
  if (!whole) return "0 %";
  const p = (100 * part) / whole;
  return `${p < 10 ? p.toFixed(1) : p.toFixed(0)} %`;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local time of a UTC millisecond time, precise enough for the interval. */
export function when(ms, durationMs = 1000) {
  const d = new Date(ms);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = durationMs < 60_000 ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return `${date} ${time}`;
}

/** "14:05–14:06" for a window. */
export function span(startMs, endMs) {
  const duration = endMs - startMs;
  const clock = ms => {
    const d = new Date(ms);
    return duration < 60_000 ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
      : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };
  return `${when(startMs, duration).slice(0, 10)} ${clock(startMs)}–${clock(endMs)}`;
}

/** 1500 → "1.5 s", 90000 → "1 min 30 s". */
export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - 60 * m)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m - 60 * hours} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** "12 s ago" relative to `nowMs`. */
export function ago(ms, nowMs) {
  if (ms === null || ms === undefined) return "never";
  const delta = Math.max(0, nowMs - ms);
  return delta < 1500 ? "just now" : `${duration(delta)} ago`;
}

/** "1m" → 60000 (the API's interval names). */
export function intervalMs(name) {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(name);
  if (!match) return NaN;
  const unit = {ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000}[match[2]];
  return Number(match[1]) * unit;
}

export function intervalLabel(name) {
  const ms = intervalMs(name);
  const names = {1000: "1 second", 60_000: "1 minute", 3_600_000: "1 hour", 86_400_000: "1 day"};
  return names[ms] || name;
}

// Well-known services, to name ports next to their numbers.
const SERVICES = {
  tcp: {20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "dns", 80: "http", 110: "pop3",
    111: "rpcbind", 135: "msrpc", 139: "netbios", 143: "imap", 179: "bgp", 389: "ldap", 443: "https", 445: "smb",
    465: "smtps", 587: "submission", 636: "ldaps", 853: "dns-tls", 993: "imaps", 995: "pop3s", 1433: "mssql",
    1521: "oracle", 1883: "mqtt", 2049: "nfs", 3306: "mysql", 3389: "rdp", 5060: "sip", 5432: "postgres",
    5900: "vnc", 6379: "redis", 6443: "k8s-api", 8080: "http-alt", 8443: "https-alt", 9092: "kafka",
    9200: "elastic", 27017: "mongodb"},
  udp: {53: "dns", 67: "dhcp", 68: "dhcp", 69: "tftp", 123: "ntp", 137: "netbios", 161: "snmp", 162: "snmptrap",
    443: "quic", 500: "ike", 514: "syslog", 1194: "openvpn", 1812: "radius", 1900: "ssdp", 2055: "netflow",
    3478: "stun", 4500: "ipsec-nat", 4739: "ipfix", 5060: "sip", 5353: "mdns", 6343: "sflow", 51820: "wireguard"},
};

export function service(protocol, port) {
  return (SERVICES[protocol] || {})[port] || "";
}

export const TCP_FLAGS = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

/** Time-axis labels for uPlot: clock time at the precision of the tick step (24-hour, local). */
export function timeTicks(u, splits, axisIdx, space, incr) {
  return splits.map(v => {
    const d = new Date(v * 1000);
    if (incr >= 86_400) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const clock = incr < 60 ? `${hm}:${pad(d.getSeconds())}` : hm;
    return d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0 && incr >= 3600
      ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}` : clock;
  });
}
