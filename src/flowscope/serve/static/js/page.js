// What every page shares: its state in the address (?view=...&interval=...), the view picker,
// starting up with a clear message when the server cannot be reached.

import {ApiError, config, syncClock} from "./api.js";
import {banner, h} from "./dom.js";

/** The page's settings from its address. */
export function readParams() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

/** Put settings in the address (no reload, no history entry), so a view can be shared. */
export function writeParams(values) {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined || value === null || value === "") params.delete(key);
    else params.set(key, String(value));
  }
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

/** Fill a <select> with the configured views; `onChange(name)`. */
export function viewPicker(node, cfg, current, onChange) {
  node.replaceChildren(...cfg.views.map(v => h("option", {value: v.name, selected: v.name === current,
    title: v.filter || "all traffic"}, v.filter ? `${v.name} (${v.filter})` : v.name)));
  node.addEventListener("change", () => onChange(node.value));
}

/** Run a page's start function after learning the configuration and the server's clock. */
export async function boot(start) {
  try {
    const [cfg] = await Promise.all([config(), syncClock()]);
    await start(cfg);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // the banner says what to do
    banner(`The dashboard could not start: ${error.message || error}`);
    console.warn("flowscope: start failed", error);
  }
}
