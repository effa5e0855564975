// Logs: Console.Event pushes, live, with a level filter, a search and pause.

import { $, el, say, describeError } from "./util.js";

const KEEP = 2000; // lines kept in the page
const LEVELS = ["error", "warning", "info", "debug", "verbose"];

function time(ts) {
  const date = new Date(ts * 1000);
  return date.toLocaleTimeString([], { hour12: false }) + `.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

export function setup(context) {
  const view = $("#log-lines");
  const level = $("#log-level");
  const find = $("#log-find");
  const pause = $("#log-pause");
  const status = $("#log-status");
  const lines = []; // {level, text, node}
  let received = 0;
  let paused = false;
  let held = 0;

  function visible(line) {
    const wanted = find.value.trim().toLowerCase();
    return line.level <= Number(level.value) && (!wanted || line.text.toLowerCase().includes(wanted));
  }

  function render() {
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 24;
    view.replaceChildren(...lines.filter(visible).map((line) => line.node));
    if (atBottom) view.scrollTop = view.scrollHeight;
  }

  function show() {
    say(status, paused ? `paused; ${held} new line${held === 1 ? "" : "s"} held` : `${received} lines received`);
  }

  context.rpc.addEventListener("Console.Event", (event) => {
    const { line = "", level: lineLevel = 2, ts = Date.now() / 1000 } = event.detail || {};
    const text = `${time(ts)} ${line}`;
    const node = el("div", { className: `line l${lineLevel}`, textContent: text, title: LEVELS[lineLevel] || "" });
    const entry = { level: lineLevel, text, node };
    lines.push(entry);
    if (lines.length > KEEP) lines.shift().node.remove();
    received += 1;
    view.dataset.lines = String(received);
    if (paused) {
      held += 1;
    } else if (visible(entry)) {
      const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 24;
      view.append(node);
      if (atBottom) view.scrollTop = view.scrollHeight;
    }
    show();
  });

  context.addEventListener("ready", async () => {
    if (!context.has("Console.Subscribe")) return;
    try {
      await context.rpc.call("Console.Subscribe", { level: 4 });
      view.dataset.subscribed = "true";
      show();
    } catch (error) {
      say(status, describeError(error), "error");
    }
  });
  level.addEventListener("change", render);
  find.addEventListener("input", render);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      held = 0;
      render();
    }
    show();
  });
  $("#log-clear").addEventListener("click", () => {
    lines.length = 0;
    held = 0;
    render();
    show();
  });
}
