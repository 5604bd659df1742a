// The Builder: create or edit an application in the browser.
//   /console/builder          a new application
//   /console/builder/NAME     the stored application NAME, loaded for editing
//
// Step instances come from the registry (GET /steps) with a parameter form generated from
// each type's JSON Schema (schemaform.js); `${…}` references are offered from the step's
// predecessors, the configuration's keys and the app variables. Dependencies are chosen
// per step ("Runs after") and drawn with dag.js. A `when` condition is built from its
// kinds (equal, numeric, template, and/or/not). A transform's template can be
// test-rendered (POST /steps/run) against a step output of a chosen run. As the user types,
// the document is checked by POST /validate/application and every issue is marked on
// the field its path names; Save stores it (POST /applications), Run saves and starts it.

import { api } from "./api.js";
import { drawDag } from "./dag.js";
import { h, fill, when, badge, errorBox, field } from "./dom.js";
import { paramControl, referenceMenu, jsonOrText, display, markIssues, clearIssues } from "./schemaform.js";

const TRANSFORMS = new Set(["transform", "template_render"]);
const CONDITION_KINDS = ["equal", "numeric", "template", "and", "or", "not"];
/** Milliseconds of typing quiet before the document is validated. */
const VALIDATE_AFTER_MS = 400;

let uid = 0;
const nextUid = () => { uid += 1; return uid; };

/** A JSON-or-text value field (a condition's `value`, `to`). */
function valueInput(id, path, value, refs, label, hint) {
  const input = h("input", { id, type: "text", "data-path": path, list: refs, autocomplete: "off" });
  input.value = value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value);
  return { node: field(label, input, hint), read: () => jsonOrText(input.value) };
}

function numberInput(id, path, value, label) {
  const input = h("input", { id, type: "text", inputmode: "decimal", "data-path": path, autocomplete: "off" });
  input.value = value === undefined || value === null ? "" : String(value);
  return { node: field(label, input), read: () => {
    const t = input.value.trim();
    if (t === "") return undefined;
    const n = Number(t);
    if (!Number.isFinite(n)) throw Object.assign(new Error(`${label}: not a number`), { path });
    return n;
  } };
}

/**
 * The editor of one condition (a step's `when`, or a part of an and/or/not). `read()` is
 * the condition document, or undefined for "no condition".
 */
function conditionEditor(cond, path, idBase, refs, insertable, allowNone) {
  const kindOf = (c) => (c ? CONDITION_KINDS.find((k) => c[k] !== undefined) : undefined);
  let kind = kindOf(cond) || (allowNone ? "" : "equal");
  let current = cond || {};
  const box = h("div", { class: "condition", "data-path": path, "data-condition": path });
  const kindSelect = h("select", { id: `${idBase}-kind`, "data-cond-kind": path },
    allowNone ? h("option", { value: "" }, "always run (no condition)") : null,
    CONDITION_KINDS.map((k) => h("option", { value: k, selected: k === kind }, {
      equal: "equal: a value equals another", numeric: "numeric: a number between bounds", template: "template: a Jinja expression",
      and: "and: all of", or: "or: any of", not: "not: the opposite of",
    }[k])));
  const body = h("div", { class: "condition-body" });
  let readers = {};
  const render = () => {
    readers = {};
    const c = current;
    if (kind === "equal") {
      const v = valueInput(`${idBase}-eq-value`, `${path}.equal.value`, c.equal && c.equal.value, refs, "Value", "JSON (200, true, \"x\") or text; usually a ${…} reference.");
      const t = valueInput(`${idBase}-eq-to`, `${path}.equal.to`, c.equal && c.equal.to, refs, "Equals");
      readers.equal = () => ({ value: v.read(), to: t.read() });
      fill(body, h("div", { class: "inline" }, v.node, t.node));
    } else if (kind === "numeric") {
      const v = valueInput(`${idBase}-num-value`, `${path}.numeric.value`, c.numeric && c.numeric.value, refs, "Value");
      const above = numberInput(`${idBase}-num-above`, `${path}.numeric.above`, c.numeric && c.numeric.above, "Above");
      const below = numberInput(`${idBase}-num-below`, `${path}.numeric.below`, c.numeric && c.numeric.below, "Below");
      readers.numeric = () => {
        const out = { value: v.read() };
        const a = above.read(); const b = below.read();
        if (a !== undefined) out.above = a;
        if (b !== undefined) out.below = b;
        return out;
      };
      fill(body, h("div", { class: "inline" }, v.node, above.node, below.node));
    } else if (kind === "template") {
      const area = h("textarea", { id: `${idBase}-template`, rows: 2, spellcheck: "false", "data-path": `${path}.template`, "data-param": "condition" });
      area.value = c.template || "";
      readers.template = () => area.value;
      fill(body, field("Expression", area, "A Jinja2 expression, true to run the step: `Fetch.count > 0`. References are values."),
        insertable.length ? referenceMenu(area, insertable, `${idBase}-template-insert`) : null);
    } else if (kind === "and" || kind === "or") {
      const parts = (c[kind] && c[kind].length ? c[kind] : [{ equal: { value: "", to: "" } }]).map((p, i) => ({ p, i }));
      const list = h("ol", { class: "condition-parts" });
      const editors = [];
      parts.forEach(({ p }, i) => {
        const e = conditionEditor(p, `${path}.${kind}[${i}]`, `${idBase}-${kind}${i}`, refs, insertable, false);
        editors.push(e);
        list.append(h("li", {}, e.node, h("button", { type: "button", class: "secondary small", id: `${idBase}-${kind}${i}-remove`, onclick: () => {
          current = { ...read(), label: labelInput.value || undefined };
          current[kind] = current[kind].filter((_, j) => j !== i);
          render();
          box.dispatchEvent(new Event("change", { bubbles: true }));
        } }, "Remove this part")));
      });
      readers[kind] = () => editors.map((e) => e.read());
      fill(body, list, h("button", { type: "button", class: "secondary", id: `${idBase}-${kind}-add`, onclick: () => {
        current = { ...read(), label: labelInput.value || undefined };
        current[kind] = [...current[kind], { equal: { value: "", to: "" } }];
        render();
        box.dispatchEvent(new Event("change", { bubbles: true }));
        const added = body.querySelector(`#${idBase}-${kind}${current[kind].length - 1}-kind`);
        if (added) added.focus();
      } }, `Add a part to “${kind}”`));
    } else if (kind === "not") {
      const e = conditionEditor(c.not || { equal: { value: "", to: "" } }, `${path}.not`, `${idBase}-not`, refs, insertable, false);
      readers.not = () => e.read();
      fill(body, e.node);
    } else {
      fill(body);
    }
  };
  const labelInput = h("input", { id: `${idBase}-label`, type: "text", "data-path": `${path}.label`, placeholder: "optional, shown in the log" });
  labelInput.value = current.label || "";
  kindSelect.addEventListener("change", () => {
    let before;
    try { before = read(); } catch { before = undefined; }
    const was = kind;
    kind = kindSelect.value;
    // Turning a condition into and/or/not keeps it as the first part.
    const leaf = before && ["equal", "numeric", "template"].includes(was) ? { [was]: before[was] } : null;
    if (leaf && (kind === "and" || kind === "or")) current = { label: before.label, [kind]: [leaf] };
    else if (leaf && kind === "not") current = { label: before.label, not: leaf };
    else current = { ...(before || {}) };
    render();
  });
  const read = () => {
    if (!kind) return undefined;
    const out = {};
    if (labelInput.value.trim()) out.label = labelInput.value.trim();
    out[kind] = readers[kind]();
    return out;
  };
  render();
  box.append(h("div", { class: "inline" }, field("Condition", kindSelect), field("Label", labelInput)), body);
  return { node: box, read };
}

/** Which parameters a step type's schema knows (the rest are kept as "Other parameters"). */
function schemaProperties(type) {
  return (type && type.parameters && type.parameters.properties) || {};
}

export async function builderPage(ctx, name) {
  ctx.nav("builder");
  if (!ctx.can("developer")) {
    ctx.show(h("h1", {}, "Builder"), h("p", { class: "error", role: "alert" }, "Building applications needs the developer role."));
    return;
  }
  const [registry, configurations, existing] = await Promise.all([
    api("/steps"), api("/configurations"), name ? api(`/applications/${encodeURIComponent(name)}`) : Promise.resolve(null),
  ]);
  const types = new Map(registry.map((t) => [t.name, t]));
  // The document being edited; fields the Builder has no control for (meta, alerts,
  // retry, timeouts) are kept as they are.
  const doc = existing ? structuredClone(existing) : { name: "", author: ctx.me.name, description: "", steps: [] };
  let steps = (doc.steps || []).map((s) => ({ uid: nextUid(), spec: structuredClone(s) }));
  let savedName = existing ? existing.name : null;

  // ---- the application's own fields -------------------------------------------------
  const nameInput = h("input", { id: "b-name", type: "text", "data-path": "name", required: true, autocomplete: "off", placeholder: "orders_sync" });
  nameInput.value = doc.name || "";
  const friendly = h("input", { id: "b-friendly", type: "text", "data-path": "friendly_name", autocomplete: "off" });
  friendly.value = doc.friendly_name || "";
  const description = h("input", { id: "b-description", type: "text", "data-path": "description", autocomplete: "off" });
  description.value = doc.description || "";
  const author = h("input", { id: "b-author", type: "text", "data-path": "author", autocomplete: "off" });
  author.value = doc.author || "";
  const configuration = h("select", { id: "b-configuration", "data-path": "configuration", "data-structural": "true" },
    h("option", { value: "" }, "none"),
    configurations.map((c) => h("option", { value: c.name, selected: c.name === doc.configuration }, c.friendly_name ? `${c.name} · ${c.friendly_name}` : c.name)));
  const variables = h("textarea", { id: "b-variables", rows: 3, spellcheck: "false", "data-path": "app_variables", "data-structural": "true", placeholder: "[{\"name\": \"region\", \"type\": \"string\", \"value\": \"ams\"}]" });
  variables.value = doc.app_variables && doc.app_variables.length ? JSON.stringify(doc.app_variables, null, 2) : "";

  const refsOf = (index, spec) => {
    const out = [];
    for (const p of spec.depends_on || []) out.push(`\${${p}}`);
    const config = configurations.find((c) => c.name === configuration.value);
    for (const v of (config && config.data) || []) out.push(`\${config.${v.name}}`);
    let vars = [];
    try { vars = variables.value.trim() ? JSON.parse(variables.value) : []; } catch { vars = []; }
    for (const v of Array.isArray(vars) ? vars : []) if (v && v.name) out.push(`\${vars.${v.name}}`);
    out.push("${run.id}");
    if (spec.for_each) out.push("${item}");
    return out;
  };

  // ---- the step cards ---------------------------------------------------------------
  const cardsBox = h("div", { id: "b-steps" });
  let cards = [];
  const problems = h("div", { id: "b-issues", role: "status", "aria-live": "polite" });
  const status = h("p", { id: "b-status", class: "status", role: "status" });
  const dagBox = h("div", { class: "dag-wrap card", id: "b-dag" });

  const stepCard = (entry, index) => {
    const spec = entry.spec;
    const base = `s${entry.uid}`;
    const path = `steps[${index}]`;
    const type = types.get(spec.type);
    const refs = `${base}-refs`;
    const insertable = refsOf(index, spec);
    const idInput = h("input", { id: `${base}-id`, type: "text", "data-path": `${path}.id`, "data-structural": "true", autocomplete: "off" });
    idInput.value = spec.id;
    const stepDescription = h("input", { id: `${base}-description`, type: "text", "data-path": `${path}.description`, autocomplete: "off" });
    stepDescription.value = spec.description || "";
    const others = steps.filter((e) => e !== entry).map((e) => e.spec.id);
    const deps = h("fieldset", { class: "inline deps", "data-path": `${path}.depends_on` },
      h("legend", {}, "Runs after"),
      others.length ? others.map((o, i) => h("label", { class: "check" },
        h("input", { type: "checkbox", id: `${base}-dep-${i}`, value: o, "data-dep": o, "data-structural": "true", checked: (spec.depends_on || []).includes(o) }), ` ${o}`))
        : h("span", { class: "muted small" }, "No other steps yet: this step is a root."));
    // Parameters: one control per schema property; the rest as JSON.
    const props = schemaProperties(type);
    const required = new Set((type && type.parameters && type.parameters.required) || []);
    const params = spec.parameters || {};
    const controls = Object.entries(props).map(([pname, pschema], i) => ({ pname, ...paramControl({
      name: pname, schema: pschema, root: type.parameters, required: required.has(pname), value: params[pname],
      path: `${path}.parameters.${pname}`, id: `${base}-p${i}`, refs, insertable,
    }) }));
    const unknown = Object.fromEntries(Object.entries(params).filter(([k]) => !(k in props)));
    const otherParams = h("textarea", { id: `${base}-other`, rows: 2, spellcheck: "false", "data-path": `${path}.parameters.*`, placeholder: "{}" });
    otherParams.value = Object.keys(unknown).length ? JSON.stringify(unknown, null, 2) : "";
    const forEach = h("textarea", { id: `${base}-for-each`, rows: 2, spellcheck: "false", "data-path": `${path}.for_each`, "data-structural": "true", placeholder: "{\"items\": \"${Source}\"}" });
    forEach.value = spec.for_each ? JSON.stringify(spec.for_each, null, 2) : "";
    const condition = conditionEditor(spec.when, `${path}.when`, `${base}-when`, refs, insertable, true);
    const card = h("section", { class: "card step-card", "data-step-card": spec.id, "data-path": path, "aria-labelledby": `${base}-title` },
      h("datalist", { id: refs }, insertable.map((r) => h("option", { value: r }))),
      h("div", { class: "step-card-head" },
        h("h3", { id: `${base}-title` }, spec.id, " ", h("span", { class: "muted small" }, `${spec.type}${type ? ` ${type.version}` : " (not in the registry)"}`)),
        h("div", { class: "row-actions" },
          h("button", { type: "button", class: "secondary", id: `${base}-up`, disabled: index === 0, "aria-label": `Move ${spec.id} up`, onclick: () => move(entry, -1) }, "↑"),
          h("button", { type: "button", class: "secondary", id: `${base}-down`, disabled: index === steps.length - 1, "aria-label": `Move ${spec.id} down`, onclick: () => move(entry, 1) }, "↓"),
          h("button", { type: "button", class: "danger", id: `${base}-delete`, "data-action": "delete-step", onclick: () => removeStep(entry) }, "Delete step"))),
      type && type.description ? h("p", { class: "muted small" }, type.description) : null,
      h("div", { class: "inline" }, field("Step id", idInput), field("Description", stepDescription)),
      deps,
      h("fieldset", { "data-path": `${path}.parameters` }, h("legend", {}, "Parameters"),
        controls.length ? controls.map((c) => c.node) : h("p", { class: "muted small" }, "This step type takes no parameters."),
        h("details", { open: Object.keys(unknown).length > 0 || !type },
          h("summary", {}, "Other parameters (JSON)"), field("Other parameters", otherParams, "Parameters the form has no field for, as a JSON object."))),
      h("fieldset", {}, h("legend", {}, "Run only when"), condition.node),
      h("details", { open: !!spec.for_each }, h("summary", {}, "For each (fan-out)"),
        field("for_each", forEach, "{\"items\": \"${Step}\", \"batch_size\": 1, \"max_concurrency\": 10} — run once per item; `${item}` is the item.")),
      TRANSFORMS.has(spec.type) ? testRenderPanel(entry, base, () => read()) : null);

    const read = (issues) => {
      const out = { ...spec };
      const note = (e, p) => issues && issues.push({ path: e.path || p, message: e.message });
      out.id = idInput.value.trim();
      if (stepDescription.value.trim()) out.description = stepDescription.value.trim(); else delete out.description;
      const chosen = [...deps.querySelectorAll("input[data-dep]")].filter((b) => b.checked).map((b) => b.value);
      // Predecessors the Builder does not show (a step deleted elsewhere) stay, so the
      // validation names them.
      const hidden = (spec.depends_on || []).filter((d) => !others.includes(d));
      const depends = [...hidden, ...chosen];
      if (depends.length) out.depends_on = depends; else delete out.depends_on;
      const parameters = {};
      try { Object.assign(parameters, otherParams.value.trim() ? JSON.parse(otherParams.value) : {}); } catch (e) { note({ message: `not valid JSON (${e.message})` }, `${path}.parameters.*`); }
      for (const c of controls) {
        try { const r = c.read(); if (r.set) parameters[c.pname] = r.value; } catch (e) { note(e, `${path}.parameters.${c.pname}`); if (c.pname in params) parameters[c.pname] = params[c.pname]; }
      }
      out.parameters = parameters;
      try { const w = condition.read(); if (w) out.when = w; else delete out.when; } catch (e) { note(e, `${path}.when`); }
      try { if (forEach.value.trim()) out.for_each = JSON.parse(forEach.value); else delete out.for_each; } catch (e) { note({ message: `not valid JSON (${e.message})` }, `${path}.for_each`); }
      return out;
    };
    return { entry, node: card, read };
  };

  /** The step a transform's template is test-rendered with: a run's step output as `input`. */
  function testRenderPanel(entry, base, readStep) {
    const runSelect = h("select", { id: `${base}-render-run`, "data-render": "run" }, h("option", { value: "" }, "(choose a run)"));
    const stepSelect = h("select", { id: `${base}-render-step`, "data-render": "step" }, h("option", { value: "" }, "(choose a step)"));
    const input = h("textarea", { id: `${base}-render-input`, rows: 4, spellcheck: "false", "data-render": "input", placeholder: "null" });
    const result = h("div", { id: `${base}-render-result`, class: "render-result", "aria-live": "polite" });
    let loaded = false;
    const loadRuns = async () => {
      if (loaded) return;
      loaded = true;
      try {
        const page = await api("/tasks?limit=50");
        const own = savedName || nameInput.value.trim();
        // This application's runs first.
        const runs = [...page.tasks.filter((t) => t.application === own), ...page.tasks.filter((t) => t.application !== own)];
        runSelect.append(...runs.map((t) => h("option", { value: t.task_id }, `${t.application} · ${t.state} · ${when(t.created_at)}`)));
      } catch (e) { result.replaceChildren(errorBox(e)); }
    };
    runSelect.addEventListener("change", async () => {
      fill(stepSelect, h("option", { value: "" }, "(choose a step)"));
      if (!runSelect.value) return;
      try {
        const task = await api(`/tasks/${encodeURIComponent(runSelect.value)}`);
        const preds = readStep().depends_on || [];
        const ids = Object.keys(task.steps || {}).sort((a, b) => Number(preds.includes(b)) - Number(preds.includes(a)));
        stepSelect.append(...ids.map((id) => h("option", { value: id }, `${id} · ${task.steps[id].state}`)));
      } catch (e) { result.replaceChildren(errorBox(e)); }
    });
    stepSelect.addEventListener("change", async () => {
      if (!stepSelect.value) return;
      try {
        const output = await api(`/tasks/${encodeURIComponent(runSelect.value)}/steps/${encodeURIComponent(stepSelect.value)}/output`);
        input.value = JSON.stringify(output, null, 2);
      } catch (e) { result.replaceChildren(errorBox(e)); }
    });
    const render = async () => {
      const step = readStep();
      let value;
      try { value = input.value.trim() ? JSON.parse(input.value) : null; } catch (e) { fill(result, h("p", { class: "error", role: "alert" }, `input: not valid JSON (${e.message})`)); return; }
      fill(result, h("p", { class: "muted" }, "Rendering…"));
      try {
        const outcome = await api("/steps/run", { method: "POST", body: { name: step.type, parameters: step.parameters, input: value } });
        fill(result,
          h("p", {}, h("span", { "data-render-state": outcome.state }, badge(outcome.state)), ` in ${outcome.seconds.toFixed(3)} s`),
          outcome.error ? h("pre", { class: "error", "data-render": "error" }, outcome.error) : null,
          outcome.state !== "failed" ? h("pre", { class: "json", "data-render": "output" }, JSON.stringify(outcome.output, null, 2) ?? "null") : null,
          outcome.warnings.length ? h("ul", { class: "warnings" }, outcome.warnings.map((w) => h("li", {}, w))) : null);
      } catch (e) { fill(result, errorBox(e)); }
    };
    const panel = h("details", { class: "test-render", "data-test-render": entry.spec.id, ontoggle: () => { if (panel.open) loadRuns(); } },
      h("summary", {}, "Test render (check the output data)"),
      h("p", { class: "muted small" }, "Renders this template as a run would, with a step output of a chosen run as `input`. Nothing is stored."),
      h("div", { class: "inline" }, field("Run", runSelect), field("Its step's output as input", stepSelect)),
      field("input (JSON)", input),
      h("button", { type: "button", id: `${base}-render`, "data-action": "test-render", onclick: render }, "Test render"),
      result);
    return panel;
  }

  // ---- adding, moving, deleting steps ------------------------------------------------
  const typeSelect = h("select", { id: "b-add-type" },
    h("optgroup", { label: "Steps" }, registry.filter((t) => t.kind === "step").map((t) => h("option", { value: t.name }, `${t.name} ${t.version}`))),
    h("optgroup", { label: "Operators" }, registry.filter((t) => t.kind === "operator").map((t) => h("option", { value: t.name }, t.name))));
  const freshId = (typeName) => {
    const base = typeName.replace(/(^|_)([a-z])/g, (_, __, c) => c.toUpperCase()).replace(/[^A-Za-z0-9_]/g, "") || "Step";
    const taken = new Set(steps.map((e) => e.spec.id));
    for (let n = 1; ; n += 1) if (!taken.has(`${base}${n}`)) return `${base}${n}`;
  };
  const addStep = () => {
    sync();
    const t = typeSelect.value;
    const last = steps[steps.length - 1];
    const entry = { uid: nextUid(), spec: { id: freshId(t), type: t, parameters: {}, ...(last ? { depends_on: [last.spec.id] } : {}) } };
    steps.push(entry);
    renderAll();
    document.getElementById(`s${entry.uid}-id`).focus();
    changed();
  };
  const removeStep = (entry) => {
    sync();
    const gone = entry.spec.id;
    steps = steps.filter((e) => e !== entry);
    // Its successors lose the dependency rather than pointing at nothing.
    for (const e of steps) if (e.spec.depends_on) e.spec.depends_on = e.spec.depends_on.filter((d) => d !== gone);
    renderAll();
    status.textContent = `Deleted step ${gone}.`;
    (document.getElementById("b-add-type")).focus();
    changed();
  };
  const move = (entry, by) => {
    sync();
    const i = steps.indexOf(entry);
    const j = i + by;
    if (j < 0 || j >= steps.length) return;
    [steps[i], steps[j]] = [steps[j], steps[i]];
    renderAll();
    const again = document.getElementById(`s${entry.uid}-${by < 0 ? "up" : "down"}`);
    (again && !again.disabled ? again : document.getElementById(`s${entry.uid}-id`)).focus();
    changed();
  };

  // ---- reading, drawing, validating --------------------------------------------------
  /** The document as the form shows it, and the problems found reading it. */
  const collect = () => {
    const issues = [];
    const out = { ...doc };
    out.name = nameInput.value.trim();
    for (const [key, control] of [["friendly_name", friendly], ["description", description]]) {
      if (control.value.trim()) out[key] = control.value.trim(); else delete out[key];
    }
    if (!out.description) out.description = "";
    out.author = author.value.trim();
    if (configuration.value) out.configuration = configuration.value; else delete out.configuration;
    try {
      const vars = variables.value.trim() ? JSON.parse(variables.value) : [];
      if (vars.length) out.app_variables = vars; else delete out.app_variables;
    } catch (e) { issues.push({ path: "app_variables", message: `not valid JSON (${e.message})` }); }
    out.steps = cards.map((c) => c.read(issues));
    return { doc: out, issues };
  };
  /** Copies what the form shows into the step entries (before the cards are rebuilt). */
  const sync = () => {
    const { doc: current } = collect();
    const renames = [];
    current.steps.forEach((s, i) => {
      if (steps[i].spec.id !== s.id && s.id) renames.push([steps[i].spec.id, s.id]);
      steps[i].spec = s;
    });
    // A renamed step: its successors follow the new id.
    for (const [old, now] of renames) {
      for (const e of steps) if (e.spec.depends_on) e.spec.depends_on = e.spec.depends_on.map((d) => (d === old ? now : d));
    }
  };
  /** Draws the steps (the entries', or `shown`: the document as last read). */
  const drawPreview = (shown) => {
    const specs = (shown || steps.map((e) => e.spec)).filter((s) => s.id);
    if (!specs.length) { fill(dagBox, h("p", { class: "muted" }, "Add a step to see the application drawn.")); return; }
    const svg = drawDag(specs, (id) => {
      const entry = steps.find((e) => e.spec.id === id);
      const input = entry && document.getElementById(`s${entry.uid}-id`);
      if (input) { input.scrollIntoView({ block: "center" }); input.focus(); }
    });
    svg.id = "b-dag-svg";
    fill(dagBox, svg);
  };
  const renderAll = () => {
    // Text the user typed goes back as typed: a value that does not parse yet (half-typed
    // JSON) would otherwise be replaced by the last one that did.
    const typed = new Map([...cardsBox.querySelectorAll("textarea[id], input[type=text][id]")].map((c) => [c.id, c.value]));
    cards = steps.map((e, i) => stepCard(e, i));
    fill(cardsBox, cards.length ? cards.map((c) => c.node) : h("p", { class: "muted card", id: "b-no-steps" }, "No steps yet: choose a step type below and add it."));
    for (const c of cardsBox.querySelectorAll("textarea[id], input[type=text][id]")) if (typed.has(c.id)) c.value = typed.get(c.id);
    for (const d of cardsBox.querySelectorAll("details:not(.test-render)")) if ([...d.querySelectorAll("textarea")].some((t) => t.value.trim())) d.open = true;
    drawPreview();
  };

  let timer = null;
  let generation = 0;
  const showIssues = (found) => {
    // "missing required parameter \"x\"" is reported on the parameters: mark field x.
    const issues = found.map((i) => {
      const m = /missing required parameter "([^"]+)"/.exec(i.message);
      return m && /\.parameters$/.test(i.path) ? { ...i, path: `${i.path}.${m[1]}` } : i;
    });
    clearIssues(page);
    const unplaced = markIssues(page, issues);
    // A field at fault is never left folded away.
    for (const n of page.querySelectorAll("[aria-invalid=true]")) { const d = n.closest("details"); if (d && !d.open) d.open = true; }
    fill(problems,
      issues.length ? h("p", { class: "error", id: "b-issue-count" }, issues.length === 1 ? "1 problem" : `${issues.length} problems`) : h("p", { class: "ok", id: "b-issue-count" }, "Valid"),
      unplaced.length ? h("ul", { class: "error" }, unplaced.map((i) => h("li", {}, i.path ? `${i.path}: ${i.message}` : i.message))) : null);
  };
  /** Validates the document now; true when it is valid. */
  const validate = async () => {
    clearTimeout(timer);
    const mine = (generation += 1);
    const { doc: current, issues } = collect();
    // The drawing follows what was typed (a condition, a fan-out) unless a node has focus.
    if (!dagBox.contains(document.activeElement)) drawPreview(current.steps);
    if (issues.length) { showIssues(issues); return false; }
    try {
      const report = await api("/validate/application", { method: "POST", body: current });
      if (mine === generation) showIssues(report.issues);
      return report.valid;
    } catch (e) { fill(problems, errorBox(e)); return false; }
  };
  const changed = () => { clearTimeout(timer); timer = setTimeout(validate, VALIDATE_AFTER_MS); };

  // ---- save and run ------------------------------------------------------------------
  const save = async () => {
    if (!(await validate())) { status.textContent = "Not saved: fix the marked fields first."; const bad = page.querySelector("[aria-invalid=true]"); if (bad) bad.focus(); return null; }
    const { doc: current } = collect();
    try {
      const stored = await api("/applications", { method: "POST", body: current });
      savedName = stored.name;
      Object.assign(doc, stored);
      status.textContent = `Saved ${stored.name}.`;
      openLink.hidden = false;
      openLink.setAttribute("href", `/console/apps/${encodeURIComponent(stored.name)}`);
      history.replaceState({}, "", `/console/builder/${encodeURIComponent(stored.name)}`);
      return stored;
    } catch (e) {
      status.textContent = `Not saved: ${e.message}`;
      return null;
    }
  };
  const saveAndRun = async () => {
    const stored = await save();
    if (!stored) return;
    try {
      const task = await api(`/applications/${encodeURIComponent(stored.name)}/run`, { method: "POST", body: { params: {} } });
      ctx.go(`/console/apps/${encodeURIComponent(stored.name)}?run=${encodeURIComponent(task.task_id)}`);
    } catch (e) { status.textContent = `Saved, but the run did not start: ${e.message}`; }
  };
  const openLink = h("a", { id: "b-open", href: savedName ? `/console/apps/${encodeURIComponent(savedName)}` : "#", hidden: !savedName }, "Open the application page");

  const page = h("div", { class: "builder", id: "builder" },
    h("div", { class: "builder-form" },
      h("section", { class: "card", "aria-labelledby": "b-app-title" },
        h("h2", { id: "b-app-title" }, "Application"),
        h("div", { class: "inline" }, field("Name *", nameInput, existing ? "Letters, digits, _ and -. Another name saves a copy under it." : "Letters, digits, _ and -."), field("Friendly name", friendly), field("Author", author), field("Configuration", configuration)),
        field("Description", description),
        h("details", { open: !!variables.value }, h("summary", {}, "App variables (JSON)"),
          field("App variables", variables, "A JSON list of {name, type, value, choices, required, description}; offered as ${vars.…}."))),
      h("h2", {}, "Steps"),
      cardsBox,
      h("div", { class: "card toolbar", id: "b-add" },
        field("Step type", typeSelect),
        h("button", { type: "button", id: "b-add-step", onclick: addStep }, "Add step"))),
    h("aside", { class: "builder-side" },
      h("div", { class: "card" },
        h("div", { class: "actions" },
          h("button", { type: "button", id: "b-save", onclick: save }, "Save"),
          h("button", { type: "button", id: "b-run", class: "secondary", onclick: saveAndRun }, "Save and run"),
          h("button", { type: "button", id: "b-validate", class: "secondary", onclick: validate }, "Check")),
        status, problems, openLink),
      h("h2", {}, "Drawn"),
      dagBox));
  // Typing: validate when the user pauses. A change of structure (ids, dependencies,
  // configuration, app variables): rebuild the cards (references, predecessor lists).
  page.addEventListener("input", changed);
  page.addEventListener("change", (e) => {
    if (e.target.closest && e.target.closest("[data-render]")) return;
    if (e.target.dataset && e.target.dataset.structural) {
      // After the event: focus has moved where the user sent it; it is kept there.
      setTimeout(() => {
        const active = document.activeElement;
        const focused = active && active.id;
        const caret = active && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
        sync();
        renderAll();
        const again = focused && document.getElementById(focused);
        if (again) {
          again.focus();
          if (caret && typeof again.setSelectionRange === "function") again.setSelectionRange(...caret);
        }
      }, 0);
    }
    changed();
  });
  renderAll();
  ctx.show(h("h1", {}, existing ? `Builder: ${existing.name}` : "Builder: a new application"), page);
  if (existing) validate(); else nameInput.focus();
}
