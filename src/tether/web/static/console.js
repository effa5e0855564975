// RPC console: the methods from RPC.List, their description from RPC.Describe, a call.

import { $, el, say, describeError } from "./util.js";

function example(schema) {
  if (!schema || typeof schema !== "object") return {};
  if ("default" in schema) return schema.default;
  switch (schema.type) {
    case "object": {
      const value = {};
      for (const [name, property] of Object.entries(schema.properties || {})) value[name] = example(property);
      return value;
    }
    case "array": return [];
    case "string": return "";
    case "integer":
    case "number": return 0;
    case "boolean": return false;
    default: return null;
  }
}

export function setup(context) {
  const { rpc } = context;
  const select = $("#rpc-method");
  const filter = $("#rpc-filter");
  const args = $("#rpc-args");
  const result = $("#rpc-result");
  const status = $("#rpc-status");
  let names = [];

  function fill() {
    const wanted = filter.value.trim().toLowerCase();
    const current = select.value;
    select.replaceChildren(
      ...names.filter((n) => n.toLowerCase().includes(wanted)).map((n) => el("option", { value: n, textContent: n })),
    );
    if (names.includes(current)) select.value = current;
  }

  async function describe(name) {
    $("#rpc-name").textContent = name;
    delete select.dataset.described;
    $("#rpc-description").textContent = "";
    $("#rpc-signature").textContent = "";
    try {
      const description = await rpc.call("RPC.Describe", { name });
      $("#rpc-description").textContent = description.description || "";
      if (description.args) $("#rpc-signature").textContent = JSON.stringify(description.args, null, 2);
      else if (description.args_fmt) $("#rpc-signature").textContent = description.args_fmt;
      args.value = JSON.stringify(example(description.args), null, 2);
    } catch (error) {
      say(status, describeError(error), "error");
    } finally {
      select.dataset.described = name;
    }
  }

  async function call() {
    const method = select.value;
    if (!method) {
      say(status, "choose a method first", "error");
      return;
    }
    let params;
    try {
      params = args.value.trim() ? JSON.parse(args.value) : undefined;
    } catch (error) {
      say(status, `the arguments are not valid JSON: ${error.message}`, "error");
      args.setAttribute("aria-invalid", "true");
      return;
    }
    args.removeAttribute("aria-invalid");
    say(status, `calling ${method}…`);
    const started = performance.now();
    try {
      const value = await rpc.call(method, params);
      result.textContent = JSON.stringify(value, null, 2);
      result.dataset.kind = "ok";
      say(status, `${method}: OK in ${Math.round(performance.now() - started)} ms`, "ok");
    } catch (error) {
      result.textContent = JSON.stringify({ code: error.code, message: error.message }, null, 2);
      result.dataset.kind = "error";
      say(status, `${method}: ${describeError(error)}`, "error");
    }
  }

  context.addEventListener("ready", () => {
    names = [...context.methods].sort((a, b) => a.localeCompare(b));
    fill();
  });
  filter.addEventListener("input", fill);
  select.addEventListener("change", () => select.value && describe(select.value));
  $("#rpc-call").addEventListener("click", call);
  args.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      call();
    }
  });
}
