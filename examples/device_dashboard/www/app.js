// The dashboard's page script: no framework, no build step, nothing from a CDN.
"use strict";

const cpuOutput = document.getElementById("cpu");
const cpuTime = document.getElementById("cpu-time");
const memoryOutput = document.getElementById("memory");
const chart = document.getElementById("chart");
const wsState = document.getElementById("ws-state");
const alarm = Number(document.getElementById("alarm-state").textContent);
const samples = []; // memory samples: {time, percent, used_mib, total_mib}
const MAX_SAMPLES = 120;

// ---------------------------------------------------------------- CPU: REST

async function pollCpu() {
  try {
    const response = await fetch("/api/cpu", { cache: "no-store" });
    if (response.ok) {
      const data = await response.json();
      const updates = Number(cpuOutput.dataset.updates) + 1;
      cpuOutput.dataset.updates = String(updates);
      cpuOutput.textContent = data.cpu === null ? "measuring" : `${data.cpu.toFixed(1)} %`;
      cpuOutput.classList.toggle("alarm", data.cpu !== null && data.cpu >= alarm);
      cpuTime.textContent = `updated ${new Date(data.time * 1000).toLocaleTimeString()} (${data.source})`;
    }
  } catch (error) {
    cpuTime.textContent = "device not reachable";
  }
  setTimeout(pollCpu, 1000);
}

// ---------------------------------------------------------- memory: WebSocket

function draw() {
  const ctx = chart.getContext("2d");
  const { width, height } = chart;
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#ddd";
  ctx.lineWidth = 1;
  for (const level of [25, 50, 75]) {
    const y = height - (level / 100) * height;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(width, y);
    ctx.stroke();
  }
  const points = samples.filter((s) => s.percent !== null);
  if (points.length === 0) {
    return;
  }
  const step = width / (MAX_SAMPLES - 1);
  const x0 = width - (points.length - 1) * step;
  ctx.strokeStyle = "#1a73e8";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((s, i) => {
    const x = x0 + i * step;
    const y = height - (s.percent / 100) * height;
    if (i === 0) {
      ctx.moveTo(x, y);
    } else {
      ctx.lineTo(x, y);
    }
  });
  ctx.stroke();
}

function addSample(sample) {
  samples.push(sample);
  if (samples.length > MAX_SAMPLES) {
    samples.splice(0, samples.length - MAX_SAMPLES);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.onopen = () => {
    wsState.textContent = "connected";
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "history") {
      samples.length = 0;
      message.samples.forEach(addSample);
    } else if (message.type === "memory") {
      addSample(message);
      chart.dataset.pushes = String(Number(chart.dataset.pushes) + 1);
      memoryOutput.textContent =
        message.percent === null
          ? "n/a"
          : `${message.percent.toFixed(1)} % (${message.used_mib.toFixed(0)} of ${message.total_mib.toFixed(0)} MiB)`;
    }
    draw();
  };
  ws.onclose = () => {
    wsState.textContent = "disconnected; retrying";
    setTimeout(connect, 2000);
  };
}

draw();
pollCpu();
connect();
