// Small helpers shared by the panels.

/** An element: el("td", {className: "num", textContent: "3"}, child…). Never parses HTML. */
export function el(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "for" || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${UNITS[unit]}`;
}

export function formatDuration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  const clock = `${String(hours).padStart(2, "0")}:${String(minutes).padStart(2, "0")}:${String(rest).padStart(2, "0")}`;
  return days ? `${days} d ${clock}` : clock;
}

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Show text in a status line; kind "error" or "ok" colours it. */
export function say(node, text, kind = "") {
  node.textContent = text;
  node.dataset.kind = kind;
}

export function describeError(error) {
  return error && error.code !== null && error.code !== undefined
    ? `error ${error.code}: ${error.message}`
    : String(error && error.message ? error.message : error);
}
