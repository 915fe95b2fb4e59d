// hwloop serve: the dashboard page. Polls the read-only JSON endpoints (docs/serve.md) and draws
// with the plotly.min.js that hwloop serves from the plotly wheel. No request here changes anything.
"use strict";

const POLL_MS = Number(document.body.dataset.pollMs) || 2000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const PLOT_CONFIG = { displaylogo: false, displayModeBar: false, responsive: false };
const state = { selected: null, runs: [], detail: null, snapKey: null, tile: 0, compareIds: null, lastMapKey: null };

function $(id) { return document.getElementById(id); }
function draw(el, traces, layout) { return Plotly.react(el, traces, layout, PLOT_CONFIG); }

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  if (!r.ok) throw new Error(body && body.error ? body.error : `HTTP ${r.status}`);
  return body;
}

function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x)); else u.append(k, v);
  }
  return u.toString();
}

function fmtDur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
function fmtSize(b) {
  if (b === undefined || b === null) return "–";
  if (b < 1e6) return `${(b / 1e3).toFixed(0)} kB`;
  if (b < 1e9) return `${(b / 1e6).toFixed(1)} MB`;
  return `${(b / 1e9).toFixed(2)} GB`;
}
function fmtAcc(row) {
  if (!row.tasks || !row.final_acc_pct) return "–";
  return row.tasks.map((t, i) => `${t} ${row.final_acc_pct[i] === null ? "–" : row.final_acc_pct[i].toFixed(2) + " %"}`)
    .join(", ");
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "–" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function renderRuns(data) {
  $("folders").textContent = data.folders.join("  ");
  $("updated").textContent = `updated ${new Date(data.now_s * 1000).toLocaleTimeString()}`;
  const tbody = $("runs").querySelector("tbody");
  const checked = new Set([...tbody.querySelectorAll("input:checked")].map((x) => x.value));
  tbody.textContent = "";
  for (const r of data.runs) {
    const tr = document.createElement("tr");
    tr.className = "run" + (r.id === state.selected ? " selected" : "");
    tr.dataset.id = r.id;
    tr.dataset.status = r.status;
    const td0 = document.createElement("td");
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.value = r.id; cb.checked = checked.has(r.id);
    cb.addEventListener("click", (ev) => ev.stopPropagation());
    td0.appendChild(cb); tr.appendChild(td0);
    cell(tr, r.rel);
    const st = cell(tr, r.status, `status-${r.status}`);
    st.classList.add("status");
    if (r.stalled) {
      const b = document.createElement("span"); b.className = "stalled"; b.textContent = "stalled";
      st.appendChild(document.createTextNode(" ")); st.appendChild(b);
    }
    if (r.error) {
      const td = document.createElement("td"); td.colSpan = 11; td.className = "error"; td.textContent = r.error;
      tr.appendChild(td); cell(tr, fmtSize(r.size_bytes));
    } else {
      cell(tr, (r.tasks || []).join(" → "));
      cell(tr, r.m_star); cell(tr, r.hidden); cell(tr, r.seed); cell(tr, fmtAcc(r));
      cell(tr, `${r.epochs_done}/${r.epochs_total ?? "?"}`);
      cell(tr, r.status === "running" ? fmtDur(r.eta_s) : "–");
      cell(tr, r.programs_per_s === null ? "–" : r.programs_per_s.toFixed(0));
      cell(tr, fmtDur(r.since_flush_s) + " ago");
      const age = r.created_utc ? (Date.now() - Date.parse(r.created_utc)) / 1000 : null;
      cell(tr, fmtDur(age)); cell(tr, fmtSize(r.size_bytes));
    }
    tr.addEventListener("click", () => selectRun(r.id));
    tbody.appendChild(tr);
  }
  renderSweeps(data.sweeps || []);
}

function renderSweeps(sweeps) {
  const box = $("sweeps");
  box.textContent = "";
  for (const s of sweeps) {
    const h = document.createElement("h2");
    h.textContent = `sweep ${s.name}`;
    box.appendChild(h);
    if (s.error) { const e = document.createElement("div"); e.className = "error"; e.textContent = s.error; box.appendChild(e); continue; }
    const ul = document.createElement("ul");
    for (const g of s.groups) {
      const li = document.createElement("li");
      const label = Object.entries(g.params).map(([k, v]) => `${k}=${v}`).join(" ");
      const acc = Object.entries(g.final_acc_pct || {}).map(([t, v]) => `${t} ${v[0] === null ? "–" : v[0].toFixed(2)} ± ${v[1] === null ? "–" : v[1].toFixed(2)} %`).join(", ");
      li.textContent = `${label}: ${g.runs.length} runs (${g.n_finished} finished) ${acc} `;
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "compare"; b.className = "compare-group";
      b.addEventListener("click", () => showCompare(g.runs, `sweep ${s.name}: ${label}`));
      li.appendChild(b); ul.appendChild(li);
    }
    box.appendChild(ul);
  }
}

function markers(d) {
  const shapes = [], ann = [];
  for (const x of d.task_switches) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: "#444", dash: "dash", width: 1 } });
    ann.push({ x, y: 1, xref: "x", yref: "paper", text: "task switch", showarrow: false, yanchor: "bottom", font: { size: 10 } });
  }
  if (d.warmup_end !== null && d.epoch.length) {
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0: d.epoch[0] - 0.5, x1: d.warmup_end, y0: 0, y1: 1, fillcolor: "#fc0", opacity: 0.12, line: { width: 0 } });
    ann.push({ x: (d.epoch[0] - 0.5 + d.warmup_end) / 2, y: 1, xref: "x", yref: "paper", text: "warm-up (m* = 0)", showarrow: false, yanchor: "bottom", font: { size: 10 } });
  }
  return { shapes, annotations: ann };
}

function renderDetail(d) {
  state.detail = d;
  $("run").hidden = false;
  $("run-error").textContent = "";
  $("run-title").textContent = `${d.rel}  (${d.chip} chip, ${d.n_tiles} tiles, H ${d.hidden}, m* ${d.m_star}, seed ${d.seed}, ${d.bn_mode || ""} BN)`;
  const stats = $("run-stats");
  stats.textContent = "";
  const items = [
    ["status", d.status + (d.stalled ? " (stalled: no flush for " + fmtDur(d.since_flush_s) + ")" : "")],
    ["epochs", `${d.epochs_done}/${d.epochs_total ?? "?"}`],
    ["ETA", d.status === "running" ? fmtDur(d.eta_s) : "–"],
    ["programs/s", d.programs_per_s === null ? "–" : `${d.programs_per_s.toFixed(0)} (last epoch), ${d.programs_per_s_mean === null ? "–" : d.programs_per_s_mean.toFixed(0)} (mean)`],
    ["last flush", fmtDur(d.since_flush_s) + " ago"],
  ];
  for (const [k, v] of items) { const s = document.createElement("span"); s.textContent = `${k}: ${v}`; s.dataset.key = k; stats.appendChild(s); }
  const mk = markers(d);
  let points = 0;
  const accTraces = d.tasks.map((t, i) => {
    const y = d.acc_pct[t];
    const xs = [], ys = [];
    d.epoch.forEach((e, j) => { if (y[j] !== null) { xs.push(e); ys.push(y[j]); } });
    points += xs.length;
    return { x: xs, y: ys, name: t, mode: "lines+markers", marker: { size: 4, color: COLORS[i % COLORS.length] }, line: { color: COLORS[i % COLORS.length] } };
  });
  const gd = $("plot-acc");
  gd.dataset.points = String(points);
  gd.dataset.epochs = String(d.epoch.length);
  const base = { margin: { l: 55, r: 15, t: 40, b: 40 }, uirevision: d.id };
  draw(gd, accTraces, { ...base, ...mk, title: { text: "test accuracy per task", font: { size: 13 } }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "accuracy (%)" } } });
  draw($("plot-programs"), [{ x: d.epoch, y: d.programs, type: "bar", name: "programs", marker: { color: "#888" } }],
    { ...base, ...mk, title: { text: "device programs per epoch", font: { size: 13 } }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "programs" }, type: "log" } });
  draw($("plot-loss"), [{ x: d.epoch, y: d.train_loss, mode: "lines+markers", name: "train loss", marker: { size: 4 } }],
    { ...base, ...mk, title: { text: "train loss", font: { size: 13 } }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "loss" } } });
  // snapshot selector: "latest" follows a live run
  const sel = $("snap");
  const key = d.snapshot_epochs.join(",");
  if (key !== state.snapKey) {
    const cur = sel.value || "-1";
    sel.textContent = "";
    const o = document.createElement("option"); o.value = "-1"; o.textContent = "latest"; sel.appendChild(o);
    d.snapshot_epochs.forEach((e, k) => { const op = document.createElement("option"); op.value = String(k); op.textContent = `epoch ${e}${e === 0 ? " (before training)" : ""}`; sel.appendChild(op); });
    sel.value = [...sel.options].some((x) => x.value === cur) ? cur : "-1";
    state.snapKey = key;
  }
  $("tile").max = String(Math.max(0, d.n_tiles - 1));
  const layer = (d.layer_tiles || []).find((l) => state.tile >= l.tiles[0] && state.tile < l.tiles[1]);
  $("tile-layer").textContent = layer ? `tile ${state.tile} holds layer ${layer.layer}` : "";
  const mapKey = `${d.id}|${sel.value}|${state.tile}|${key}`;
  if (mapKey !== state.lastMapKey && d.snapshot_epochs.length) { state.lastMapKey = mapKey; loadMaps(); }
}

async function loadMaps() {
  const d = state.detail;
  const snap = $("snap").value || "-1";
  try {
    const [m, h] = await Promise.all([
      getJSON(`/api/map?${q({ id: d.id, snap, tile: state.tile })}`),
      getJSON(`/api/hist?${q({ id: d.id, snap })}`),
    ]);
    const lay = { margin: { l: 45, r: 15, t: 40, b: 40 }, yaxis: { autorange: "reversed", title: { text: `row (/${m.factor})` }, scaleanchor: "x" }, xaxis: { title: { text: `column (/${m.factor})` } } };
    draw($("plot-gmap"), [{ z: m.g_us, type: "heatmap", colorscale: "Viridis", colorbar: { title: { text: "µS" } } }],
      { ...lay, title: { text: `tile ${m.tile}: conductance, epoch ${m.epoch}`, font: { size: 13 } } });
    draw($("plot-wear"), [{ z: m.programs, type: "heatmap", colorscale: "Hot", reversescale: true, colorbar: { title: { text: "programs" } } }],
      { ...lay, title: { text: `tile ${m.tile}: programs so far (max ${m.programs_max})`, font: { size: 13 } } });
    const e = h.bin_edges_us, mid = e.slice(0, -1).map((x, i) => (x + e[i + 1]) / 2);
    const tr = [];
    h.levels.forEach((l, i) => {
      const c = COLORS[i % COLORS.length];
      if (l.devices) tr.push({ x: mid, y: l.counts.map((v) => v / l.devices), type: "bar", name: `${l.name} (${l.devices})`, marker: { color: c }, opacity: 0.55, legendgroup: l.name });
      tr.push({ x: l.cdf_g_us, y: l.cdf_p, yaxis: "y2", mode: "lines", name: `${l.name} CDF`, line: { color: c, dash: "dot" }, legendgroup: l.name, showlegend: false });
    });
    draw($("plot-hist"), tr, { barmode: "overlay", margin: { l: 55, r: 55, t: 30, b: 40 }, title: { text: `conductance per level, epoch ${h.epoch} (bars: devices; dotted: calibration CDF)`, font: { size: 13 } },
      xaxis: { title: { text: "G (µS)" } }, yaxis: { title: { text: "fraction of the level's devices" } }, yaxis2: { overlaying: "y", side: "right", range: [0, 1], tickvals: [0, 0.25, 0.5, 0.75, 1], title: { text: "calibration CDF" } } });
  } catch (err) {
    $("run-error").textContent = `maps: ${err.message}`;
  }
}

async function showCompare(ids, title) {
  state.compareIds = ids;
  $("compare").hidden = false;
  $("compare-title").textContent = title;
  try {
    const c = await getJSON(`/api/compare?${q({ id: ids })}`);
    $("compare-errors").textContent = c.errors.map((e) => `${e.id}: ${e.error}`).join("\n");
    const tr = [];
    c.tasks.forEach((t, j) => {
      const col = COLORS[j % COLORS.length];
      for (const r of c.runs) tr.push({ x: c.epoch, y: r.acc_pct[t], mode: "lines", name: `${r.name} ${t}`, line: { color: col, width: 1 }, opacity: 0.35, showlegend: false });
      const m = c.mean_pct[t], s = c.std_pct[t];
      const up = m.map((v, i) => (v === null || s[i] === null ? null : v + s[i]));
      const lo = m.map((v, i) => (v === null || s[i] === null ? null : v - s[i]));
      tr.push({ x: c.epoch, y: up, mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" });
      tr.push({ x: c.epoch, y: lo, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: col + "33", name: `${t} ± std`, hoverinfo: "skip" });
      tr.push({ x: c.epoch, y: m, mode: "lines", line: { color: col, width: 2.5 }, name: `${t} mean (${c.runs.length} runs)` });
    });
    draw($("plot-compare"), tr, { margin: { l: 55, r: 15, t: 20, b: 40 }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "test accuracy (%)" } } });
  } catch (err) {
    $("compare-errors").textContent = err.message;
  }
}

async function selectRun(id) {
  state.selected = id;
  state.lastMapKey = null;
  state.snapKey = null;
  document.querySelectorAll("#runs tr.run").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === id));
  await refreshRun();
}

async function refreshRun() {
  if (!state.selected) return;
  try {
    renderDetail(await getJSON(`/api/run?${q({ id: state.selected })}`));
  } catch (err) {
    $("run").hidden = false;
    $("run-error").textContent = `${state.selected}: ${err.message}`;
  }
}

async function poll() {
  try {
    const data = await getJSON("/api/runs");
    state.runs = data.runs;
    $("banner").hidden = true;
    renderRuns(data);
    const row = data.runs.find((r) => r.id === state.selected);
    if (state.selected && (!row || row.status === "running" || !state.detail || row.epochs_done !== state.detail.epochs_done)) await refreshRun();
    if (state.compareIds && data.runs.some((r) => r.status === "running" && state.compareIds.includes(r.id))) await showCompare(state.compareIds, $("compare-title").textContent);
  } catch (err) {
    $("banner").hidden = false;
    $("banner").textContent = `cannot reach the dashboard server: ${err.message} (retrying)`;
  }
  setTimeout(poll, POLL_MS);
}

$("snap").addEventListener("change", () => { state.lastMapKey = null; if (state.detail) renderDetail(state.detail); });
$("tile").addEventListener("change", () => {
  const v = Math.max(0, Math.floor(Number($("tile").value) || 0));
  state.tile = v; state.lastMapKey = null; if (state.detail) renderDetail(state.detail);
});
$("compare-selected").addEventListener("click", () => {
  const ids = [...document.querySelectorAll("#runs tbody input:checked")].map((x) => x.value);
  if (ids.length) showCompare(ids, `compare ${ids.length} runs`);
});
const first = new URLSearchParams(location.search).get("run");
if (first) state.selected = first;
poll();
