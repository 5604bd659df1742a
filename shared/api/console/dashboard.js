// The Dashboard (the landing page): runs by state per hour over the last hours (a stacked
// bar chart, with the same numbers as a table), the runs going now, recent failures with
// the failed step's error and a link to it, and each step queue's depth with the worker
// slots. Runs come from GET /tasks with its filters; queues and workers from
// GET /dashboard, which has what the runs list cannot tell.

import { api } from "./api.js";
import { h, fill, when, badge, errorBox, field } from "./dom.js";

const STATES = ["pending", "running", "success", "failure", "revoked"];
const HOUR_MS = 3600 * 1000;
/** Runs read for the chart; beyond it the chart says it shows only these. */
const CHART_LIMIT = 1000;
const REFRESH_MS = 15000;

/** Runs counted per hour and state: `[{ start, counts: {state: n} }]`, oldest first. */
export function bucketByHour(tasks, hours, now) {
  const end = Math.floor(now / HOUR_MS) * HOUR_MS + HOUR_MS;
  const buckets = Array.from({ length: hours }, (_, i) => ({ start: end - (hours - i) * HOUR_MS, counts: Object.fromEntries(STATES.map((s) => [s, 0])) }));
  for (const t of tasks) {
    const at = Date.parse(t.created_at);
    const i = Math.floor((at - buckets[0].start) / HOUR_MS);
    if (i >= 0 && i < hours && t.state in buckets[i].counts) buckets[i].counts[t.state] += 1;
  }
  return buckets;
}

function hourLabel(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:00`;
}

/** The stacked bars: one column per hour, a segment per state. */
function chart(buckets) {
  const width = 1000, height = 180, pad = 28, top = 10;
  const max = Math.max(1, ...buckets.map((b) => STATES.reduce((n, s) => n + b.counts[s], 0)));
  const slot = (width - 2 * pad) / buckets.length;
  const barW = Math.max(4, slot * 0.7);
  const total = buckets.reduce((n, b) => n + STATES.reduce((m, s) => m + b.counts[s], 0), 0);
  const svg = h("svg:svg", { class: "bars", id: "runs-chart", viewBox: `0 0 ${width} ${top + height + 24}`, role: "img", "aria-label": `${total} runs over the last ${buckets.length} hours by state; the table below has the numbers` });
  svg.append(h("svg:line", { class: "axis", x1: pad, x2: width - pad, y1: top + height - 2, y2: top + height - 2 }),
    h("svg:text", { class: "tick", x: 2, y: top + 10 }, String(max)));
  buckets.forEach((b, i) => {
    const x = pad + i * slot + (slot - barW) / 2;
    let y = top + height - 2;
    const g = h("svg:g", { "data-hour": new Date(b.start).toISOString() });
    for (const s of STATES) {
      const n = b.counts[s];
      if (!n) continue;
      const hgt = ((height - 10) * n) / max;
      y -= hgt;
      g.append(h("svg:rect", { class: `bar state-${s}`, x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: hgt.toFixed(1), "data-state": s, "data-count": n },
        h("svg:title", {}, `${hourLabel(b.start)}: ${n} ${s}`)));
    }
    if (buckets.length <= 24 || i % 2 === 0) g.append(h("svg:text", { class: "tick", x: (x + barW / 2).toFixed(1), y: top + height + 16, "text-anchor": "middle" }, hourLabel(b.start)));
    svg.append(g);
  });
  return svg;
}

function failedSteps(task) {
  return Object.entries(task.steps || {}).filter(([, s]) => s.state === "failed");
}

export async function dashboardPage(ctx, query) {
  ctx.nav("dashboard");
  const hours = [6, 12, 24, 48].includes(Number(query.get("hours"))) ? Number(query.get("hours")) : 12;
  const body = h("div", { id: "dashboard" }, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted small", id: "dash-updated" });
  const range = h("select", { id: "dash-hours", onchange: () => ctx.go(`/console?hours=${range.value}`) },
    [6, 12, 24, 48].map((n) => h("option", { value: n, selected: n === hours }, `last ${n} hours`)));
  const load = async () => {
    const now = Date.now();
    const tableOpen = !!body.querySelector("details[open]");
    const since = new Date(Math.floor(now / HOUR_MS) * HOUR_MS + HOUR_MS - hours * HOUR_MS).toISOString();
    const [recent, running, pending, failures, summary] = await Promise.all([
      api(`/tasks?since=${encodeURIComponent(since)}&limit=${CHART_LIMIT}`),
      api("/tasks?state=running&limit=20"),
      api("/tasks?state=pending&limit=20"),
      api("/tasks?state=failure&limit=10"),
      api("/dashboard"),
    ]);
    const buckets = bucketByHour(recent.tasks, hours, now);
    const totals = Object.fromEntries(STATES.map((s) => [s, buckets.reduce((n, b) => n + b.counts[s], 0)]));
    const going = [...running.tasks, ...pending.tasks];
    fill(body,
      h("div", { class: "tiles" },
        h("div", { class: "card tile", id: "tile-running" }, h("span", { class: "tile-n", "data-count": summary.runs.running }, String(summary.runs.running)), h("span", {}, "runs running")),
        h("div", { class: "card tile", id: "tile-pending" }, h("span", { class: "tile-n", "data-count": summary.runs.pending }, String(summary.runs.pending)), h("span", {}, "runs pending")),
        h("div", { class: "card tile", id: "tile-steps" }, h("span", { class: "tile-n", "data-count": summary.workers.busy }, String(summary.workers.busy)),
          h("span", {}, summary.workers.slots != null ? `steps running of ${summary.workers.slots} worker slots` : "steps running (workers scale on demand)")),
        h("div", { class: "card tile", id: "tile-failed" }, h("span", { class: "tile-n", "data-count": totals.failure }, String(totals.failure)), h("span", {}, `failed in the last ${hours} h`))),
      h("section", { class: "card", "aria-labelledby": "dash-chart-title" },
        h("h2", { id: "dash-chart-title" }, `Runs by state, per hour (last ${hours} hours)`),
        chart(buckets),
        h("p", { class: "legend small" }, STATES.map((s) => badge(s)),
          recent.next_cursor ? h("span", { class: "muted" }, ` · the newest ${CHART_LIMIT} runs only`) : null),
        h("details", { open: tableOpen }, h("summary", {}, "The numbers as a table"),
          h("table", { class: "list small", id: "runs-by-hour" },
            h("thead", {}, h("tr", {}, h("th", {}, "Hour"), STATES.map((s) => h("th", {}, s)))),
            h("tbody", {}, buckets.map((b) => h("tr", {}, h("td", {}, `${new Date(b.start).toLocaleDateString()} ${hourLabel(b.start)}`), STATES.map((s) => h("td", {}, String(b.counts[s]))))))))),
      h("div", { class: "dash-columns" },
        h("section", { class: "card", "aria-labelledby": "dash-running-title" },
          h("h2", { id: "dash-running-title" }, "Running now"),
          going.length ? h("ul", { class: "plain", id: "dash-running" }, going.map((t) => {
            const steps = Object.entries(t.steps || {}).filter(([, s]) => s.state === "running").map(([id]) => id);
            return h("li", { "data-task": t.task_id },
              badge(t.state), " ", h("a", { href: `/console/apps/${encodeURIComponent(t.application)}?run=${encodeURIComponent(t.task_id)}` }, t.application),
              h("span", { class: "muted small" }, ` since ${when(t.started_at || t.created_at)}`, steps.length ? ` · ${steps.join(", ")}` : ""));
          })) : h("p", { class: "muted", id: "dash-running" }, "Nothing is running.")),
        h("section", { class: "card", "aria-labelledby": "dash-queues-title" },
          h("h2", { id: "dash-queues-title" }, "Queues and workers"),
          h("table", { class: "list", id: "dash-queues" },
            h("thead", {}, h("tr", {}, ["Queue", "Messages", "Dead-lettered"].map((c) => h("th", {}, c)))),
            h("tbody", {}, summary.queues.map((q) => h("tr", { "data-queue": q.name },
              h("td", {}, h("code", {}, q.name)),
              h("td", { class: "depth" }, q.depth == null ? "unknown" : String(q.depth)),
              h("td", { class: q.dead_letter ? "error" : "" }, q.dead_letter == null ? "unknown" : String(q.dead_letter)))))),
          h("p", { class: "muted small", id: "dash-workers" }, summary.workers.slots != null
            ? `Workers: ${summary.workers.busy} of ${summary.workers.slots} slots busy.`
            : `Workers: ${summary.workers.busy} steps running; this deployment starts workers on demand.`))),
      h("section", { class: "card", "aria-labelledby": "dash-failures-title" },
        h("h2", { id: "dash-failures-title" }, "Recent failures"),
        failures.tasks.length ? h("table", { class: "list", id: "dash-failures" },
          h("thead", {}, h("tr", {}, ["Application", "Failed step", "Error", "Finished"].map((c) => h("th", {}, c)))),
          h("tbody", {}, failures.tasks.map((t) => {
            const failed = failedSteps(t);
            const runLink = `/console/apps/${encodeURIComponent(t.application)}?run=${encodeURIComponent(t.task_id)}`;
            return h("tr", { "data-task": t.task_id },
              h("td", {}, h("a", { href: runLink }, t.application)),
              h("td", {}, failed.length ? failed.map(([id], i) => [i ? ", " : "", h("a", { href: `${runLink}&step=${encodeURIComponent(id)}`, "data-step": id }, id)]) : h("span", { class: "muted" }, "—")),
              h("td", { class: "error-text" }, failed.length ? failed.map(([, s]) => s.error || "").filter(Boolean).join("\n") : (t.error || "")),
              h("td", {}, when(t.finished_at)));
          })))
          : h("p", { class: "muted", id: "dash-failures" }, "No failed runs.")));
    updated.textContent = `updated ${new Date(now).toLocaleTimeString()}`;
  };
  ctx.show(h("h1", {}, "Dashboard"),
    h("div", { class: "toolbar" }, field("Window", range),
      h("button", { type: "button", class: "secondary", id: "dash-refresh", onclick: () => load().catch((e) => fill(body, errorBox(e))) }, "Refresh"), updated),
    body);
  await load();
  // Kept current while shown (the page's cleanup stops it), but not under the user's
  // focus: rebuilding the page would take a focused link or control away from them.
  const timer = setInterval(() => {
    if (document.visibilityState === "visible" && !body.contains(document.activeElement)) load().catch(() => {});
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
}
