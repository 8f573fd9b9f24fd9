// DOM helpers. Every string that reaches the page goes in as a text node (textContent): strings
// from flows and exporters (interface names, addresses, view names) can never become markup.

/**
 * h("tr", {class: "x", title: "...", dataset: {port: 80}, onclick: fn}, child, ...)
 * Children: strings and numbers become text nodes, Nodes are appended, arrays are flattened,
 * null/undefined/false are skipped.
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") node.style.cssText = value;
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `node` with `children`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** A row of toggle buttons; `onChange(value)` when one is pressed. */
export function segmented(options, selected, onChange, label) {
  const group = h("div", {class: "segmented", role: "group", "aria-label": label});
  const buttons = options.map(([value, text]) => h("button", {
    type: "button", "aria-pressed": String(value === selected), dataset: {value},
    onclick: () => {
      for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.value === String(value)));
      onChange(value);
    },
  }, text));
  append(group, buttons);
  return group;
}

/** The banner at the top of the page for errors (401, server gone, ...). */
export function banner(message, kind = "error") {
  const host = document.getElementById("banner");
  if (!host) return;
  if (!message) {
    host.hidden = true;
    host.replaceChildren();
    return;
  }
  host.hidden = false;
  host.className = `banner ${kind}`;
  fill(host, message);
}

/** A badge telling whether a window's numbers are final or still moving. */
export function finality(final, prefix = "") {
  return final
    ? h("span", {class: "badge final", title: "the window has closed: these numbers will not change"}, `${prefix}final`)
    : h("span", {class: "badge provisional", title: "the window is still open: these numbers still grow"},
      `${prefix}provisional`);
}
