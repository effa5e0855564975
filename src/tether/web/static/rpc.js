// The device's public RPC over the WebSocket /rpc (mgos-rpc.md §1, §2.1, §4).
//
// Requests are mg_rpc frames {"id", "src", "method", "params"}; replies carry the same
// id with "result" or "error"; frames without an id are notifications
// (Console.Event, Metrics.Event) and are dispatched as events of their method's name.
// When the device's ACL wants a user, a call gets error 401 whose message is a JSON
// digest challenge: the page asks for a name and password once (`login`), keeps only
// HA1, and sends every later frame with an "auth" object. The connection is opened
// again after it drops (a reboot, an update), with a growing delay.

import { digestHa1, digestResponse } from "./digest.js";

/** An error reply of the device ({code, message}), or a local failure (code null). */
export class RpcError extends Error {
  constructor(code, message) {
    super(message || `error ${code}`);
    this.name = "RpcError";
    this.code = code;
  }
}

/** The challenge of a 401 reply, or null when it is not a digest one. */
export function parseChallenge(message) {
  try {
    const challenge = JSON.parse(message);
    if (challenge && challenge.auth_type === "digest" && typeof challenge.realm === "string" && "nonce" in challenge) {
      return challenge;
    }
  } catch {
    // not JSON: not a challenge
  }
  return null;
}

function randomWord() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

const RETRY_MIN = 500;
const RETRY_MAX = 5000;
const CALL_TIMEOUT = 20000;

export class Connection extends EventTarget {
  /**
   * @param {string} url the WebSocket URL of the device's /rpc.
   * @param {object} options login(realm, problem) resolves to {username, password}, or null to give up.
   */
  constructor(url, { login }) {
    super();
    this.url = url;
    this.login = login;
    this.src = `web_${randomWord().toString(16)}`;
    this.state = "closed";
    this.opened = 0;
    this._nextId = randomWord() % 1000000 + 1;
    this._pending = new Map();
    this._ws = null;
    this._retry = 0;
    this._credentials = null; // {username, realm, algorithm, ha1}: never the password
    this._verified = false; // the credentials passed at least once
    this._challenge = null;
    this._signingIn = null;
    this._waiters = [];
  }

  open() {
    if (this._ws) return;
    this._setState("connecting");
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.addEventListener("open", () => {
      this._retry = 0;
      this.opened += 1;
      this._setState("open");
      for (const resolve of this._waiters.splice(0)) resolve();
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (event) => this._receive(event.data));
    ws.addEventListener("close", () => {
      if (this._ws !== ws) return;
      this._ws = null;
      for (const { reject, timer } of this._pending.values()) {
        clearTimeout(timer);
        reject(new RpcError(null, "the connection closed"));
      }
      this._pending.clear();
      this._setState("closed");
      this.dispatchEvent(new Event("close"));
      const delay = Math.min(RETRY_MIN * 2 ** this._retry, RETRY_MAX);
      this._retry += 1;
      setTimeout(() => this.open(), delay);
    });
  }

  _setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  _whenOpen(timeout) {
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._waiters = this._waiters.filter((w) => w !== done);
        reject(new RpcError(null, "not connected to the device"));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this._waiters.push(done);
    });
  }

  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not a frame: ignored, as the firmware does
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.method !== undefined) {
      if (frame.id === undefined) this.dispatchEvent(new CustomEvent(frame.method, { detail: frame.params }));
      return;
    }
    const pending = this._pending.get(frame.id);
    if (pending) {
      this._pending.delete(frame.id);
      clearTimeout(pending.timer);
      pending.resolve(frame);
    }
  }

  _exchange(frame, timeout) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(frame.id);
        reject(new RpcError(null, `no reply to ${frame.method} within ${Math.round(timeout / 1000)} s`));
      }, timeout);
      this._pending.set(frame.id, { resolve, reject, timer });
      this._ws.send(JSON.stringify(frame));
    });
  }

  async _auth() {
    const { username, realm, algorithm, ha1 } = this._credentials;
    const nonce = this._challenge.nonce;
    const cnonce = randomWord();
    const response = await digestResponse(algorithm, ha1, nonce, cnonce);
    const auth = { realm, username, nonce, cnonce, response };
    if (this._challenge.algorithm) auth.algorithm = this._challenge.algorithm;
    return auth;
  }

  _signIn(challenge, problem) {
    // One dialog for every call that needs it at the same time.
    if (!this._signingIn) {
      this._signingIn = (async () => {
        try {
          const answer = await this.login(challenge.realm, problem);
          if (!answer) throw new RpcError(401, "sign-in cancelled");
          const algorithm = challenge.algorithm || "MD5";
          const ha1 = await digestHa1(algorithm, answer.username, challenge.realm, answer.password);
          this._credentials = { username: answer.username, realm: challenge.realm, algorithm, ha1 };
          this._verified = false;
          this.dispatchEvent(new CustomEvent("user", { detail: answer.username }));
        } finally {
          this._signingIn = null;
        }
      })();
    }
    return this._signingIn;
  }

  /**
   * Call method with params; resolves to the result, rejects with an RpcError.
   * @param {object} options timeout in milliseconds (20 s).
   */
  async call(method, params, { timeout = CALL_TIMEOUT } = {}) {
    for (let attempt = 0; attempt < 5; attempt++) {
      await this._whenOpen(timeout);
      const frame = { id: this._nextId++, src: this.src, method };
      if (params !== undefined) frame.params = params;
      const credentials = this._credentials;
      if (credentials && this._challenge) frame.auth = await this._auth();
      const reply = await this._exchange(frame, timeout);
      const error = reply.error;
      if (!error || error.code === 0) {
        // §3: Sys.SetDebug answers success as "error": {"code": 0}.
        if (frame.auth && this._credentials === credentials) this._verified = true;
        return reply.result === undefined ? null : reply.result;
      }
      if (error.code !== 401) throw new RpcError(error.code, error.message);
      const challenge = parseChallenge(error.message);
      if (!challenge) throw new RpcError(401, error.message);
      this._challenge = challenge;
      if (this._credentials !== credentials) continue; // someone signed in meanwhile
      if (!frame.auth) {
        if (!this._credentials) await this._signIn(challenge, "");
        continue;
      }
      if (this._verified) {
        this._verified = false; // a stale nonce: once more with the fresh one
        continue;
      }
      await this._signIn(challenge, "wrong user name or password");
    }
    throw new RpcError(401, `${method} was refused`);
  }
}
