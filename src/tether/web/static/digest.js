// Hashes for in-frame digest authentication (mgos-rpc.md §4): MD5 (RFC 1321), which
// WebCrypto does not offer, and SHA-256 (FIPS 180-4) for pages that are not a secure
// context (a page from a device's LAN address over plain HTTP has no crypto.subtle).

const encoder = new TextEncoder();

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// RFC 1321 §3.4: per-round shift amounts and the sine-derived constants.
const MD5_SHIFT = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const MD5_K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);

function pad(bytes, bigEndian) {
  const length = bytes.length;
  const total = (((length + 8) >> 6) + 1) << 6;
  const block = new Uint8Array(total);
  block.set(bytes);
  block[length] = 0x80;
  const view = new DataView(block.buffer);
  const bits = length * 8;
  const low = bits >>> 0;
  const high = Math.floor(bits / 2 ** 32) >>> 0;
  if (bigEndian) {
    view.setUint32(total - 8, high, false);
    view.setUint32(total - 4, low, false);
  } else {
    view.setUint32(total - 8, low, true);
    view.setUint32(total - 4, high, true);
  }
  return view;
}

/** MD5 of bytes (a Uint8Array), as lower-case hex. */
export function md5(bytes) {
  const view = pad(bytes, false);
  let a0 = 0x67452301, b0 = 0xefcdab89, c0 = 0x98badcfe, d0 = 0x10325476;
  const m = new Uint32Array(16);
  for (let offset = 0; offset < view.byteLength; offset += 64) {
    for (let i = 0; i < 16; i++) m[i] = view.getUint32(offset + i * 4, true);
    let a = a0, b = b0, c = c0, d = d0;
    for (let i = 0; i < 64; i++) {
      let f, g;
      if (i < 16) { f = (b & c) | (~b & d); g = i; }
      else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
      else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
      else { f = c ^ (b | ~d); g = (7 * i) % 16; }
      const sum = (a + f + MD5_K[i] + m[g]) >>> 0;
      const s = MD5_SHIFT[(i >> 4) * 4 + (i % 4)];
      a = d; d = c; c = b;
      b = (b + ((sum << s) | (sum >>> (32 - s)))) >>> 0;
    }
    a0 = (a0 + a) >>> 0; b0 = (b0 + b) >>> 0; c0 = (c0 + c) >>> 0; d0 = (d0 + d) >>> 0;
  }
  const out = new DataView(new ArrayBuffer(16));
  [a0, b0, c0, d0].forEach((word, i) => out.setUint32(i * 4, word, true));
  return hex(new Uint8Array(out.buffer));
}

// FIPS 180-4 §4.2.2 and §5.3.3.
const SHA256_K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

function rotr(x, n) {
  return (x >>> n) | (x << (32 - n));
}

/** SHA-256 of bytes (a Uint8Array), as lower-case hex, without WebCrypto. */
export function sha256(bytes) {
  const view = pad(bytes, true);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  for (let offset = 0; offset < view.byteLength; offset += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(offset + i * 4, false);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h7] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (h7 + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h7 = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, h7].forEach((word, i) => { h[i] = (h[i] + word) >>> 0; });
  }
  const out = new DataView(new ArrayBuffer(32));
  h.forEach((word, i) => out.setUint32(i * 4, word, false));
  return hex(new Uint8Array(out.buffer));
}

/**
 * The hex digest of text (UTF-8) with a digest algorithm of §4: "MD5" or "SHA-256".
 * SHA-256 uses WebCrypto where the page has it.
 */
export async function digest(algorithm, text) {
  const bytes = encoder.encode(text);
  const name = String(algorithm || "MD5").toUpperCase();
  if (name === "MD5") return md5(bytes);
  if (name !== "SHA-256") throw new Error(`unsupported digest algorithm ${JSON.stringify(algorithm)}`);
  if (globalThis.crypto && crypto.subtle) {
    return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
  }
  return sha256(bytes);
}

/** HA1 = H(user ":" realm ":" password): what an htdigest file stores. */
export function digestHa1(algorithm, username, realm, password) {
  return digest(algorithm, `${username}:${realm}:${password}`);
}

/** The response of an in-frame auth object: H(HA1 ":" nonce ":1:" cnonce ":auth:" H("dummy_method:dummy_uri")). */
export async function digestResponse(algorithm, ha1, nonce, cnonce) {
  const ha2 = await digest(algorithm, "dummy_method:dummy_uri");
  return digest(algorithm, `${ha1}:${nonce}:1:${cnonce}:auth:${ha2}`);
}
