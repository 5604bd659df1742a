// Small DOM helpers shared by the console's pages. Everything on screen is built with
// textContent and attributes (never innerHTML from data).

/** Builds an element: h("a", { href, class }, "text", child…). `on…` attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.setAttribute("class", v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

/** Replaces the children of `node`, leaving out absent ones (null, undefined). */
export function fill(node, ...children) { node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined)); }
export function when(ts) { return ts ? new Date(ts).toLocaleString() : "—"; }
export function badge(state) { return h("span", { class: `badge state-${state || "none"}` }, state || "never run"); }
export function errorBox(e) { return h("p", { class: "error", role: "alert" }, e.message || String(e)); }
/** A labelled form field: the label is tied to the control by id. */
export function field(label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint ? h("p", { class: "muted small hint" }, hint) : null);
}
