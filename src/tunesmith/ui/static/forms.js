"use strict";
// Forms generated from the verbs' own schemas (/api/verbs: the registry + pydantic's JSON schema, flattened to
// the CLI's dotted keys). Only fields that differ from their defaults are sent; the server validates them
// through the CLI's own path and answers with its one line, shown next to the field it names.
let VERBS = null;
async function verbs() { return VERBS || (VERBS = await api("/api/verbs")); }

const fieldId = (key) => "f-" + key.replace(/[.\[\]]/g, "-");
function defaultText(f) {
  const d = f.default;
  if (d === null || d === undefined) return "";
  if (typeof d === "boolean") return d ? "true" : "false";
  if (Array.isArray(d) && d.every((x) => typeof x !== "object")) return d.join(",");
  if (typeof d === "object") return JSON.stringify(d);
  return String(d);
}

function input(f) {
  const id = fieldId(f.key), dflt = defaultText(f);
  if (f.kind === "bool") return el("input", {type: "checkbox", id, "data-key": f.key, checked: dflt === "true"});
  if (f.kind === "choice") {
    const s = el("select", {id, "data-key": f.key},
      dflt === "" ? el("option", {value: "", text: "(unset)"}) : null,
      f.choices.map((c) => el("option", {value: String(c), text: String(c)})));
    s.value = dflt; return s;
  }
  if (f.kind === "multi") {  // several of fixed words (e.g. GGUF quant types); the CLI gets them comma-joined
    const s = el("select", {id, "data-key": f.key, multiple: true, size: Math.min(6, f.choices.length)},
      f.choices.map((c) => el("option", {value: String(c), text: String(c)})));
    const picked = dflt.split(",");
    for (const o of s.options) o.selected = picked.includes(o.value);
    return s;
  }
  if (f.kind === "yaml") return el("textarea", {id, "data-key": f.key, rows: 2, placeholder: dflt || "YAML / JSON"});
  const e = el("input", {type: "text", id, "data-key": f.key, placeholder: dflt});
  return e;
}

class VerbForm {
  constructor(form, errorBox, onChange) { this.form = form; this.errorBox = errorBox; this.onChange = onChange; }

  render(v) {
    this.verb = v;
    const top = [], sections = {};
    for (const f of v.fields) (f.section ? (sections[f.section.split(".")[0]] ||= []) : top).push(f);
    const row = (f) => el("div", {class: "field", id: "field-" + fieldId(f.key)},
      el("label", {for: fieldId(f.key), text: f.key + (f.required ? " *" : "")}), input(f),
      el("div", {class: "help", text: f.help}), el("div", {class: "field-error", id: "err-" + fieldId(f.key)}));
    this.form.replaceChildren(...top.map(row), ...Object.entries(sections).map(([name, fs]) =>
      el("details", {class: "section", id: "sec-" + name}, el("summary", {text: name}), fs.map(row))));
    this.form.oninput = () => this.changed();
    this.form.onchange = () => this.changed();
    showError(this.errorBox, null);
  }

  values() {
    const out = {};
    for (const f of this.verb.fields) {
      const e = $(fieldId(f.key));
      const v = f.kind === "bool" ? (e.checked ? "true" : "false")
        : f.kind === "multi" ? Array.from(e.selectedOptions, (o) => o.value).join(",") : e.value.trim();
      if (v !== "" && v !== defaultText(f)) out[f.key] = v;
    }
    return out;
  }

  fill(values) {
    for (const [k, v] of Object.entries(values || {})) {
      const e = $(fieldId(k));
      if (!e) continue;
      const text = typeof v === "object" && v !== null ? (Array.isArray(v) && v.every((x) => typeof x !== "object")
        ? v.join(",") : JSON.stringify(v)) : String(v);
      if (e.type === "checkbox") e.checked = text === "true";
      else if (e.multiple) for (const o of e.options) o.selected = text.split(",").includes(o.value);
      else e.value = text;
      const sec = e.closest("details"); if (sec) sec.open = true;
    }
    this.changed();
  }

  clearErrors() {
    this.form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    this.form.querySelectorAll(".field.bad").forEach((e) => e.classList.remove("bad"));
    showError(this.errorBox, null);
  }

  showFieldError(err) {
    this.clearErrors();
    const box = err.field && $("err-" + fieldId(err.field));
    if (box) {
      box.textContent = err.message;
      box.closest(".field").classList.add("bad");
      const sec = box.closest("details"); if (sec) sec.open = true;
    } else showError(this.errorBox, err);
  }

  changed() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check().catch(() => {}), 250);
  }

  async check() {
    try {
      const r = await api(`/api/forms/${encodeURIComponent(this.verb.name)}/check`, {values: this.values()});
      this.clearErrors();
      if (this.onChange) this.onChange(r);
      return r;
    } catch (e) { this.showFieldError(e); if (this.onChange) this.onChange(null); throw e; }
  }

  async start() {
    const job = await api(`/api/jobs/${encodeURIComponent(this.verb.name)}`, {values: this.values()});
    return job;
  }
}

UI.pages.recipes = {
  init() {
    this.form = new VerbForm($("form"), $("form-error"), (r) => {
      $("form-cli").textContent = r ? r.cli : "";
      $("form-yaml").textContent = r ? r.yaml : "";
    });
    $("verb-select").onchange = () => { location.hash = "recipes/" + $("verb-select").value; };
    $("import-btn").onclick = () => this.load().catch((e) => this.form.showFieldError(e));
    $("save-btn").onclick = async () => {
      try {
        const r = await api(`/api/forms/${encodeURIComponent(this.form.verb.name)}/save`,
          {values: this.form.values(), path: $("save-path").value});
        $("form-status").textContent = "saved " + r.path;
      } catch (e) { this.form.showFieldError(e); }
    };
    $("start-btn").onclick = async () => {
      try {
        await this.form.check();
        const job = await this.form.start();
        location.hash = "runs/" + job.id;
      } catch (e) { this.form.showFieldError(e); }
    };
  },
  async show(name) {
    const all = (await verbs());
    const sel = $("verb-select");
    if (!sel.options.length) all.forEach((v) => sel.append(el("option", {value: v.name, text: v.name})));
    const v = all.find((x) => x.name === (name || sel.value || "identity")) || all[0];
    const rec = await api("/api/recipes");
    $("recipe-list").replaceChildren(...rec.map((p) => el("option", {value: p})));
    if (this.form.verb && this.form.verb.name === v.name) return;
    sel.value = v.name;
    $("verb-help").textContent = v.help;
    $("import-translation").hidden = true;
    this.form.render(v);
    $("save-path").value = `recipes/${v.name.replace(/ /g, "-")}.yaml`;
    await this.form.check().catch(() => {});
  },
  async load() {
    const r = await api(`/api/forms/${encodeURIComponent(this.form.verb.name)}/load`, {path: $("import-path").value});
    $("import-translation").hidden = !r.translation;
    $("import-translation").textContent = r.translation || "";
    this.form.render(this.form.verb);
    this.form.fill(r.values);
  },
};
