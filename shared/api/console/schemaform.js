// Form controls generated from a step type's JSON Schema (its `parameters` in
// GET /api/v1/steps), and the marking of validation issues on the fields they name.
//
// Every control carries `data-path`, the document path the API's validation uses
// (`steps[1].parameters.url`), so an issue from the API lands on its field. A control's
// `read()` answers `{ set: false }` (left empty: the parameter is not written) or
// `{ set: true, value }`, or throws an Error naming what is wrong with the text.

import { h } from "./dom.js";

/** A whole-value reference: `${Step}`, `${config.key}`, `${vars.x}`… */
const WHOLE_REFERENCE = /^\$\{[^{}]+\}$/;

/** Follows a local `$ref` (`#/$defs/Name` or `#/definitions/Name`) into `root`. */
export function resolve(schema, root) {
  let s = schema || {};
  for (let hops = 0; s.$ref && hops < 8; hops += 1) {
    const name = s.$ref.split("/").pop();
    const target = (root.$defs && root.$defs[name]) || (root.definitions && root.definitions[name]);
    if (!target) break;
    // The referring schema's own description and default win over the target's.
    s = { ...target, ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
  }
  return s;
}

/** The JSON types a schema allows, `null` left out. */
function types(s) {
  if (s.type) return (Array.isArray(s.type) ? s.type : [s.type]).filter((t) => t !== "null");
  const alts = s.anyOf || s.oneOf;
  if (alts) return [...new Set(alts.flatMap((a) => (a.type ? [].concat(a.type) : ["any"])))].filter((t) => t !== "null");
  return ["any"];
}

/** The fixed choices of a schema (`enum`, or `oneOf`/`anyOf` of `const`s), or null. */
function choices(s) {
  if (Array.isArray(s.enum)) return s.enum.filter((v) => v !== null).map((v) => ({ value: v, description: "" }));
  const alts = s.oneOf || s.anyOf;
  if (alts && alts.every((a) => "const" in a || (a.type === "null"))) {
    return alts.filter((a) => "const" in a).map((a) => ({ value: a.const, description: a.description || "" }));
  }
  return null;
}

/** Text typed into a value field: JSON when it parses (`200`, `true`, `"x"`, `{…}`), else the text itself. */
export function jsonOrText(text) {
  const t = text.trim();
  if (t === "") return undefined;
  try { return JSON.parse(t); } catch { return text; }
}

/** How a value is shown in a text field. */
export function display(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, typeof value === "object" ? 2 : 0);
}

/** Fields whose text is long: a textarea. */
const LONG = new Set(["template", "query", "body", "script", "command", "expression"]);

/**
 * A control for one parameter. `refs` is the id of a <datalist> of `${…}` references
 * (offered unless the schema marks the field `x-sluice-literal`); `insertable` lists the
 * same references for a textarea's "Insert reference" menu.
 */
export function paramControl({ name, schema, root, required, value, path, id, refs, insertable = [] }) {
  const s = resolve(schema, root);
  const kinds = types(s);
  const fixed = choices(s);
  const literal = s["x-sluice-literal"] === true;
  const common = { id, "data-path": path, "data-param": name, "aria-required": required ? "true" : null };
  const label = `${name}${required ? " *" : ""}`;
  const kind = fixed ? "choice" : kinds.length === 1 ? kinds[0] : "json";
  const defaultText = s.default !== undefined && s.default !== null ? `default ${JSON.stringify(s.default)}` : "";
  const hint = [s.description, literal ? "Literal text: references are not allowed here." : ""].filter(Boolean).join(" ");
  let control;
  let read;
  let extra = null;

  if (kind === "choice" || kind === "boolean") {
    const options = kind === "boolean" ? [{ value: true, description: "" }, { value: false, description: "" }] : fixed;
    control = h("select", common,
      h("option", { value: "" }, required ? "(choose)" : defaultText ? `(${defaultText})` : "(not set)"),
      options.map((c, i) => h("option", { value: String(i), title: c.description || null, selected: value !== undefined && JSON.stringify(value) === JSON.stringify(c.value) }, display(c.value))));
    // A reference (or another value) already in the document is kept as an option.
    const known = options.some((c) => JSON.stringify(c.value) === JSON.stringify(value));
    if (value !== undefined && !known) control.append(h("option", { value: "current", selected: true }, display(value)));
    read = () => {
      if (control.value === "") return { set: false };
      if (control.value === "current") return { set: true, value };
      return { set: true, value: options[Number(control.value)].value };
    };
  } else if (kind === "integer" || kind === "number") {
    control = h("input", { ...common, type: "text", inputmode: "decimal", list: literal ? null : refs, placeholder: defaultText || null, autocomplete: "off" });
    control.value = display(value);
    read = () => {
      const t = control.value.trim();
      if (t === "") return { set: false };
      if (WHOLE_REFERENCE.test(t)) return { set: true, value: t };
      const n = Number(t);
      if (!Number.isFinite(n) || (kind === "integer" && !Number.isInteger(n))) throw new Error(`${name}: not ${kind === "integer" ? "a whole number" : "a number"} (or a \${…} reference)`);
      return { set: true, value: n };
    };
  } else if (kind === "string") {
    const long = LONG.has(name) || (typeof value === "string" && value.includes("\n"));
    control = long
      ? h("textarea", { ...common, rows: 4, spellcheck: "false" })
      : h("input", { ...common, type: "text", list: literal ? null : refs, placeholder: defaultText || null, autocomplete: "off" });
    control.value = display(value);
    read = () => (control.value === "" ? { set: false } : { set: true, value: control.value });
  } else {
    // Objects, arrays, anything else: JSON text (a whole-value reference may stand alone).
    control = h("textarea", { ...common, rows: 3, spellcheck: "false", placeholder: defaultText || "JSON" });
    control.value = value === undefined ? "" : JSON.stringify(value, null, 2);
    read = () => {
      const t = control.value.trim();
      if (t === "") return { set: false };
      if (WHOLE_REFERENCE.test(t)) return { set: true, value: t };
      try { return { set: true, value: JSON.parse(t) }; } catch (e) { throw new Error(`${name}: not valid JSON (${e.message})`); }
    };
  }
  if (control.tagName === "TEXTAREA" && !literal && insertable.length) extra = referenceMenu(control, insertable, `${id}-insert`);
  const field = h("div", { class: "field", "data-field-for": path },
    h("label", { for: id }, label, h("span", { class: "muted small" }, ` ${kinds.join(" | ")}`)),
    control, extra, hint ? h("p", { class: "muted small hint" }, hint) : null);
  return { node: field, control, read };
}

/** "Insert reference…": a select that inserts the chosen `${…}` at the textarea's cursor. */
export function referenceMenu(textarea, refs, id) {
  const menu = h("select", { id, class: "insert-ref", "aria-label": `Insert a reference into ${textarea.dataset.param || "the field"}` },
    h("option", { value: "" }, "Insert reference…"), refs.map((r) => h("option", { value: r }, r)));
  menu.addEventListener("change", () => {
    if (!menu.value) return;
    const at = textarea.selectionStart ?? textarea.value.length;
    textarea.value = textarea.value.slice(0, at) + menu.value + textarea.value.slice(textarea.selectionEnd ?? at);
    menu.value = "";
    textarea.focus();
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  });
  return menu;
}

/** Removes every mark left by `markIssues`. */
export function clearIssues(container) {
  for (const n of container.querySelectorAll(".field-error")) n.remove();
  for (const n of container.querySelectorAll("[aria-invalid=true]")) { n.removeAttribute("aria-invalid"); n.removeAttribute("aria-describedby"); n.classList.remove("invalid"); }
}

/** Parent paths of a path: `steps[1].parameters.url` → itself, `steps[1].parameters`, `steps[1]`, `steps`. */
function ancestors(path) {
  const out = [path];
  let p = path;
  while (p) {
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) break;
    p = p.slice(0, cut);
    out.push(p);
  }
  return out;
}

/**
 * Marks each issue (`{path, message}`) on the control whose `data-path` is its path or
 * the nearest parent path; answers the issues no control took (the whole document's).
 */
export function markIssues(container, issues) {
  const unplaced = [];
  let n = 0;
  for (const issue of issues) {
    const target = issue.path
      ? ancestors(issue.path).map((p) => container.querySelector(`[data-path="${CSS.escape(p)}"]`)).find(Boolean)
      : null;
    if (!target) { unplaced.push(issue); continue; }
    n += 1;
    const id = `issue-${n}`;
    target.setAttribute("aria-invalid", "true");
    target.classList.add("invalid");
    target.setAttribute("aria-describedby", [target.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
    const note = h("p", { class: "field-error", id, "data-issue-path": issue.path }, issue.path === target.dataset.path ? issue.message : `${issue.path}: ${issue.message}`);
    const holder = target.closest(".field");
    if (holder) holder.append(note);
    else if (["FIELDSET", "SECTION", "DIV"].includes(target.tagName)) target.append(note);
    else target.after(note);
  }
  return unplaced;
}
