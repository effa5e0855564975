// Files: FS.ListExt, chunked FS.Put with progress, FS.Get into a download, FS.Remove.

import { $, el, say, formatBytes, toBase64, fromBase64, describeError } from "./util.js";

// 2048 bytes are 2732 in base64: a frame stays below the default rpc.max_frame_size (4096).
const PUT_CHUNK = 2048;
const GET_CHUNK = 8192;

export async function upload(rpc, name, bytes, progress) {
  let offset = 0;
  do {
    const chunk = bytes.subarray(offset, offset + PUT_CHUNK);
    await rpc.call("FS.Put", { filename: name, offset, data: toBase64(chunk), append: offset > 0, size: bytes.length });
    offset += chunk.length;
    progress(offset, bytes.length);
  } while (offset < bytes.length);
}

export async function download(rpc, name) {
  const parts = [];
  for (let offset = 0; ; ) {
    const reply = await rpc.call("FS.Get", { filename: name, offset, len: GET_CHUNK });
    const data = fromBase64(reply.data || "");
    parts.push(data);
    offset += data.length;
    if (!reply.left) break;
    if (!data.length) throw new Error(`${name} stopped growing at ${offset} bytes`);
  }
  return new Blob(parts, { type: "application/octet-stream" });
}

export function setup(context) {
  const { rpc } = context;
  const rows = $("#file-rows");
  const status = $("#file-status");
  const input = $("#file-input");
  const progress = $("#file-progress");

  async function refresh() {
    if (!context.has("FS.ListExt")) {
      say(status, "this device has no FS service", "error");
      return;
    }
    try {
      const entries = await rpc.call("FS.ListExt", { path: "/" });
      rows.replaceChildren(...entries.map(fileRow));
      rows.dataset.count = String(entries.length);
      $("#file-caption").textContent = `The device file system: ${entries.length} entr${entries.length === 1 ? "y" : "ies"}`;
    } catch (error) {
      say(status, describeError(error), "error");
    }
  }

  function fileRow({ name, size }) {
    const get = el("button", { type: "button", textContent: "Download", "aria-label": `Download ${name}` });
    const remove = el("button", { type: "button", className: "danger", textContent: "Delete", "aria-label": `Delete ${name}` });
    get.addEventListener("click", async () => {
      say(status, `downloading ${name}…`);
      try {
        const blob = await download(rpc, name);
        const url = URL.createObjectURL(blob);
        const link = el("a", { href: url, download: name });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        say(status, `downloaded ${name} (${formatBytes(blob.size)})`, "ok");
      } catch (error) {
        say(status, `${name}: ${describeError(error)}`, "error");
      }
    });
    let armed = false;
    remove.addEventListener("click", async () => {
      if (!armed) {
        armed = true; // a second click deletes
        remove.textContent = "Really delete?";
        return;
      }
      try {
        await rpc.call("FS.Remove", { filename: name });
        say(status, `deleted ${name}`, "ok");
      } catch (error) {
        say(status, `${name}: ${describeError(error)}`, "error");
      }
      refresh();
    });
    remove.addEventListener("blur", () => {
      armed = false;
      remove.textContent = "Delete";
    });
    return el(
      "tr",
      { dataset: { name } },
      el("td", { className: "name", textContent: name }),
      el("td", { className: "num", textContent: formatBytes(size), title: `${size} bytes` }),
      el("td", { className: "row-actions" }, get, " ", remove),
    );
  }

  $("#file-upload").addEventListener("click", async () => {
    const file = input.files[0];
    if (!file) {
      say(status, "choose a file first", "error");
      return;
    }
    progress.hidden = false;
    progress.value = 0;
    say(status, `uploading ${file.name}…`);
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      await upload(rpc, file.name, bytes, (done, total) => {
        progress.value = total ? done / total : 1;
      });
      say(status, `uploaded ${file.name} (${formatBytes(bytes.length)})`, "ok");
      input.value = "";
    } catch (error) {
      say(status, `${file.name}: ${describeError(error)}`, "error");
    }
    refresh();
  });

  context.addEventListener("ready", refresh);
  context.addEventListener("panel", (event) => event.detail === "files" && context.methods.size && refresh());
}
