// Lays an application's steps out as a layered graph and draws it as SVG.
//
// The layout is our own and deliberately simple (no library): a step's column is its depth
// (the longest chain of depends_on from a root), and the steps of a column are ordered by
// the mean row of their predecessors, which keeps most arrows short. Arrows are drawn
// from a predecessor's right edge to the successor's left edge.

const SVG = "http://www.w3.org/2000/svg";
const OPERATORS = new Set(["transform", "template_render", "trigger_application", "report"]);
const NODE_W = 168;
const NODE_H = 52;
const COL_GAP = 64;
const ROW_GAP = 22;
const PAD = 16;

export function isOperator(step) {
  return OPERATORS.has(step.type);
}

/** Columns and rows of each step: `{ id: { col, row } }` and the grid size. */
export function layout(steps) {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map();
  const visit = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0; // a stored application has no cycle; be safe anyway
    seen.add(id);
    const preds = (byId.get(id)?.depends_on || []).filter((p) => byId.has(p));
    const d = preds.length ? 1 + Math.max(...preds.map((p) => visit(p, seen))) : 0;
    depth.set(id, d);
    return d;
  };
  steps.forEach((s) => visit(s.id));
  const columns = [];
  steps.forEach((s) => { (columns[depth.get(s.id)] ||= []).push(s.id); });
  const place = {};
  columns.forEach((ids, col) => {
    const weight = (id) => {
      const rows = (byId.get(id).depends_on || []).filter((p) => place[p]).map((p) => place[p].row);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    const order = col === 0 ? ids : [...ids].sort((a, b) => weight(a) - weight(b));
    order.forEach((id, row) => { place[id] = { col, row }; });
  });
  const rows = Math.max(1, ...columns.map((c) => c.length));
  return { place, cols: columns.length, rows };
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Draws `steps` into a new <svg>. Each node is a `<g class="node" data-step=ID>` that is
 * focusable; `onSelect(id)` is called on click or Enter/Space.
 */
export function drawDag(steps, onSelect) {
  const { place, cols, rows } = layout(steps);
  const x = (id) => PAD + place[id].col * (NODE_W + COL_GAP);
  const y = (id) => PAD + place[id].row * (NODE_H + ROW_GAP);
  const width = PAD * 2 + cols * NODE_W + (cols - 1) * COL_GAP;
  const height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP;
  const svg = el("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Application steps" });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
  defs.append(marker);
  svg.append(defs);
  const ids = new Set(steps.map((s) => s.id));
  for (const step of steps) {
    for (const pred of step.depends_on || []) {
      if (!ids.has(pred)) continue;
      const x1 = x(pred) + NODE_W, y1 = y(pred) + NODE_H / 2;
      const x2 = x(step.id), y2 = y(step.id) + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      svg.append(el("path", { class: "edge", "data-from": pred, "data-to": step.id, d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2 - 2} ${y2}`, "marker-end": "url(#arrow)" }));
    }
  }
  for (const step of steps) {
    const kind = isOperator(step) ? "operator" : "step";
    const classes = ["node", `kind-${kind}`, "state-none"];
    if (step.for_each) classes.push("for-each");
    if (step.when) classes.push("conditional");
    const g = el("g", { class: classes.join(" "), "data-step": step.id, transform: `translate(${x(step.id)} ${y(step.id)})`, tabindex: 0, role: "button", "aria-label": `${step.id} (${step.type})` });
    if (step.for_each) g.append(el("rect", { class: "stack", x: 5, y: -5, width: NODE_W, height: NODE_H, rx: kind === "operator" ? 18 : 4 }));
    g.append(el("rect", { class: "box", width: NODE_W, height: NODE_H, rx: kind === "operator" ? 18 : 4 }));
    g.append(el("text", { class: "label", x: 10, y: 21 }, step.id.length > 20 ? `${step.id.slice(0, 19)}…` : step.id));
    const sub = `${step.type}${step.for_each ? " · for each" : ""}${step.when ? " · when" : ""}`;
    g.append(el("text", { class: "type", x: 10, y: 39 }, sub.length > 26 ? `${sub.slice(0, 25)}…` : sub));
    g.append(el("text", { class: "state-text", x: NODE_W - 8, y: 21, "text-anchor": "end" }, ""));
    const title = el("title", {}, `${step.id}: ${step.type}`);
    g.append(title);
    const choose = () => onSelect(step.id);
    g.addEventListener("click", choose);
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
    svg.append(g);
  }
  return svg;
}

/** Colours the nodes of `svg` by the step states of a task document (or clears them). */
export function paintStates(svg, task) {
  for (const g of svg.querySelectorAll("g.node")) {
    const step = task && task.steps ? task.steps[g.dataset.step] : null;
    const state = step ? step.state : "none";
    g.setAttribute("class", g.getAttribute("class").replace(/state-\S+/, `state-${state}`));
    g.dataset.state = state;
    g.querySelector(".state-text").textContent = step ? (step.items != null ? `${state} ×${step.items}` : state) : "";
  }
}

/** Marks the selected node. */
export function markSelected(svg, id) {
  for (const g of svg.querySelectorAll("g.node")) g.classList.toggle("selected", g.dataset.step === id);
}
