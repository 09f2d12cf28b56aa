// A client for pgws.v1, the structured protocol of postgres-websockets (Swift).
// The wire contract is PROTOCOL.md; this file is the whole client: one ES module, no
// dependency, no build step. It runs in browsers (<script type="module">) and in Node 20+
// (`node --experimental-websocket`, or pass `WebSocket` in the options).
//
//   import { PgwsClient } from "./pgws.js";
//   const client = new PgwsClient("ws://localhost:3000/", { getToken: () => fetchToken() });
//   client.subscribe("chat", (message) => console.log(message.channel, message.offset, message.payload));
//   await client.publish("chat", "hello");   // resolved once PostgreSQL committed the NOTIFY

export const PROTOCOL = "pgws.v1";

/** Close codes after which the client does not reconnect: policy (1008), expired token (3001), operator (3003). */
export const TERMINAL_CLOSE_CODES = Object.freeze([1008, 3001, 3003]);

/** An `error` frame of the server, or a request that could not get an answer (`disconnected`, `closed`). */
export class PgwsError extends Error {
  constructor(code, reason, details = {}) {
    super(`${code}: ${reason}`);
    this.name = "PgwsError";
    /** `bad_request`, `unauthorized`, `forbidden`, `not_found`, `too_large`, `unavailable`,
     * `rate_limited` (from the server); `disconnected`, `closed`, `unsubscribed`, `token` (from the client). */
    this.code = code;
    this.reason = reason;
    Object.assign(this, details);
  }
}

/** The claims of a JWT, decoded without verifying it; null when they cannot be read. */
export function decodeClaims(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims !== null && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** A token's `exp` in seconds since 1970, or null when it has none (or cannot be read). */
export function tokenExpiry(token) {
  const exp = decodeClaims(token)?.exp;
  return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * One pgws.v1 connection that survives drops: it reconnects with backoff, resubscribes every
 * channel with `since` (the offset of the last message it got), and refreshes its token
 * before `exp` without reconnecting.
 *
 * Events (`on(type, handler)` returns a function that removes the handler):
 * - `state`        `{state, previous, code?, reason?, attempt?, delay?}`; state is
 *                  `connecting`, `open`, `reconnecting` or `closed` (final)
 * - `subscribed`   `{channel, offset, recovered, since, resubscribe}` for every `subscribed`
 *                  reply, including those after a reconnect (`resubscribe: true`)
 * - `unsubscribed` `{channel, reason}` when the server drops a channel (after a `refresh`)
 * - `message`      `{channel, offset, payload}` for every channel
 * - `join`, `leave`, `presence`   the frames as they come (presence is optional on servers)
 * - `refreshed`    `{exp}` after the server took a new token
 * - `error`        a PgwsError no promise was waiting for (e.g. a resubscription refused,
 *                  a token refresh that failed)
 */
export class PgwsClient {
  #url;
  #WebSocket;
  #token = null;
  #getToken = null;
  #reconnect;
  #refreshMargin;
  #stableAfterMs;

  #state = "idle";
  #socket = null;
  #generation = 0;
  #everOpened = false;
  /** A reconnect attempt failed before opening: the token may be the cause (revoked, say). */
  #tokenSuspect = false;
  #openedAt = 0;
  #attempt = 0;
  #reconnectTimer = null;
  #refreshTimer = null;
  #refreshAtMs = Infinity;
  #refreshing = false;
  #nextRef = 1;
  /** ref -> {type, channel?, resolve?, reject?, since?, resubscribe?, token?} of requests sent on the current socket. */
  #pending = new Map();
  /** Publishes waiting for an open socket: {channel, payload, resolve, reject}. */
  #outbox = [];
  /** channel -> {presence, since, handlers, offset, recovered, waiters} */
  #channels = new Map();
  #listeners = new Map();
  #closeInfo = null;

  /**
   * @param {string} url  the server's root, `ws(s)://host:port/` (an `http(s)://` URL is
   *   turned into `ws(s)://`). The client subscribes itself: use the root path.
   * @param {object} options
   * @param {string} [options.token]  a JWT; with `getToken` alone, the first one is asked for
   * @param {() => Promise<string>} [options.getToken]  a fresh token, asked for before the
   *   current one's `exp` (then sent as `refresh`) and when reconnecting with an expired one
   * @param {{initialDelay?: number, maxDelay?: number} | false} [options.reconnect]  backoff in
   *   milliseconds (250 doubling to 15000, with jitter); false never reconnects
   * @param {number} [options.refreshMargin]  seconds before `exp` to refresh; by default half
   *   the time left, at most 60 s
   * @param {number} [options.stableAfter]  milliseconds a connection must stay open for the
   *   backoff to start again from `initialDelay` (default 5000)
   * @param {Function} [options.WebSocket]  the WebSocket constructor (default: the global one)
   */
  constructor(url, options = {}) {
    this.#url = String(url).replace(/^http(s?):/i, "ws$1:");
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket: in Node 20 run with --experimental-websocket or pass options.WebSocket");
    }
    this.#reconnect = options.reconnect === false ? null : {
      initialDelay: options.reconnect?.initialDelay ?? 250,
      maxDelay: options.reconnect?.maxDelay ?? 15000,
    };
    this.#refreshMargin = options.refreshMargin ?? null;
    this.#stableAfterMs = options.stableAfter ?? 5000;
    this.#getToken = options.getToken ?? null;
    if (options.token !== undefined && options.token !== null) this.#adopt(String(options.token));
    if (this.#token === null && this.#getToken === null) throw new TypeError("a token or getToken is required");
    // Connect on the next microtask: handlers attached right after `new` see every event.
    queueMicrotask(() => {
      if (this.#state === "idle") this.#connect();
    });
  }

  /** `idle` (before the first microtask), `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  get url() {
    return this.#url;
  }

  /** The channels this client holds (subscribed, or to subscribe once open). */
  get channels() {
    return [...this.#channels.keys()];
  }

  /** The offset of the last `message` got on `channel` (or of its last `subscribed` reply), or null. */
  offset(channel) {
    return this.#channels.get(channel)?.offset ?? null;
  }

  /** The `recovered` flag of the channel's last `subscribed` reply, or null before one. */
  recovered(channel) {
    return this.#channels.get(channel)?.recovered ?? null;
  }

  /** The current token's `exp` (seconds), or null. */
  get tokenExpiry() {
    return this.#token === null ? null : tokenExpiry(this.#token);
  }

  /** Test hook: the WebSocket in use, or null. Closing it makes the client reconnect and resume. */
  get _socketForTests() {
    return this.#socket;
  }

  on(type, handler) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#listeners.get(type)?.delete(handler);
  }

  /**
   * Subscribes to `channel` now, and again after every reconnect (with `since`).
   * `options` may be the message handler itself, or
   * `{onMessage, onJoin, onLeave, onSubscribed, onUnsubscribed, presence, since}`.
   * Resolves with the first `subscribed` reply `{channel, offset, recovered}`; rejects with a
   * PgwsError (`forbidden`, `bad_request`, ...; also sent to the `error` event, so the promise
   * may be ignored), after which the channel is dropped.
   */
  subscribe(channel, options = {}) {
    if (typeof channel !== "string" || channel === "") {
      return Promise.reject(new TypeError("channel must be a non-empty string"));
    }
    if (typeof options === "function") options = { onMessage: options };
    if (this.#state === "closed") return Promise.reject(this.#closedError());
    let entry = this.#channels.get(channel);
    if (!entry) {
      entry = { offset: null, recovered: null, waiters: [], handlers: {}, presence: false };
      this.#channels.set(channel, entry);
    }
    entry.handlers = {
      onMessage: options.onMessage, onJoin: options.onJoin, onLeave: options.onLeave,
      onPresence: options.onPresence, onSubscribed: options.onSubscribed, onUnsubscribed: options.onUnsubscribed,
    };
    entry.presence = options.presence === true;
    if (options.since !== undefined) entry.offset = options.since;
    const promise = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    // Many callers never await a subscription: its failure also goes to the `error` event,
    // so an ignored promise must not count as an unhandled rejection.
    promise.catch(() => {});
    if (this.#state === "open") this.#sendSubscribe(channel, entry, false);
    return promise;
  }

  /** Leaves `channel` (it is not resubscribed any more). Resolves with the `unsubscribed` reply. */
  unsubscribe(channel) {
    const entry = this.#channels.get(channel);
    if (!entry) return Promise.reject(new PgwsError("not_found", `not subscribed to ${channel}`, { channel }));
    this.#channels.delete(channel);
    this.#settleWaiters(entry, new PgwsError("unsubscribed", "unsubscribe was called", { channel }));
    if (this.#state !== "open") return Promise.resolve({ type: "unsubscribed", channel });
    return this.#request({ type: "unsubscribe", channel });
  }

  /**
   * Publishes `payload` (a string) on `channel`. Resolves with the `published` reply (`offset`
   * on a durable channel) once PostgreSQL committed the NOTIFY; rejects with a PgwsError:
   * the server's `error` (`forbidden`, `too_large`, ...), `disconnected` when the socket was
   * lost before the answer (the message may or may not have been published), `closed`.
   * While the client reconnects, publishes wait and go out once it is open again.
   */
  publish(channel, payload) {
    if (typeof channel !== "string" || channel === "") {
      return Promise.reject(new TypeError("channel must be a non-empty string"));
    }
    if (typeof payload !== "string") return Promise.reject(new TypeError("payload must be a string"));
    if (this.#state === "closed") return Promise.reject(this.#closedError());
    if (this.#state === "open") return this.#request({ type: "publish", channel, payload });
    return new Promise((resolve, reject) => this.#outbox.push({ channel, payload, resolve, reject }));
  }

  /** Asks for the members of `channel` (servers with presence). Resolves with the `presence` reply. */
  presence(channel) {
    if (this.#state !== "open") {
      return Promise.reject(new PgwsError("disconnected", "the client is not connected", { channel }));
    }
    return this.#request({ type: "presence", channel });
  }

  /** Closes the socket and stops reconnecting. Pending requests reject with `closed`. */
  close() {
    if (this.#state === "closed") return;
    const socket = this.#socket;
    this.#socket = null;
    this.#generation += 1;
    if (socket && socket.readyState <= 1) {
      try {
        socket.close(1000, "closed by the client");
      } catch {
        // already closing
      }
    }
    this.#finish(1000, "closed by the client");
  }

  // ---------------------------------------------------------------------------------------
  // Connection

  async #connect() {
    const generation = ++this.#generation;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    if (!this.#everOpened) this.#setState("connecting");
    let token;
    try {
      token = await this.#tokenForConnect();
    } catch (error) {
      if (generation !== this.#generation) return;
      const failure = new PgwsError("token", `getToken failed: ${error?.message ?? error}`, { cause: error });
      this.#emit("error", failure);
      if (this.#everOpened) this.#scheduleReconnect(null, failure.reason);
      else this.#finish(null, failure.reason);
      return;
    }
    if (generation !== this.#generation || this.#state === "closed") return;
    let socket;
    try {
      socket = new this.#WebSocket(this.#url, [PROTOCOL, "bearer." + token]);
    } catch (error) {
      this.#finish(null, `cannot open a WebSocket: ${error?.message ?? error}`);
      return;
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (generation !== this.#generation) return;
      if (socket.protocol !== PROTOCOL) {
        // A server without pgws.v1 would take every JSON frame for a message to NOTIFY.
        this.#generation += 1;
        this.#socket = null;
        socket.close(1000, "pgws.v1 not selected");
        this.#finish(null, `the server did not select ${PROTOCOL} (selected "${socket.protocol}")`);
        return;
      }
      opened = true;
      this.#opened(token);
    };
    socket.onmessage = (event) => {
      if (generation === this.#generation) this.#receive(event.data);
    };
    socket.onerror = () => {
      // After open a close event follows. A failed handshake in Node 20 (undici) fires only
      // `error` and leaves the socket CONNECTING: take the error as the close.
      if (opened || generation !== this.#generation) return;
      this.#generation += 1;
      this.#socket = null;
      try {
        socket.close();
      } catch {
        // not closable while connecting
      }
      this.#closed(false, 1006, "");
    };
    socket.onclose = (event) => {
      if (generation !== this.#generation) return;
      this.#socket = null;
      this.#closed(opened, event.code, event.reason);
    };
  }

  async #tokenForConnect() {
    const suspect = this.#tokenSuspect && this.#getToken !== null;
    if (this.#token !== null && !suspect && !this.#refreshDue(this.#token)) return this.#token;
    if (this.#getToken === null) return this.#token; // expired: the server says so (401)
    const token = await this.#getToken();
    if (typeof token !== "string" || token === "") throw new TypeError("getToken must resolve to a token");
    this.#adopt(token);
    return token;
  }

  #opened(token) {
    const resumed = this.#everOpened;
    this.#everOpened = true;
    this.#tokenSuspect = false;
    this.#openedAt = Date.now();
    this.#setState("open", { resumed });
    for (const [channel, entry] of this.#channels) this.#sendSubscribe(channel, entry, resumed);
    const outbox = this.#outbox;
    this.#outbox = [];
    for (const item of outbox) {
      this.#request({ type: "publish", channel: item.channel, payload: item.payload }).then(item.resolve, item.reject);
    }
    this.#scheduleRefresh();
  }

  #closed(opened, code, reason) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#refreshing = false;
    for (const [, request] of this.#pending) {
      // Subscriptions are sent again on the next socket; their waiters stay.
      if (request.reject) {
        request.reject(new PgwsError("disconnected", "the connection was lost before the server answered", {
          channel: request.channel, closeCode: code,
        }));
      }
    }
    this.#pending.clear();
    if (this.#state === "closed") return;
    if (TERMINAL_CLOSE_CODES.includes(code)) {
      this.#finish(code, reason);
    } else if (!opened && !this.#everOpened) {
      // The first handshake failed: a bad token or a refused channel does not fix itself.
      this.#finish(code, reason || "the handshake was refused, or the server is unreachable");
    } else if (this.#reconnect === null) {
      this.#finish(code, reason);
    } else {
      // Once open, a failed attempt is retried (a restarting server refuses connections for a
      // while), with a fresh token from getToken in case this one was the problem.
      if (!opened) this.#tokenSuspect = true;
      if (opened && Date.now() - this.#openedAt >= this.#stableAfterMs) this.#attempt = 0;
      this.#scheduleReconnect(code, reason);
    }
  }

  #scheduleReconnect(code, reason) {
    const { initialDelay, maxDelay } = this.#reconnect;
    const ceiling = Math.min(maxDelay, initialDelay * 2 ** Math.min(this.#attempt, 30));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.#attempt += 1;
    this.#setState("reconnecting", { code, reason, attempt: this.#attempt, delay });
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  #finish(code, reason) {
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#refreshTimer);
    this.#reconnectTimer = null;
    this.#refreshTimer = null;
    const error = new PgwsError("closed", reason || `closed with ${code}`, { closeCode: code });
    for (const [, request] of this.#pending) request.reject?.(error);
    this.#pending.clear();
    for (const item of this.#outbox) item.reject(error);
    this.#outbox = [];
    for (const [, entry] of this.#channels) this.#settleWaiters(entry, error);
    this.#closeInfo = { code, reason };
    this.#setState("closed", { code, reason });
  }

  #closedError() {
    const info = this.#closeInfo ?? {};
    return new PgwsError("closed", info.reason || "the client is closed", { closeCode: info.code ?? null });
  }

  #setState(state, details = {}) {
    const previous = this.#state;
    this.#state = state;
    this.#emit("state", { state, previous, ...details });
  }

  // ---------------------------------------------------------------------------------------
  // Requests and replies

  #send(frame) {
    this.#socket.send(JSON.stringify(frame));
  }

  #request(frame, extra = {}) {
    return new Promise((resolve, reject) => {
      const ref = this.#nextRef++;
      this.#pending.set(ref, { type: frame.type, channel: frame.channel, resolve, reject, ...extra });
      this.#send({ ...frame, ref });
    });
  }

  #sendSubscribe(channel, entry, resubscribe) {
    const ref = this.#nextRef++;
    const frame = { type: "subscribe", ref, channel };
    if (entry.offset !== null) frame.since = entry.offset;
    if (entry.presence) frame.presence = true;
    this.#pending.set(ref, { type: "subscribe", channel, since: entry.offset, resubscribe });
    this.#send(frame);
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.#emit("error", new PgwsError("bad_frame", "the server sent a frame that is not JSON", { data }));
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    const request = frame.ref !== undefined ? this.#pending.get(frame.ref) : undefined;
    if (request) this.#pending.delete(frame.ref);
    switch (frame.type) {
      case "message":
        return this.#onMessage(frame);
      case "subscribed":
        return this.#onSubscribed(frame, request);
      case "unsubscribed":
        return this.#onUnsubscribed(frame, request);
      case "published":
        return request?.resolve?.(frame);
      case "refreshed":
        return this.#onRefreshed(frame, request);
      case "error":
        return this.#onError(frame, request);
      case "presence":
        request?.resolve?.(frame);
        return this.#dispatch(frame.channel, "onPresence", "presence", frame);
      case "join":
        return this.#dispatch(frame.channel, "onJoin", "join", frame);
      case "leave":
        return this.#dispatch(frame.channel, "onLeave", "leave", frame);
      default:
        return; // a frame type of a later protocol revision
    }
  }

  #onMessage(frame) {
    const message = { channel: frame.channel, offset: frame.offset ?? null, payload: frame.payload };
    const entry = this.#channels.get(frame.channel);
    if (entry && message.offset !== null) entry.offset = message.offset;
    this.#dispatch(frame.channel, "onMessage", "message", message);
  }

  #onSubscribed(frame, request) {
    const entry = this.#channels.get(frame.channel);
    if (!entry) return; // unsubscribed meanwhile
    // The reply's offset is where this socket's stream stands: a later resume starts there.
    if (frame.offset !== null && frame.offset !== undefined) entry.offset = frame.offset;
    entry.recovered = frame.recovered === true;
    const info = {
      channel: frame.channel,
      offset: frame.offset ?? null,
      recovered: entry.recovered,
      since: request?.since ?? null,
      resubscribe: request?.resubscribe ?? false,
    };
    this.#settleWaiters(entry, null, info);
    this.#dispatch(frame.channel, "onSubscribed", "subscribed", info);
  }

  #onUnsubscribed(frame, request) {
    if (request) {
      request.resolve?.(frame);
      return;
    }
    // Server-initiated: the new token does not let this socket read the channel any more.
    const entry = this.#channels.get(frame.channel);
    const info = { channel: frame.channel, reason: frame.reason ?? null };
    if (entry) {
      this.#channels.delete(frame.channel);
      this.#settleWaiters(entry, new PgwsError("unsubscribed", info.reason ?? "unsubscribed by the server", info));
      entry.handlers.onUnsubscribed?.(info);
    }
    this.#emit("unsubscribed", info);
  }

  #onError(frame, request) {
    const error = new PgwsError(frame.code ?? "unknown", frame.reason ?? "", {
      ref: frame.ref, channel: request?.channel, request: request?.type,
    });
    if (request?.type === "subscribe") {
      // A refused channel is not tried again on later reconnects.
      const entry = this.#channels.get(request.channel);
      if (entry) {
        this.#channels.delete(request.channel);
        this.#settleWaiters(entry, error);
      }
      this.#emit("error", error);
    } else if (request?.type === "refresh") {
      this.#refreshing = false;
      this.#emit("error", error);
      this.#scheduleRefresh(true);
    } else if (request?.reject) {
      request.reject(error);
    } else {
      this.#emit("error", error);
    }
  }

  #settleWaiters(entry, error, value) {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const waiter of waiters) {
      if (error) waiter.reject(error);
      else waiter.resolve(value);
    }
  }

  #dispatch(channel, handlerName, eventName, value) {
    const handler = this.#channels.get(channel)?.handlers[handlerName];
    if (handler) this.#call(handler, value);
    this.#emit(eventName, value);
  }

  #emit(type, value) {
    const handlers = this.#listeners.get(type);
    if (!handlers) return;
    for (const handler of [...handlers]) this.#call(handler, value);
  }

  #call(handler, value) {
    try {
      handler(value);
    } catch (error) {
      // A throwing handler must not break the client; the error still surfaces.
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Token refresh

  /** Makes `token` the current one and fixes when it is to be replaced: `refreshMargin`
   * seconds before its `exp`, by default half the time it has left now, at most 60 s. */
  #adopt(token) {
    this.#token = token;
    const exp = tokenExpiry(token);
    if (exp === null) {
      this.#refreshAtMs = Infinity;
      return;
    }
    const left = exp - Date.now() / 1000;
    const margin = this.#refreshMargin ?? Math.min(60, Math.max(0, left / 2));
    this.#refreshAtMs = (exp - margin) * 1000;
  }

  /** Whether the current token should be replaced before it is used for a new connection. */
  #refreshDue(token) {
    const exp = tokenExpiry(token);
    if (exp === null) return false;
    const now = Date.now();
    return now >= exp * 1000 || (this.#getToken !== null && now >= this.#refreshAtMs);
  }

  /** Plans the next refresh of the current token; `retry` after a failed one (sooner). */
  #scheduleRefresh(retry = false) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (this.#getToken === null || this.#state !== "open") return;
    const exp = tokenExpiry(this.#token);
    if (exp === null) return;
    const left = exp * 1000 - Date.now();
    if (left <= 0) return; // the server closes with 3001
    const delay = retry ? Math.max(250, Math.min(5000, left / 4)) : Math.max(0, this.#refreshAtMs - Date.now());
    this.#refreshTimer = setTimeout(() => this.#refresh(), Math.min(delay, MAX_TIMER_MS));
  }

  async #refresh() {
    this.#refreshTimer = null;
    if (this.#state !== "open" || this.#refreshing) return;
    if (Date.now() < this.#refreshAtMs - 1000) {
      this.#scheduleRefresh(); // a timer capped at 24.8 days fired early
      return;
    }
    this.#refreshing = true;
    const generation = this.#generation;
    let token;
    try {
      token = await this.#getToken();
      if (typeof token !== "string" || token === "") throw new TypeError("getToken must resolve to a token");
    } catch (error) {
      this.#refreshing = false;
      if (generation !== this.#generation) return;
      this.#emit("error", new PgwsError("token", `getToken failed: ${error?.message ?? error}`, { cause: error }));
      this.#scheduleRefresh(true);
      return;
    }
    if (generation !== this.#generation || this.#state !== "open") {
      this.#refreshing = false;
      return;
    }
    const ref = this.#nextRef++;
    this.#pending.set(ref, { type: "refresh", token });
    this.#send({ type: "refresh", ref, token });
  }

  #onRefreshed(frame, request) {
    this.#refreshing = false;
    if (request?.token) this.#adopt(request.token);
    this.#emit("refreshed", { exp: frame.exp ?? null });
    this.#scheduleRefresh();
  }
}
