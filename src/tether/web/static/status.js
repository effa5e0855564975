// Status: who the device is, what it uses, how it is connected; refreshed live.

import { $, el, formatBytes, formatDuration, describeError } from "./util.js";

const INFO_REFRESH = 30000;

function row(list, id, term) {
  list.append(el("dt", { textContent: term }), el("dd", { id, textContent: "–" }));
}

function set(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

function network(info) {
  const parts = [];
  if (info.eth && info.eth.ip) parts.push(`Ethernet ${info.eth.ip}`);
  const wifi = info.wifi || {};
  if (wifi.sta_ip) parts.push(`Wi-Fi ${wifi.ssid || ""} ${wifi.sta_ip}`.replace("  ", " "));
  else if (wifi.status && wifi.status !== "disconnected") parts.push(`Wi-Fi ${wifi.status}`);
  return parts.length ? parts.join(", ") : "no network address";
}

async function clouds(context) {
  if (!context.has("Config.Get")) return "–";
  const { rpc } = context;
  const [mqtt, ws] = await Promise.all([rpc.call("Config.Get", { key: "mqtt" }), rpc.call("Config.Get", { key: "rpc.ws" })]);
  const configured = [];
  if (mqtt.enable && mqtt.server) configured.push(`MQTT ${mqtt.server}`);
  if (ws.enable && ws.server_address) configured.push(`RPC ${ws.server_address}`);
  return configured.length ? configured.join(", ") : "none configured";
}

async function bootState(context) {
  if (!context.has("OTA.GetBootState")) return "no OTA service";
  const state = await context.rpc.call("OTA.GetBootState");
  return `slot ${state.active_slot}, ${state.is_committed ? "committed" : "not committed"}`;
}

export function setup(context) {
  const device = $("#status-device");
  row(device, "st-id", "Device ID");
  row(device, "st-app", "App");
  row(device, "st-version", "Version");
  row(device, "st-build", "Build");
  row(device, "st-tether", "tether");
  row(device, "st-arch", "Architecture");
  row(device, "st-mac", "MAC address");
  row(device, "st-uptime", "Uptime");
  const resources = $("#status-resources");
  row(resources, "st-cpu", "CPU (machine)");
  row(resources, "st-proc-cpu", "CPU (device process)");
  row(resources, "st-ram", "Memory used");
  row(resources, "st-rss", "Device process memory");
  row(resources, "st-fs", "Storage used");
  const links = $("#status-links");
  row(links, "st-link", "This page");
  row(links, "st-net", "Network");
  row(links, "st-cloud-config", "Cloud links configured");
  row(links, "st-cloud", "Cloud links up");
  row(links, "st-update", "Update");

  let metricsAt = 0;
  context.addEventListener("info", (event) => {
    const info = event.detail;
    set("st-id", info.id);
    set("st-app", info.app);
    set("st-version", info.fw_version);
    set("st-build", info.fw_id || "–");
    set("st-tether", info.mg_version);
    set("st-arch", info.arch);
    set("st-mac", info.mac);
    set("st-uptime", formatDuration(info.uptime));
    if (Date.now() - metricsAt > 5000) {
      set("st-ram", `${formatBytes(info.ram_size - info.ram_free)} of ${formatBytes(info.ram_size)}`);
    }
    set("st-fs", `${formatBytes(info.fs_size - info.fs_free)} of ${formatBytes(info.fs_size)}`);
    set("st-net", network(info));
    $("#status").dataset.loaded = "true";
  });

  context.rpc.addEventListener("Metrics.Event", (event) => {
    const sample = event.detail || {};
    metricsAt = Date.now();
    if (typeof sample.cpu === "number") set("st-cpu", `${sample.cpu.toFixed(1)} %`);
    if (typeof sample.proc_cpu === "number") set("st-proc-cpu", `${sample.proc_cpu.toFixed(1)} %`);
    if (typeof sample.mem === "number" && context.info) {
      const used = (context.info.ram_size * sample.mem) / 100;
      set("st-ram", `${sample.mem.toFixed(1)} % (${formatBytes(used)} of ${formatBytes(context.info.ram_size)})`);
    }
    if (typeof sample.proc_rss === "number") set("st-rss", formatBytes(sample.proc_rss));
    if (typeof sample.cloud === "number") set("st-cloud", String(sample.cloud));
  });

  context.rpc.addEventListener("state", (event) => {
    set("st-link", event.detail === "open" ? "connected over WebSocket" : "not connected");
  });

  async function refreshLinks() {
    try {
      set("st-cloud-config", await clouds(context));
      set("st-update", await bootState(context));
    } catch (error) {
      set("st-update", describeError(error));
    }
  }

  context.addEventListener("ready", refreshLinks);
  context.addEventListener("ota", refreshLinks);
  setInterval(() => {
    if (context.info) set("st-uptime", formatDuration(context.info.uptime + (Date.now() - context.infoAt) / 1000));
  }, 1000);
  setInterval(() => {
    if (context.rpc.state === "open" && context.info && document.visibilityState === "visible") {
      context.refreshInfo().catch(() => {}); // the next refresh or reconnect tries again
    }
  }, INFO_REFRESH);
}
