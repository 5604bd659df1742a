// Configurations: the list (with the applications aligned to each) and the editor, as
// fields or as raw JSON. Encrypted values are write-only: the API reads them as `null`,
// the editor shows "set" and offers Replace; a kept value is sent back as `null`, which
// the API takes as "keep the stored secret" (POST /configurations). A secret typed in is
// only ever in a password input's value, never in the page's markup.

import { api } from "./api.js";
import { h, fill } from "./dom.js";

const TYPES = ["string", "number", "boolean", "json"];

function typeOf(value) {
  if (typeof value === "string") return "string";
  if (typeof value === "number") return "number";
  if (typeof value === "boolean") return "boolean";
  return "json";
}

export async function configsPage(ctx) {
  ctx.nav("configs");
  const [configs, apps] = await Promise.all([api("/configurations"), api("/applications?hidden=true")]);
  const name = h("input", { id: "new-config-name", type: "text", pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", required: true, placeholder: "acme-prod" });
  ctx.show(h("h1", {}, "Configurations"),
    h("table", { class: "list", id: "configs" },
      h("thead", {}, h("tr", {}, ["Name", "Friendly name", "Version", "Variables", "Encrypted", "Aligned applications"].map((c) => h("th", {}, c)))),
      h("tbody", {}, configs.length ? configs.map((c) => {
        const aligned = apps.filter((a) => a.configuration === c.name);
        return h("tr", { "data-config": c.name },
          h("td", {}, h("a", { href: `/console/configs/${encodeURIComponent(c.name)}` }, c.name)),
          h("td", {}, c.friendly_name || ""), h("td", {}, c.version || ""),
          h("td", {}, String((c.data || []).length)), h("td", {}, String((c.data || []).filter((v) => v.encrypted).length)),
          h("td", {}, aligned.length ? aligned.map((a, i) => [i ? ", " : "", h("a", { href: `/console/apps/${encodeURIComponent(a.name)}` }, a.name)]) : h("span", { class: "muted" }, "none")));
      }) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No configurations yet.")))),
    ctx.can("configuration") ? h("form", { class: "toolbar", id: "new-config", onsubmit: (e) => {
      e.preventDefault();
      ctx.go(`/console/configs/${encodeURIComponent(name.value.trim())}?new=1`);
    } }, h("label", { for: "new-config-name" }, "New configuration"), name, h("button", { type: "submit" }, "Create…")) : null);
}

/** One variable row of the fields editor: `{ row, read }`; `read()` is the variable to send. */
function variableRow(v, index, stored, editable, remove) {
  const name = h("input", { type: "text", id: `cv-name-${index}`, "aria-label": "Name", "data-field": "name", required: true, disabled: !editable });
  name.value = v.name || "";
  const type = h("select", { id: `cv-type-${index}`, "aria-label": "Type", "data-field": "type", disabled: !editable }, TYPES.map((t) => h("option", { value: t }, t)));
  type.value = v.encrypted ? "string" : typeOf(v.value);
  const encrypted = h("input", { type: "checkbox", id: `cv-enc-${index}`, "data-field": "encrypted", checked: !!v.encrypted, disabled: !editable });
  const description = h("input", { type: "text", id: `cv-desc-${index}`, "aria-label": "Description", "data-field": "description", disabled: !editable });
  description.value = v.description || "";
  const valueCell = h("td", { class: "value" });
  // The plain value's control, or the secret's: a kept stored secret is `keep`.
  let keep = !!v.encrypted && stored;
  let control = null;
  let plain = v.encrypted ? null : v.value;
  const build = () => {
    const id = `cv-value-${index}`;
    if (encrypted.checked && keep) {
      control = null;
      fill(valueCell, h("span", { class: "tag secret-set", "data-secret": "set" }, "set"), " ",
        editable ? h("button", { type: "button", class: "secondary", "data-action": "replace", onclick: () => { keep = false; build(); control.focus(); } }, "Replace") : null);
      return;
    }
    if (encrypted.checked) {
      control = h("input", { type: "password", id, "aria-label": "Secret value", autocomplete: "new-password", "data-field": "value", disabled: !editable });
      fill(valueCell, control, stored ? h("button", { type: "button", class: "secondary", "data-action": "keep", onclick: () => { keep = true; build(); } }, "Keep stored") : null,
        h("p", { class: "muted small hint" }, type.value === "string" ? "Write-only: never shown again." : `Write-only; entered as ${type.value} JSON.`));
      return;
    }
    if (type.value === "boolean") {
      control = h("input", { type: "checkbox", id, "aria-label": "Value", "data-field": "value", checked: plain === true, disabled: !editable });
    } else if (type.value === "json") {
      control = h("textarea", { id, rows: 2, "aria-label": "Value", "data-field": "value", spellcheck: "false", disabled: !editable });
      control.value = plain === undefined ? "null" : JSON.stringify(plain, null, 2);
    } else {
      control = h("input", { type: type.value === "number" ? "number" : "text", step: type.value === "number" ? "any" : null, id, "aria-label": "Value", "data-field": "value", disabled: !editable });
      control.value = plain === null || plain === undefined ? "" : typeof plain === "string" ? plain : JSON.stringify(plain);
    }
    fill(valueCell, control);
  };
  const parse = (text, label) => {
    const t = type.value;
    if (t === "string") return text;
    if (t === "number") { const n = Number(text); if (text.trim() === "" || !Number.isFinite(n)) throw new Error(`${label}: not a number`); return n; }
    if (t === "boolean") { if (text === "true" || text === "false") return text === "true"; throw new Error(`${label}: true or false`); }
    try { return JSON.parse(text); } catch (e) { throw new Error(`${label}: not valid JSON (${e.message})`); }
  };
  // Keeps the plain value across a change of type or of the encrypted box.
  const capture = () => {
    if (!control || encrypted.checked) return;
    try { plain = control.type === "checkbox" ? control.checked : parse(control.value, "value"); } catch { plain = control.value; }
  };
  type.addEventListener("focus", capture);
  type.addEventListener("change", build);
  encrypted.addEventListener("click", capture);
  encrypted.addEventListener("change", () => { if (!encrypted.checked) plain = null; build(); });
  build();
  const row = h("tr", { "data-var": v.name || "" },
    h("td", {}, name), h("td", {}, type), valueCell, h("td", { class: "center" }, encrypted), h("td", {}, description),
    h("td", {}, editable ? h("button", { type: "button", class: "secondary", "aria-label": `Remove ${v.name || "variable"}`, onclick: remove }, "Remove") : null));
  const read = () => {
    const label = `data[${index}] ${name.value || "(unnamed)"}`;
    if (!name.value.trim()) throw new Error(`${label}: a name is required`);
    const out = { name: name.value.trim() };
    if (description.value) out.description = description.value;
    if (encrypted.checked) {
      out.encrypted = true;
      if (keep) out.value = null;
      else if (control.value === "") throw new Error(`${label}: enter the secret value${stored ? ", or keep the stored one" : ""}`);
      else out.value = parse(control.value, label);
      return out;
    }
    out.value = control.type === "checkbox" ? control.checked : parse(control.value, label);
    return out;
  };
  return { row, read };
}

export async function configEditorPage(ctx, name) {
  ctx.nav("configs");
  const isNew = new URLSearchParams(location.search).get("new") === "1";
  let doc;
  try { doc = await api(`/configurations/${encodeURIComponent(name)}`); } catch (e) {
    if (e.status !== 404 || !isNew) throw e;
    doc = { name, description: "", author: "", data: [] };
  }
  const editable = ctx.can("configuration");
  const status = h("p", { class: "status", role: "status", id: "config-status" });
  const body = h("div", { id: "config-editor" });
  let mode = "fields";
  let rows = [];
  // Encrypted names with a stored secret: those the API read back as set.
  const storedSecrets = new Set((doc.data || []).filter((v) => v.encrypted).map((v) => v.name));
  const current = () => ({ ...doc, data: rows.map((r) => r.read()) });

  const renderFields = (data) => {
    const tbody = h("tbody");
    rows = [];
    let next = 0;
    const add = (v) => {
      const stored = !!v.encrypted && storedSecrets.has(v.name) && (v.value === null || v.value === undefined);
      const entry = variableRow(v, next++, stored, editable, () => {
        rows = rows.filter((r) => r !== entry);
        entry.row.remove();
      });
      rows.push(entry);
      tbody.append(entry.row);
      return entry;
    };
    data.forEach(add);
    fill(body, h("table", { class: "list config-vars", id: "config-vars" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "Value", "Encrypted", "Description", ""].map((c) => h("th", {}, c)))), tbody),
    editable ? h("button", { type: "button", class: "secondary", id: "add-variable", onclick: () => add({ name: "", value: "" }).row.querySelector("input").focus() }, "Add variable") : null);
  };
  const renderJson = (text) => {
    const area = h("textarea", { id: "config-json", rows: 18, spellcheck: "false", "aria-label": "Configuration JSON", disabled: !editable });
    area.value = text;
    rows = [{ read: () => { throw new Error("unreachable"); } }];
    fill(body, area, h("p", { class: "muted small" }, "An encrypted entry whose value is null keeps the stored secret; give a value to replace it."));
    return area;
  };
  let jsonArea = null;
  const toggle = h("button", { type: "button", class: "secondary", id: "config-mode", onclick: () => {
    try {
      if (mode === "fields") {
        const d = current();
        jsonArea = renderJson(JSON.stringify(d, null, 2));
        mode = "json";
        toggle.textContent = "Edit as fields";
      } else {
        const d = JSON.parse(jsonArea.value);
        if (!d || !Array.isArray(d.data)) throw new Error("the JSON needs a \"data\" array");
        doc = { ...d, data: [] };
        renderFields(d.data);
        mode = "fields";
        toggle.textContent = "Edit as JSON";
      }
      status.textContent = "";
    } catch (e) { status.textContent = e.message; status.className = "status error"; }
  } }, "Edit as JSON");
  const save = async () => {
    status.className = "status";
    let out;
    try {
      out = mode === "json" ? JSON.parse(jsonArea.value) : current();
    } catch (e) { status.textContent = e.message; status.className = "status error"; return; }
    try {
      const saved = await api("/configurations", { method: "POST", body: out });
      // Re-render from the stored (redacted) document: typed secrets leave the page.
      history.replaceState({}, "", `/console/configs/${encodeURIComponent(saved.name)}`);
      await configEditorPage(ctx, saved.name);
      const s = document.getElementById("config-status");
      s.textContent = `Saved ${saved.name} (version ${saved.version}).`;
    } catch (e) { status.textContent = e.message; status.className = "status error"; }
  };
  renderFields(doc.data || []);
  ctx.show(h("p", {}, h("a", { href: "/console/configs" }, "← Configurations")),
    h("h1", {}, "Configuration ", h("code", { id: "config-name" }, doc.name), isNew && !doc.version ? h("span", { class: "tag" }, "new") : null, doc.version ? h("span", { class: "muted small" }, ` v${doc.version}`) : null),
    doc.description ? h("p", { class: "muted" }, doc.description) : null,
    h("div", { class: "toolbar" }, toggle, editable ? h("button", { type: "button", id: "config-save", onclick: save }, "Save") : h("span", { class: "muted" }, "Read only: editing needs the configuration role.")),
    body, status);
}
