// Lays an application's steps out as a layered graph and draws it as SVG.
//
// The layout is dagre's (vendor/dagre.esm.js, @dagrejs/dagre, MIT): ranks left to right
// by depends_on, crossings reduced, each edge routed between the ranks it spans. This
// file only turns its positions into SVG nodes and arrows.

import * as dagre from "./dagre.esm.js";

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

/**
 * Where each step goes: `{ place: { id: { x, y } }` (top-left corners), `edges: [{ from,
 * to, points }]` and the drawing's `width` and `height`.
 */
export function layout(steps) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: ROW_GAP, ranksep: COL_GAP, marginx: PAD, marginy: PAD });
  graph.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(steps.map((s) => s.id));
  for (const step of steps) graph.setNode(step.id, { width: NODE_W, height: NODE_H });
  for (const step of steps) {
    for (const pred of step.depends_on || []) if (ids.has(pred) && pred !== step.id) graph.setEdge(pred, step.id);
  }
  dagre.layout(graph);
  const place = {};
  let width = 0, height = 0;
  for (const id of graph.nodes()) {
    const node = graph.node(id);
    place[id] = { x: node.x - NODE_W / 2, y: node.y - NODE_H / 2 };
    width = Math.max(width, node.x + NODE_W / 2 + PAD);
    height = Math.max(height, node.y + NODE_H / 2 + PAD);
  }
  const edges = graph.edges().map((e) => ({ from: e.v, to: e.w, points: graph.edge(e).points || [] }));
  for (const { points } of edges) for (const p of points) { width = Math.max(width, p.x + PAD); height = Math.max(height, p.y + PAD); }
  return { place, edges, width: Math.ceil(width), height: Math.ceil(height) };
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
  const { place, edges, width, height } = layout(steps);
  const x = (id) => place[id].x;
  const y = (id) => place[id].y;
  const svg = el("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Application steps" });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
  defs.append(marker);
  svg.append(defs);
  for (const { from, to, points } of edges) {
    if (!points.length) continue;
    const d = points.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
    svg.append(el("path", { class: "edge", "data-from": from, "data-to": to, d, "marker-end": "url(#arrow)" }));
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
