// Runs: the global runs list with the API's filters (state, application, configuration,
// queue, time window) and paging by cursor, and the listed runs over time as dots coloured
// by state (an SVG timeline; with an application chosen, that application's runs).

import { api } from "./api.js";
import { h, when, badge, field } from "./dom.js";

const STATES = ["pending", "running", "success", "failure", "revoked"];
const FILTERS = ["application", "state", "configuration", "queue", "since", "until"];
const PAGE = 50;

/** The runs as dots on a time axis: x the creation time, colour the state. */
export function timeline(tasks) {
  const width = 1000, height = 70, pad = 20;
  const times = tasks.map((t) => Date.parse(t.created_at)).filter(Number.isFinite);
  const svg = h("svg:svg", { class: "timeline", id: "timeline", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${tasks.length} runs over time, coloured by state` });
  if (!times.length) return svg;
  const min = Math.min(...times), max = Math.max(...times);
  const x = (t) => (max === min ? width / 2 : pad + ((t - min) / (max - min)) * (width - 2 * pad));
  svg.append(h("svg:line", { x1: pad, x2: width - pad, y1: 40, y2: 40, class: "axis" }),
    h("svg:text", { x: pad, y: 64, class: "tick" }, when(new Date(min).toISOString())),
    h("svg:text", { x: width - pad, y: 64, class: "tick", "text-anchor": "end" }, when(new Date(max).toISOString())));
  for (const t of tasks) {
    const at = Date.parse(t.created_at);
    if (!Number.isFinite(at)) continue;
    const link = h("svg:a", { href: `/console/tasks/${encodeURIComponent(t.task_id)}`, "data-task": t.task_id, "data-state": t.state },
      h("svg:circle", { cx: x(at).toFixed(1), cy: 40, r: 6, class: `dot state-${t.state}` },
        h("svg:title", {}, `${t.application} · ${t.state} · ${when(t.created_at)}`)));
    svg.append(link);
  }
  return svg;
}

export async function runsPage(ctx, query) {
  ctx.nav("runs");
  const search = new URLSearchParams();
  for (const k of FILTERS) if (query.get(k)) search.set(k, query.get(k));
  search.set("limit", String(PAGE));
  if (query.get("cursor")) search.set("cursor", query.get("cursor"));
  const [page, apps] = await Promise.all([api(`/tasks?${search}`), api("/applications?hidden=true")]);

  const application = h("select", { id: "filter-application", name: "application" }, h("option", { value: "" }, "all"), apps.map((a) => h("option", { value: a.name, selected: a.name === query.get("application") }, a.name)));
  const state = h("select", { id: "filter-state", name: "state" }, h("option", { value: "" }, "all"), STATES.map((s) => h("option", { value: s, selected: s === query.get("state") }, s)));
  const configuration = h("input", { id: "filter-configuration", name: "configuration", type: "text", value: query.get("configuration") || "" });
  const queue = h("input", { id: "filter-queue", name: "queue", type: "text", value: query.get("queue") || "" });
  const since = h("input", { id: "filter-since", name: "since", type: "datetime-local", value: local(query.get("since")) });
  const until = h("input", { id: "filter-until", name: "until", type: "datetime-local", value: local(query.get("until")) });
  const controls = { application, state, configuration, queue, since, until };
  const target = (extra = {}) => {
    const q = new URLSearchParams();
    for (const [k, c] of Object.entries(controls)) {
      const v = c.value.trim();
      if (v) q.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v);
    }
    for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
    const s = q.toString();
    return `/console/runs${s ? `?${s}` : ""}`;
  };
  // Cursors of the pages before this one, so "Previous" can go back.
  const back = (query.get("back") || "").split(",").filter(Boolean);
  const filters = h("form", { class: "toolbar filters", id: "runs-filters", onsubmit: (e) => { e.preventDefault(); ctx.go(target()); } },
    field("Application", application), field("State", state), field("Configuration", configuration), field("Queue", queue),
    field("Since", since), field("Until", until),
    h("button", { type: "submit", id: "apply-filters" }, "Apply"));
  const current = query.get("cursor") || "";
  const pager = h("div", { class: "toolbar", id: "pager" },
    back.length || current ? h("button", { type: "button", class: "secondary", id: "prev-page", onclick: () => ctx.go(target({ cursor: back[back.length - 1] === "-" ? "" : back[back.length - 1], back: back.slice(0, -1).join(",") })) }, "← Newer") : null,
    h("span", { class: "muted", id: "page-count" }, `${page.count} runs on this page`),
    page.next_cursor ? h("button", { type: "button", class: "secondary", id: "next-page", onclick: () => ctx.go(target({ cursor: page.next_cursor, back: [...back, current || "-"].join(",") })) }, "Older →") : null);
  ctx.show(h("h1", {}, "Runs"), filters,
    h("div", { class: "card" }, h("h2", {}, query.get("application") ? `${query.get("application")}: runs over time` : "Runs over time (this page)"), timeline(page.tasks),
      h("p", { class: "legend small" }, STATES.map((s) => badge(s)))),
    h("table", { class: "list", id: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Application", "State", "Configuration", "Queue", "Created", "Finished"].map((c) => h("th", {}, c)))),
      h("tbody", {}, page.tasks.length ? page.tasks.map((t) => h("tr", { "data-task": t.task_id, "data-state": t.state },
        h("td", {}, h("a", { href: `/console/tasks/${encodeURIComponent(t.task_id)}` }, h("code", {}, t.task_id))),
        h("td", {}, h("a", { href: `/console/apps/${encodeURIComponent(t.application)}` }, t.application)),
        h("td", {}, badge(t.state)), h("td", {}, t.configuration || ""), h("td", {}, t.queue || ""),
        h("td", {}, when(t.created_at)), h("td", {}, when(t.finished_at))))
        : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No runs match.")))),
    pager);
}

/** An RFC 3339 time as a datetime-local input's value (local time). */
function local(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (!Number.isFinite(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
