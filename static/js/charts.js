/* Usage charts of a Summary tab (uPlot). History comes from the metrics API
 * (GET <data-metrics-url>?range=hour|day|week|month|year); live points arrive on the events
 * socket as {"type": "metrics", "object", "id", "ts", "values"} once the page subscribes to its
 * object. When the API does not answer (not installed, no data), the panel stays hidden. */
(function () {
  "use strict";

  const RANGE_SECONDS = { hour: 3600, day: 86400, week: 7 * 86400, month: 31 * 86400, year: 366 * 86400 };
  const COLORS = ["#2f6fb3", "#d18f00", "#2e9d46", "#8e44ad", "#cf3a2f"];

  /* An axis colour from the stylesheet's tokens, so the charts read in light and dark mode. */
  function token(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  const CHARTS = {
    vm: [
      { title: "CPU", unit: "%", series: [["cpu_percent", "CPU"]], max: 100 },
      { title: "vCPU delay", unit: "%", series: [["vcpu_delay_percent", "Waiting for a host CPU"]] },
      { title: "Memory", unit: "bytes", series: [["memory_used_bytes", "Used"], ["memory_balloon_bytes", "Balloon"]] },
      { title: "Disk I/O", unit: "bytes/s", series: [["disk_read_bps", "Read"], ["disk_write_bps", "Write"]] },
      { title: "Network", unit: "bytes/s", series: [["net_rx_bps", "In"], ["net_tx_bps", "Out"]] },
    ],
    host: [
      { title: "CPU", unit: "%", series: [["cpu_percent", "CPU"], ["iowait_percent", "I/O wait"]], max: 100 },
      { title: "Memory", unit: "bytes", series: [["memory_used_bytes", "Used"], ["memory_total_bytes", "Total"]] },
      { title: "Load", unit: "", series: [["load1", "1 min"], ["load5", "5 min"], ["load15", "15 min"]] },
      { title: "Running VMs", unit: "", series: [["vms_running", "VMs"]] },
    ],
  };

  function fmtBytes(v, perSecond) {
    if (v == null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let n = Math.abs(v);
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    const s = (v < 0 ? "-" : "") + (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
    return perSecond ? s + "/s" : s;
  }

  function formatter(unit) {
    if (unit === "%") return (v) => (v == null ? "—" : v.toFixed(1) + " %");
    if (unit === "bytes") return (v) => fmtBytes(v, false);
    if (unit === "bytes/s") return (v) => fmtBytes(v, true);
    return (v) => (v == null ? "—" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
  }

  /* {metric: [[ts, v], ...]} into uPlot's columns over the union of timestamps (gaps: null). */
  function columns(series, keys) {
    const stamps = new Set();
    keys.forEach((k) => (series[k] || []).forEach((p) => stamps.add(p[0])));
    const xs = Array.from(stamps).sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const cols = [xs];
    keys.forEach(function (k) {
      const col = new Array(xs.length).fill(null);
      (series[k] || []).forEach((p) => (col[index.get(p[0])] = p[1]));
      cols.push(col);
    });
    return cols;
  }

  class Charts {
    constructor(root) {
      this.root = root;
      this.url = root.dataset.metricsUrl;
      this.object = root.dataset.metricsObject;
      this.id = Number(root.dataset.metricsId);
      this.defs = CHARTS[this.object] || [];
      this.box = root.querySelector("[data-charts]");
      this.range = "hour";
      this.plots = [];
      this.subscribed = false;

      root.addEventListener("click", (ev) => {
        const btn = ev.target.closest("[data-range]");
        if (!btn) return;
        root.querySelectorAll("[data-range]").forEach((b) => {
          const on = b === btn;
          b.classList.toggle("active", on);
          b.setAttribute("aria-pressed", on ? "true" : "false");
        });
        this.load(btn.dataset.range);
      });
      document.addEventListener("paddock:event", (ev) => this.live(ev.detail));
      if (window.ResizeObserver) {
        let last = 0;
        new ResizeObserver(() => {
          const w = this.width();
          if (w && Math.abs(w - last) > 4) {
            last = w;
            this.plots.forEach((p) => p.plot.setSize({ width: w, height: 160 }));
          }
        }).observe(this.box);
      }
    }

    width() {
      const cols = getComputedStyle(this.box).gridTemplateColumns.split(" ").length || 1;
      return Math.max(240, Math.floor((this.box.clientWidth - (cols - 1) * 12) / cols) - 2);
    }

    load(range) {
      this.range = range;
      const url = this.url + (this.url.includes("?") ? "&" : "?") + "range=" + encodeURIComponent(range);
      return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((body) => this.draw(body))
        .catch(() => {
          // Nothing to show (no metrics API, or no access): no panel rather than an error.
          if (!this.plots.length) this.root.hidden = true;
        });
    }

    draw(body) {
      if (!window.uPlot || !body || !body.series) return;
      this.root.hidden = false;
      this.root.dataset.simulated = body.simulated ? "1" : "0";
      const sim = this.root.querySelector("[data-metrics-simulated]");
      if (sim) sim.hidden = !body.simulated;
      this.step = body.step || 10;
      this.plots.forEach((p) => p.plot.destroy());
      this.plots = [];
      this.box.replaceChildren();
      const width = this.width();
      let points = 0;
      this.defs.forEach((def) => {
        const keys = def.series.map((s) => s[0]);
        if (!keys.some((k) => k in body.series)) return; // the API does not know this metric
        const data = columns(body.series, keys);
        points += data[0].length;
        const fmt = formatter(def.unit);
        const figure = document.createElement("figure");
        figure.className = "chart";
        figure.dataset.chart = def.title;
        const caption = document.createElement("figcaption");
        caption.textContent = def.title;
        figure.appendChild(caption);
        this.box.appendChild(figure);
        const opts = {
          width: width,
          height: 160,
          legend: { show: true, live: true },
          cursor: { drag: { x: false, y: false } },
          scales: {
            x: { time: true },
            y: { range: (u, min, max) => [0, Math.max(def.max && max <= def.max ? def.max : max * 1.1, 1e-6)] },
          },
          axes: [
            { stroke: token("--chart-axis", "#6b7785"), grid: { stroke: token("--chart-grid", "#e7eaee") }, ticks: { stroke: token("--line", "#d8dde3") } },
            {
              stroke: token("--chart-axis", "#6b7785"),
              size: 70,
              grid: { stroke: token("--chart-grid", "#e7eaee") },
              ticks: { stroke: token("--line", "#d8dde3") },
              values: (u, vals) => vals.map(fmt),
            },
          ],
          series: [{}].concat(
            def.series.map((s, i) => ({
              label: s[1],
              stroke: COLORS[i % COLORS.length],
              fill: i === 0 ? COLORS[0] + "22" : undefined,
              width: 1.5,
              spanGaps: false,
              value: (u, v) => fmt(v),
            })),
          ),
        };
        const plot = new window.uPlot(opts, data, figure);
        this.plots.push({ def: def, keys: keys, plot: plot, data: data });
      });
      const note = this.root.querySelector("[data-metrics-note]");
      if (note) {
        this.root.dataset.points = String(points); // how many points are drawn (tests read it)
        note.hidden = points > 0;
        note.textContent = points ? "" : "No data for this range yet.";
      }
      this.root.dataset.chartsReady = "1";
      this.subscribe();
    }

    /* Live points need the socket to carry this object's group (metrics.<object>.<id>). */
    subscribe() {
      if (this.subscribed) return;
      const live = window.Paddock && window.Paddock.live;
      if (!live) return;
      this.subscribed = true;
      const key = this.object === "vm" ? "vms" : this.object === "host" ? "hosts" : null;
      if (!key) return;
      const spec = Object.assign({}, live.subscription || {});
      spec[key] = Array.from(new Set([...(spec[key] || []), this.id]));
      live.subscribe(spec);
    }

    live(event) {
      if (!event || event.type !== "metrics" || event.object !== this.object || event.id !== this.id) return;
      if (this.range !== "hour" || !event.values) return; // longer ranges move by the minute or more
      const cutoff = event.ts - RANGE_SECONDS[this.range];
      this.plots.forEach((p) => {
        const data = p.data;
        const last = data[0].length ? data[0][data[0].length - 1] : -Infinity;
        if (event.ts <= last) return;
        data[0].push(event.ts);
        p.keys.forEach((k, i) => data[i + 1].push(event.values[k] == null ? null : event.values[k]));
        while (data[0].length && data[0][0] < cutoff) data.forEach((col) => col.shift());
        p.plot.setData(data);
      });
      this.root.dataset.livePoints = String(Number(this.root.dataset.livePoints || 0) + 1);
    }
  }

  function init() {
    document.querySelectorAll("[data-metrics]").forEach(function (root) {
      if (root.paddockCharts) return;
      root.paddockCharts = new Charts(root);
      root.paddockCharts.load("hour");
    });
  }

  // A new colour scheme (the user menu's switch, theme.js) draws the charts again in its colours.
  document.addEventListener("paddock:theme", function () {
    document.querySelectorAll("[data-metrics]").forEach(function (root) {
      const charts = root.paddockCharts;
      if (charts && charts.plots.length) charts.load(charts.range);
    });
  });

  window.Paddock = window.Paddock || {};
  window.Paddock.charts = { init: init };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
