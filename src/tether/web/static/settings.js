// Settings: a form made from Config.Schema, filled from Config.Get, saved with Config.Set.

import { $, el, say, describeError } from "./util.js";

const REDACTED = "********";
// Applied by a running device at once (logging); everything else after a restart.
const LIVE = /^debug\./;
const RANGES = { i: [-(2 ** 31), 2 ** 31 - 1], ui: [0, 2 ** 32 - 1] };

function fieldId(path) {
  return `cfg-${path.replaceAll(".", "-")}`;
}

function lookup(tree, path) {
  let value = tree;
  for (const part of path.split(".")) {
    if (value === null || typeof value !== "object" || !(part in value)) return undefined;
    value = value[part];
  }
  return value;
}

function nest(tree, path, value) {
  const parts = path.split(".");
  let node = tree;
  for (const part of parts.slice(0, -1)) node = node[part] ??= {};
  node[parts.at(-1)] = value;
}

/** The value of a field as the configuration holds it, or throws Error(message). */
function parse(field) {
  const { type, input } = field;
  if (type === "b") return input.checked;
  const text = input.value.trim();
  if (type === "s") return input.value;
  if (type === "i" || type === "ui") {
    if (!/^[+-]?\d+$/.test(text)) throw new Error("a whole number is needed");
    const value = Number(text);
    const [low, high] = RANGES[type];
    if (value < low || value > high) throw new Error(`between ${low} and ${high}`);
    return value;
  }
  const value = Number(text);
  if (!text || !Number.isFinite(value)) throw new Error("a number is needed");
  return value;
}

export function setup(context) {
  const { rpc } = context;
  const form = $("#settings-form");
  const root = $("#settings-fields");
  const message = $("#settings-message");
  const reboot = $("#settings-reboot");
  const filter = $("#settings-filter");
  let fields = new Map(); // path -> {type, input, original, secret, row, error}
  let loaded = false;

  function build(entries) {
    const containers = new Map([["", root]]);
    fields = new Map();
    const parts = [];
    for (const [path, type, params = {}] of entries) {
      if (params.hide) continue;
      const parentPath = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
      const parent = containers.get(parentPath);
      if (!parent) continue; // under a hidden object
      const title = params.title || path.slice(path.lastIndexOf(".") + 1);
      if (type === "o") {
        const fieldset = el("fieldset", { className: parentPath ? "group nested" : "group", dataset: { path } });
        fieldset.append(el("legend", {}, title, " ", el("code", { textContent: path })));
        containers.set(path, fieldset);
        if (parent === root) parts.push(fieldset);
        else parent.append(fieldset);
        continue;
      }
      const id = fieldId(path);
      const error = el("span", { className: "field-error", id: `${id}-error`, role: "alert" });
      const hint = el("code", { className: "path", id: `${id}-path`, textContent: path });
      let input;
      if (type === "b") {
        input = el("input", { type: "checkbox", id });
      } else {
        input = el("input", { id, type: params.secret ? "password" : "text", autocomplete: params.secret ? "new-password" : "off", spellcheck: false });
        if (type !== "s") input.inputMode = type === "f" || type === "d" ? "decimal" : "numeric";
      }
      input.dataset.path = path;
      if (type === "b") input.disabled = Boolean(params.read_only);
      else input.readOnly = Boolean(params.read_only);
      input.setAttribute("aria-describedby", `${id}-path ${id}-error`);
      const label = el("label", { for: id, textContent: title });
      const row = el("div", { className: `field type-${type}`, dataset: { path } }, ...(type === "b" ? [input, label] : [label, input]), hint, error);
      parent.append(row);
      fields.set(path, { type, input, secret: Boolean(params.secret), row, error, original: undefined });
      input.addEventListener("input", () => changed(path));
      input.addEventListener("change", () => changed(path));
    }
    root.replaceChildren(...parts);
  }

  function fill(tree) {
    for (const [path, field] of fields) {
      const value = lookup(tree, path);
      field.original = value;
      field.error.textContent = "";
      field.input.removeAttribute("aria-invalid");
      delete field.row.dataset.changed;
      if (field.type === "b") field.input.checked = Boolean(value);
      else if (field.secret) {
        // Never shown, even to a signed-in user: typed anew to change it.
        field.input.value = "";
        field.input.placeholder = value ? "set (type to replace)" : "not set";
      } else field.input.value = value === undefined || value === null ? "" : String(value);
    }
    count();
  }

  function isChanged(field) {
    if (field.type === "b") return field.input.checked !== Boolean(field.original);
    if (field.secret) return field.input.value !== "";
    if (field.type === "s") return field.input.value !== (field.original ?? "");
    return field.input.value.trim() !== String(field.original ?? "");
  }

  function changed(path) {
    const field = fields.get(path);
    if (isChanged(field)) field.row.dataset.changed = "true";
    else delete field.row.dataset.changed;
    field.error.textContent = "";
    field.input.removeAttribute("aria-invalid");
    count();
  }

  function count() {
    const n = [...fields.values()].filter(isChanged).length;
    form.dataset.changes = String(n);
    if (n) say(message, `${n} unsaved change${n === 1 ? "" : "s"}`);
  }

  async function load() {
    if (!context.has("Config.Schema") || !context.has("Config.Get")) {
      say(message, "this device does not describe its configuration (no Config.Schema)", "error");
      return;
    }
    try {
      const [entries, tree] = await Promise.all([rpc.call("Config.Schema"), rpc.call("Config.Get")]);
      build(entries);
      fill(tree);
      loaded = true;
      form.dataset.loaded = "true";
      say(message, "");
    } catch (error) {
      say(message, describeError(error), "error");
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const tree = {};
    const paths = [];
    let firstBad = null;
    for (const [path, field] of fields) {
      if (!isChanged(field)) continue;
      try {
        const value = parse(field);
        if (field.secret && value === REDACTED) throw new Error("choose another value");
        nest(tree, path, value);
        paths.push(path);
      } catch (problem) {
        field.error.textContent = problem.message;
        field.input.setAttribute("aria-invalid", "true");
        firstBad ??= field.input;
      }
    }
    if (firstBad) {
      say(message, "not saved: fix the settings marked in red", "error");
      firstBad.focus();
      return;
    }
    if (!paths.length) {
      say(message, "nothing to save");
      return;
    }
    say(message, "saving…");
    try {
      await rpc.call("Config.Set", { config: tree, save: true });
      fill(await rpc.call("Config.Get"));
      const later = paths.filter((path) => !LIVE.test(path));
      if (later.length) {
        say(message, `Saved. Restart the device to apply ${later.join(", ")}.`, "ok");
        reboot.hidden = false;
      } else {
        say(message, "Saved and applied.", "ok");
      }
      form.dataset.saved = paths.join(" ");
    } catch (error) {
      say(message, `not saved: ${describeError(error)}`, "error");
    }
  });

  $("#settings-discard").addEventListener("click", async () => {
    try {
      fill(await rpc.call("Config.Get"));
      say(message, "changes discarded");
    } catch (error) {
      say(message, describeError(error), "error");
    }
  });

  reboot.addEventListener("click", async () => {
    try {
      await rpc.call("Sys.Reboot", { delay_ms: 500 });
      reboot.hidden = true;
      say(message, "restarting…", "ok");
    } catch (error) {
      say(message, describeError(error), "error");
    }
  });

  filter.addEventListener("input", () => {
    const wanted = filter.value.trim().toLowerCase();
    for (const field of fields.values()) {
      const text = `${field.row.dataset.path} ${field.row.querySelector("label").textContent}`.toLowerCase();
      field.row.hidden = Boolean(wanted) && !text.includes(wanted);
    }
    for (const group of root.querySelectorAll("fieldset")) {
      group.hidden = Boolean(wanted) && !group.querySelector(".field:not([hidden])");
    }
  });

  // Load when first shown, and again after a reconnect (a restart may have changed it).
  context.addEventListener("panel", (event) => event.detail === "settings" && !loaded && context.methods.size && load());
  context.addEventListener("ready", () => {
    loaded = false;
    if (context.panel === "settings") load();
  });
}
