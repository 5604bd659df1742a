// The Sluice web console: a single page over the REST API. Pages:
//   /, /console                        the dashboard (dashboard.js)
//   /console/builder[/NAME]            the Builder: a new or a stored application (builder.js)
//   /console/apps                      applications
//   /console/apps/NAME?run=ID&step=S   an application, its DAG and a run (live), step S selected
//   /integrations/NAME?runid=ID        PowerFlow's deep link to the same
//   /console/tasks/ID                  a run, by id (opens its application page)
//   /console/steps                     the steps registry
//   /console/runs?state=&application=  the global runs list and timeline (runs.js)
//   /console/configs[/NAME]            configurations and their editor (configs.js)
//   /console/schedules                 schedules (schedules.js)
// Everything on screen is built with textContent (never innerHTML from data).

import { api, credential, signIn, signOut, followTask } from "./api.js";
import { drawDag, paintStates, markSelected, isOperator } from "./dag.js";
import { h, fill, when, badge, errorBox } from "./dom.js";
import { customRunForm } from "./customrun.js";
import { configsPage, configEditorPage } from "./configs.js";
import { schedulesPage } from "./schedules.js";
import { runsPage } from "./runs.js";
import { dashboardPage } from "./dashboard.js";
import { builderPage } from "./builder.js";

const ROLES = ["view", "execute", "configuration", "developer", "administrator"];
const TERMINAL = ["success", "failure", "revoked"];
let me = null; // { name, role, method }
let cleanup = []; // stops the current page's streams

function can(role) {
  return me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

function main() { return document.getElementById("main"); }
function show(...nodes) { fill(main(), ...nodes); }

/** Marks the navigation link of the page shown. */
function nav(name) { document.querySelector(`[data-nav=${name}]`).setAttribute("aria-current", "page"); }

function go(path) {
  history.pushState({}, "", path);
  route();
}

// Links inside the page navigate without reloading.
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[href^='/']");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || a.target) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", () => route());
// A credential refused after sign-in (a revoked token): back to the sign-in form. (While
// signing in, `me` is null and the form shows the refusal itself.)
window.addEventListener("sluice:unauthorized", () => { if (!me) return; signOut(); me = null; route(); });

async function route() {
  cleanup.forEach((stop) => stop());
  cleanup = [];
  if (!credential()) return signInPage();
  if (!me) {
    try { me = await api("/whoami"); } catch (e) { signOut(); return signInPage(e); }
  }
  document.getElementById("nav").hidden = false;
  const who = document.getElementById("who");
  who.hidden = false;
  who.textContent = `${me.name} · ${me.role}`;
  document.getElementById("sign-out").hidden = false;
  document.querySelector("[data-nav=builder]").hidden = !can("developer");
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const query = new URLSearchParams(location.search);
  let m;
  for (const a of document.querySelectorAll("[data-nav]")) a.removeAttribute("aria-current");
  try {
    if ((m = path.match(/^\/console\/apps\/([^/]+)$/))) return await appPage(decodeURIComponent(m[1]), query.get("run"), query.get("step"));
    if ((m = path.match(/^\/integrations\/([^/]+)$/))) return await appPage(decodeURIComponent(m[1]), query.get("runid"));
    if ((m = path.match(/^\/console\/tasks\/([^/]+)$/))) {
      const task = await api(`/tasks/${encodeURIComponent(decodeURIComponent(m[1]))}`);
      history.replaceState({}, "", `/console/apps/${encodeURIComponent(task.application)}?run=${encodeURIComponent(task.task_id)}`);
      return await appPage(task.application, task.task_id);
    }
    if (path === "/console/steps") return await stepsPage();
    const ctx = { show, go, can, nav, me, onLeave: (stop) => cleanup.push(stop) };
    if (path === "/" || path === "/console") return await dashboardPage(ctx, query);
    if (path === "/console/builder") return await builderPage(ctx, null);
    if ((m = path.match(/^\/console\/builder\/([^/]+)$/))) return await builderPage(ctx, decodeURIComponent(m[1]));
    if (path === "/console/configs") return await configsPage(ctx);
    if ((m = path.match(/^\/console\/configs\/([^/]+)$/))) return await configEditorPage(ctx, decodeURIComponent(m[1]));
    if (path === "/console/schedules") return await schedulesPage(ctx);
    if (path === "/console/runs") return await runsPage(ctx, query);
    return await appsPage();
  } catch (e) {
    show(errorBox(e));
  }
}

// ---- sign-in ------------------------------------------------------------------------

function signInPage(problem) {
  for (const id of ["nav", "who", "sign-out"]) document.getElementById(id).hidden = true;
  const token = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "slc_… or a JWT", "aria-describedby": "token-help" });
  const user = h("input", { id: "user", type: "text", autocomplete: "username", value: "admin" });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password" });
  const message = h("p", { class: "error", role: "alert", id: "sign-in-error" }, problem ? problem.message : "");
  const form = h("form", { class: "card sign-in", id: "sign-in", onsubmit: async (e) => {
    e.preventDefault();
    if (token.value.trim()) signIn({ token: token.value });
    else if (password.value) signIn({ user: user.value, password: password.value });
    else { message.textContent = "Enter an API token (or, on AWS, a JWT), or the administrator's user and password."; return; }
    me = null;
    try { me = await api("/whoami"); } catch (err) { signOut(); message.textContent = err.status === 401 ? "These credentials were not accepted." : err.message; return; }
    route();
  } },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "API token or JWT"), token,
    h("p", { class: "muted small", id: "token-help" }, "A Sluice API token, or on a deployed stack a JWT from its identity provider (the API's JWT authorizer verifies it)."),
    h("p", { class: "muted" }, "or the administrator's user and password:"),
    h("label", { for: "user" }, "User"), user,
    h("label", { for: "password" }, "Password"), password,
    h("button", { type: "submit", id: "sign-in-button" }, "Sign in"),
    message,
    h("p", { class: "muted small" }, "The credential stays in this tab (sessionStorage) and is sent with each API call."));
  show(form);
  token.focus();
}

document.getElementById("sign-out").addEventListener("click", () => { signOut(); me = null; go("/console/apps"); });

// ---- applications -------------------------------------------------------------------

async function appsPage() {
  document.querySelector("[data-nav=apps]").setAttribute("aria-current", "page");
  const [apps, tasks] = await Promise.all([api("/applications?hidden=true"), api("/tasks?limit=1000")]);
  // Newest first: the first run seen of an application is its last.
  const last = new Map();
  for (const t of tasks.tasks) if (!last.has(t.application)) last.set(t.application, t);
  const search = h("input", { type: "search", id: "app-search", placeholder: "Search applications", "aria-label": "Search applications" });
  const hidden = h("input", { type: "checkbox", id: "show-hidden" });
  const body = h("tbody");
  const render = () => {
    const q = search.value.trim().toLowerCase();
    fill(body, ...apps
      .filter((a) => hidden.checked || !(a.meta && a.meta.hidden === true))
      .filter((a) => !q || [a.name, a.friendly_name, a.description].some((s) => s && s.toLowerCase().includes(q)))
      .map((a) => {
        const run = last.get(a.name);
        return h("tr", { "data-app": a.name },
          h("td", {}, h("a", { href: `/console/apps/${encodeURIComponent(a.name)}` }, a.name), a.meta && a.meta.hidden === true ? h("span", { class: "tag" }, "hidden") : null),
          h("td", {}, a.friendly_name || ""),
          h("td", {}, a.version || ""),
          h("td", {}, run ? h("a", { href: `/console/apps/${encodeURIComponent(a.name)}?run=${encodeURIComponent(run.task_id)}` }, badge(run.state)) : badge(null)),
          h("td", {}, run ? when(run.created_at) : "—"));
      }));
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No applications match.")));
  };
  search.addEventListener("input", render);
  hidden.addEventListener("change", render);
  render();
  show(h("h1", {}, "Applications"),
    h("div", { class: "toolbar" }, search, h("label", { class: "check" }, hidden, " Show hidden"),
      can("developer") ? h("a", { class: "button", id: "new-app", href: "/console/builder" }, "New application") : null),
    h("table", { class: "list", id: "apps" },
      h("thead", {}, h("tr", {}, ["Name", "Friendly name", "Version", "Last run", "Started"].map((c) => h("th", {}, c)))), body));
  search.focus();
}

// ---- application page ---------------------------------------------------------------

async function appPage(name, runId, stepId) {
  document.querySelector("[data-nav=apps]").setAttribute("aria-current", "page");
  const enc = encodeURIComponent(name);
  const [app, runs] = await Promise.all([api(`/applications/${enc}`), api(`/tasks?application=${enc}&limit=25`)]);
  runId = runId || (runs.tasks[0] && runs.tasks[0].task_id);
  // The run executes its snapshot: draw that when a run is shown.
  const doc = runId ? await api(`/tasks/${encodeURIComponent(runId)}/application`).catch(() => app) : app;
  let task = null;
  let selected = doc.steps.some((s) => s.id === stepId) ? stepId : null;
  const svg = drawDag(doc.steps, (id) => { selected = id; markSelected(svg, id); stepPanel(); });
  const runInfo = h("div", { class: "run-info", id: "run-info" });
  const actions = h("div", { class: "actions", id: "actions" });
  const panel = h("section", { class: "card step-panel", id: "step-panel", "aria-live": "polite" }, h("p", { class: "muted" }, "Select a step to see its log and data."));
  const mode = h("span", { class: "muted small", id: "live-mode" });
  const runList = h("select", { id: "run-select", "aria-label": "Run", onchange: (e) => go(`/console/apps/${enc}?run=${encodeURIComponent(e.target.value)}`) },
    runs.tasks.map((t) => h("option", { value: t.task_id, selected: t.task_id === runId }, `${when(t.created_at)} · ${t.state}`)));
  if (runId && !runs.tasks.some((t) => t.task_id === runId)) runList.prepend(h("option", { value: runId, selected: true }, runId));

  const start = async (params, report) => {
    try {
      const t = await api(`/applications/${enc}/run`, { method: "POST", body: { params } });
      go(`/console/apps/${enc}?run=${encodeURIComponent(t.task_id)}`);
    } catch (e) { if (report) report.textContent = e.message; else actions.append(errorBox(e)); }
  };
  const customRun = h("div", { id: "custom-run-slot" });
  const openCustomRun = async () => {
    if (customRun.firstChild) { customRun.replaceChildren(); return; }
    try {
      const configurations = await api("/configurations");
      const form = customRunForm(app, configurations, start, () => { customRun.replaceChildren(); document.getElementById("custom-run-open").focus(); });
      fill(customRun, form);
      const first = form.querySelector("input, select, textarea");
      if (first) first.focus();
    } catch (e) { fill(customRun, errorBox(e)); }
  };
  const renderActions = () => {
    actions.replaceChildren();
    if (!can("execute")) return;
    actions.append(
      h("button", { type: "button", id: "run", onclick: () => start({}) }, "Run"),
      h("button", { type: "button", id: "debug-run", title: "Run with loglevel 10 (DEBUG entries kept)", onclick: () => start({ loglevel: 10 }) }, "Debug Run"),
      h("button", { type: "button", id: "custom-run-open", "aria-controls": "custom-run-slot", onclick: openCustomRun }, "Custom Run…"));
    if (task) {
      actions.append(h("button", { type: "button", id: "replay", onclick: async () => {
        try { const t = await api(`/tasks/${encodeURIComponent(task.task_id)}/replay`, { method: "POST" }); go(`/console/apps/${enc}?run=${encodeURIComponent(t.task_id)}`); } catch (e) { actions.append(errorBox(e)); }
      } }, "Replay"));
      if (!TERMINAL.includes(task.state)) {
        actions.append(h("button", { type: "button", id: "revoke", class: "danger", onclick: async () => {
          try { onTask(await api(`/tasks/${encodeURIComponent(task.task_id)}/revoke`, { method: "POST" })); } catch (e) { actions.append(errorBox(e)); }
        } }, "Revoke"));
      }
    }
  };
  const onTask = (t) => {
    const changedState = !task || task.state !== t.state;
    task = t;
    paintStates(svg, t);
    fill(runInfo, 
      h("span", {}, "Run ", h("code", { id: "run-id" }, t.task_id), " "), h("span", { id: "run-state" }, badge(t.state)),
      h("span", { class: "muted" }, ` created ${when(t.created_at)}`, t.finished_at ? ` · finished ${when(t.finished_at)}` : ""),
      t.replay_of ? h("span", { class: "muted" }, " · replay of ", h("a", { href: `/console/tasks/${encodeURIComponent(t.replay_of)}` }, t.replay_of)) : null,
      t.parent ? h("span", { class: "muted" }, " · child of ", h("a", { href: `/console/tasks/${encodeURIComponent(t.parent.task_id)}` }, t.parent.task_id)) : null);
    if (changedState) renderActions();
    if (selected) stepPanel();
  };

  // The selected step: its state, error, child run, Step Log and Step Data.
  let tab = "log";
  const stepPanel = async () => {
    const spec = doc.steps.find((s) => s.id === selected);
    const step = task && task.steps[selected];
    const content = h("div", { class: "tab-content", id: "tab-content" });
    const tabs = h("div", { class: "tabs", role: "tablist" },
      h("button", { type: "button", role: "tab", id: "tab-log", "aria-selected": String(tab === "log"), onclick: () => { tab = "log"; stepPanel(); } }, "Step Log"),
      h("button", { type: "button", role: "tab", id: "tab-data", "aria-selected": String(tab === "data"), onclick: () => { tab = "data"; stepPanel(); } }, "Step Data"));
    fill(panel, 
      h("h2", {}, selected, " ", h("span", { class: "muted" }, spec.type, isOperator(spec) ? " (operator)" : "", spec.for_each ? " · for each" : "")),
      step ? h("p", {}, badge(step.state), ` attempts ${step.attempts}`, step.items != null ? ` · ${step.items} items` : "", step.started_at ? ` · started ${when(step.started_at)}` : "", step.finished_at ? ` · finished ${when(step.finished_at)}` : "") : h("p", { class: "muted" }, "No run selected."),
      step && step.error ? h("pre", { class: "error", id: "step-error" }, step.error) : null,
      step && step.warnings ? h("ul", { class: "warnings" }, step.warnings.map((w) => h("li", {}, w))) : null,
      step && step.child_run ? h("p", {}, "Child run: ", h("a", { id: "child-run", href: `/console/tasks/${encodeURIComponent(step.child_run)}` }, step.child_run)) : null,
      step ? tabs : null, step ? content : null);
    if (!step) return;
    try {
      if (tab === "log") {
        const page = await api(`/tasks/${encodeURIComponent(task.task_id)}/logs?step=${encodeURIComponent(selected)}&limit=1000`);
        fill(content, page.logs.length ? h("table", { class: "log", id: "step-log" },
          h("thead", {}, h("tr", {}, ["Time", "Level", "Attempt", "Message"].map((c) => h("th", {}, c)))),
          h("tbody", {}, page.logs.map((l) => h("tr", { class: `level-${l.level}` }, h("td", {}, when(l.ts)), h("td", { class: "level" }, l.level), h("td", {}, l.attempt ?? ""), h("td", { class: "message" }, l.message)))))
          : h("p", { class: "muted", id: "step-log" }, "No log entries yet."),
          page.more ? h("p", { class: "muted" }, "More entries: read the rest with `sluice runs logs`.") : null);
      } else {
        const output = await api(`/tasks/${encodeURIComponent(task.task_id)}/steps/${encodeURIComponent(selected)}/output`);
        const text = JSON.stringify(output, null, 2) ?? "null";
        const LIMIT = 200_000;
        fill(content, h("pre", { class: "json", id: "step-data" }, text.length > LIMIT ? text.slice(0, LIMIT) : text),
          text.length > LIMIT ? h("p", { class: "muted" }, `Shown: the first ${LIMIT} of ${text.length} characters.`) : null);
      }
    } catch (e) { fill(content, errorBox(e)); }
  };

  show(
    h("h1", {}, app.friendly_name || app.name, " ", h("span", { class: "muted small" }, `${app.name} · v${app.version}`)),
    app.description ? h("p", { class: "muted" }, app.description) : null,
    h("div", { class: "toolbar" }, runs.tasks.length || runId ? runList : h("span", { class: "muted" }, "No runs yet."), actions,
      can("developer") ? h("a", { class: "button secondary", id: "edit-in-builder", href: `/console/builder/${enc}` }, "Edit in Builder") : null, mode),
    customRun,
    runInfo,
    h("div", { class: "dag-wrap card" }, svg),
    h("p", { class: "legend small" }, ["pending", "queued", "running", "success", "warning", "failed", "skipped", "cancelled"].map((s) => badge(s)), h("span", { class: "muted" }, " · rounded: operator · stacked: for each")),
    panel);
  renderActions();
  if (selected) { markSelected(svg, selected); stepPanel(); }
  if (runId) cleanup.push(followTask(runId, onTask, (m) => { mode.textContent = m === "stream" ? "live" : "polling every 2 s"; mode.dataset.mode = m; }));
}

// ---- steps registry -----------------------------------------------------------------

function schemaType(s) {
  if (!s) return "";
  if (s.type) return Array.isArray(s.type) ? s.type.join(" | ") : s.type;
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.$ref) return s.$ref.split("/").pop();
  const alts = s.anyOf || s.oneOf;
  return alts ? alts.map(schemaType).join(" | ") : "any";
}

async function stepsPage() {
  document.querySelector("[data-nav=steps]").setAttribute("aria-current", "page");
  const steps = await api("/steps");
  show(h("h1", {}, "Steps registry"),
    h("div", { id: "steps" }, steps.map((s) => {
      const schema = s.parameters || {};
      const required = new Set(schema.required || []);
      const props = Object.entries(schema.properties || {});
      return h("section", { class: "card step-type", "data-step-type": s.name },
        h("h2", {}, s.name, " ", h("span", { class: "version" }, s.version), " ", h("span", { class: "tag" }, s.kind)),
        h("p", {}, s.description || ""),
        props.length ? h("table", { class: "list params" },
          h("thead", {}, h("tr", {}, ["Parameter", "Type", "Required", "Default", "Description"].map((c) => h("th", {}, c)))),
          h("tbody", {}, props.map(([name, p]) => h("tr", {}, h("td", {}, h("code", {}, name)), h("td", {}, schemaType(p)), h("td", {}, required.has(name) ? "yes" : ""), h("td", {}, p.default !== undefined ? JSON.stringify(p.default) : ""), h("td", {}, p.description || "")))))
          : h("p", { class: "muted" }, "No parameters."));
    })));
}

route();
