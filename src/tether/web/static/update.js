// Update: a bundle uploaded with OTA.Begin/Write/End, then OTA.Commit or OTA.Revert.

import { $, el, say, toBase64, describeError } from "./util.js";

const CHUNK = 2048; // as `tether ota`: a frame stays below the default rpc.max_frame_size
const STATES = ["idle", "in progress", "failed", "installed"];
const INSTALL_TIMEOUT = 600000;

function rows(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([term, value, id]) => [el("dt", { textContent: term }), el("dd", { id, textContent: value })]));
}

export function setup(context) {
  const { rpc } = context;
  const state = $("#update-state");
  const message = $("#ota-message");
  const progress = $("#ota-progress");
  const commit = $("#ota-commit");
  const revert = $("#ota-revert");
  const upload = $("#ota-upload");
  let busy = false;

  async function refresh() {
    if (!context.has("OTA.GetBootState")) {
      rows(state, [["Updates", "this device has no OTA service", "ota-none"]]);
      for (const button of [commit, revert, upload]) button.disabled = true;
      return;
    }
    try {
      const [boot, ota] = await Promise.all([rpc.call("OTA.GetBootState"), rpc.call("OTA.Status")]);
      const info = context.info || {};
      rows(state, [
        ["Running", `${info.app || ""} ${info.fw_version || ""}`.trim(), "ota-version"],
        ["Active slot", String(boot.active_slot), "ota-slot"],
        ["Committed", boot.is_committed ? "yes" : `no: rolled back unless committed within ${boot.commit_timeout} s of the update`, "ota-committed"],
        ["Previous slot", boot.revert_slot === boot.active_slot ? "none" : String(boot.revert_slot), "ota-revert-slot"],
        ["Update", ota.message ? `${STATES[ota.state] || ota.state}: ${ota.message}` : STATES[ota.state] || String(ota.state), "ota-status"],
      ]);
      state.dataset.committed = String(boot.is_committed);
      state.dataset.version = info.fw_version || "";
      commit.disabled = busy || boot.is_committed;
      revert.disabled = busy || boot.revert_slot === boot.active_slot;
      upload.disabled = busy;
    } catch (error) {
      say(message, describeError(error), "error");
    }
  }

  upload.addEventListener("click", async () => {
    const file = $("#ota-file").files[0];
    const commitTimeout = $("#ota-commit-timeout");
    if (!file) {
      say(message, "choose a bundle first", "error");
      return;
    }
    if (!/^\d+$/.test(commitTimeout.value.trim())) {
      commitTimeout.setAttribute("aria-invalid", "true");
      say(message, "the commit timeout is a whole number of seconds", "error");
      return;
    }
    commitTimeout.removeAttribute("aria-invalid");
    busy = true;
    upload.disabled = commit.disabled = revert.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    const bytes = new Uint8Array(await file.arrayBuffer());
    try {
      say(message, `uploading ${file.name}…`);
      await rpc.call("OTA.Begin", { size: bytes.length, timeout: 600, commit_timeout: Number(commitTimeout.value) });
      for (let offset = 0; offset < bytes.length; offset += CHUNK) {
        const chunk = bytes.subarray(offset, offset + CHUNK);
        await rpc.call("OTA.Write", { offset, data: toBase64(chunk) });
        progress.value = (offset + chunk.length) / bytes.length;
      }
      say(message, "verifying and installing…");
      await rpc.call("OTA.End", {}, { timeout: INSTALL_TIMEOUT });
      say(message, "installed: the device restarts into the new version…", "ok");
      state.dataset.restarting = "true";
    } catch (error) {
      if (error.code === null && rpc.state !== "open") {
        say(message, "the device went away during the install: checking once it is back…");
        state.dataset.restarting = "true";
      } else {
        say(message, `update failed: ${describeError(error)}`, "error");
      }
    } finally {
      busy = false;
    }
    if (rpc.state === "open" && state.dataset.restarting !== "true") refresh();
  });

  commit.addEventListener("click", async () => {
    try {
      await rpc.call("OTA.Commit");
      say(message, "committed: this version stays", "ok");
    } catch (error) {
      say(message, `commit failed: ${describeError(error)}`, "error");
    }
    await refresh();
    context.emit("ota");
  });

  revert.addEventListener("click", async () => {
    try {
      await rpc.call("OTA.Revert");
      say(message, "reverting: the device restarts into the previous version…", "ok");
      state.dataset.restarting = "true";
    } catch (error) {
      say(message, `revert failed: ${describeError(error)}`, "error");
    }
  });

  context.addEventListener("ready", async () => {
    const restarted = state.dataset.restarting === "true";
    delete state.dataset.restarting;
    await refresh();
    if (restarted) say(message, `the device is back, running ${context.info.fw_version}`, "ok");
  });
}
