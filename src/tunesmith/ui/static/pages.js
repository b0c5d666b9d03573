"use strict";
// Data, Runs, Evidence and Export pages.

UI.pages.data = {
  init() {
    $("data-model").value = UI.info.model;
    $("data-check").onclick = () => this.check().catch((e) => showError("data-error", e));
    $("data-preview").onclick = () => this.preview().catch((e) => showError("data-error", e));
    $("data-upload").onchange = async (ev) => {
      const f = ev.target.files[0];
      if (!f) return;
      try {
        const r = await api("/api/data/upload", {name: f.name, text: await f.text()});
        const specs = $("data-specs").value.split("\n").filter((s) => s.trim());
        if (!specs.includes(r.path)) specs.push(r.path);
        $("data-specs").value = specs.join("\n");
        await this.check();
      } catch (e) { showError("data-error", e); }
    };
    $("row-save").onclick = async () => {
      try {
        await api("/api/data/row", {file: this.editing.file, row: this.editing.row, text: $("row-text").value});
        $("row-editor").hidden = true;
        await this.check();
      } catch (e) { showError("data-error", e); }
    };
  },
  specs() { return $("data-specs").value.split("\n").map((s) => s.trim()).filter(Boolean); },
  async check() {
    showError("data-error", null);
    $("data-check").disabled = true;
    try {
      const r = await api("/api/data/check", {specs: this.specs(), model: $("data-model").value || null});
      table("data-table", ["dataset", "format", "rows", "ok", "bad", "warnings", "verdict", "tokens p50", "p95", "max"],
        r.datasets.map((d) => [d.name, d.error ? "-" : d.format, d.rows, d.ok, d.bad, d.warnings.length,
          d.error ? d.verdict + ": " + d.error : d.verdict, d.stats.p50, d.stats.p95, d.stats.max]));
      const problems = r.datasets.flatMap((d) => [...d.problems, ...d.warnings]);
      $("problems-head").hidden = !problems.length;
      table("data-problems", ["where", "field", "problem", ""], problems.map((p) => [
        p.row === null ? p.file : `${p.file}:${p.row}`, p.field, (p.warning ? "warning: " : "") + p.message,
        p.row && p.file.endsWith(".jsonl") ? el("button", {class: "fix", onclick: () => this.edit(p), text: "fix"}) : ""]),
        (p) => ({class: problems[0] && p ? "problem" : null}));
      $("data-problems").querySelectorAll("tr").forEach((tr, i) => { if (i) tr.classList.add("problem"); });
      $("data-stats").replaceChildren(...r.datasets.filter((d) => d.stats.lengths.length).map((d) =>
        el("div", {}, el("div", {class: "muted", text: `${d.name}: token lengths (${d.stats.over_cutoff} over cutoff ${d.stats.cutoff})`}),
          histogram(d.stats.lengths, d.stats.cutoff))));
      $("data-table").dataset.ok = r.ok ? "yes" : "no";
    } finally { $("data-check").disabled = false; }
  },
  async edit(p) {
    this.editing = p;
    const r = await api("/api/data/row", {file: p.file, row: p.row});
    $("row-where").textContent = `${p.file}:${p.row}`;
    $("row-text").value = r.text;
    $("row-editor").hidden = false;
  },
  async preview() {
    const spec = this.specs()[0];
    const rows = await api("/api/data/preview", {spec, model: $("data-model").value || UI.info.model, n: 3});
    $("preview").replaceChildren(...rows.map((r) => el("div", {},
      el("div", {class: "muted", text: `${r.source}: ${r.tokens} tokens, ${r.trained_tokens} trained`}),
      el("div", {class: "rendered"}, r.pieces.map((p) => el("span", {class: p.trained ? "trained" : null, text: p.text}))))));
  },
};

UI.pages.runs = {
  async show(id) {
    if (id) this.current = id;
    clearInterval(this.timer);
    await this.refresh();
    this.timer = setInterval(() => {
      if (!$("page-runs").classList.contains("active")) { clearInterval(this.timer); return; }
      this.refresh().catch((e) => showError("banner", e));
    }, 1000);
  },
  init() {
    $("job-stop").onclick = () => api(`/api/job/${this.current}/stop`, {}).then(() => this.refresh()).catch((e) => showError("banner", e));
    $("job-resume").onclick = () => api(`/api/job/${this.current}/resume`, {}).then(() => this.refresh()).catch((e) => showError("banner", e));
  },
  async refresh() {
    const jobs = await api("/api/jobs");
    table("jobs", ["job", "status", "command", "run folder"], jobs.map((j) => [
      el("a", {href: "#runs/" + j.id, text: j.id}), el("span", {class: "badge " + j.status, text: j.status}), j.cli, j.run]),
      (j, i) => ({"data-id": jobs[i].id}));
    if (!this.current && jobs.length) this.current = jobs[0].id;
    if (!this.current) return;
    const j = await api("/api/job/" + this.current);
    $("job-detail").hidden = false;
    $("job-title").textContent = j.id;
    $("job-status").textContent = j.status;
    $("job-status").className = "badge " + j.status;
    $("job-cli").textContent = j.cli;
    const p = j.progress;
    $("job-bar").max = p.total || 1; $("job-bar").value = p.step || 0;
    $("job-progress").textContent = p.total ? `step ${p.step}/${p.total}` : "";
    $("job-eta").textContent = p.eta_s !== null && p.eta_s !== undefined ? ` · ETA ${p.eta_s}s` : "";
    $("job-toks").textContent = p.tok_s ? ` · ${p.tok_s} tokens/s` : "";
    $("job-phase").textContent = p.phase ? ` · ${p.phase}` : "";
    $("job-stop").disabled = j.status !== "running";
    $("job-resume").disabled = !["stopped", "failed"].includes(j.status);
    $("job-report").hidden = !(j.status === "done" && j.run);
    $("job-report").href = "#evidence/" + encodeURIComponent(j.run || "");
    $("loss-chart").replaceChildren(lineChart([{name: "loss", points: p.loss}, {name: "eval loss", points: p.eval}], {}));
    $("job-log").textContent = j.log;
  },
};

UI.pages.evidence = {
  init() {
    $("run-select").onchange = () => { location.hash = "evidence/" + encodeURIComponent($("run-select").value); };
    $("compare-btn").onclick = () => this.compare().catch((e) => showError("banner", e));
  },
  async show(path) {
    const list = (await api("/api/runs")).filter((r) => r.reports || r.adapter);
    for (const id of ["run-select", "compare-a", "compare-b"])
      $(id).replaceChildren(...list.map((r) => el("option", {value: r.path, text: `${r.path} (${r.kind || "run"})`})));
    if (list.length > 1) $("compare-b").value = list[1].path;
    path = path || (list[0] && list[0].path);
    if (!path) { $("report").textContent = "no runs yet"; return; }
    $("run-select").value = path;
    const r = await api("/api/report?path=" + encodeURIComponent(path));
    $("report").replaceChildren(...r.reports.map((t) => el("div", {class: "report"},
      el("h3", {text: `${t.title} (${t.file})` + (t.identity ? ` — ${t.identity.name || ""} by ${t.identity.author || ""}` : "")}),
      table(el("table", {class: "report-table"}), ["metric", ...t.columns], t.rows.map((row) =>
        [row[0], ...row.slice(1).map(isShare(row[0], row.slice(1)) ? pct : fmt)])),
      shareChart(t))),
      r.reports.length ? "" : el("p", {class: "muted", text: "no report in this run"}),
      r.loss.length ? lineChart([{name: "train loss", points: r.loss}], {}) : "");
    $("lineage").replaceChildren(graph(r.lineage));
  },
  async compare() {
    const [a, b] = await Promise.all(["compare-a", "compare-b"].map((id) => api("/api/report?path=" + encodeURIComponent($(id).value))));
    const scores = (r) => Object.fromEntries((r.reports[0] || {rows: []}).rows.map((x) => [x[0], x[x.length - 1]]));
    const sa = scores(a), sb = scores(b), keys = [...new Set([...Object.keys(sa), ...Object.keys(sb)])];
    const fm = (r, k) => (r.manifest.metrics || {})[k];
    $("compare").replaceChildren(table(el("table", {id: "compare-table"}), ["", a.run, b.run], [
      ["train loss", fmt(fm(a, "train_loss")), fmt(fm(b, "train_loss"))], ...keys.map((k) => [k, fmt(sa[k]), fmt(sb[k])])]),
      lineChart([{name: a.run, points: a.loss}, {name: b.run, points: b.loss}], {}));
  },
};

function shareChart(t) {
  // The rates (hit, leak, closeness…) as bars, base beside tuned; counts stay in the table.
  const rows = t.rows.filter((r) => isShare(r[0], r.slice(1)));
  return barChart(rows.map((x) => x[0]), t.columns.map((c, j) => ({name: c, values: rows.map((x) => x[j + 1])})));
}

function graph(g) {
  const W = 220, H = 50, gap = 40, width = Math.max(1, g.nodes.length) * (W + gap);
  const root = svg("svg", {width, height: H + 20, id: "lineage-graph"});
  const at = {};
  g.nodes.forEach((n, i) => {
    at[n.id] = i * (W + gap);
    root.append(svg("rect", {x: at[n.id], y: 5, width: W, height: H, rx: 6, fill: n.kind === "model" ? "#eef" : "#efe", stroke: "#889"}),
      svg("text", {x: at[n.id] + 8, y: 34}, n.label.length > 32 ? n.label.slice(0, 31) + "…" : n.label));
  });
  g.edges.forEach(([a, b]) => root.append(svg("line", {x1: at[a] + W, y1: 30, x2: at[b] - 4, y2: 30, stroke: "#555", "stroke-width": 2}),
    svg("polygon", {points: `${at[b] - 4},30 ${at[b] - 12},25 ${at[b] - 12},35`, fill: "#555"})));
  return root;
}

UI.pages.export = {
  init() {
    this.form = new VerbForm($("export-form"), $("export-error"), (r) => { $("export-cli").textContent = r ? r.cli : ""; });
    $("export-verb").onchange = () => this.pick($("export-verb").value);
    $("export-select").onchange = () => this.files($("export-select").value).catch((e) => showError("export-error", e));
    $("export-start").onclick = async () => {
      try {
        await this.form.check();
        const job = await this.form.start();
        $("export-status").textContent = `${job.id}: running`;
        this.watch(job.id);
      } catch (e) { this.form.showFieldError(e); }
    };
  },
  async show(arg) {
    const all = (await verbs()).filter((v) => v.produces.includes("gguf") || v.produces.includes("merged"));
    if (!$("export-verb").options.length) {
      $("export-verb").replaceChildren(...all.map((v) => el("option", {value: v.name, text: v.name})));
      $("export-verb").value = (all.find((v) => v.produces.includes("gguf")) || all[0]).name;
      this.pick($("export-verb").value);
    }
    await this.list(arg);
  },
  pick(name) {
    VERBS.filter((v) => v.name === name).forEach((v) => { $("export-help").textContent = v.help; this.form.render(v); });
  },
  async list(want) {
    const outs = (await api("/api/jobs")).filter((j) => j.status === "done" && VERBS.some((v) => v.name === j.verb &&
      (v.produces.includes("gguf") || v.produces.includes("merged"))));
    const folders = outs.map((j) => (j.values && (j.values.out || j.values.output_dir)) || j.run).filter(Boolean);
    $("export-select").replaceChildren(...folders.map((f) => el("option", {value: f, text: f})));
    if (want) $("export-select").value = want;
    if ($("export-select").value) await this.files($("export-select").value);
  },
  async files(folder) {
    const r = await api("/api/export?path=" + encodeURIComponent(folder));
    table("export-files", ["file", "bytes"], r.files.map((f) => [
      el("a", {href: "/api/file?path=" + encodeURIComponent(f.path), download: f.name, text: f.name}), f.size]));
    $("modelfile").textContent = r.modelfile || "(no Modelfile: a merged folder)";
    $("ollama-line").textContent = r.ollama || "";
  },
  watch(id) {
    const t = setInterval(async () => {
      try {
        const j = await api("/api/job/" + id);
        $("export-status").textContent = `${id}: ${j.status}` + (j.status === "failed" ? " — " + (j.log.split("\n").pop() || "") : "");
        if (j.status !== "running") { clearInterval(t); if (j.status === "done") await this.list((j.values.out) || j.run); }
      } catch (e) { clearInterval(t); showError("export-error", e); }
    }, 1000);
  },
};
