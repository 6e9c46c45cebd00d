// tap ui: the pages' behaviour. Charts are uPlot (vendored, MIT) over series the server has
// downsampled; every text from the store is put in with textContent, never as HTML.
"use strict";

(function () {
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const charts = [];
  let pending = 0;
  let drawnCount = 0;

  function settings() {
    const log = document.getElementById("log-y");
    const smooth = document.getElementById("smoothing");
    return { logY: !!(log && log.checked), smoothing: smooth ? Number(smooth.value) : 0 };
  }

  // TensorBoard's smoothing: an exponential moving average, debiased at the start.
  function ema(values, weight) {
    if (!weight) return values;
    const out = new Array(values.length);
    let last = 0, n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) { out[i] = v; continue; }
      last = last * weight + (1 - weight) * v;
      n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  // The columns uPlot draws: steps, then one column per series.
  function columns(json) {
    if (json.runs) return [json.steps, ...json.runs.map(r => r.values)];
    return [json.steps, json.values];
  }

  function labels(json) {
    if (json.runs) return json.runs.map(r => r.label);
    return [json.metric];
  }

  function buckets(fig) {
    return Math.max(100, Math.min(4000, Math.round((fig.clientWidth || 600))));
  }

  function withRange(src, fig, from, to) {
    let url = src + (src.includes("?") ? "&" : "?") + "points=" + buckets(fig);
    if (from !== undefined) url += "&from=" + Math.floor(from) + "&to=" + Math.ceil(to);
    return url;
  }

  async function fetchJson(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  function say(fig, text, cls) {
    let p = fig.querySelector("p.note");
    if (!p) { p = document.createElement("p"); p.className = "note"; fig.appendChild(p); }
    p.textContent = text;
    if (cls) p.classList.add(cls);
  }

  function build(chart) {
    const { fig, raw, json } = chart;
    const s = settings();
    if (chart.plot) chart.plot.destroy();
    const data = raw.map((col, i) => (i === 0 ? col : ema(col, s.smoothing)));
    const names = labels(json);
    const opts = {
      width: Math.max(300, fig.clientWidth - 8),
      height: 240,
      scales: { x: { time: fig.dataset.time === "1" }, y: s.logY ? { distr: 3 } : {} },
      axes: [{}, { size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [{ label: "step" }].concat(names.map((n, i) => ({
        label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, points: { show: false },
      }))),
      hooks: {
        setSelect: [u => {
          if (u.select.width < 2) return;
          const from = u.posToVal(u.select.left, "x"), to = u.posToVal(u.select.left + u.select.width, "x");
          zoom(chart, from, to);
        }],
      },
    };
    if (s.logY) {
      // A log axis cannot show zero or less: those points are left out of it.
      for (let i = 1; i < data.length; i++) data[i] = data[i].map(v => (v !== null && v > 0 ? v : null));
    }
    chart.plot = new uPlot(opts, data, fig);
    chart.plot.over.addEventListener("dblclick", () => load(chart));
    const points = raw[0].length;
    fig.dataset.series = String(raw.length - 1);
    fig.dataset.points = String(points);
    fig.dataset.total = String(json.runs ? json.runs.reduce((a, r) => a + r.points, 0) : json.points);
  }

  async function zoom(chart, from, to) {
    try {
      const json = await fetchJson(withRange(chart.fig.dataset.src, chart.fig, from, to));
      chart.json = json;
      chart.raw = columns(json);
      build(chart);
      chart.plot.setScale("x", { min: from, max: to });
      chart.fig.dataset.zoomed = "1";
      chart.fig.dataset.zooms = String(Number(chart.fig.dataset.zooms || 0) + 1);
    } catch (e) {
      say(chart.fig, "zoom failed: " + e.message, "error");
    }
  }

  async function load(chart) {
    try {
      const json = await fetchJson(withRange(chart.fig.dataset.src, chart.fig));
      chart.json = json;
      chart.raw = columns(json);
      if (chart.raw[0].length === 0) {
        say(chart.fig, "no points");
      }
      build(chart);
      delete chart.fig.dataset.zoomed;
      return true;
    } catch (e) {
      say(chart.fig, "could not load: " + e.message, "error");
      chart.fig.dataset.failed = "1";
      return false;
    }
  }

  function drawAll(then) {
    const figs = document.querySelectorAll("figure.chart[data-src]");
    pending = figs.length;
    document.body.dataset.charts = String(pending);
    if (pending === 0) {
      document.body.dataset.chartsDone = "1";
      then();
    }
    figs.forEach(fig => {
      const chart = { fig };
      charts.push(chart);
      load(chart).then(ok => {
        if (ok) {
          drawnCount++;
          fig.dataset.drawn = "1";
        }
        pending--;
        if (pending === 0) {
          document.body.dataset.chartsDrawn = String(drawnCount);
          // Milliseconds from the navigation's start to the last chart drawn.
          document.body.dataset.chartsDoneMs = String(Math.round(performance.now()));
          document.body.dataset.chartsDone = "1";
          then();
        }
      });
    });
  }

  function redrawAll() {
    charts.forEach(c => { if (c.raw) build(c); });
  }

  function tools() {
    const log = document.getElementById("log-y");
    if (log) log.addEventListener("change", redrawAll);
    const smooth = document.getElementById("smoothing");
    const shown = document.getElementById("smoothing-value");
    if (smooth) smooth.addEventListener("input", () => { if (shown) shown.textContent = smooth.value; redrawAll(); });
  }

  function columnFilter() {
    const box = document.getElementById("column-filter");
    if (!box) return;
    box.addEventListener("input", () => {
      const t = box.value.toLowerCase();
      document.querySelectorAll(".candidates label").forEach(l => {
        l.hidden = t !== "" && !l.textContent.toLowerCase().includes(t);
      });
    });
  }

  function secs(s) {
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(2) + " h";
  }

  async function goodput() {
    const box = document.getElementById("goodput");
    if (!box) return;
    try {
      const g = await fetchJson(box.dataset.src);
      box.textContent = "";
      const head = document.createElement("p");
      head.className = "goodput-head";
      head.textContent = "goodput " + g.goodput_pct.toFixed(1) + "% of " + secs(g.total_s) + " (" + g.node_hours.toFixed(2) + " node-hours), "
        + g.steps_kept + " steps kept of " + g.steps_computed + " computed";
      box.appendChild(head);
      const table = document.createElement("table");
      table.className = "badput";
      const b = g.badput;
      const rows = [
        ["program start-up", b.program_startup], ["checkpoint save", b.checkpoint_save],
        ["checkpoint restore", b.checkpoint_restore], ["wasted progress", b.wasted_progress],
        ["infrastructure recovery", b.infrastructure_recovery.total], ["idle and other", b.idle_other],
      ];
      for (const [name, share] of rows) {
        const tr = table.insertRow();
        tr.insertCell().textContent = name;
        tr.insertCell().textContent = secs(share.s);
        tr.insertCell().textContent = share.pct.toFixed(1) + "%";
      }
      box.appendChild(table);
      if (g.cadence && g.cadence.interval_s) {
        const p = document.createElement("p");
        p.textContent = "checkpoint every " + secs(g.cadence.interval_s) + " (Young/Daly, from the measured costs)";
        box.appendChild(p);
      }
      box.dataset.loaded = "1";
      // The timeline is drawn from the same report, now cached on the server.
      const img = document.getElementById("timeline");
      if (img && img.dataset.src) img.src = img.dataset.src;
    } catch (e) {
      box.textContent = "goodput: " + e.message;
    }
  }

  // Cancel on the Jobs page: the dashboard's one write, a POST carrying the page's XSRF token.
  function cancels() {
    const meta = document.querySelector("meta[name=tap-xsrf]");
    const said = document.getElementById("cancel-said");
    document.querySelectorAll("button.cancel[data-job]").forEach(b => {
      b.addEventListener("click", async () => {
        const job = b.dataset.job;
        if (!window.confirm("Cancel job " + job + "? Its ranks are stopped.")) return;
        b.disabled = true;
        try {
          const r = await fetch("/jobs/" + encodeURIComponent(job) + "/cancel", {
            method: "POST", credentials: "same-origin", headers: { "X-XSRF-Token": meta ? meta.content : "" },
          });
          const body = await r.json();
          if (said) said.textContent = r.ok ? body.said : "cancel failed: " + body.error;
        } catch (e) {
          if (said) said.textContent = "cancel failed: " + e.message;
        }
      });
    });
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // The run's checkpoints (`tap checkpoints list RUN --output json`), as a table.
  async function checkpoints() {
    const box = document.getElementById("checkpoints");
    if (!box) return;
    try {
      const rows = await fetchJson(box.dataset.src);
      box.textContent = "";
      if (rows.length === 0) { box.textContent = "No committed checkpoint."; box.dataset.loaded = "1"; return; }
      const table = document.createElement("table");
      table.className = "checkpoints";
      const head = table.createTHead().insertRow();
      for (const h of ["checkpoint", "step", "size", "files", "created", "verdict"]) {
        const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
      }
      const body = table.createTBody();
      for (const c of rows) {
        const tr = body.insertRow();
        const v = c.verdict ? (typeof c.verdict === "string" ? c.verdict : Object.keys(c.verdict)[0] || JSON.stringify(c.verdict)) : "";
        for (const cell of [c.checkpoint_id, c.step === null ? "-" : String(c.step), bytes(c.bytes), String(c.files),
                            new Date(c.created_ms).toISOString(), v]) {
          tr.insertCell().textContent = cell;
        }
      }
      box.appendChild(table);
      box.dataset.loaded = "1";
    } catch (e) {
      box.textContent = "checkpoints: " + e.message;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    cancels();
    tools();
    columnFilter();
    if (typeof uPlot === "undefined") {
      document.querySelectorAll("figure.chart").forEach(f => say(f, "the chart library did not load", "error"));
      goodput();
      checkpoints();
      return;
    }
    // The goodput report reads every point of the run: it waits for the charts, which read
    // only what they draw.
    drawAll(() => { goodput(); checkpoints(); });
  });
})();
