// The JSON API (/api/v1), the live stream (Server-Sent Events) and the server's clock.
//
// URLs are relative to the page, so the dashboard also works behind a proxy under a path prefix.
// The access token, when the server wants one, travels in the cookie that the server sets when a
// page is opened once with ?token=...: fetch and EventSource send it along, the page never sees it.

import {banner, fill, h} from "./dom.js";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.parameter = body && body.parameter;
  }
}

export function apiUrl(path, params = {}) {
  const url = new URL(`api/v1/${path.replace(/^\//, "")}`, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

function unauthorized() {
  banner(h("span", null, "This flowscope server needs an access token: open the dashboard once as ",
    h("code", null, `${location.origin}${location.pathname}?token=YOUR_TOKEN`), "."));
}

/** GET (or another method) on the API; resolves to the JSON body, rejects with an ApiError. */
export async function api(path, params = {}, init = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, params), {credentials: "same-origin", ...init,
      headers: {Accept: "application/json", ...(init.headers || {})}});
  } catch (error) {
    banner("The flowscope server does not answer (stopped?). The page will carry on when it is back.");
    throw error;
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) unauthorized();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function post(path, data) {
  return api(path, {}, {method: "POST", body: JSON.stringify(data), headers: {"Content-Type": "application/json"}});
}

export function del(path) {
  return api(path, {}, {method: "DELETE"});
}

// ------------------------------------------------------------------------------ the clock

let offsetMs = 0;

/** Learn the server's clock (window times are the server's): later calls to now() follow it. */
export async function syncClock() {
  const sent = Date.now();
  const health = await api("health");
  const received = Date.now();
  offsetMs = health.time_ms - (sent + received) / 2;
  return health;
}

/** The server's time now, in UTC milliseconds. */
export function now() {
  return Date.now() + offsetMs;
}

let configPromise = null;

/** /api/v1/config, fetched once per page. */
export function config() {
  if (!configPromise) configPromise = api("config");
  return configPromise;
}

// ------------------------------------------------------------------------------ live stream

const states = new Map(); // stream → state, for the indicator in the header

function showState() {
  const node = document.getElementById("status");
  if (!node) return;
  const values = [...states.values()];
  let state = "idle";
  if (values.includes("closed")) state = "offline";
  else if (values.includes("connecting")) state = "connecting";
  else if (values.length && values.every(v => v === "open")) state = "live";
  const text = {live: "live", connecting: "connecting…", offline: "offline, retrying", idle: ""}[state];
  node.dataset.state = state;
  fill(node, h("span", {class: "dot", "aria-hidden": "true"}), text);
}

/**
 * Follow /api/v1/stream. `params`: {interval: "1s,1m", view, compact, final}. Handlers:
 * onResult(result), onHello(hello), onDropped(count), onOpen(). Returns {close()}.
 * EventSource reconnects by itself after a network error; after a refusal (401, 503, a server
 * that went away for good) this waits and opens a new one.
 */
export function follow(params, handlers) {
  const handle = {source: null, closed: false, retryMs: 2000};
  const key = Symbol("stream");

  const open = () => {
    if (handle.closed) return;
    const source = new EventSource(apiUrl("stream", params), {withCredentials: false});
    handle.source = source;
    states.set(key, "connecting");
    showState();
    source.addEventListener("open", () => {
      states.set(key, "open");
      handle.retryMs = 2000;
      showState();
      banner(null);
      if (handlers.onOpen) handlers.onOpen();
    });
    source.addEventListener("hello", event => {
      if (handlers.onHello) handlers.onHello(JSON.parse(event.data));
    });
    source.addEventListener("result", event => {
      handlers.onResult(JSON.parse(event.data));
    });
    source.addEventListener("dropped", event => {
      if (handlers.onDropped) handlers.onDropped(JSON.parse(event.data).dropped);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        states.set(key, "closed");
        showState();
        source.close();
        setTimeout(open, handle.retryMs);
        handle.retryMs = Math.min(handle.retryMs * 2, 30_000);
        syncClock().catch(() => {}); // tells 401 from a stopped server (banner)
      } else {
        states.set(key, "connecting");
        showState();
      }
    });
  };
  open();
  return {
    close() {
      handle.closed = true;
      if (handle.source) handle.source.close();
      states.delete(key);
      showState();
    },
  };
}

/** Call `fn` at most once per `ms`, trailing call kept. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let pending = [];
  return (...args) => {
    pending = args;
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn(...pending);
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn(...pending);
      }, wait);
    }
  };
}
