"use strict";
// Shared helpers: the API client (every error is one line: {"error", "field"}), elements, SVG charts, pages.
const $ = (id) => document.getElementById(id);
const UI = {info: null, pages: {}};

async function api(path, body, method) {
  const opts = {method: method || (body === undefined ? "GET" : "POST"), headers: {}};
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = {error: r.statusText}; }
  if (!r.ok) { const err = new Error(data.error || r.statusText); err.field = data.field; err.status = r.status; throw err; }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

function showError(box, err) {
  const b = typeof box === "string" ? $(box) : box;
  if (!err) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false; b.textContent = err.message || String(err);
}

function table(target, head, rows, rowAttrs) {
  const t = typeof target === "string" ? $(target) : target;
  t.replaceChildren(el("tr", {}, head.map((h) => el("th", {text: h}))),
    ...rows.map((r, i) => el("tr", rowAttrs ? rowAttrs(r, i) : {}, r.map((c) =>
      c instanceof Node ? el("td", {}, c) : el("td", {text: c === null || c === undefined ? "" : c,
        class: typeof c === "number" ? "num" : null})))));
  return t;
}

// A share (a rate, closeness) as a percentage; counts and losses as numbers.
const isShare = (key, values) => !/(probes|count|rows|loss|steps)$/.test(key) && values.every((v) => typeof v !== "number" || (v >= 0 && v <= 1));
const pct = (x) => typeof x === "number" ? (100 * x).toFixed(0) + "%" : fmt(x);
const fmt = (x) => x === null || x === undefined ? "–" : typeof x === "number"
  ? (Math.abs(x) <= 1 && !Number.isInteger(x) ? (100 * x).toFixed(0) + "%" : +x.toFixed(4)) : String(x);

// ---- SVG charts (inline, plain JS)
const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function lineChart(series, opts) {
  // series: [{name, points: [[x, y]], color}]
  const W = opts.width || 560, H = opts.height || 200, P = 36;
  const pts = series.flatMap((s) => s.points).filter((p) => p[1] !== null && p[1] !== undefined);
  const root = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart"});
  if (!pts.length) { root.append(svg("text", {x: P, y: H / 2}, "no points yet")); return root; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = (x) => P + (x - x0) / (x1 - x0) * (W - 2 * P), Y = (y) => H - P + 10 - (y - y0) / (y1 - y0) * (H - 2 * P);
  root.append(svg("line", {x1: P, y1: H - P + 10, x2: W - P, y2: H - P + 10, stroke: "#999"}),
    svg("line", {x1: P, y1: 10, x2: P, y2: H - P + 10, stroke: "#999"}),
    svg("text", {x: 2, y: 16}, fmt(+y1.toFixed(3))), svg("text", {x: 2, y: H - P + 10}, fmt(+y0.toFixed(3))),
    svg("text", {x: W - P - 20, y: H - 8}, `${opts.xlabel || "step"} ${x1}`));
  series.forEach((s, i) => {
    const good = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const color = s.color || ["#245", "#c60", "#282", "#a2a"][i % 4];
    root.append(svg("polyline", {points: good.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none",
      stroke: color, "stroke-width": 2}));
    good.forEach((p) => root.append(svg("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color})));
    root.append(svg("text", {x: W - P - 90, y: 16 + 14 * i, fill: color}, s.name));
  });
  return root;
}

function barChart(labels, groups, opts) {
  // groups: [{name, values: [v per label]}], values in [0, 1] are drawn as shares
  const W = opts && opts.width || 640, rowH = 16 * groups.length + 10, H = labels.length * rowH + 24, L = 230;
  const max = Math.max(1, ...groups.flatMap((g) => g.values.map((v) => Math.abs(v || 0))));
  const root = svg("svg", {width: W, height: H, class: "chart"});
  labels.forEach((lab, i) => {
    root.append(svg("text", {x: 0, y: i * rowH + 14}, lab.length > 36 ? lab.slice(0, 35) + "…" : lab));
    groups.forEach((g, j) => {
      const v = g.values[i] || 0, w = Math.abs(v) / max * (W - L - 60);
      root.append(svg("rect", {x: L, y: i * rowH + 4 + j * 16, width: Math.max(1, w), height: 13,
        fill: ["#8ab", "#c84", "#6a6", "#a6a"][j % 4]}),
        svg("text", {x: L + w + 4, y: i * rowH + 15 + j * 16}, `${g.name} ${pct(v)}`));
    });
  });
  return root;
}

function histogram(values, cutoff) {
  if (!values.length) return svg("svg", {width: 10, height: 10});
  const bins = 30, max = Math.max(...values, cutoff || 0), step = Math.max(1, Math.ceil((max + 1) / bins));
  const counts = new Array(bins).fill(0);
  values.forEach((v) => counts[Math.min(bins - 1, Math.floor(v / step))]++);
  const W = 560, H = 140, top = Math.max(...counts), bw = (W - 40) / bins;
  const root = svg("svg", {width: W, height: H + 20, class: "chart"});
  counts.forEach((c, i) => root.append(svg("rect", {x: 30 + i * bw, y: H - c / top * (H - 10), width: bw - 1,
    height: c / top * (H - 10), fill: "#8ab"})));
  root.append(svg("text", {x: 30, y: H + 14}, "0"), svg("text", {x: W - 60, y: H + 14}, `${max} tokens`));
  if (cutoff && cutoff <= max) root.append(svg("line", {x1: 30 + cutoff / step * bw, x2: 30 + cutoff / step * bw,
    y1: 0, y2: H, stroke: "red", "stroke-dasharray": "4"}));
  return root;
}

// ---- pages: #name (or #name/arg) shows one section; each page may define show(arg)
function route() {
  const hash = location.hash.slice(1) || "data", cut = hash.indexOf("/");
  const name = cut < 0 ? hash : hash.slice(0, cut), arg = cut < 0 ? "" : hash.slice(cut + 1);
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + name));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  const page = UI.pages[name];
  if (page && page.show) page.show(arg ? decodeURIComponent(arg) : undefined).catch((e) => showError("banner", e));
}

async function boot() {
  try {
    UI.info = await api("/api/info");
    $("workspace").textContent = "workspace " + UI.info.workspace;
  } catch (e) { showError("banner", e); return; }
  for (const p of Object.values(UI.pages)) if (p.init) p.init();
  window.addEventListener("hashchange", route);
  route();
}
window.addEventListener("DOMContentLoaded", boot);
