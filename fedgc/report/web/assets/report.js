/* fedgc report page. Reads the model that fedgc/report/web/html.py embeds (script#fedgc-model) and draws
 * it with plotly.js (inlined before this script). Three kinds of page (body[data-page]):
 *   report      one run: graph, heatmap, alpha control, run facts, streaming timeline, fault origin;
 *   comparison  two runs: edges gained and lost, change in strength, over the clients both have;
 *   live        a running streaming monitor: polls the snapshot URL and redraws as windows complete.
 * Matrices are [target m][source n] as in result.json; null where not tested. window.fedgcReport exposes
 * the page state (alpha, edges, selection, timings) for tests and the console. */
(function () {
  "use strict";

  const MODEL = JSON.parse(document.getElementById("fedgc-model").textContent);
  const KIND = document.body.dataset.page;
  const COLOR = {
    edge: "#1f4e9c", false: "#e6550d", missed: "#8c8c8c", select: "#c2188b",
    gained: "#1a9850", lost: "#d73027", kept: "#1f4e9c", node: "#eef3fb", nodeLine: "#33415c",
  };
  const KIND_STYLE = {
    appeared: { symbol: "triangle-up", color: "#1a9850" },
    disappeared: { symbol: "triangle-down", color: "#d73027" },
    changed: { symbol: "diamond", color: "#f39c12" },
  };
  const SCALE = {
    strength: [[0, "#f7fbff"], [0.15, "#deebf7"], [0.35, "#9ecae1"], [0.6, "#4292c6"], [0.8, "#2171b5"], [1, "#08306b"]],
    pvalue: [[0, "#fff5f0"], [0.2, "#fcbba1"], [0.45, "#fb6a4a"], [0.75, "#cb181d"], [1, "#67000d"]],
  };
  const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const api = { kind: KIND, model: MODEL, timings: { scriptStart: performance.now() }, ready: false };
  window.fedgcReport = api;

  // ------------------------------------------------------------------------------------------ text

  /** A number for people: n/a for null, 4 significant digits, exponent form when tiny or huge. */
  function fmt(x, digits) {
    if (x === null || x === undefined || typeof x !== "number" || !isFinite(x)) return "n/a";
    digits = digits || 4;
    if (Number.isInteger(x) && Math.abs(x) < 1e9) return String(x);
    if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
    return String(Number(x.toPrecision(digits)));
  }

  /** A p-value from its log10 (readable below float underflow), as fedgc.report.format_pvalue. */
  function pText(logp, p) {
    if (logp === null || logp === undefined || !isFinite(logp)) {
      if (p === 0) return "0";
      return p === null || p === undefined ? "n/a" : fmt(p, 3);
    }
    if (logp > -3) return String(Number(Math.pow(10, logp).toPrecision(3)));
    let e = Math.floor(logp);
    let mantissa = Math.pow(10, logp - e);
    if (Math.round(mantissa * 10) / 10 >= 10) { mantissa /= 10; e += 1; }
    return mantissa.toFixed(1) + "e" + e;
  }

  function bytesText(n) {
    if (typeof n !== "number" || !isFinite(n)) return "n/a";
    const units = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }

  /** "1 alert", "3 alerts". */
  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  /** An element from a tag, attributes (class, id, dataset via data-*, text, html) and children. */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else if (k === "html") node.innerHTML = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children || []) if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  }

  /** A <table> from a header row and rows of cells (strings, or {text|html, class}); rowAttrs(i) per row. */
  function table(header, rows, rowAttrs, numeric) {
    const num = new Set(numeric || []);
    const head = el("tr", {}, header.map((h, j) => el("th", { text: h, class: num.has(j) ? "num" : null })));
    const body = rows.map((r, i) => el("tr", rowAttrs ? rowAttrs(i) : {}, r.map((c, j) => {
      const cell = typeof c === "object" && c !== null ? c : { text: c };
      return el("td", { text: cell.text, html: cell.html, class: [cell.class, num.has(j) ? "num" : null].filter(Boolean).join(" ") || null });
    })));
    return el("table", {}, [el("thead", {}, [head]), el("tbody", {}, body)]);
  }

  function factsTable(pairs) {
    const t = table(["", ""], pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== ""));
    t.className = "facts";
    t.querySelector("thead").remove();
    return t;
  }

  // ------------------------------------------------------------------------------------------ edges

  /** Benjamini-Hochberg discoveries over the M(M-1) off-diagonal pairs, exactly as statsmodels'
   * multipletests(method="fdr_bh") and fedgc.inspect.fdr_edges decide them: a missing p-value counts
   * as 1; sorted p_(k) is compared with (k / n) * alpha in the same floating-point operations, and every
   * pair up to the largest k that passes is a discovery. p-values that underflowed to 0 (log10 p kept in
   * log10_pvalue) pass at every level, as in statsmodels; log10 p orders them among themselves. */
  function bhEdges(pvalue, log10p, alpha) {
    const M = pvalue.length;
    const items = [];
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < M; n++) {
        if (m === n) continue;
        let p = pvalue[m][n];
        const lp = log10p ? log10p[m][n] : null;
        if (p === null || p === undefined || !isFinite(p)) p = lp === null || lp === undefined ? 1 : Math.pow(10, lp);
        items.push({ m, n, p, lp: lp === null || lp === undefined ? Math.log10(Math.max(p, 1e-320)) : lp });
      }
    }
    items.sort((a, b) => a.p - b.p || a.lp - b.lp);
    const total = items.length;
    let last = -1;
    for (let i = 0; i < total; i++) if (items[i].p <= ((i + 1) / total) * alpha) last = i;
    const edges = Array.from({ length: M }, () => new Array(M).fill(false));
    for (let i = 0; i <= last; i++) edges[items[i].m][items[i].n] = true;
    return edges;
  }

  function countTrue(matrix) {
    let k = 0;
    for (let m = 0; m < matrix.length; m++) for (let n = 0; n < matrix.length; n++) if (m !== n && matrix[m][n]) k++;
    return k;
  }

  function sameMatrix(a, b) {
    for (let m = 0; m < a.length; m++) for (let n = 0; n < a.length; n++) if (m !== n && Boolean(a[m][n]) !== Boolean(b[m][n])) return false;
    return true;
  }

  // ------------------------------------------------------------------------------------------ graph

  /** Points along the arrow source n -> target m: a quadratic Bezier that bends to one side (the two
   * arrows of a reciprocal pair bend to opposite sides), clipped at both node circles. */
  function edgePath(L, n, m, reciprocal) {
    const ax = L.x[n], ay = L.y[n], bx = L.x[m], by = L.y[m];
    const dx = bx - ax, dy = by - ay;
    const midx = (ax + bx) / 2, midy = (ay + by) / 2;
    let rad = reciprocal ? 0.14 : 0.09;
    if (!reciprocal && dy * -midx - dx * -midy < 0) rad = -rad; // lone arrows bend towards the centre
    const cx = midx + rad * dy, cy = midy - rad * dx;
    const at = (t) => [(1 - t) * (1 - t) * ax + 2 * (1 - t) * t * cx + t * t * bx,
                       (1 - t) * (1 - t) * ay + 2 * (1 - t) * t * cy + t * t * by];
    const r = L.radius;
    let t0 = 0, t1 = 1;
    for (let i = 0; i <= 200; i++) { const t = i / 200, p = at(t); if (Math.hypot(p[0] - ax, p[1] - ay) >= 1.15 * r) { t0 = t; break; } }
    for (let i = 200; i >= 0; i--) { const t = i / 200, p = at(t); if (Math.hypot(p[0] - bx, p[1] - by) >= 1.35 * r) { t1 = t; break; } }
    const K = 16, xs = [], ys = [];
    for (let k = 0; k < K; k++) { const p = at(t0 + (t1 - t0) * k / (K - 1)); xs.push(p[0]); ys.push(p[1]); }
    return { x: xs, y: ys };
  }

  const FONT = '"Open Sans", verdana, arial, sans-serif'; // plotly's default font stack
  const LABEL_SPOTS = [ // textposition, anchor direction from the node (x, y), box corner offsets in widths / heights
    ["top center", 0, 1, -0.5, 0], ["bottom center", 0, -1, -0.5, -1], ["middle right", 1, 0, 0, -0.5], ["middle left", -1, 0, -1, -0.5],
    ["top right", 0.72, 0.72, 0, 0], ["top left", -0.72, 0.72, -1, 0], ["bottom right", 0.72, -0.72, 0, -1], ["bottom left", -0.72, -0.72, -1, -1],
  ];

  /** Where each node's name goes: of eight spots around the node, the one whose text box (measured in
   * the font plotly draws with, at the plot's scale of ppu pixels per layout unit) overlaps no name
   * placed before it and no node, crosses the fewest arrows (L.links), and stays inside the plot; the
   * most crowded nodes choose first. Returns the anchor points and plotly textpositions. */
  function placeLabels(L, clients, fontSize, ppu, pad) {
    const M = clients.length;
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = fontSize + "px " + FONT;
    const h = (fontSize * 1.25) / ppu, gap = 3 / ppu, d = L.radius + gap;
    const widths = clients.map((c) => (ctx.measureText(c).width + 4) / ppu);
    if (!L._points) { // sample points of every arrow that can be drawn at the run's level
      L._points = [];
      const linked = new Set((L.links || []).map(([m, n]) => m * M + n));
      for (const [m, n] of L.links || []) {
        const path = edgePath(L, n, m, linked.has(n * M + m));
        for (let k = 0; k < path.x.length; k++) L._points.push([path.x[k], path.y[k]]);
      }
    }
    const crowd = clients.map((_, k) => clients.reduce((c, __, j) => c + (j !== k && Math.hypot(L.x[j] - L.x[k], L.y[j] - L.y[k]) < 6 * d ? 1 : 0), 0));
    const order = [...clients.keys()].sort((a, b) => crowd[b] - crowd[a] || a - b);
    const placed = [], out = { x: new Array(M), y: new Array(M), position: new Array(M) };
    const overlaps = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    const lim = 1 + pad;
    for (const k of order) {
      let best = null;
      LABEL_SPOTS.forEach(([position, ux, uy, fx, fy], i) => {
        const ax = L.x[k] + ux * d, ay = L.y[k] + uy * d, w = widths[k];
        const box = [ax + fx * w, ay + fy * h, ax + fx * w + w, ay + fy * h + h];
        let cost = 0.01 * i;
        for (const b of placed) if (overlaps(box, b)) cost += 100;
        for (let j = 0; j < M; j++) if (j !== k && overlaps(box, [L.x[j] - L.radius, L.y[j] - L.radius, L.x[j] + L.radius, L.y[j] + L.radius])) cost += 50;
        for (const p of L._points) if (p[0] > box[0] && p[0] < box[2] && p[1] > box[1] && p[1] < box[3]) cost += 1;
        if (box[0] < -lim || box[2] > lim || box[1] < -lim || box[3] > lim) cost += 30;
        if (!best || cost < best.cost) best = { cost, position, ax, ay, box };
      });
      placed.push(best.box);
      out.x[k] = best.ax; out.y[k] = best.ay; out.position[k] = best.position;
    }
    return out;
  }

  /** Plotly traces and shapes of a directed graph. spec: {clients, layout, dims, edges: [{m, n, strength,
   * category, hover}], categories: {name: {color, dash, label}}, top (strength of the widest arrow),
   * selected: {m, n, hover} or null, nodeHover: [text]}. Arrows of one category and width share a trace. */
  function graphFigure(spec) {
    const L = spec.layout, M = spec.clients.length;
    const present = new Set(spec.edges.map((e) => e.m * M + e.n));
    const groups = new Map();
    const width = (s) => 1 + 5 * Math.max(0, Math.min(1, (s || 0) / (spec.top || 1)));
    for (const e of spec.edges) {
      const w = Math.round(width(e.strength) * 2) / 2;
      const key = e.category + "|" + w;
      if (!groups.has(key)) groups.set(key, { category: e.category, width: w, edges: [] });
      groups.get(key).edges.push(e);
    }
    const traces = [];
    const ordered = [...groups.values()].sort((a, b) => Object.keys(spec.categories).indexOf(a.category) - Object.keys(spec.categories).indexOf(b.category) || a.width - b.width);
    for (const g of ordered) {
      const cat = spec.categories[g.category];
      const x = [], y = [], text = [], custom = [], size = [];
      for (const e of g.edges) {
        const path = edgePath(L, e.n, e.m, present.has(e.n * M + e.m));
        for (let k = 0; k < path.x.length; k++) {
          x.push(path.x[k]); y.push(path.y[k]); text.push(e.hover); custom.push([e.m, e.n]);
          size.push(k === path.x.length - 1 ? 7 + 2.2 * g.width : 0);
        }
        x.push(null); y.push(null); text.push(null); custom.push(null); size.push(0);
      }
      traces.push({
        type: "scatter", mode: "lines+markers", x, y, text, customdata: custom, hovertemplate: "%{text}<extra></extra>",
        line: { color: cat.color, width: g.width, dash: cat.dash || "solid" },
        marker: { size, symbol: "arrow", angleref: "previous", color: cat.color, line: { width: 0 } },
        name: cat.label, legendgroup: g.category, showlegend: false, meta: { role: "edges", category: g.category },
        hoverlabel: { bgcolor: "white", bordercolor: cat.color, font: { color: "#1d2433" } },
        connectgaps: false,
      });

    }
    if (spec.selected) {
      const s = spec.selected;
      const path = edgePath(L, s.n, s.m, present.has(s.n * M + s.m));
      traces.push({
        type: "scatter", mode: "lines+markers", x: path.x, y: path.y, text: path.x.map(() => s.hover),
        customdata: path.x.map(() => [s.m, s.n]), hovertemplate: "%{text}<extra></extra>",
        line: { color: COLOR.select, width: 3 + width(s.strength), dash: s.isEdge ? "solid" : "dot" },
        marker: { size: path.x.map((_, k) => (k === path.x.length - 1 ? 14 + 2 * width(s.strength) : 0)), symbol: "arrow", angleref: "previous", color: COLOR.select },
        name: "selected pair", showlegend: false, meta: { role: "selected", m: s.m, n: s.n },
        hoverlabel: { bgcolor: "white", bordercolor: COLOR.select, font: { color: "#1d2433" } },
      });
    }
    const fontSize = M <= 12 ? 13 : M <= 20 ? 11.5 : 10.5;
    const pad = 0.16 + (M > 20 ? 0.06 : 0.1);
    const height = M > 20 ? 700 : 600, margin = { l: 10, r: 10, t: 36, b: 10 };
    const ppu = Math.min((spec.width || 600) - margin.l - margin.r, height - margin.t - margin.b) / (2 + 2 * pad);
    const labels = placeLabels(L, spec.clients, fontSize, ppu, pad);
    traces.push({
      type: "scatter", mode: "text", x: labels.x, y: labels.y, text: spec.clients, textposition: labels.position, hoverinfo: "skip",
      textfont: { size: fontSize, color: "#1d2433" }, showlegend: false, meta: { role: "labels" }, cliponaxis: false,
    });
    traces.push({
      type: "scatter", mode: "markers", x: L.x, y: L.y, text: spec.nodeHover, hovertemplate: "%{text}<extra></extra>",
      marker: { size: 14, color: "rgba(0,0,0,0)" }, showlegend: false, meta: { role: "nodes" },
    });
    const shapes = spec.clients.map((_, k) => ({
      type: "circle", xref: "x", yref: "y", layer: "above",
      x0: L.x[k] - L.radius, x1: L.x[k] + L.radius, y0: L.y[k] - L.radius, y1: L.y[k] + L.radius,
      fillcolor: COLOR.node, line: { color: COLOR.nodeLine, width: 1.3 },
    }));
    const axis = { visible: false, range: [-1 - pad, 1 + pad], fixedrange: false, zeroline: false };
    const layout = {
      margin, height, hovermode: "closest", hoverdistance: 14,
      xaxis: { ...axis }, yaxis: { ...axis, scaleanchor: "x", scaleratio: 1 }, shapes, dragmode: "pan",
      legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: { size: 12 } },
      annotations: L.radius * ppu >= 8 ? spec.clients.map((_, k) => ({
        x: L.x[k], y: L.y[k], text: String(k), showarrow: false, font: { size: 9, color: COLOR.nodeLine }, xref: "x", yref: "y",
      })) : [],
      paper_bgcolor: "white", plot_bgcolor: "white",
    };
    return { data: traces, layout };
  }

  // ------------------------------------------------------------------------------------------ one run

  /** Hover text of the pair source n -> target m of a run model, with its edge state at alpha. */
  function pairText(run, m, n, edges, alpha) {
    const lines = [
      "<b>" + esc(run.clients[n]) + " -> " + esc(run.clients[m]) + "</b>",
      "strength ||A_s|| = " + fmt(run.strength[m][n]),
      "statistic = " + fmt(run.statistic[m][n], 5) + ", dof = " + fmt(run.dof[m][n]),
      "p-value = " + pText(run.log10_pvalue[m][n], run.pvalue[m][n]),
    ];
    if (run.unknown && run.unknown[m][n]) lines.push("unknown (a client dropped out)");
    else lines.push("FDR edge at alpha " + fmt(alpha) + ": " + (edges[m][n] ? "yes" : "no"));
    if (run.truth) lines.push("true edge: " + (run.truth[m][n] ? "yes" : "no"));
    return lines.join("<br>");
  }

  function topStrength(run, edges) {
    let top = 0;
    for (let m = 0; m < run.clients.length; m++) for (let n = 0; n < run.clients.length; n++) {
      if (m !== n && (edges[m][n] || (run.truth && run.truth[m][n])) && run.strength[m][n] > top) top = run.strength[m][n];
    }
    return top || 1;
  }

  function nodeHover(run, edges) {
    const M = run.clients.length;
    return run.clients.map((c, k) => {
      let out = 0, inn = 0;
      for (let j = 0; j < M; j++) { if (edges[j][k]) out++; if (edges[k][j]) inn++; }
      return "<b>" + esc(c) + "</b> (#" + k + ", D = " + fmt(run.dims[k]) + ")<br>" + out + " edges out, " + inn + " in";
    });
  }

  const RUN_CATEGORIES = {
    edge: { color: COLOR.edge, label: "FDR edge" },
    true: { color: COLOR.edge, label: "FDR edge, true" },
    false: { color: COLOR.false, label: "FDR edge, not in truth" },
    missed: { color: COLOR.missed, dash: "dash", label: "true edge missed" },
  };

  function runGraphSpec(run, state) {
    const M = run.clients.length, edges = [];
    for (let m = 0; m < M; m++) for (let n = 0; n < M; n++) {
      if (m === n) continue;
      const isEdge = state.edges[m][n], isTrue = run.truth ? run.truth[m][n] : null;
      if (!isEdge && !isTrue) continue;
      const category = !isEdge ? "missed" : isTrue === null ? "edge" : isTrue ? "true" : "false";
      edges.push({ m, n, strength: run.strength[m][n], category, hover: pairText(run, m, n, state.edges, state.alpha) });
    }
    const sel = state.selected;
    return {
      clients: run.clients, layout: run.layout, edges, categories: RUN_CATEGORIES, top: topStrength(run, state.edges),
      nodeHover: nodeHover(run, state.edges),
      selected: sel ? { m: sel.m, n: sel.n, strength: run.strength[sel.m][sel.n], isEdge: state.edges[sel.m][sel.n], hover: pairText(run, sel.m, sel.n, state.edges, state.alpha) } : null,
    };
  }

  /** Heatmap [target, source] of strength (or -log10 p), markers on the edges at the current alpha, the
   * true/false/missed marks when the truth is known, and a frame around the selected cell. */
  function heatmapFigure(run, state) {
    const M = run.clients.length;
    const byP = state.colour === "pvalue";
    const z = [], text = [];
    for (let m = 0; m < M; m++) {
      const zr = [], tr = [];
      for (let n = 0; n < M; n++) {
        if (m === n) { zr.push(null); tr.push(esc(run.clients[m]) + " (not tested)"); continue; }
        const v = byP ? (run.log10_pvalue[m][n] === null ? null : -run.log10_pvalue[m][n]) : run.strength[m][n];
        zr.push(v); tr.push(pairText(run, m, n, state.edges, state.alpha));
      }
      z.push(zr); text.push(tr);
    }
    let zmax;
    if (byP) { // cap -log10 p so one overwhelming pair does not wash out the rest
      const vals = z.flat().filter((v) => v !== null).sort((a, b) => a - b);
      zmax = vals.length ? Math.max(2, vals[Math.floor(0.9 * (vals.length - 1))]) : 1;
    }
    const idx = [...Array(M).keys()];
    const traces = [{
      type: "heatmap", z, x: idx, y: idx, text, hovertemplate: "%{text}<extra></extra>", colorscale: byP ? SCALE.pvalue : SCALE.strength,
      zmin: 0, zmax, xgap: M <= 40 ? 1 : 0, ygap: M <= 40 ? 1 : 0,
      colorbar: { title: { text: byP ? "-log10 p" : "strength", side: "right" }, thickness: 12, len: 0.85 },
      meta: { role: "heatmap" },
    }];
    const marks = { edge: [[], [], []], false: [[], [], []], missed: [[], [], []] };
    for (let m = 0; m < M; m++) for (let n = 0; n < M; n++) {
      if (m === n) continue;
      const isEdge = state.edges[m][n], isTrue = run.truth ? run.truth[m][n] : null;
      const cat = isEdge ? (isTrue === false ? "false" : "edge") : isTrue ? "missed" : null;
      if (cat) { marks[cat][0].push(n); marks[cat][1].push(m); marks[cat][2].push(text[m][n]); }
    }
    const cell = Math.max(4, Math.min(14, 300 / M));
    const style = {
      edge: { symbol: "circle", color: "#ffffff", line: { color: "#08306b", width: 1.5 }, name: "FDR edge" },
      false: { symbol: "x", color: COLOR.false, line: { color: "#7f2704", width: 1 }, name: "FDR edge, not in truth" },
      missed: { symbol: "circle-open", color: COLOR.missed, line: { color: COLOR.missed, width: 2 }, name: "true edge missed" },
    };
    for (const cat of ["edge", "false", "missed"]) {
      if (!marks[cat][0].length) continue;
      const s = style[cat];
      traces.push({
        type: "scatter", mode: "markers", x: marks[cat][0], y: marks[cat][1], text: marks[cat][2], hovertemplate: "%{text}<extra></extra>",
        marker: { symbol: s.symbol, size: cell, color: s.color, line: s.line }, name: s.name, showlegend: false, meta: { role: "marks", category: cat },
      });
    }
    const shapes = state.selected ? [{
      type: "rect", xref: "x", yref: "y", x0: state.selected.n - 0.5, x1: state.selected.n + 0.5, y0: state.selected.m - 0.5,
      y1: state.selected.m + 0.5, line: { color: COLOR.select, width: 3 }, fillcolor: "rgba(0,0,0,0)", name: "selected",
    }] : [];
    const ticks = { tickvals: idx, ticktext: run.clients, tickfont: { size: M <= 12 ? 12 : M <= 24 ? 10 : 8 }, automargin: true, zeroline: false, showgrid: false };
    return {
      data: traces,
      layout: {
        margin: { l: 10, r: 10, t: 36, b: 10 }, height: M > 20 ? 700 : 600, hovermode: "closest",
        xaxis: { ...ticks, title: { text: "source n" }, range: [-0.5, M - 0.5], tickangle: M > 8 ? -60 : 0, constrain: "domain" },
        yaxis: { ...ticks, title: { text: "target m" }, range: [M - 0.5, -0.5], scaleanchor: "x", constrain: "domain" },
        shapes, legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom" }, plot_bgcolor: "#cfcfcf",
      },
    };
  }

  /** The FDR level input, its log-scale slider and a reset button; onChange(alpha) on every valid change.
   * onReset (optional) replaces the reset button's action (the comparison's "each run's own alpha"). */
  function alphaControls(initial, runAlpha, onChange, resetLabel, onReset) {
    const input = el("input", { id: "alpha-input", type: "number", min: "0", max: "1", step: "any", value: String(initial), "aria-label": "FDR level alpha" });
    const slider = el("input", { id: "alpha-slider", type: "range", min: "-12", max: "-0.3", step: "0.01", value: String(Math.log10(initial)), "aria-label": "FDR level alpha (log scale)" });
    const reset = el("button", { id: "alpha-reset", type: "button", text: resetLabel || "the run's alpha (" + fmt(runAlpha) + ")" });
    const error = el("span", { id: "alpha-error", class: "error" });
    const set = (alpha, from) => {
      if (!(alpha > 0 && alpha < 1)) { error.textContent = "alpha must lie strictly between 0 and 1"; return; }
      error.textContent = "";
      if (from !== "input") input.value = String(alpha);
      if (from !== "slider") slider.value = String(Math.max(-12, Math.min(-0.3, Math.log10(alpha))));
      onChange(alpha);
    };
    input.addEventListener("change", () => set(Number(input.value), "input"));
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") set(Number(input.value), "input"); });
    slider.addEventListener("input", () => set(Number(Math.pow(10, Number(slider.value)).toPrecision(2)), "slider"));
    reset.addEventListener("click", () => {
      if (!onReset) { set(runAlpha, "reset"); return; }
      error.textContent = ""; input.value = String(runAlpha); slider.value = String(Math.log10(runAlpha)); onReset();
    });
    const box = el("div", { class: "controls" }, [
      el("label", {}, ["FDR level alpha", input]), el("label", {}, ["1e-12", slider, "0.5"]), reset, error,
    ]);
    return { box, set };
  }

  function ranked(run, edges) {
    const out = [];
    const M = run.clients.length;
    for (let m = 0; m < M; m++) for (let n = 0; n < M; n++) if (m !== n && edges[m][n]) out.push({ m, n });
    const key = (r) => { const v = run.log10_pvalue[r.m][r.n]; return v === null ? Infinity : v; };
    out.sort((a, b) => key(a) - key(b) || (run.strength[b.m][b.n] || 0) - (run.strength[a.m][a.n] || 0));
    return out;
  }

  /** The one-run page. */
  function renderReport(run) {
    const app = document.getElementById("app");
    app.innerHTML = "";
    const M = run.clients.length;
    const f = run.facts;
    const opening = run.initial_alpha || run.alpha;
    const state = { alpha: opening, edges: bhEdges(run.pvalue, run.log10_pvalue, opening), selected: null, colour: "strength" };
    api.state = state;
    api.bhEdges = bhEdges;
    api.runEdgesReproduced = sameMatrix(bhEdges(run.pvalue, run.log10_pvalue, run.alpha), run.edges);
    const subtitle = [M + " sites", "engine " + (f.engine || "n/a"), "seed " + fmt(f.seed), "fedgc " + (f.fedgc_version || "n/a")];
    app.appendChild(el("h1", { text: "fedgc: " + run.name }));
    app.appendChild(el("p", { class: "sub", text: subtitle.join(" · ") }));

    const count = el("span", { id: "edge-count", class: "count" });
    const controls = alphaControls(opening, run.alpha, (a) => { state.alpha = a; state.edges = bhEdges(run.pvalue, run.log10_pvalue, a); redraw(); });
    const colour = el("select", { id: "heatmap-colour", "aria-label": "heatmap colour" }, [
      el("option", { value: "strength", text: "colour: strength ||A_s^mn||_F" }), el("option", { value: "pvalue", text: "colour: -log10 p" }),
    ]);
    colour.addEventListener("change", () => { state.colour = colour.value; drawHeatmap(); });
    controls.box.appendChild(colour);
    controls.box.appendChild(count);
    const legend = el("div", { class: "legend" }, run.truth
      ? [el("span", { text: "FDR edge, true" }), el("span", { class: "false", text: "FDR edge, not in truth" }), el("span", { class: "missed", text: "true edge missed" }), el("span", { class: "select", text: "selected pair (dotted: not an edge at this alpha)" })]
      : [el("span", { text: "FDR edge (width by strength)" }), el("span", { class: "select", text: "selected pair (dotted: not an edge at this alpha)" })]);
    const detail = el("div", { id: "pair-detail", class: "detail empty", text: "Click an arrow or a heatmap cell to select a pair." });
    const graphDiv = el("div", { id: "graph", class: "plot" });
    const heatDiv = el("div", { id: "heatmap", class: "plot" });
    const edgeTable = el("div", { id: "edge-table", class: "scroll" });
    app.appendChild(el("section", { class: "card", id: "graph-section" }, [
      el("h2", { text: "Granger-causal graph" }),
      el("p", { class: "note", text: "Arrows source -> target are the Benjamini-Hochberg discoveries over all " + M * (M - 1) + " ordered pairs at the chosen alpha, decided in this page from the stored p-values (at the run's alpha " + fmt(run.alpha) + " they are the run's edges); width by strength ||A_s^{mn}||_F. The heatmap is indexed [target, source]. Hover for the test; click to select." }),
      controls.box, legend,
      el("div", { class: "grid2" }, [graphDiv, heatDiv]),
      detail,
      el("h3", { text: "Edges at this alpha, most significant first" }), edgeTable,
    ]));

    function select(m, n) {
      state.selected = state.selected && state.selected.m === m && state.selected.n === n ? null : { m, n };
      drawGraph(); drawHeatmap(); showDetail();
    }
    function showDetail() {
      const s = state.selected;
      if (!s) { detail.className = "detail empty"; detail.textContent = "Click an arrow or a heatmap cell to select a pair."; return; }
      detail.className = "detail";
      detail.innerHTML = pairText(run, s.m, s.n, state.edges, state.alpha).split("<br>").join(" · ");
    }
    function drawGraph() {
      const fig = graphFigure({ ...runGraphSpec(run, state), width: graphDiv.clientWidth });
      fig.layout.title = { text: countTrue(state.edges) + " edges at alpha = " + fmt(state.alpha), font: { size: 14 }, x: 0.01 };
      return Plotly.react(graphDiv, fig.data, fig.layout, PLOT_CONFIG);
    }
    function drawHeatmap() {
      const fig = heatmapFigure(run, state);
      fig.layout.title = { text: (state.colour === "pvalue" ? "significance -log10 p" : "strength ||A_s^{mn}||_F") + " [target, source]", font: { size: 14 }, x: 0.01 };
      return Plotly.react(heatDiv, fig.data, fig.layout, PLOT_CONFIG);
    }
    function drawEdgeTable() {
      const rows = ranked(run, state.edges);
      const shown = rows.slice(0, 60);
      const header = ["#", "source -> target", "strength", "statistic", "dof", "p-value"].concat(run.truth ? ["true"] : []);
      const t = table(header, shown.map((r, i) => [String(i + 1), run.clients[r.n] + " -> " + run.clients[r.m], fmt(run.strength[r.m][r.n]),
        fmt(run.statistic[r.m][r.n], 5), fmt(run.dof[r.m][r.n]), pText(run.log10_pvalue[r.m][r.n], run.pvalue[r.m][r.n])].concat(run.truth ? [run.truth[r.m][r.n] ? "yes" : "no"] : [])),
        (i) => ({ class: "clickable", "data-m": shown[i].m, "data-n": shown[i].n, onclick: () => select(shown[i].m, shown[i].n) }), [2, 3, 4, 5]);
      edgeTable.innerHTML = "";
      edgeTable.appendChild(rows.length ? t : el("p", { text: "No pair is an edge at alpha = " + fmt(state.alpha) + "." }));
      if (rows.length > shown.length) edgeTable.appendChild(el("p", { class: "note", text: "... " + (rows.length - shown.length) + " more edges." }));
    }
    function redraw() {
      const k = countTrue(state.edges);
      const same = sameMatrix(state.edges, run.edges);
      count.textContent = k + " of " + M * (M - 1) + " ordered pairs are edges at alpha = " + fmt(state.alpha) + (same ? " (the run's edges)" : " (re-decided; the run has " + countTrue(run.edges) + " at " + fmt(run.alpha) + ")");
      count.dataset.edges = String(k);
      drawEdgeTable(); showDetail();
      return drawGraph().then(() => { api.timings.graphDrawn = api.timings.graphDrawn || performance.now(); return drawHeatmap(); });
    }
    api.setAlpha = controls.set;
    api.select = select;

    const first = redraw();
    first.then(() => {
      graphDiv.on("plotly_click", (ev) => { const cd = ev.points[0] && ev.points[0].customdata; if (Array.isArray(cd)) select(cd[0], cd[1]); });
      heatDiv.on("plotly_click", (ev) => { const p = ev.points[0]; if (p && p.x !== p.y) select(Math.round(p.y), Math.round(p.x)); });
    });
    const rest = [];
    if (run.streaming) rest.push(() => renderStreamingSection(app, run.streaming, run.clients, "timeline"));
    if (run.origin && run.origin.length) rest.push(() => renderOrigin(app, run));
    rest.push(() => renderFacts(app, run));
    return first.then(() => rest.reduce((p, f) => p.then(f), Promise.resolve())).then(() => { api.ready = true; document.body.dataset.ready = "true"; });
  }

  // ------------------------------------------------------------------------------------------ run facts

  function renderFacts(app, run) {
    const f = run.facts;
    const rounds = f.windows ? fmt(f.rounds) + " over " + f.windows + " windows (" + f.windows_converged + " converged)" : fmt(f.rounds) + (f.converged ? " (converged)" : " (not converged)");
    const s = f.server || {};
    const ev = run.evaluation || {};
    const facts = [
      ["run", run.name], ["engine", f.engine], ["seed", fmt(f.seed)], ["fedgc version", f.fedgc_version],
      ["sites (D_m)", run.clients.map((c, k) => c + " (" + run.dims[k] + ")").join(", ")],
      ["server", "rule " + s.rule + ", diagonal " + s.diagonal + ", penalty " + fmt(s.penalty) + (s.acceleration && s.acceleration !== "none" ? ", acceleration " + s.acceleration : "") + ", tol " + fmt(s.tol) + ", max_rounds " + fmt(s.max_rounds) + (s.per_window ? " per window" : "")],
      ["rounds", rounds], ["FDR level of the run", fmt(run.alpha) + " (" + countTrue(run.edges) + " edges)"],
      ["wall time", f.total_s === null ? null : fmt(f.total_s, 3) + " s"],
      ["AUROC / AUPRC / F1 vs truth", ev.auroc === null || ev.auroc === undefined ? null : fmt(ev.auroc, 3) + " / " + fmt(ev.auprc, 3) + " / " + fmt(ev.f1, 3)],
      ["relative error vs oracle", ev.relative_error_vs_oracle === null || ev.relative_error_vs_oracle === undefined ? null : fmt(ev.relative_error_vs_oracle)],
      ["dropouts", f.dropouts.length ? f.dropouts.map((d) => d.client + " at round " + d.round).join(", ") : null],
    ];
    const convDiv = el("div", { id: "convergence", class: "plot" });
    const commDiv = el("div", { id: "communication-plot", class: "plot" });
    app.appendChild(el("section", { class: "card", id: "facts" }, [
      el("h2", { text: "Run facts" }), factsTable(facts),
      el("h3", { text: "Convergence" }), convDiv,
    ]));
    app.appendChild(el("section", { class: "card", id: "communication" }, [el("h2", { text: "Communication" }), communicationBlock(run.communication), commDiv]));
    app.appendChild(el("section", { class: "card", id: "privacy" }, [el("h2", { text: "Privacy" }), privacyBlock(run.privacy)]));
    app.appendChild(el("section", { class: "card", id: "data-quality" }, [el("h2", { text: "Data quality" }), dataQualityBlock(run.data_quality)]));
    return Promise.all([drawConvergence(convDiv, run.history), drawCommunication(commDiv, run.communication)]);
  }

  function drawConvergence(div, h) {
    if (!h.round.length) { div.textContent = "No rounds recorded."; return Promise.resolve(); }
    const change = h.change.map((v) => (v !== null && v > 0 ? v : null));
    const traces = [
      { type: "scatter", mode: "lines+markers", x: h.round, y: change, name: "relative change of A_s", xaxis: "x", yaxis: "y", line: { color: "#1f77b4" } },
      { type: "scatter", mode: "lines+markers", x: h.round, y: h.loss, name: "loss (summed over clients)", xaxis: "x2", yaxis: "y2", line: { color: "#d62728" } },
    ];
    const shapes = h.tol ? [{ type: "line", xref: "x domain", yref: "y", x0: 0, x1: 1, y0: h.tol, y1: h.tol, line: { dash: "dot", color: "black", width: 1.2 } }] : [];
    const layout = {
      height: 320, margin: { l: 60, r: 10, t: 30, b: 40 }, grid: { rows: 1, columns: 2, pattern: "independent" },
      xaxis: { title: { text: "round" } }, xaxis2: { title: { text: "round" } },
      yaxis: { type: "log", title: { text: "||A(r) - A(r-1)|| / ||A(r)||" }, exponentformat: "power" }, yaxis2: { title: { text: "loss" } },
      shapes, legend: { orientation: "h", y: 1.12 },
      annotations: h.tol ? [{ xref: "x domain", yref: "y", x: 1, y: Math.log10(h.tol), text: "tol " + fmt(h.tol), showarrow: false, yanchor: "bottom", xanchor: "right", font: { size: 11 } }] : [],
    };
    return Plotly.newPlot(div, traces, layout, PLOT_CONFIG);
  }

  function communicationBlock(c) {
    const s = c.summary || {};
    const rows = Object.entries(s).map(([k, v]) => [k.replace(/_/g, " "), typeof v === "number" ? (k.includes("bytes") ? bytesText(v) : fmt(v)) : String(v)]);
    if (c.raw_data_bytes !== null && c.raw_data_bytes !== undefined && !("raw_data_bytes_kept" in s)) rows.push(["raw data kept by the clients", bytesText(c.raw_data_bytes)]);
    if (!rows.length) return el("p", { text: "No communication was recorded for this run." });
    const box = el("div", {}, [el("p", { class: "note", text: "Bytes sent each way over all exchanges; the raw measurements never leave the clients." }), table(["quantity", "value"], rows, null, [1])]);
    return box;
  }

  function drawCommunication(div, c) {
    const s = c.summary || {};
    const bars = [["to clients", s.bytes_to_clients], ["to server", s.bytes_to_server], ["sent in total", s.bytes_total], ["raw data kept", c.raw_data_bytes]].filter((b) => typeof b[1] === "number");
    if (!bars.length) { div.remove(); return Promise.resolve(); }
    return Plotly.newPlot(div, [{
      type: "bar", orientation: "h", y: bars.map((b) => b[0]), x: bars.map((b) => b[1]), text: bars.map((b) => bytesText(b[1])),
      textposition: "auto", hovertemplate: "%{y}: %{text}<extra></extra>", marker: { color: ["#6baed6", "#3182bd", "#08519c", "#969696"].slice(0, bars.length) },
    }], { height: 60 + 40 * bars.length, margin: { l: 110, r: 20, t: 10, b: 30 }, xaxis: { title: { text: "bytes" } }, yaxis: { autorange: "reversed" } }, PLOT_CONFIG);
  }

  function privacyBlock(p) {
    if (!p.enabled) return el("p", { id: "not-private", text: "Not private: this run used no differential privacy (every reply is exact)." });
    const nm = p.noise_multiplier || {};
    const rows = Object.entries(p.per_client).map(([name, c]) => [name, fmt(c.client_to_server), fmt(c.server_to_clients), fmt(c.whole_run), fmt(c.delta), fmt(c.noise_std)]);
    return el("div", {}, [
      el("p", { text: "Target per client for the whole run: epsilon " + fmt(p.target_epsilon) + ", delta " + fmt(p.target_delta) + " (" + p.accountant + " accountant); clip " + fmt(p.clip) + " (" + p.clip_space + "), noise multiplier " + fmt(nm.client_to_server) + " client -> server, " + fmt(nm.server_to_clients) + " server -> clients; " + fmt(p.rounds_run) + " of " + fmt(p.planned_rounds) + " planned rounds." }),
      table(["client", "epsilon client -> server", "epsilon server -> clients", "epsilon whole run", "delta", "noise std"], rows, null, [1, 2, 3, 4, 5]),
      el("p", { class: "note", text: "Neighbouring relation: " + (p.neighbouring_relation || "n/a") }),
      el("p", { class: "note", text: p.notes || "" }),
    ]);
  }

  function dataQualityBlock(d) {
    const names = Object.keys(d.clients || {});
    if (!names.length) return el("p", { id: "no-data-notes", text: "No data-quality notes: the clients' data were generated (a simulation) or read without any change." });
    const rows = names.map((name) => {
      const c = d.clients[name];
      const dropped = c.dropped_constant.map((k) => k + " (constant)").concat(Object.entries(c.dropped_missing).map(([k, v]) => k + " (" + fmt(100 * v, 3) + "% missing)"));
      const held = Object.entries(c.held).map(([k, h]) => k + " (every " + h.period + " rows, " + fmt(h.masked) + " masked)");
      const al = c.alignment;
      return [name, fmt(c.rows), fmt(c.columns), fmt(100 * (c.missing_fraction || 0), 3) + "%", fmt(c.empty_rows), dropped.join(", ") || "-", held.join(", ") || "-",
        al ? fmt(al.inserted) + " / " + fmt(al.dropped) : "-"];
    });
    return el("div", {}, [
      el("p", { text: "Alignment: " + (d.align || "none") + "." }),
      table(["client", "rows", "columns", "missing", "rows with no sensor", "dropped columns", "held columns (masked between samples)", "rows inserted / dropped by alignment"], rows, null, [1, 2, 3, 4, 7]),
      el("p", { class: "note", text: "Missing measurements are skipped exactly by each client's filter; a row with no sensor left is a pure prediction step. The p-values count those steps as observed, so with much missing data they are optimistic." }),
    ]);
  }

  // ------------------------------------------------------------------------------------------ streaming

  /** Pairs drawn as lines: alerted pairs first, then the strongest pairs that are ever an edge. */
  function featuredPairs(stream, clients, limit) {
    const M = clients.length, index = Object.fromEntries(clients.map((c, k) => [c, k]));
    const alerted = new Set(stream.alerts.map((a) => index[a.target] * M + index[a.source]));
    const cand = [];
    for (let m = 0; m < M; m++) for (let n = 0; n < M; n++) {
      if (m === n) continue;
      const key = m * M + n;
      let ever = false, peak = 0;
      for (const w of stream.windows) { if (w.edges && w.edges[m][n]) ever = true; const s = w.strength[m][n]; if (s !== null && s > peak) peak = s; }
      if (ever || alerted.has(key)) cand.push({ m, n, alerted: alerted.has(key), peak });
    }
    cand.sort((a, b) => (b.alerted - a.alerted) || (b.peak - a.peak));
    return cand.slice(0, Math.max(limit, alerted.size));
  }

  function alertText(a, k) {
    return "<b>alert " + (k + 1) + ": " + esc(a.source) + " -> " + esc(a.target) + " " + esc(a.kind) + "</b><br>window " + a.window + ", sample " + a.time +
      "<br>change test p-value " + pText(a.log10_pvalue !== undefined ? a.log10_pvalue : (a.pvalue > 0 ? Math.log10(a.pvalue) : null), a.pvalue) +
      "<br>strength before " + fmt(a.strength_before) + ", after " + fmt(a.strength_after);
  }

  function timelineFigure(stream, clients, selectedAlert) {
    const M = clients.length, index = Object.fromEntries(clients.map((c, k) => [c, k]));
    const t = stream.windows.map((w) => w.end);
    const pairs = featuredPairs(stream, clients, 8);
    const traces = [];
    const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728"];
    const sel = selectedAlert !== null && selectedAlert !== undefined ? stream.alerts[selectedAlert] : null;
    pairs.forEach((p, i) => {
      const name = clients[p.n] + " -> " + clients[p.m];
      const highlighted = sel && index[sel.target] === p.m && index[sel.source] === p.n;
      traces.push({
        type: "scatter", mode: "lines+markers", x: t, y: stream.windows.map((w) => w.strength[p.m][p.n]), name,
        line: { color: palette[i % palette.length], width: highlighted ? 4 : 1.8 },
        marker: { size: stream.windows.map((w) => (w.edges && w.edges[p.m][p.n] ? 7 : 3)), color: palette[i % palette.length] },
        customdata: stream.windows.map((w) => [w.index, w.start, w.end, w.edges && w.edges[p.m][p.n] ? "edge" : "not an edge"]),
        hovertemplate: "<b>" + esc(name) + "</b><br>window %{customdata[0]} [%{customdata[1]}, %{customdata[2]})<br>strength %{y:.4g} (%{customdata[3]})<extra></extra>",
        meta: { role: "pair", m: p.m, n: p.n }, xaxis: "x", yaxis: "y",
      });
    });
    const byIndex = Object.fromEntries(stream.windows.map((w, k) => [w.index, k]));
    const ax = [], ay = [], atext = [], asym = [], acol = [], aid = [];
    stream.alerts.forEach((a, k) => {
      const w = stream.windows[byIndex[a.window]];
      const y = a.strength_after !== null && a.strength_after !== undefined ? a.strength_after : (w ? w.strength[index[a.target]][index[a.source]] : null);
      ax.push(a.time); ay.push(y); atext.push(alertText(a, k)); aid.push(k);
      asym.push((KIND_STYLE[a.kind] || KIND_STYLE.changed).symbol); acol.push((KIND_STYLE[a.kind] || KIND_STYLE.changed).color);
    });
    traces.push({
      type: "scatter", mode: "markers", x: ax, y: ay, text: atext, customdata: aid, hovertemplate: "%{text}<extra></extra>", name: "alerts",
      marker: { symbol: asym, color: acol, size: aid.map((k) => (k === selectedAlert ? 20 : 14)), line: { color: aid.map((k) => (k === selectedAlert ? COLOR.select : "black")), width: aid.map((k) => (k === selectedAlert ? 3 : 1)) } },
      meta: { role: "alerts" }, xaxis: "x", yaxis: "y",
    });
    const counts = stream.windows.map((w) => countTrue(w.edges || []));
    const facts = stream.windows.map((w) => "window " + w.index + " [" + w.start + ", " + w.end + "): " + plural(countTrue(w.edges || []), "edge") +
      "<br>" + plural(w.rounds || 0, "round") + (w.converged ? " (converged)" : " (not converged)") + ", effective sample size " + fmt(w.effective_sample_size) +
      (w.reset ? "<br>memory restarted after an alert" : ""));
    traces.push({
      type: "scatter", mode: "lines+markers", line: { shape: "hv", color: "#33415c" }, marker: { size: 4, color: stream.windows.map((w) => (w.reset ? COLOR.select : "#33415c")) },
      x: t, y: counts, text: facts, name: "edges per window", hovertemplate: "%{text}<extra></extra>", xaxis: "x", yaxis: "y2", meta: { role: "counts" },
    });
    const shapes = stream.alerts.map((a) => ({
      type: "line", xref: "x", yref: "paper", x0: a.time, x1: a.time, y0: 0, y1: 1, line: { color: (KIND_STYLE[a.kind] || KIND_STYLE.changed).color, dash: "dash", width: 1 }, opacity: 0.6,
    }));
    const layout = {
      height: 470, margin: { l: 60, r: 10, t: 30, b: 45 }, hovermode: "closest",
      xaxis: { title: { text: "sample (end of the window)" }, anchor: "y2" },
      yaxis: { domain: [0.3, 1], title: { text: "strength ||A_s^{mn}||_F" }, rangemode: "tozero" },
      yaxis2: { domain: [0, 0.22], title: { text: "edges" }, rangemode: "tozero" },
      shapes, legend: { orientation: "v", x: 1.01, y: 1 },
    };
    return { data: traces, layout };
  }

  /** Timeline, alert detail and alerts table of a streaming record into parent (replaced on redraw). */
  function streamingBlock(stream, clients, prefix, previousAlerts) {
    const div = el("div", { id: prefix, class: "plot" });
    const detail = el("div", { id: prefix + "-alert-detail", class: "detail empty", text: stream.alerts.length ? "Click an alert (a marker or a row) to see its pair and its test." : "No alert was raised." });
    const tableBox = el("div", { id: prefix + "-alerts", class: "scroll" });
    let selected = null;
    function draw() {
      const fig = timelineFigure(stream, clients, selected);
      return Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
    }
    function choose(k) {
      selected = k;
      const a = stream.alerts[k];
      detail.className = "detail";
      detail.innerHTML = alertText(a, k).split("<br>").join(" · ") + (a.log10_pvalue !== undefined && a.log10_pvalue !== null ? " (log10 p = " + fmt(a.log10_pvalue) + ")" : "");
      detail.dataset.alert = String(k);
      for (const row of tableBox.querySelectorAll("tr[data-alert]")) row.classList.toggle("selected", Number(row.dataset.alert) === k);
      return draw();
    }
    const rows = stream.alerts.map((a, k) => [String(k + 1), String(a.window), String(a.time), a.source + " -> " + a.target, { text: a.kind, class: "kind-" + a.kind },
      pText(a.log10_pvalue !== undefined ? a.log10_pvalue : null, a.pvalue), fmt(a.strength_before), fmt(a.strength_after)]);
    const known = previousAlerts === undefined ? null : previousAlerts;
    if (rows.length) {
      tableBox.appendChild(table(["#", "window", "sample", "pair", "kind", "p-value", "strength before", "after"], rows,
        (k) => ({ class: "clickable" + (known !== null && k >= known ? " new" : ""), "data-alert": k, onclick: () => choose(k) }), [1, 2, 5, 6, 7]));
    }
    const block = el("div", {}, [div, detail, el("h3", { text: "Alerts (" + stream.alerts.length + ")" }), tableBox]);
    return {
      block, draw, choose, selected: () => selected,
      attach() {
        div.on("plotly_click", (ev) => { // an alert marker, or a line point under one: the alert nearest to it
          const p = ev.points[0], role = p && p.data.meta && p.data.meta.role;
          if (role === "alerts") { choose(p.customdata); return; }
          if (role !== "pair") return;
          let best = -1;
          stream.alerts.forEach((a, k) => {
            if (a.time === p.x && (best < 0 || Math.abs(a.strength_after - p.y) < Math.abs(stream.alerts[best].strength_after - p.y))) best = k;
          });
          if (best >= 0) choose(best);
        });
      },
    };
  }

  function streamingSummary(stream) {
    const s = stream;
    const last = s.windows.length ? s.windows[s.windows.length - 1] : null;
    const parts = [plural(s.windows.length, "window") + " of " + fmt(s.window) + " samples every " + fmt(s.step) + " (forgetting " + fmt(s.forgetting) + ")",
      plural(s.alerts.length, "alert") + " at alert_alpha " + fmt(s.alert_alpha)];
    if (last) parts.push("last window [" + last.start + ", " + last.end + ")" + (s.n_steps ? " of " + s.n_steps + " samples" : ""));
    if (s.reset_on_alert) parts.push("the memory restarts after an alert");
    if (s.unprocessed_steps) parts.push(s.unprocessed_steps + " samples after the last window not processed");
    return parts.join("; ");
  }

  function evaluationBlock(ev) {
    if (!ev || !ev.switches) return null;
    const rows = ev.switches.map((s) => [s.source + " -> " + s.target, s.kind, String(s.time), s.detected ? "yes" : "no", fmt(s.alert_time), fmt(s.delay_samples), fmt(s.delay_windows)]);
    return el("div", {}, [
      el("h3", { text: "Known switches (simulation truth)" }),
      table(["pair", "switch", "at sample", "detected", "alert at", "delay (samples)", "delay (windows)"], rows, null, [2, 4, 5, 6]),
      el("p", { class: "note", text: plural(ev.false_alerts, "false alert") + "." }),
    ]);
  }

  function renderStreamingSection(app, stream, clients, prefix) {
    const b = streamingBlock(stream, clients, prefix);
    app.appendChild(el("section", { class: "card", id: "streaming" }, [
      el("h2", { text: "Streaming monitor" }), el("p", { id: "streaming-summary", text: streamingSummary(stream) }),
      el("p", { class: "note", text: "Edge strength per window (marked where the pair is an edge in that window) for the alerted pairs and the strongest edges; alerts at the end of their window (triangle up: appeared, down: disappeared, diamond: changed). Click an alert for its test." }),
      b.block, evaluationBlock(stream.evaluation),
    ]));
    return b.draw().then(() => { b.attach(); api.streaming = { choose: b.choose, selected: b.selected }; });
  }

  // ------------------------------------------------------------------------------------------ origin

  function renderOrigin(app, run) {
    const runs = run.origin;
    const names = Object.keys(runs[0].clients);
    const rows = runs.map((o, i) => {
      const top = o.ranking.length ? o.ranking[0] : null;
      return [o.run || "fault run", fmt(o.start), o.known_origin || "n/a", o.ranking.join(" > "),
        o.known_origin ? (top === o.known_origin ? "yes" : "no") : "n/a"].concat(names.map((c) => (o.clients[c] && o.clients[c].first_crossing !== null ? fmt(o.clients[c].first_crossing) : "never")));
    });
    const pick = el("select", { id: "origin-run", "aria-label": "fault run" }, runs.map((o, i) => el("option", { value: String(i), text: o.run || "fault run " + (i + 1) })));
    const plot = el("div", { id: "origin-plot", class: "plot" });
    const ranking = el("ol", { id: "origin-ranking" });
    const tab = table(["run", "fault start", "known origin", "ranking (likeliest first)", "top correct"].concat(names.map((c) => "first crossing " + c)), rows,
      (i) => ({ class: "clickable", "data-run": i, onclick: () => { pick.value = String(i); draw(i); } }), [1].concat(names.map((_, j) => 5 + j)));
    tab.id = "origin-table";
    app.appendChild(el("section", { class: "card", id: "origin" }, [
      el("h2", { text: "Fault origin" }),
      el("p", { class: "note", text: "Each client scores its own filter innovations, normalised so its threshold is 1; a crossing is a run of samples above it from the fault start on. The ranking puts the earliest crossing first; near-ties go to the client upstream in the learned graph." }),
      tab, el("div", { class: "controls" }, [el("label", {}, ["run", pick])]), plot, el("h3", { text: "Ranking" }), ranking,
    ]));
    function draw(i) {
      const o = runs[i];
      const order = o.ranking.concat(Object.keys(o.clients).filter((c) => !o.ranking.includes(c)));
      const palette = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
      const traces = order.map((c, r) => ({
        type: "scatter", mode: "lines", x: o.clients[c].score.map((_, t) => t), y: o.clients[c].score, name: (r + 1) + ". " + c + (o.clients[c].first_crossing !== null ? " (crosses at " + fmt(o.clients[c].first_crossing) + ")" : " (never crosses)"),
        line: { color: r < palette.length ? palette[r] : "#bdbdbd", width: r === 0 ? 2 : 1.2 }, hovertemplate: esc(c) + ": t = %{x}, score %{y:.3g}<extra></extra>", meta: { role: "score", client: c },
      }));
      const cx = [], cy = [], ct = [];
      order.forEach((c) => { const f = o.clients[c].first_crossing; if (f !== null) { cx.push(f); cy.push(o.clients[c].score[Math.round(f)]); ct.push(c + ": first crossing at " + fmt(f)); } });
      traces.push({ type: "scatter", mode: "markers", x: cx, y: cy, text: ct, hovertemplate: "%{text}<extra></extra>", name: "first crossings", marker: { size: 11, color: "white", line: { color: "black", width: 2 } }, meta: { role: "crossings" } });
      const shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: o.threshold, y1: o.threshold, line: { color: "black", dash: "dash", width: 1.3 } }];
      if (o.start !== null) shapes.push({ type: "line", yref: "paper", x0: o.start, x1: o.start, y0: 0, y1: 1, line: { color: "rgba(80,80,80,0.5)", width: 3 } });
      const all = order.flatMap((c) => o.clients[c].score).filter((v) => v !== null && v > 0);
      const logScale = all.length && Math.max(...all) / (o.threshold || 1) > 100;
      ranking.innerHTML = "";
      o.ranking.forEach((c) => {
        const e = o.clients[c];
        ranking.appendChild(el("li", { text: c + (c === o.known_origin ? " (known origin)" : "") + ": first crossing " + (e.first_crossing !== null ? fmt(e.first_crossing) : "never") +
          (e.onset !== null ? ", onset " + fmt(e.onset, 3) : "") + (e.peak !== null ? ", peak " + fmt(e.peak, 3) : "") + " (scores / threshold)" }));
      });
      return Plotly.react(plot, traces, {
        height: 420, margin: { l: 60, r: 10, t: 36, b: 45 }, hovermode: "closest", shapes,
        title: { text: (o.run || "fault run") + ": likeliest origin " + (o.ranking[0] || "n/a") + (o.known_origin ? " (known origin " + o.known_origin + ")" : ""), font: { size: 14 }, x: 0.01 },
        xaxis: { title: { text: "time step" } }, yaxis: { title: { text: "innovation score / threshold" }, type: logScale ? "log" : "linear" },
        annotations: [{ xref: "paper", x: 1, y: logScale ? Math.log10(o.threshold) : o.threshold, text: "threshold " + fmt(o.threshold), showarrow: false, xanchor: "right", yanchor: "bottom" }],
        legend: { x: 1.01, y: 1 },
      }, PLOT_CONFIG);
    }
    pick.addEventListener("change", () => draw(Number(pick.value)));
    api.origin = { draw };
    return draw(0);
  }

  // ------------------------------------------------------------------------------------------ comparison

  function renderComparison(model) {
    const app = document.getElementById("app");
    app.innerHTML = "";
    const [A, B] = model.runs, [la, lb] = model.labels;
    const common = model.common, K = common.length;
    const ia = common.map((c) => A.clients.indexOf(c)), ib = common.map((c) => B.clients.indexOf(c));
    const opening = model.initial_alpha;
    const state = { alpha: opening || null, edgesA: bhEdges(A.pvalue, A.log10_pvalue, opening || A.alpha), edgesB: bhEdges(B.pvalue, B.log10_pvalue, opening || B.alpha), selected: null };
    api.state = state;
    api.bhEdges = bhEdges;
    app.appendChild(el("h1", { text: "fedgc comparison: " + A.name + " vs " + B.name }));
    app.appendChild(el("p", { class: "sub", text: la + " = " + A.name + ", " + lb + " = " + B.name + ": edges of " + lb + " against " + la + ", over the sites both runs have (matched by client name)." }));
    const diff = model.only[0].length || model.only[1].length;
    app.appendChild(el("div", { id: "client-sets", class: diff ? "banner" : "banner ok" }, [diff
      ? "The client sets differ. Only in " + la + ": " + (model.only[0].join(", ") || "none") + ". Only in " + lb + ": " + (model.only[1].join(", ") || "none") + ". " + (K >= 2 ? "The comparison covers the " + K + " clients both runs have (" + common.join(", ") + "); their edges were decided with the other clients present, so they are conditional on different sets." : "Fewer than two clients in common: no pair can be compared.")
      : "Both runs have the same " + K + " clients" + (model.same_order ? "." : " (in a different order; pairs are matched by name).")]));
    const pair = (m, n) => {
      // m, n index common; values of run R at its own indices
      const get = (R, idx, edges) => ({ s: R.strength[idx[m]][idx[n]], lp: R.log10_pvalue[idx[m]][idx[n]], p: R.pvalue[idx[m]][idx[n]], e: edges[idx[m]][idx[n]] });
      return { a: get(A, ia, state.edgesA), b: get(B, ib, state.edgesB) };
    };
    const hover = (m, n) => {
      const v = pair(m, n);
      const d = v.a.s !== null && v.b.s !== null ? v.b.s - v.a.s : null;
      return "<b>" + esc(common[n]) + " -> " + esc(common[m]) + "</b><br>" + esc(la) + ": strength " + fmt(v.a.s) + ", p " + pText(v.a.lp, v.a.p) + ", edge " + (v.a.e ? "yes" : "no") +
        "<br>" + esc(lb) + ": strength " + fmt(v.b.s) + ", p " + pText(v.b.lp, v.b.p) + ", edge " + (v.b.e ? "yes" : "no") + "<br>change in strength " + (d === null ? "n/a" : (d >= 0 ? "+" : "") + fmt(d));
    };
    const count = el("div", { id: "compare-counts", class: "count" });
    const controls = alphaControls(opening || A.alpha, A.alpha, (a) => {
      state.alpha = a; state.edgesA = bhEdges(A.pvalue, A.log10_pvalue, a); state.edgesB = bhEdges(B.pvalue, B.log10_pvalue, a); redraw();
    }, "each run's own alpha (" + fmt(A.alpha) + " / " + fmt(B.alpha) + ")", () => {
      state.alpha = null; state.edgesA = bhEdges(A.pvalue, A.log10_pvalue, A.alpha); state.edgesB = bhEdges(B.pvalue, B.log10_pvalue, B.alpha); redraw();
    });
    const graphDiv = el("div", { id: "graph", class: "plot" }), heatDiv = el("div", { id: "heatmap", class: "plot" });
    const plots = K >= 2 ? el("div", { class: "grid2" }, [graphDiv, heatDiv]) : el("p", { id: "nothing-to-compare", text: "Nothing to draw: the runs have fewer than two clients in common." });
    const detail = el("div", { id: "pair-detail", class: "detail empty", text: "Click an arrow or a heatmap cell to select a pair." });
    const tableBox = el("div", { id: "change-table", class: "scroll" });
    app.appendChild(el("section", { class: "card", id: "graph-section" }, [
      el("h2", { text: "Edges gained and lost" }), controls.box, count,
      el("div", { class: "legend" }, [el("span", { text: "edge in both" }), el("span", { class: "gained", text: "gained (edge in " + lb + " only)" }), el("span", { class: "lost", text: "lost (edge in " + la + " only)" }), el("span", { class: "select", text: "selected pair" })]),
      plots, detail, el("h3", { text: "Pairs that changed" }), tableBox,
    ]));
    app.appendChild(el("section", { class: "card", id: "facts" }, [el("h2", { text: "The two runs" }), factsTable([
      ["", la + " / " + lb],
      ["run", A.name + " / " + B.name], ["engine", A.facts.engine + " / " + B.facts.engine], ["seed", fmt(A.facts.seed) + " / " + fmt(B.facts.seed)],
      ["fedgc version", A.facts.fedgc_version + " / " + B.facts.fedgc_version], ["clients", A.clients.length + " / " + B.clients.length],
      ["run's FDR level", fmt(A.alpha) + " / " + fmt(B.alpha)], ["rounds", fmt(A.facts.rounds) + " / " + fmt(B.facts.rounds)],
      ["privacy", [A, B].map((R) => (R.privacy.enabled ? "epsilon " + fmt(R.privacy.target_epsilon) + ", delta " + fmt(R.privacy.target_delta) : "not private")).join(" / ")],
      ["streaming", [A, B].map((R) => (R.streaming ? R.streaming.windows.length + " windows, " + R.streaming.alerts.length + " alerts" : "no")).join(" / ")],
    ])]));

    function classify() {
      const out = { both: [], gained: [], lost: [] };
      for (let m = 0; m < K; m++) for (let n = 0; n < K; n++) {
        if (m === n) continue;
        const v = pair(m, n);
        if (v.a.e && v.b.e) out.both.push({ m, n }); else if (v.b.e) out.gained.push({ m, n }); else if (v.a.e) out.lost.push({ m, n });
      }
      return out;
    }
    function select(m, n) {
      state.selected = state.selected && state.selected.m === m && state.selected.n === n ? null : { m, n };
      redraw();
    }
    function redraw() {
      const c = classify();
      api.classes = c;
      const alphaText = state.alpha === null ? "each run's own alpha" : "alpha = " + fmt(state.alpha);
      count.textContent = (K * (K - 1)) + " ordered pairs compared at " + alphaText + ": " + c.both.length + " edges in both, " + c.gained.length + " gained, " + c.lost.length + " lost.";
      count.dataset.gained = String(c.gained.length); count.dataset.lost = String(c.lost.length); count.dataset.both = String(c.both.length);
      const edges = [];
      const push = (list, category, useB) => list.forEach(({ m, n }) => { const v = pair(m, n); edges.push({ m, n, category, strength: useB ? v.b.s : v.a.s, hover: hover(m, n) }); });
      push(c.both, "kept", true); push(c.gained, "gained", true); push(c.lost, "lost", false);
      let top = 0; for (const e of edges) if (e.strength > top) top = e.strength;
      const sel = state.selected;
      const fig = graphFigure({
        clients: common, layout: model.layout, edges, top: top || 1, width: graphDiv.clientWidth,
        categories: { kept: { color: COLOR.kept, label: "edge in both" }, gained: { color: COLOR.gained, label: "gained" }, lost: { color: COLOR.lost, dash: "dash", label: "lost" } },
        nodeHover: common.map((c) => "<b>" + esc(c) + "</b>"),
        selected: sel ? { m: sel.m, n: sel.n, strength: pair(sel.m, sel.n).b.s, isEdge: pair(sel.m, sel.n).a.e || pair(sel.m, sel.n).b.e, hover: hover(sel.m, sel.n) } : null,
      });
      fig.layout.title = { text: lb + " against " + la, font: { size: 14 }, x: 0.01 };
      // heatmap of the change in strength
      const z = [], text = [];
      let zmax = 0;
      for (let m = 0; m < K; m++) {
        const zr = [], tr = [];
        for (let n = 0; n < K; n++) {
          if (m === n) { zr.push(null); tr.push(esc(common[m])); continue; }
          const v = pair(m, n), d = v.a.s !== null && v.b.s !== null ? v.b.s - v.a.s : null;
          if (d !== null) zmax = Math.max(zmax, Math.abs(d));
          zr.push(d); tr.push(hover(m, n));
        }
        z.push(zr); text.push(tr);
      }
      const idx = [...Array(K).keys()];
      const marks = (list, symbol, color, name) => ({ type: "scatter", mode: "markers", x: list.map((p) => p.n), y: list.map((p) => p.m), text: list.map((p) => hover(p.m, p.n)), hovertemplate: "%{text}<extra></extra>", name, marker: { symbol, color, size: Math.max(5, Math.min(13, 280 / Math.max(K, 1))), line: { color: "black", width: 1 } }, showlegend: false, meta: { role: "marks", category: name } });
      const heat = [{ type: "heatmap", z, x: idx, y: idx, text, hovertemplate: "%{text}<extra></extra>", colorscale: "RdBu", reversescale: true, zmid: 0, zmin: -zmax || -1, zmax: zmax || 1, xgap: 1, ygap: 1, colorbar: { title: { text: "change in strength" }, thickness: 12 }, meta: { role: "heatmap" } },
        marks(c.gained, "triangle-up", COLOR.gained, "gained"), marks(c.lost, "triangle-down", COLOR.lost, "lost"), marks(c.both, "circle", "white", "edge in both")];
      const ticks = { tickvals: idx, ticktext: common, automargin: true, showgrid: false, zeroline: false, tickfont: { size: K <= 12 ? 12 : 9 } };
      const heatLayout = {
        height: K > 20 ? 700 : 600, margin: { l: 10, r: 10, t: 36, b: 10 }, hovermode: "closest", plot_bgcolor: "#cfcfcf",
        title: { text: "change in strength " + lb + " - " + la + " [target, source]", font: { size: 14 }, x: 0.01 },
        xaxis: { ...ticks, title: { text: "source n" }, range: [-0.5, K - 0.5], tickangle: K > 8 ? -60 : 0, constrain: "domain" },
        yaxis: { ...ticks, title: { text: "target m" }, range: [K - 0.5, -0.5], scaleanchor: "x", constrain: "domain" },
        legend: { orientation: "h", y: 1.0, yanchor: "bottom" },
        shapes: sel ? [{ type: "rect", x0: sel.n - 0.5, x1: sel.n + 0.5, y0: sel.m - 0.5, y1: sel.m + 0.5, line: { color: COLOR.select, width: 3 }, name: "selected" }] : [],
      };
      if (sel) { detail.className = "detail"; detail.innerHTML = hover(sel.m, sel.n).split("<br>").join(" · "); } else { detail.className = "detail empty"; detail.textContent = "Click an arrow or a heatmap cell to select a pair."; }
      // table: gained and lost, then the largest changes
      const changed = [...c.gained.map((p) => ({ ...p, what: "gained" })), ...c.lost.map((p) => ({ ...p, what: "lost" }))];
      const rest = [];
      for (let m = 0; m < K; m++) for (let n = 0; n < K; n++) if (m !== n && !changed.some((p) => p.m === m && p.n === n)) rest.push({ m, n, what: pair(m, n).a.e ? "edge in both" : "no edge" });
      const delta = (p) => { const v = pair(p.m, p.n); return v.a.s !== null && v.b.s !== null ? v.b.s - v.a.s : 0; };
      rest.sort((p, q) => Math.abs(delta(q)) - Math.abs(delta(p)));
      const rows = changed.concat(rest.slice(0, 15));
      tableBox.innerHTML = "";
      if (K >= 2) {
        tableBox.appendChild(table(["pair", "change", la + " strength", lb + " strength", "change in strength", la + " p", lb + " p"], rows.map((p) => {
          const v = pair(p.m, p.n);
          return [common[p.n] + " -> " + common[p.m], { text: p.what, class: p.what === "gained" ? "kind-appeared" : p.what === "lost" ? "kind-disappeared" : null }, fmt(v.a.s), fmt(v.b.s), fmt(delta(p)), pText(v.a.lp, v.a.p), pText(v.b.lp, v.b.p)];
        }), (i) => ({ class: "clickable", onclick: () => select(rows[i].m, rows[i].n) }), [2, 3, 4, 5, 6]));
      }
      if (K < 2) return Promise.resolve();
      return Promise.all([Plotly.react(graphDiv, fig.data, fig.layout, PLOT_CONFIG), Plotly.react(heatDiv, heat, heatLayout, PLOT_CONFIG)]);
    }
    api.setAlpha = controls.set;
    api.select = select;
    return redraw().then(() => {
      api.timings.graphDrawn = performance.now();
      if (K >= 2) {
        graphDiv.on("plotly_click", (ev) => { const cd = ev.points[0] && ev.points[0].customdata; if (Array.isArray(cd)) select(cd[0], cd[1]); });
        heatDiv.on("plotly_click", (ev) => { const p = ev.points[0]; if (p && p.x !== p.y) select(Math.round(p.y), Math.round(p.x)); });
      }
      api.ready = true; document.body.dataset.ready = "true";
    });
  }

  // ------------------------------------------------------------------------------------------ live

  /** The live page: polls the snapshot URL; each new window or alert redraws the timeline, the alerts
   * (new ones marked) and the latest window's heatmap, without a reload. */
  function renderLive(cfg) {
    const app = document.getElementById("app");
    app.innerHTML = "";
    const status = el("p", { id: "live-status", class: "status", text: "Waiting for the first window..." });
    const summary = el("p", { id: "streaming-summary" });
    const holder = el("div", { id: "live-timeline-holder" });
    const heatDiv = el("div", { id: "live-heatmap", class: "plot" });
    const title = el("h1", { text: "fedgc live monitor" });
    const link = el("p", { id: "report-link" });
    app.appendChild(title);
    app.appendChild(el("p", { class: "sub", text: "Updates every " + fmt(cfg.poll_ms / 1000) + " s as the monitor completes windows; no reload needed." }));
    app.appendChild(el("section", { class: "card", id: "streaming" }, [el("h2", { text: "Streaming monitor" }), status, summary, link, holder]));
    app.appendChild(el("section", { class: "card", id: "latest" }, [el("h2", { text: "Latest window: strength [target, source]" }), heatDiv]));
    const live = { updates: [], windows: 0, alerts: 0, complete: false, errors: 0 };
    api.live = live;
    let seenAlerts = null, lastKey = null;
    function show(snap) {
      const s = snap.streaming, clients = snap.clients;
      if (!s.windows.length) { status.textContent = "Waiting for the first window..."; return Promise.resolve(); }
      live.hasReport = Boolean(snap.has_report);
      const key = s.windows.length + "/" + s.alerts.length + "/" + snap.complete + "/" + snap.has_report;
      if (key === lastKey) return Promise.resolve();
      lastKey = key;
      title.textContent = "fedgc live monitor: " + (snap.name || "streaming run");
      const previous = seenAlerts; // null at the first draw: nothing is marked new
      seenAlerts = s.alerts.length;
      live.windows = s.windows.length; live.alerts = s.alerts.length; live.complete = Boolean(snap.complete);
      live.updates.push({ at: performance.now(), windows: s.windows.length, alerts: s.alerts.length });
      status.className = "status" + (snap.complete ? " done" : "");
      status.textContent = (snap.complete ? "Finished: " : "Running: ") + plural(s.windows.length, "window") + ", " + plural(s.alerts.length, "alert") + " (updated " + new Date((snap.written_at || Date.now() / 1000) * 1000).toLocaleTimeString() + ")";
      summary.textContent = streamingSummary(s);
      link.innerHTML = snap.complete && snap.has_report ? 'The run has finished: <a href="' + esc(cfg.report_url) + '">open its full report</a>.' : "";
      const kept = api.streaming && api.streaming.selected ? api.streaming.selected() : null; // the alert the reader chose stays chosen
      const b = streamingBlock(s, clients, "timeline", previous);
      holder.innerHTML = "";
      holder.appendChild(b.block);
      const last = s.windows[s.windows.length - 1];
      const M = clients.length;
      const run = { clients, strength: last.strength, statistic: last.strength.map((r) => r.map(() => null)), dof: last.strength.map((r) => r.map(() => null)),
        pvalue: last.log10_pvalue.map((r) => r.map((v) => (v === null ? null : Math.pow(10, v)))), log10_pvalue: last.log10_pvalue, truth: null, unknown: null };
      const fig = heatmapFigure(run, { edges: last.edges || Array.from({ length: M }, () => new Array(M).fill(false)), alpha: snap.alpha, selected: null, colour: "strength" });
      fig.layout.title = { text: "window " + last.index + " [" + last.start + ", " + last.end + ")", font: { size: 14 }, x: 0.01 };
      fig.layout.height = 420;
      const drawn = (kept !== null && kept < s.alerts.length ? b.choose(kept) : b.draw()).then(() => { b.attach(); api.streaming = { choose: b.choose, selected: b.selected }; });
      return Promise.all([drawn, Plotly.react(heatDiv, fig.data, fig.layout, PLOT_CONFIG)]);
    }
    async function poll() {
      try {
        const response = await fetch(cfg.snapshot_url, { cache: "no-store" });
        const snap = await response.json();
        if (snap.waiting) status.textContent = "Waiting for the first window... (" + (snap.message || "no snapshot yet") + ")";
        else await show(snap);
        if (!api.ready) { api.ready = true; document.body.dataset.ready = "true"; }
      } catch (err) {
        live.errors += 1;
        status.textContent = "Cannot reach the monitor's server (" + err + "); retrying.";
      }
      if (!(live.complete && live.hasReport)) setTimeout(poll, cfg.poll_ms);
    }
    api.timings.graphDrawn = performance.now();
    poll();
  }

  // ------------------------------------------------------------------------------------------ start

  function start() {
    if (KIND === "report") return renderReport(MODEL);
    if (KIND === "comparison") return renderComparison(MODEL);
    if (KIND === "live") return renderLive(MODEL);
    throw new Error("unknown page kind " + KIND);
  }
  Promise.resolve().then(start).catch((err) => {
    document.getElementById("app").appendChild(el("p", { class: "error", id: "page-error", text: "The page could not be drawn: " + err }));
    throw err;
  });
})();
