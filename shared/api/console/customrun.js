// Custom Run: a form built from the application's app variables (their type, choices,
// description and default), plus the run's configuration, queue and log level. Only the
// variables the user changed are sent as params, so a default that is a reference
// (`${config.…}`) keeps resolving in the run.

import { h, field } from "./dom.js";

const LOGLEVELS = [["", "default (INFO)"], ["10", "10 DEBUG"], ["20", "20 INFO"], ["30", "30 WARNING"], ["40", "40 ERROR"]];

function display(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** One app variable's control and a reader of its value: `{ control, read }`, where
 * `read()` is `{ set: false }` when left at its default, `{ value }` when changed, or
 * throws naming the variable. */
function variableControl(v, index) {
  const id = `var-${index}`;
  const type = v.type || "string";
  const dflt = v.value;
  if (type === "boolean") {
    const box = h("input", { type: "checkbox", id, name: v.name, "data-var": v.name, checked: dflt === true });
    return { control: box, read: () => (box.checked === (dflt === true) ? { set: false } : { set: true, value: box.checked }) };
  }
  if (type === "enum") {
    const choices = v.choices || [];
    const select = h("select", { id, name: v.name, "data-var": v.name },
      h("option", { value: "" }, dflt === undefined || dflt === null ? "(choose)" : `default: ${display(dflt)}`),
      choices.map((c, i) => h("option", { value: String(i) }, display(c))));
    return { control: select, read: () => {
      if (select.value === "") {
        if (v.required && (dflt === undefined || dflt === null)) throw new Error(`${v.name}: choose a value`);
        return { set: false };
      }
      return { set: true, value: choices[Number(select.value)] };
    } };
  }
  if (type === "json") {
    const area = h("textarea", { id, name: v.name, "data-var": v.name, rows: 3, spellcheck: "false" });
    area.value = dflt === undefined || dflt === null ? "" : JSON.stringify(dflt, null, 2);
    const initial = area.value;
    return { control: area, read: () => {
      if (area.value === initial) return { set: false };
      try { return { set: true, value: JSON.parse(area.value) }; } catch (e) { throw new Error(`${v.name}: not valid JSON (${e.message})`); }
    } };
  }
  const input = h("input", { id, name: v.name, "data-var": v.name, type: type === "number" ? "number" : "text", step: type === "number" ? "any" : null });
  input.value = display(dflt);
  const initial = input.value;
  return { control: input, read: () => {
    if (input.value === initial) {
      if (v.required && initial === "") throw new Error(`${v.name}: a value is required`);
      return { set: false };
    }
    if (type !== "number") return { set: true, value: input.value };
    const n = Number(input.value);
    if (input.value.trim() === "" || !Number.isFinite(n)) throw new Error(`${v.name}: not a number`);
    return { set: true, value: n };
  } };
}

/** The Custom Run form; `start(params)` starts the run (and reports its own errors). */
export function customRunForm(app, configurations, start, close) {
  const vars = (app.app_variables || []).map((v, i) => ({ v, ...variableControl(v, i) }));
  const configuration = h("select", { id: "run-configuration", name: "configuration" },
    h("option", { value: "" }, app.configuration ? `the application's (${app.configuration})` : "none"),
    configurations.map((c) => h("option", { value: c.name }, c.friendly_name ? `${c.name} · ${c.friendly_name}` : c.name)));
  const queue = h("input", { id: "run-queue", name: "queue", type: "text", placeholder: "a label recorded on the run" });
  const loglevel = h("select", { id: "run-loglevel", name: "loglevel" }, LOGLEVELS.map(([value, label]) => h("option", { value }, label)));
  const problem = h("p", { class: "error", role: "alert", id: "custom-run-error" });
  const form = h("form", { class: "card custom-run", id: "custom-run", "aria-labelledby": "custom-run-title", onsubmit: async (e) => {
    e.preventDefault();
    const params = {};
    try {
      for (const { v, read } of vars) { const r = read(); if (r.set) params[v.name] = r.value; }
    } catch (err) { problem.textContent = err.message; return; }
    if (configuration.value) params.configuration = configuration.value;
    if (queue.value.trim()) params.queue = queue.value.trim();
    if (loglevel.value) params.loglevel = Number(loglevel.value);
    problem.textContent = "";
    await start(params, problem);
  } },
    h("h2", { id: "custom-run-title" }, "Custom Run"),
    vars.length ? h("fieldset", {}, h("legend", {}, "App variables"),
      vars.map(({ v, control }) => field(`${v.name}${v.required ? " *" : ""} (${v.type || "string"})`, control, v.description)))
      : h("p", { class: "muted" }, "This application has no app variables."),
    h("fieldset", {}, h("legend", {}, "Run"),
      field("Configuration", configuration), field("Queue", queue), field("Log level", loglevel)),
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "custom-run-start" }, "Start run"),
      h("button", { type: "button", class: "secondary", id: "custom-run-cancel", onclick: close }, "Cancel")),
    problem);
  return form;
}
