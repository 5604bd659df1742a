// Schedules: the list with each timing in plain English, next run, total runs, last run
// and why the latest tick could not start a run (`last_error`); create, enable/disable,
// delete (administrator, as the API requires).

import { api } from "./api.js";
import { h, fill, when, field } from "./dom.js";

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

function list(items) {
  return items.length <= 2 ? items.join(" and ") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** One crontab field in words: `name(n)` names a value ("Monday", "09"). */
function words(spec, name) {
  return list(spec.split(",").map((part) => {
    const [range, step] = part.split("/");
    const [a, b] = range.split("-");
    const base = range === "*" ? "every value" : b !== undefined ? `${name(a)} through ${name(b)}` : name(a);
    return step ? `every ${step}${range === "*" ? "" : ` from ${base}`}` : base;
  }));
}

const dayName = (d) => { const i = DAY_NAMES.indexOf(String(d).toLowerCase()); return DAYS[i >= 0 ? i : Number(d) % 7] || d; };
const monthName = (m) => MONTHS[Number(m) - 1] || m;
const two = (n) => String(n).padStart(2, "0");
const number = /^\d+$/;

/** A crontab (`{minute, hour, day_of_month, month_of_year, day_of_week}`, UTC) in plain English. */
export function describeCrontab(info) {
  const f = { minute: "*", hour: "*", day_of_month: "*", month_of_year: "*", day_of_week: "*", ...info };
  let time;
  if (number.test(f.minute) && number.test(f.hour)) time = `At ${two(f.hour)}:${two(f.minute)}`;
  else if (f.minute === "*" && f.hour === "*") time = "Every minute";
  else if (/^\*\/\d+$/.test(f.minute) && f.hour === "*") time = `Every ${f.minute.slice(2)} minutes`;
  else if (number.test(f.minute) && f.hour === "*") time = `At minute ${f.minute} of every hour`;
  else {
    const minute = f.minute === "*" ? "Every minute" : /^\*\/\d+$/.test(f.minute) ? `Every ${f.minute.slice(2)} minutes` : `At minute ${words(f.minute, String)}`;
    const hours = /^\*\/\d+$/.test(f.hour) ? `every ${f.hour.slice(2)} hours` : `hours ${words(f.hour, two)}`;
    time = f.hour === "*" ? minute : `${minute}, ${hours}`;
  }
  const parts = [time];
  const dom = f.day_of_month !== "*" ? `on day ${words(f.day_of_month, String)} of the month` : null;
  const dow = f.day_of_week !== "*" ? `on ${words(f.day_of_week, dayName)}` : null;
  // Celery ANDs the two day fields when both are restricted.
  if (dom && dow) parts.push(`${dom}, if it is ${words(f.day_of_week, dayName)}`);
  else if (dom || dow) parts.push(dom || dow);
  if (f.month_of_year !== "*") parts.push(`in ${words(f.month_of_year, monthName)}`);
  return `${parts.join(" ")} (UTC)`;
}

/** `run_every` seconds in plain English. */
export function describeFrequency(seconds) {
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (seconds % size === 0) { const n = seconds / size; return n === 1 ? `Every ${unit}` : `Every ${n} ${unit}s`; }
  }
  return `Every ${seconds} seconds`;
}

export function describeSchedule(schedule) {
  if (!schedule) return "";
  return schedule.schedule_type === "frequency" ? describeFrequency(schedule.schedule_info.run_every) : describeCrontab(schedule.schedule_info || {});
}

/** The listed schedule as the API takes it back (it ignores the read-only fields). */
function writable(entry) {
  const { application_id, entry_id, params, schedule, enabled } = entry;
  return { application_id, entry_id, params: params || {}, schedule, enabled };
}

function createForm(ctx, apps, refresh) {
  const entry = h("input", { id: "sched-entry", type: "text", required: true, placeholder: "nightly-sync" });
  const app = h("select", { id: "sched-app", required: true }, apps.map((a) => h("option", { value: a.name }, a.name)));
  const kind = h("select", { id: "sched-kind" }, h("option", { value: "crontab" }, "crontab"), h("option", { value: "frequency" }, "frequency"));
  const cron = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week"].map((k) => {
    const input = h("input", { id: `sched-${k}`, type: "text", size: 6, value: k === "minute" ? "0" : "*" });
    return { k, input };
  });
  const every = h("input", { id: "sched-every", type: "number", min: 60, step: 1, value: 3600 });
  const params = h("textarea", { id: "sched-params", rows: 3, spellcheck: "false" });
  params.value = "{}";
  const enabled = h("input", { id: "sched-enabled", type: "checkbox", checked: true });
  const preview = h("p", { class: "muted", id: "sched-preview", "aria-live": "polite" });
  const problem = h("p", { class: "error", role: "alert", id: "sched-error" });
  const timing = () => kind.value === "frequency"
    ? { schedule_type: "frequency", schedule_info: { run_every: Number(every.value) } }
    : { schedule_type: "crontab", schedule_info: Object.fromEntries(cron.map(({ k, input }) => [k, input.value.trim() || "*"])) };
  const cronBox = h("fieldset", { class: "inline" }, h("legend", {}, "Crontab (UTC)"), cron.map(({ k, input }) => field(k.replaceAll("_", " "), input)));
  const everyBox = h("fieldset", { class: "inline", hidden: true }, h("legend", {}, "Frequency"), field("Every (seconds, at least 60)", every));
  const update = () => {
    cronBox.hidden = kind.value !== "crontab";
    everyBox.hidden = kind.value !== "frequency";
    preview.textContent = describeSchedule(timing());
  };
  const form = h("form", { class: "card", id: "schedule-form", oninput: update, onchange: update, onsubmit: async (e) => {
    e.preventDefault();
    let p;
    try { p = JSON.parse(params.value || "{}"); if (!p || typeof p !== "object" || Array.isArray(p)) throw new Error("an object"); } catch (err) { problem.textContent = `params: ${err.message}`; return; }
    try {
      await api("/schedule", { method: "POST", body: { entry_id: entry.value.trim(), application_id: app.value, params: p, schedule: timing(), enabled: enabled.checked } });
      problem.textContent = "";
      await refresh();
    } catch (err) { problem.textContent = err.message; }
  } },
    h("h2", {}, "New schedule"),
    h("div", { class: "inline" }, field("Entry id", entry), field("Application", app), field("Kind", kind)),
    cronBox, everyBox, preview,
    field("Params (JSON)", params, "The run's params, as for Custom Run: app variables, configuration, queue, loglevel."),
    h("label", { class: "check" }, enabled, " Enabled"),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "sched-create" }, "Create schedule")),
    problem);
  update();
  return form;
}

export async function schedulesPage(ctx) {
  ctx.nav("schedules");
  const admin = ctx.can("administrator");
  const tbody = h("tbody");
  const message = h("p", { class: "error", role: "alert", id: "schedules-error" });
  const refresh = async () => {
    const entries = await api("/schedule");
    fill(tbody, entries.length ? entries.map((s) => {
      const confirm = h("button", { type: "button", class: "danger", hidden: true, "data-action": "confirm-delete", onclick: async () => {
        try { await api(`/schedule/${encodeURIComponent(s.entry_id)}`, { method: "DELETE" }); await refresh(); } catch (e) { message.textContent = e.message; }
      } }, "Confirm delete");
      return h("tr", { "data-schedule": s.entry_id },
        h("td", {}, h("code", {}, s.entry_id)),
        h("td", {}, h("a", { href: `/console/apps/${encodeURIComponent(s.application_id)}` }, s.application_id)),
        h("td", { class: "timing" }, describeSchedule(s.schedule)),
        h("td", { class: "enabled" }, s.enabled === false ? "disabled" : "enabled"),
        h("td", {}, s.enabled === false ? "—" : when(s.next_run)),
        h("td", { class: "total" }, String(s.total_runs ?? 0)),
        h("td", {}, s.last_run ? h("a", { href: `/console/tasks/${encodeURIComponent(s.last_run.task_id)}` }, when(s.last_run.start_time)) : "—"),
        h("td", { class: "last-error" }, s.last_error ? h("span", { class: "error" }, `${s.last_error.message} (${when(s.last_error.time)})`) : ""),
        h("td", {}, admin ? h("div", { class: "row-actions" },
          h("button", { type: "button", class: "secondary", "data-action": "toggle", onclick: async () => {
            try { await api("/schedule", { method: "POST", body: { ...writable(s), enabled: s.enabled === false } }); await refresh(); } catch (e) { message.textContent = e.message; }
          } }, s.enabled === false ? "Enable" : "Disable"),
          h("button", { type: "button", class: "secondary", "data-action": "delete", "aria-label": `Delete ${s.entry_id}`, onclick: () => { confirm.hidden = false; confirm.focus(); } }, "Delete"),
          confirm) : null));
    }) : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No schedules.")));
  };
  await refresh();
  const apps = admin ? await api("/applications?hidden=true") : [];
  ctx.show(h("h1", {}, "Schedules"),
    h("table", { class: "list", id: "schedules" },
      h("thead", {}, h("tr", {}, ["Entry", "Application", "When", "State", "Next run", "Runs", "Last run", "Last error", ""].map((c) => h("th", {}, c)))), tbody),
    message,
    admin ? createForm(ctx, apps, refresh) : h("p", { class: "muted" }, "Creating and changing schedules needs the administrator role."));
}
