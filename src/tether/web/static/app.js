// The dashboard: one RPC connection to the device, the panels, and sign-in.

import { Connection } from "./rpc.js";
import { $, say } from "./util.js";
import * as status from "./status.js";
import * as settings from "./settings.js";
import * as charts from "./charts.js";
import * as rpcConsole from "./console.js";
import * as logs from "./logs.js";
import * as files from "./files.js";
import * as update from "./update.js";

const PANELS = ["status", "settings", "charts", "rpc", "logs", "files", "update"];
const LINK_TEXT = { connecting: "connecting…", open: "connected", closed: "reconnecting…" };

function login(realm, problem) {
  const dialog = $("#login");
  $("#login-realm").textContent = `The device asks for a user of realm “${realm}”.`;
  say($("#login-problem"), problem, "error");
  $("#login-password").value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const answer = { username: $("#login-user").value, password: $("#login-password").value };
        $("#login-password").value = "";
        resolve(dialog.returnValue === "ok" ? answer : null);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

/** What the panels share: the connection, the device's methods and info, and events. */
class Context extends EventTarget {
  constructor(rpc) {
    super();
    this.rpc = rpc;
    this.methods = new Set();
    this.info = null;
    this.infoAt = 0;
    this.panel = "";
  }

  has(method) {
    return this.methods.has(method);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  async refreshInfo() {
    this.info = await this.rpc.call("Sys.GetInfo");
    this.infoAt = Date.now();
    this.emit("info", this.info);
    return this.info;
  }
}

function showPanel(context) {
  const wanted = location.hash.slice(1);
  const panel = PANELS.includes(wanted) ? wanted : "status";
  for (const name of PANELS) {
    $(`#${name}`).hidden = name !== panel;
    const tab = $(`.tabs a[data-panel="${name}"]`);
    if (name === panel) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  context.panel = panel;
  context.emit("panel", panel);
}

async function ready(context) {
  const { rpc } = context;
  try {
    context.methods = new Set(await rpc.call("RPC.List"));
    const info = await context.refreshInfo();
    document.title = `${info.id} · ${info.app}`;
    $("#title").textContent = info.id;
    $("#subtitle").textContent = `${info.app} ${info.fw_version}`;
  } catch (error) {
    say($("#link"), `the device did not answer: ${error.message}`, "error");
    return;
  }
  context.emit("ready");
}

function main() {
  // The page's own origin, its scheme turned into the WebSocket one (http → ws, https → wss).
  const rpc = new Connection(`${location.protocol.replace("http", "ws")}//${location.host}/rpc`, { login });
  const context = new Context(rpc);
  const link = $("#link");
  rpc.addEventListener("state", (event) => {
    link.dataset.state = event.detail;
    say(link, LINK_TEXT[event.detail] || event.detail);
  });
  rpc.addEventListener("user", (event) => {
    link.title = `signed in as ${event.detail}`;
  });
  rpc.addEventListener("open", () => ready(context));
  for (const panel of [status, settings, charts, rpcConsole, logs, files, update]) panel.setup(context);
  window.addEventListener("hashchange", () => showPanel(context));
  showPanel(context);
  rpc.open();
}

main();
