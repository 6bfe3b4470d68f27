// The timeline report. Reads the session from the JSON block of the page and draws it: lanes (DOM),
// operations (canvas; density bars where marks would crowd), findings and chains (SVG). Nothing is
// fetched: the page must work from disk with no network.
"use strict";
(function () {
  const started = performance.now();
  const R = JSON.parse(document.getElementById("report-data").textContent);
  const M = R.marks, T = R.texts, N = M.index.length;
  const LANE = 26;
  const VERB_COLOURS = { get: "#9aa5b1", list: "#6b7785", watch: "#c3cad3", create: "#1b7f3a", update: "#2e6bd6",
    patch: "#7b4fd6", delete: "#d1452b", deletecollection: "#d1452b" };
  // Verbs come from the audit log: look them up as own keys only (a verb named `constructor` is
  // just an unknown verb).
  const colour = (verb) => (Object.prototype.hasOwnProperty.call(VERB_COLOURS, verb) ? VERB_COLOURS[verb] : "#444");
  const WRITES = new Set(["create", "update", "patch", "delete", "deletecollection"]);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  // RFC 3339 with microseconds -> microseconds since the session start.
  const offsetOf = (text) => {
    const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(text || "");
    if (!m) return 0;
    const micros = ((m[2] || "") + "000000").slice(0, 6);
    return Date.parse(m[1] + "Z") * 1000 + Number(micros) - R.start_us;
  };
  const laneOf = new Map(R.lanes.map((l, i) => [l.actor_id, i]));
  const markAt = new Map();
  for (let i = 0; i < N; i++) markAt.set(M.index[i], i);
  const objectLabel = (f) => f.kind + " " + (f.namespace ? f.namespace + "/" : "") + f.name;

  // Lanes.
  const labels = $("labels");
  R.lanes.forEach((lane) => {
    const div = el("div", { class: "lane", "data-actor": lane.actor_id, title: lane.actor_id });
    div.append(lane.actor_id, el("span", { class: "count" }, lane.operations + " ops"));
    labels.append(div);
  });
  const plot = $("plot"), canvas = $("marks"), overlay = $("overlay");
  const height = R.lanes.length * LANE;
  plot.style.height = height + "px";
  let width = 0;
  let view = { t0: 0, t1: R.span_us };
  let selected = null, selectedChain = null;
  const x = (t) => ((t - view.t0) / (view.t1 - view.t0)) * width;
  const tAt = (px) => view.t0 + (px / width) * (view.t1 - view.t0);

  function draw() {
    const drawStarted = performance.now();
    width = plot.clientWidth;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio; canvas.height = height * ratio;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    overlay.setAttribute("width", width); overlay.setAttribute("height", height);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    // Marks in view: binary search on time (marks are in session order).
    let lo = 0, hi = N;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (M.t[mid] < view.t0) lo = mid + 1; else hi = mid; }
    let end = lo;
    while (end < N && M.t[end] <= view.t1) end++;
    const lanes = R.lanes.length;
    // Rectangles are gathered per colour and filled as one path each: a handful of canvas calls per
    // redraw whatever the session's size.
    const paths = new Map();
    const rect = (style, x0, y0, w, h) => {
      let p = paths.get(style);
      if (!p) { p = new Path2D(); paths.set(style, p); }
      p.rect(x0, y0, w, h);
    };
    const crowded = (end - lo) > width * 2 || !R.marks_complete;
    if (crowded) {
      // Density bars: every bucket's counts summed into the pixel column it falls in.
      const counts = new Float64Array(lanes * width), failed = new Uint8Array(lanes * width);
      for (const [lane, bucket, ops, errors] of R.density) {
        const px = Math.floor(x(bucket * R.bucket_us));
        if (px < 0 || px >= width) continue;
        counts[lane * width + px] += ops;
        if (errors > 0) failed[lane * width + px] = 1;
      }
      let top = 1;
      for (let i = 0; i < counts.length; i++) if (counts[i] > top) top = counts[i];
      const bar = Math.max(1, x(R.bucket_us) - x(0));
      for (let i = 0; i < counts.length; i++) {
        if (!counts[i]) continue;
        const lane = Math.floor(i / width), px = i % width;
        const h = Math.max(2, (LANE - 6) * Math.sqrt(counts[i] / top));
        rect(failed[i] ? "rgba(198,40,40,0.45)" : "rgba(90,110,140,0.35)", px, lane * LANE + LANE - 3 - h, bar, h);
      }
      // Marks: per lane and pixel column, the one that matters most (a failure, else a write).
      const rank = new Int32Array(lanes * width).fill(-1), which = new Int32Array(lanes * width);
      for (let i = lo; i < end; i++) {
        const px = Math.floor(x(M.t[i]));
        if (px < 0 || px >= width) continue;
        const cell = M.lane[i] * width + px;
        const r = M.status[i] >= 400 ? 2 : (WRITES.has(T[M.verb[i]]) ? 1 : 0);
        if (r > rank[cell]) { rank[cell] = r; which[cell] = i; }
      }
      for (let cell = 0; cell < rank.length; cell++) {
        if (rank[cell] < 0) continue;
        const i = which[cell], px = cell % width, y = M.lane[i] * LANE;
        if (rank[cell] === 2) rect("#c62828", px - 1, y + 4, 3, LANE - 8);
        rect(colour(T[M.verb[i]]), px, y + 6, 1, LANE - 12);
      }
    } else {
      for (let i = lo; i < end; i++) {
        const px = x(M.t[i]), y = M.lane[i] * LANE;
        const w = Math.max(2, Math.min(8, x(M.t[i] + M.duration_ms[i] * 1000) - px));
        if (M.status[i] >= 400) rect("#c62828", px - 1.5, y + 4, w + 3, LANE - 8);
        rect(colour(T[M.verb[i]]), px, y + 6, w, LANE - 12);
      }
    }
    // Failures first, so the colour of the operation sits on its red outline.
    for (const [style, path] of [...paths].sort((a, b) => (b[0] === "#c62828") - (a[0] === "#c62828"))) {
      g.fillStyle = style;
      g.fill(path);
    }
    drawOverlay();
    drawAxis();
    remember();
    // How long a redraw (every zoom or pan step) takes: what keeps the page responsive.
    document.body.dataset.drawMs = (performance.now() - drawStarted).toFixed(1);
  }

  // The view, the selected operation and the selected chain live in the URL's fragment, so a
  // reload (the live page reloads itself) or a shared link opens the same picture.
  function remember() {
    const state = new URLSearchParams();
    if (view.t0 > 0 || view.t1 < R.span_us) state.set("view", Math.round(view.t0) + "," + Math.round(view.t1));
    if (selected !== null) state.set("op", selected);
    if (selectedChain !== null) state.set("chain", selectedChain);
    try { history.replaceState(null, "", "#" + state.toString()); } catch (e) { /* a browser that refuses: no memory */ }
  }

  // Findings and chains are SVG built once in time units (seconds from the start); a redraw only
  // moves and scales their group, so zooming costs the same however many there are.
  const SECONDS = 1e6;
  const timeGroup = svgEl("g", { id: "findings-layer" }), pointGroup = svgEl("g", { id: "selection-layer" });
  overlay.append(timeGroup, pointGroup);
  const chainNodes = new Map(R.causality.nodes.map((n) => [n.id, n]));
  const chainPoints = R.causality.chains.map((chain) => chain.nodes.map((id) => chainNodes.get(id)).filter(Boolean)
    .map((n) => [offsetOf(n.ts) / SECONDS, laneOf.get(n.actor_id) * LANE + LANE / 2]));

  function band(cls, lane, from, to, attrs) {
    timeGroup.append(svgEl("rect", Object.assign({ class: cls, x: from / SECONDS, y: lane * LANE + 2,
      width: Math.max(0, to - from) / SECONDS, height: LANE - 4, "vector-effect": "non-scaling-stroke" }, attrs)));
  }

  function buildOverlay() {
    const a = R.analysis;
    (a.hot_loops || []).forEach((h, i) => {
      if (laneOf.has(h.actor_id)) band("hot-loop", laneOf.get(h.actor_id), offsetOf(h.first_at), offsetOf(h.last_at), { "data-finding": "hot-loop-" + i, "data-object": objectLabel(h) });
    });
    (a.fights || []).forEach((f, i) => {
      for (const actor of f.actors) {
        if (laneOf.has(actor)) band("fight", laneOf.get(actor), offsetOf(f.first_at), offsetOf(f.last_at), { "data-finding": "fight-" + i, "data-object": objectLabel(f), "data-actor": actor });
      }
    });
    (a.conflicts || []).forEach((c, i) => {
      if (laneOf.has(c.actor_id)) band("conflict", laneOf.get(c.actor_id), offsetOf(c.first_at), offsetOf(c.last_at), { "data-finding": "conflict-" + i, "data-object": objectLabel(c) });
    });
    R.causality.chains.forEach((chain, i) => {
      if (chainPoints[i].length < 2) return;
      timeGroup.append(svgEl("polyline", { class: "chain", "data-chain": i, "data-actors": chain.actors.join(" -> "),
        points: chainPoints[i].map((p) => p.join(",")).join(" "), "vector-effect": "non-scaling-stroke" }));
    });
  }

  function drawOverlay() {
    const k = width / ((view.t1 - view.t0) / SECONDS);
    timeGroup.setAttribute("transform", "matrix(" + k + " 0 0 1 " + (-view.t0 / SECONDS) * k + " 0)");
    timeGroup.querySelectorAll("polyline.chain").forEach((line) =>
      line.classList.toggle("selected", Number(line.getAttribute("data-chain")) === selectedChain));
    pointGroup.replaceChildren();
    if (selectedChain !== null && chainPoints[selectedChain]) {
      for (const [t, y] of chainPoints[selectedChain]) pointGroup.append(svgEl("circle", { class: "chain-step", cx: x(t * SECONDS), cy: y, r: 3.5 }));
    }
    if (selected !== null && markAt.has(selected)) {
      const i = markAt.get(selected);
      pointGroup.append(svgEl("rect", { class: "selected-mark", x: x(M.t[i]) - 3, y: M.lane[i] * LANE + 3, width: 8, height: LANE - 6 }));
    }
  }

  function drawAxis() {
    const axis = $("axis");
    axis.replaceChildren();
    const ticks = Math.max(2, Math.floor(width / 140));
    for (let k = 0; k <= ticks; k++) {
      const t = view.t0 + ((view.t1 - view.t0) * k) / ticks;
      const span = el("span", {}, "+" + (t / 1e6).toFixed(view.t1 - view.t0 < 10e6 ? 3 : 1) + "s");
      span.style.left = (k / ticks) * width + "px";
      axis.append(span);
    }
  }

  function zoomTo(from, to) {
    const pad = Math.max(1000, (to - from) * 0.15);
    view = { t0: Math.max(0, from - pad), t1: Math.min(R.span_us, to + pad) };
    if (view.t1 <= view.t0) view = { t0: 0, t1: R.span_us };
    draw();
  }

  // Details of one operation, and the diff of a write.
  function select(index) {
    selected = index;
    remember();
    const details = $("details");
    details.replaceChildren();
    const i = markAt.get(index);
    if (i === undefined) { details.append(el("p", { class: "muted" }, "operation " + index + " is not drawn one by one")); drawOverlay(); return; }
    details.setAttribute("data-index", index);
    const rows = [["index", index], ["time", "+" + (M.t[i] / 1e6).toFixed(6) + "s"], ["actor", R.lanes[M.lane[i]].actor_id],
      ["verb", T[M.verb[i]]], ["object", T[M.object[i]]], ["resourceVersion", T[M.versions[i]] || "-"],
      ["status", M.status[i] || "-"], ["duration", M.duration_ms[i].toFixed(1) + " ms"]];
    if (M.error[i]) rows.push(["error", T[M.error[i]]]);
    const table = el("table", { class: "fields" });
    for (const [k, v] of rows) { const tr = el("tr"); tr.append(el("td", { class: "muted" }, k), el("td", {}, String(v))); table.append(tr); }
    details.append(table);
    const changes = R.diffs[String(index)];
    if (!changes && WRITES.has(T[M.verb[i]]) && M.status[i] < 400) {
      details.append(el("p", { class: "muted" }, "no diff: the first version seen of this object, or beyond the diffs the report carries"));
    }
    if (changes) {
      details.append(el("h3", {}, changes.length ? "changes" : "no field changed (a no-op write)"));
      const diff = el("table", { class: "diff" });
      for (const c of changes) {
        const tr = el("tr");
        const show = (v) => (v === null || v === undefined ? "(none)" : JSON.stringify(v));
        tr.append(el("td", { class: "path" }, c.path), el("td", { class: "old" }, show(c.old)), el("td", { class: "new" }, show(c.new)));
        diff.append(tr);
      }
      details.append(diff);
    }
    drawOverlay();
  }

  // Findings and tables.
  // At most this many findings of a kind are listed (all of them are outlined on the lanes).
  const LISTED = 200;
  function more(list, cls, all) {
    if (all > LISTED) list.append(el("li", { class: "muted" }, (all - LISTED) + " more " + cls + " findings are outlined on the lanes"));
  }
  function finding(list, cls, text, from, to, onSelect) {
    const li = el("li", { class: "finding " + cls }, text);
    li.addEventListener("click", () => {
      document.querySelectorAll("li.finding.active").forEach((e) => e.classList.remove("active"));
      li.classList.add("active");
      if (onSelect) onSelect();
      zoomTo(from, to);
    });
    list.append(li);
  }
  const list = $("findings");
  const a = R.analysis;
  (a.fights || []).slice(0, LISTED).forEach((f) => finding(list, "fight", "fight over " + objectLabel(f) + ": " + f.actors.join(" <-> ") + ", " + f.turns + " turns" +
    (f.fields.length ? " (" + f.fields.map((fl) => fl.path + ": " + fl.values.map((v) => JSON.stringify(v.value) + " (" + v.actors.join(",") + ")").join(" <-> ")).join("; ") + ")" : ""),
    offsetOf(f.first_at), offsetOf(f.last_at)));
  more(list, "fight", (a.fights || []).length);
  (a.hot_loops || []).slice(0, LISTED).forEach((h) => finding(list, "hot-loop", "hot loop: " + h.actor_id + " wrote " + objectLabel(h) + " " + h.writes + " times (" + h.class + ", " + h.per_minute.toFixed(1) + "/min)",
    offsetOf(h.first_at), offsetOf(h.last_at)));
  more(list, "hot-loop", (a.hot_loops || []).length);
  (a.conflicts || []).slice(0, LISTED).forEach((c) => finding(list, "conflict", "conflict storm: " + c.actor_id + " on " + objectLabel(c) + ", " + c.conflicts + " conflicts, up to " + c.max_versions_behind + " versions behind" + (c.recovered ? ", recovered" : ""),
    offsetOf(c.first_at), offsetOf(c.last_at)));
  more(list, "conflict", (a.conflicts || []).length);
  const nodes = new Map(R.causality.nodes.map((n) => [n.id, n]));
  R.causality.chains.slice(0, 20).forEach((chain, i) => {
    const steps = chain.nodes.map((id) => nodes.get(id)).filter(Boolean);
    if (steps.length < 2) return;
    const text = "chain: " + steps.map((n) => n.actor_id + " " + n.verb + " " + n.kind + " " + n.name).join(" -> ");
    finding(list, "chain", text, offsetOf(steps[0].ts), offsetOf(steps[steps.length - 1].ts), () => { selectedChain = i; });
  });
  if (!list.children.length) list.append(el("li", { class: "muted" }, "no hot loops, fights, conflict storms or chains"));

  const slow = $("slow");
  (a.slow_operations || []).slice(0, 25).forEach((s) => {
    const tr = el("tr", { "data-index": s.index });
    tr.append(el("td", {}, String(s.duration_ms) + " ms"), el("td", {}, s.operation_type), el("td", {}, s.resource), el("td", {}, s.actor_id));
    tr.addEventListener("click", () => { select(s.index); if (markAt.has(s.index)) { const t = M.t[markAt.get(s.index)]; zoomTo(t - 1e6, t + 1e6); } });
    slow.append(tr);
  });
  const errors = $("errors");
  ((a.errors && a.errors.by_status) || []).forEach((e) => {
    const tr = el("tr", { "data-index": e.first_index });
    tr.append(el("td", {}, String(e.status_code)), el("td", {}, e.reason || "-"), el("td", {}, String(e.count)));
    tr.addEventListener("click", () => select(e.first_index));
    errors.append(tr);
  });

  // Zoom with the wheel around the pointer, pan by dragging, select by clicking.
  plot.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const at = tAt(ev.offsetX), k = ev.deltaY > 0 ? 1.25 : 0.8;
    const span = Math.min(R.span_us, Math.max(1000, (view.t1 - view.t0) * k));
    let t0 = at - (ev.offsetX / width) * span;
    t0 = Math.max(0, Math.min(R.span_us - span, t0));
    view = { t0, t1: t0 + span };
    draw();
  }, { passive: false });
  let drag = null;
  plot.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, view: Object.assign({}, view), moved: false }; });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x;
    if (Math.abs(dx) > 2) drag.moved = true;
    const span = drag.view.t1 - drag.view.t0;
    let t0 = drag.view.t0 - (dx / width) * span;
    t0 = Math.max(0, Math.min(R.span_us - span, t0));
    view = { t0, t1: t0 + span };
    draw();
  });
  window.addEventListener("mouseup", (ev) => {
    if (drag && !drag.moved) {
      const rect = plot.getBoundingClientRect();
      const px = ev.clientX - rect.left, lane = Math.floor((ev.clientY - rect.top) / LANE);
      let best = null, bestDx = 6;
      for (let i = 0; i < N; i++) {
        if (M.lane[i] !== lane) continue;
        const d = Math.abs(x(M.t[i]) - px);
        if (d < bestDx) { bestDx = d; best = i; }
      }
      if (best !== null) select(M.index[best]);
    }
    drag = null;
  });
  $("reset").addEventListener("click", () => { view = { t0: 0, t1: R.span_us }; draw(); });
  window.addEventListener("resize", draw);

  // `#op=N` selects operation N and `#chain=K` highlights chain K when the page opens.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("chain")) selectedChain = Number(hash.get("chain"));
  const kept = (hash.get("view") || "").split(",").map(Number);
  if (kept.length === 2 && kept[0] >= 0 && kept[1] > kept[0] && kept[1] <= R.span_us) view = { t0: kept[0], t1: kept[1] };
  buildOverlay();
  draw();
  if (hash.has("op")) select(Number(hash.get("op")));
  // `#measure`: zoom in step by step to a tenth of the session and back, and record how long a
  // redraw takes on average (how the report's responsiveness is measured; see the README).
  if (hash.has("measure")) {
    const steps = 20, from = performance.now();
    for (let k = 0; k < steps; k++) {
      const span = R.span_us * Math.pow(0.1, (k < steps / 2 ? k : steps - k) / (steps / 2));
      view = { t0: (R.span_us - span) / 2, t1: (R.span_us + span) / 2 };
      draw();
    }
    document.body.dataset.redrawMs = ((performance.now() - from) / steps).toFixed(1);
  }
  document.body.dataset.loadMs = (performance.now() - started).toFixed(1);
  document.body.setAttribute("data-ready", "true");
})();
