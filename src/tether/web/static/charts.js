// Charts: Metrics.Event pushes drawn on canvas, five minutes of history kept in the page.

import { $, el, say, formatBytes, describeError } from "./util.js";

const HISTORY = 300; // seconds kept and shown
const HEIGHT = 160; // CSS pixels of a plot
const NOT_CHARTED = new Set(["ts", "net", "cloud"]);

const BUILT_IN = [
  { id: "cpu", title: "CPU", unit: "%", min: 100, series: [["cpu", "machine"], ["proc_cpu", "device process"]] },
  { id: "mem", title: "Memory", unit: "%", min: 100, series: [["mem", "machine"]] },
  { id: "rss", title: "Device process memory", unit: "bytes", series: [["proc_rss", "resident"]] },
];

function format(value, unit) {
  if (typeof value !== "number") return "–";
  if (unit === "bytes") return formatBytes(value);
  if (unit === "%") return `${value.toFixed(1)} %`;
  return Number.isInteger(value) ? String(value) : value.toPrecision(4).replace(/\.?0+$/, "");
}

function color(index) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(`--series-${index % 4}`).trim();
  return value || "#3b82f6";
}

class Chart {
  constructor(parent, { id, title, unit = "", min, series }) {
    this.unit = unit;
    this.min = min; // the least top of the y axis (100 for percentages)
    this.series = series.map(([key, label], index) => ({ key, label, index, points: [] }));
    this.points = 0;
    this.canvas = el("canvas", { height: HEIGHT, role: "img", "aria-label": `${title}: no data yet` });
    this.legend = el("ul", { className: "legend" });
    for (const line of this.series) {
      line.value = el("span", { className: "value", textContent: "–" });
      const swatch = el("span", { className: `swatch s${line.index % 4}`, "aria-hidden": "true" });
      this.legend.append(el("li", {}, swatch, `${line.label} `, line.value));
    }
    this.figure = el(
      "figure",
      { className: "chart", id: `chart-${id}`, dataset: { points: "0" } },
      el("figcaption", { textContent: title }),
      this.canvas,
      this.legend,
    );
    parent.append(this.figure);
  }

  add(ts, sample) {
    let added = false;
    for (const line of this.series) {
      const value = sample[line.key];
      if (typeof value !== "number") continue;
      line.points.push([ts, value]);
      while (line.points.length && line.points[0][0] < ts - HISTORY) line.points.shift();
      line.value.textContent = format(value, this.unit);
      added = true;
    }
    if (added) {
      this.points += 1;
      this.figure.dataset.points = String(this.points);
    }
  }

  draw(now) {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(200, canvas.clientWidth);
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(HEIGHT * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, HEIGHT);
    const values = this.series.flatMap((line) => line.points.map((p) => p[1]));
    let top = Math.max(this.min || 0, ...values, 0);
    let bottom = Math.min(0, ...values);
    if (this.min === undefined && values.length) {
      const low = Math.min(...values), high = Math.max(...values);
      // A flat line sits in the middle, a moving one fills the plot with a margin.
      const pad = Math.max((high - low) * 0.1, Math.abs(high) * 0.05, 1);
      bottom = low >= 0 ? Math.max(0, low - pad) : low - pad;
      top = high + pad;
    }
    if (top === bottom) top = bottom + 1;
    const left = 64, right = width - 8, up = 8, down = HEIGHT - 20;
    const x = (t) => left + ((t - (now - HISTORY)) / HISTORY) * (right - left);
    const y = (v) => down - ((v - bottom) / (top - bottom)) * (down - up);
    const style = getComputedStyle(document.documentElement);
    const ink = style.getPropertyValue("--muted").trim() || "#666";
    const grid = style.getPropertyValue("--grid").trim() || "#ddd";
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    g.strokeStyle = grid;
    g.fillStyle = ink;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = bottom + ((top - bottom) * i) / 4;
      g.beginPath();
      g.moveTo(left, Math.round(y(v)) + 0.5);
      g.lineTo(right, Math.round(y(v)) + 0.5);
      g.stroke();
      g.fillText(format(v, this.unit), left - 6, y(v));
    }
    g.textBaseline = "alphabetic";
    g.textAlign = "left";
    g.fillText("−5 min", left, HEIGHT - 4);
    g.textAlign = "right";
    g.fillText("now", right, HEIGHT - 4);
    g.lineWidth = 2;
    g.lineJoin = "round";
    for (const line of this.series) {
      if (!line.points.length) continue;
      g.strokeStyle = color(line.index);
      g.beginPath();
      line.points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
      g.stroke();
    }
    const latest = this.series.map((line) => `${line.label} ${line.value.textContent}`).join(", ");
    canvas.setAttribute("aria-label", `${this.figure.querySelector("figcaption").textContent}: ${latest}`);
  }
}

export function setup(context) {
  const list = $("#chart-list");
  const charts = new Map(BUILT_IN.map((spec) => [spec.id, new Chart(list, spec)]));
  let received = 0;
  let latest = Date.now() / 1000;
  let scheduled = false;

  function draw() {
    scheduled = false;
    if (context.panel !== "charts") return;
    for (const chart of charts.values()) chart.draw(latest);
  }

  function schedule() {
    if (!scheduled && context.panel === "charts") {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  context.rpc.addEventListener("Metrics.Event", (event) => {
    const sample = event.detail || {};
    const ts = typeof sample.ts === "number" ? sample.ts : Date.now() / 1000;
    latest = ts;
    received += 1;
    list.dataset.points = String(received);
    for (const [key, value] of Object.entries(sample)) {
      if (NOT_CHARTED.has(key) || typeof value !== "number") continue;
      const builtIn = BUILT_IN.some((spec) => spec.series.some(([name]) => name === key));
      if (!builtIn && !charts.has(`app-${key}`)) {
        charts.set(`app-${key}`, new Chart(list, { id: `app-${key}`, title: key, series: [[key, "app"]] }));
      }
    }
    for (const chart of charts.values()) chart.add(ts, sample);
    schedule();
  });

  context.addEventListener("ready", async () => {
    if (!context.has("Metrics.Subscribe")) {
      say($("#chart-status"), "this device publishes no metrics", "error");
      return;
    }
    try {
      await context.rpc.call("Metrics.Subscribe", {});
      list.dataset.subscribed = "true";
    } catch (error) {
      say($("#chart-status"), describeError(error), "error");
    }
  });
  context.addEventListener("panel", schedule);
  new ResizeObserver(schedule).observe(list);
}
