// The client's rules against a scripted server (no PostgreSQL, no bridge): which closes end
// it, what it sends after a reconnect, how replies and errors find their request, token
// refresh. Run: node --experimental-websocket clients/js/test/unit.mjs
// Prints one JSON line {"ok":..., "passed":[...], "failed":[{name, error}]}; exit 0 when ok.
import { PgwsClient, PgwsError, decodeClaims, tokenExpiry } from "../pgws.js";
import { startScriptedServer } from "./scripted-server.mjs";

const tests = [];
const test = (name, body) => tests.push({ name, body });

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

const b64url = (text) => Buffer.from(text).toString("base64url");
/** An unsigned token: the scripted server never verifies, the client only reads `exp`. */
function token(claims) {
  return `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}.c2ln`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the first event `type` for which `predicate` holds. */
function once(client, type, predicate = () => true, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeout} ms`));
    }, timeout);
    const off = client.on(type, (value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** Runs `body(server, make)` with a scripted server; every client made is closed afterwards. */
async function withServer(onUpgrade, body) {
  const server = await startScriptedServer(onUpgrade);
  const clients = [];
  const make = (options = {}) => {
    const client = new PgwsClient(server.url, { token: token({ mode: "rw" }), reconnect: { initialDelay: 20, maxDelay: 200 }, ...options });
    clients.push(client);
    return client;
  };
  try {
    await body(server, make);
  } finally {
    for (const client of clients) client.close();
    await server.close();
  }
}

/** Answers the subscribe frames of a fresh socket, `recovered` as given per channel. */
async function answerSubscribes(socket, count, offsets = {}, recovered = () => false) {
  const frames = [];
  for (let i = 0; i < count; i++) {
    const frame = await socket.next();
    assert(frame.type === "subscribe", `expected subscribe, got ${JSON.stringify(frame)}`);
    frames.push(frame);
    socket.send({ type: "subscribed", ref: frame.ref, channel: frame.channel, offset: offsets[frame.channel] ?? null, recovered: recovered(frame) });
  }
  return frames;
}

test("token helpers decode claims without verifying", async () => {
  const t = token({ mode: "r", exp: 1234567890, name: "zoë" });
  equal(decodeClaims(t), { mode: "r", exp: 1234567890, name: "zoë" }, "claims");
  equal(tokenExpiry(t), 1234567890, "exp");
  equal(tokenExpiry(token({ mode: "r" })), null, "no exp");
  equal(decodeClaims("not a token"), null, "garbage");
});

test("offers pgws.v1 and the bearer entry, subscribes, delivers per channel, keeps offsets", async () => {
  await withServer(undefined, async (server, make) => {
    const t = token({ mode: "rw" });
    const client = make({ token: t });
    const states = [];
    client.on("state", (event) => states.push(event.state));
    const chat = [];
    const all = [];
    client.on("message", (message) => all.push(message.channel));
    const subscribed = client.subscribe("chat", (message) => chat.push(message));
    client.subscribe("news", { onMessage: () => {} });
    const socket = await server.nextSocket();
    equal(socket.protocols, ["pgws.v1", "bearer." + t], "offered subprotocols");
    equal(socket.request.url, "/", "path");
    const frames = await answerSubscribes(socket, 2, { chat: "o-1" });
    equal(frames.map((f) => f.channel), ["chat", "news"], "subscribed channels");
    assert(frames.every((f) => f.since === undefined), "no since on a first subscribe");
    assert(typeof frames[0].ref === "number" && frames[0].ref !== frames[1].ref, "distinct refs");
    equal(await subscribed, { channel: "chat", offset: "o-1", recovered: false, since: null, resubscribe: false }, "reply");
    socket.send({ type: "message", channel: "chat", offset: "o-2", payload: "hello" });
    socket.send({ type: "message", channel: "news", offset: "n-1", payload: "extra" });
    socket.send({ type: "message", channel: "chat", offset: "o-3", payload: "" });
    await sleep(50);
    equal(chat, [{ channel: "chat", offset: "o-2", payload: "hello" }, { channel: "chat", offset: "o-3", payload: "" }], "chat handler");
    equal(all, ["chat", "news", "chat"], "message event");
    equal(client.offset("chat"), "o-3", "chat offset");
    equal(client.offset("news"), "n-1", "news offset");
    equal(states, ["connecting", "open"], "states");
  });
});

test("publish settles by ref, out of order; errors carry code and reason", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    const first = client.publish("chat", "one");
    const second = client.publish("chat", "two");
    const socket = await server.nextSocket();
    const a = await socket.next();
    const b = await socket.next();
    equal([a.type, a.channel, a.payload, b.payload], ["publish", "chat", "one", "two"], "publish frames");
    socket.send({ type: "error", ref: b.ref, code: "forbidden", reason: "mode r does not publish" });
    socket.send({ type: "published", ref: a.ref, channel: "chat", offset: "42" });
    equal(await first, { type: "published", ref: a.ref, channel: "chat", offset: "42" }, "published reply");
    const error = await rejection(second);
    assert(error instanceof PgwsError, "a PgwsError");
    equal([error.code, error.reason], ["forbidden", "mode r does not publish"], "error");
    // An error without a ref goes to the error event.
    const event = once(client, "error");
    socket.send({ type: "error", code: "bad_request", reason: "what?" });
    equal((await event).code, "bad_request", "unmatched error");
    const wrongType = await rejection(client.publish("chat", 42));
    assert(wrongType instanceof TypeError, "payload must be a string");
  });
});

test("after a lost connection: reconnects, resubscribes with since, reports recovered", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    const events = [];
    client.on("subscribed", (event) => events.push(event));
    const states = [];
    client.on("state", (event) => states.push(event));
    const received = [];
    client.subscribe("chat", (message) => received.push(message.payload));
    client.subscribe("quiet", () => {});
    let socket = await server.nextSocket();
    await answerSubscribes(socket, 2, { chat: "a-1", quiet: "q-9" });
    socket.send({ type: "message", channel: "chat", offset: "a-2", payload: "m2" });
    await sleep(30);
    socket.drop();
    socket = await server.nextSocket();
    const frames = await answerSubscribes(socket, 2, { chat: "a-3", quiet: "q-9" }, () => true);
    equal(frames.map((f) => [f.channel, f.since]), [["chat", "a-2"], ["quiet", "q-9"]], "since per channel");
    await sleep(30);
    const resumed = events.filter((e) => e.resubscribe);
    equal(resumed.map((e) => [e.channel, e.recovered, e.since]), [["chat", true, "a-2"], ["quiet", true, "q-9"]], "subscribed events");
    equal(client.recovered("chat"), true, "recovered()");
    equal(states.map((s) => s.state), ["connecting", "open", "reconnecting", "open"], "states");
    equal(states[2].code, 1006, "close code of the drop");
    assert(states[3].resumed === true, "open after reconnect says resumed");
    equal(received, ["m2"], "messages");
  });
});

test("a close frame 1001 or 1013 reconnects as well", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    client.subscribe("chat", () => {});
    for (const code of [1001, 1013]) {
      const socket = await server.nextSocket();
      await answerSubscribes(socket, 1);
      const reconnecting = once(client, "state", (s) => s.state === "reconnecting");
      socket.close(code, "bye");
      const event = await reconnecting;
      equal([event.code, event.reason], [code, "bye"], "close reported");
    }
    const socket = await server.nextSocket();
    await answerSubscribes(socket, 1);
  });
});

for (const code of [1008, 3001, 3003]) {
  test(`close ${code} ends the client, no reconnect`, async () => {
    await withServer(undefined, async (server, make) => {
      const client = make();
      const socket = await server.nextSocket();
      const closed = once(client, "state", (s) => s.state === "closed");
      const pending = client.publish("chat", "x");
      await socket.next();
      socket.close(code, "operator said so");
      const event = await closed;
      equal([event.code, event.reason], [code, "operator said so"], "closed event");
      equal((await rejection(pending)).code, "disconnected", "in-flight publish");
      equal((await rejection(client.publish("chat", "y"))).code, "closed", "publish after the end");
      await sleep(150);
      equal(server.handshakes, 1, "handshakes");
    });
  });
}

test("a refused first handshake ends the client", async () => {
  await withServer(() => ({ refuse: 401 }), async (server, make) => {
    const client = make();
    const subscribed = client.subscribe("chat", () => {});
    const event = await once(client, "state", (s) => s.state === "closed");
    equal(event.previous, "connecting", "from connecting");
    equal((await rejection(subscribed)).code, "closed", "subscribe rejected");
    await sleep(150);
    equal(server.handshakes, 1, "handshakes");
  });
});

test("a server without pgws.v1 (selects no subprotocol, or another) is left at once", async () => {
  for (const protocol of [null, "postgres-websockets"]) {
    await withServer(() => ({ protocol }), async (server, make) => {
      const client = make();
      const event = await once(client, "state", (s) => s.state === "closed");
      equal(event.previous, "connecting", "never open");
      await sleep(100);
      equal(server.handshakes, 1, "handshakes");
    });
  }
});

test("refused handshakes while reconnecting are retried with growing, capped, jittered delays", async () => {
  let refuse = false;
  await withServer(() => (refuse ? { refuse: 503 } : { protocol: "pgws.v1" }), async (server, make) => {
    let asked = 0;
    const client = make({ reconnect: { initialDelay: 20, maxDelay: 80 }, getToken: async () => token({ mode: "rw", n: ++asked }) });
    const delays = [];
    client.on("state", (s) => {
      if (s.state === "reconnecting") delays.push(s.delay);
    });
    const socket = await server.nextSocket();
    refuse = true;
    socket.drop();
    while (delays.length < 6) await sleep(20);
    const ceilings = [20, 40, 80, 80, 80, 80];
    delays.slice(0, 6).forEach((delay, i) => assert(delay >= ceilings[i] / 2 && delay <= ceilings[i], `delay ${i}: ${delay}`));
    assert(asked >= 4, `a fresh token for each attempt after a failed one (${asked})`);
    refuse = false;
    await once(client, "state", (s) => s.state === "open");
    equal(decodeClaims(server.sockets.at(-1).token).n, asked, "the last token");
    client.close();
    const handshakes = server.handshakes;
    await sleep(200);
    equal(server.handshakes, handshakes, "no attempt after close()");
    equal(client.state, "closed", "state");
  });
});

test("publishes made while reconnecting wait; an unanswered one rejects with disconnected", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    client.subscribe("chat", () => {});
    let socket = await server.nextSocket();
    await answerSubscribes(socket, 1, { chat: "c-1" });
    const lost = client.publish("chat", "lost?");
    await socket.next();
    const reconnecting = once(client, "state", (s) => s.state === "reconnecting");
    socket.drop();
    await reconnecting;
    equal((await rejection(lost)).code, "disconnected", "in flight at the drop");
    const queued = client.publish("chat", "later");
    socket = await server.nextSocket();
    const subscribe = await socket.next();
    equal([subscribe.type, subscribe.since], ["subscribe", "c-1"], "resubscribe first");
    const publish = await socket.next();
    equal([publish.type, publish.payload], ["publish", "later"], "then the queued publish");
    socket.send({ type: "published", ref: publish.ref, channel: "chat" });
    equal((await queued).type, "published", "queued publish resolved");
  });
});

test("a refused subscribe rejects and is not tried again", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    const refused = client.subscribe("secret", () => {});
    client.subscribe("chat", () => {});
    let socket = await server.nextSocket();
    const a = await socket.next();
    const b = await socket.next();
    socket.send({ type: "error", ref: a.ref, code: "forbidden", reason: "channel not allowed" });
    socket.send({ type: "subscribed", ref: b.ref, channel: "chat", offset: null, recovered: false });
    const error = await rejection(refused);
    equal([error.code, error.channel], ["forbidden", "secret"], "error");
    equal(client.channels, ["chat"], "channels kept");
    socket.drop();
    socket = await server.nextSocket();
    const again = await socket.next();
    equal(again.channel, "chat", "only chat resubscribed");
    equal(again.since, undefined, "no offset known, no since");
  });
});

test("unsubscribe: reply by ref; a server-initiated unsubscribed reaches the handler and sticks", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    const dropped = [];
    client.subscribe("a", { onMessage: () => {}, onUnsubscribed: (info) => dropped.push(info) });
    client.subscribe("b", () => {});
    client.subscribe("c", () => {});
    let socket = await server.nextSocket();
    await answerSubscribes(socket, 3);
    const left = client.unsubscribe("c");
    const frame = await socket.next();
    equal([frame.type, frame.channel], ["unsubscribe", "c"], "unsubscribe frame");
    socket.send({ type: "unsubscribed", ref: frame.ref, channel: "c" });
    equal((await left).channel, "c", "unsubscribe resolved");
    const event = once(client, "unsubscribed");
    socket.send({ type: "unsubscribed", channel: "a", reason: "the new token does not grant a" });
    equal(await event, { channel: "a", reason: "the new token does not grant a" }, "event");
    equal(dropped, [{ channel: "a", reason: "the new token does not grant a" }], "handler");
    equal(client.channels, ["b"], "channels");
    equal((await rejection(client.unsubscribe("zzz"))).code, "not_found", "unknown channel");
    socket.drop();
    socket = await server.nextSocket();
    equal((await socket.next()).channel, "b", "resubscribes b only");
  });
});

test("refreshes the token before exp through getToken, without reconnecting", async () => {
  await withServer(undefined, async (server, make) => {
    const now = Math.floor(Date.now() / 1000);
    const first = token({ mode: "r", exp: now + 2 });
    const second = token({ mode: "r", exp: now + 3600 });
    let asked = 0;
    const client = make({ token: first, getToken: async () => { asked += 1; return second; } });
    const socket = await server.nextSocket();
    const refresh = await socket.next(3000);
    equal([refresh.type, refresh.token], ["refresh", second], "refresh frame");
    assert(Date.now() / 1000 < now + 2, "sent before exp");
    const refreshed = once(client, "refreshed");
    socket.send({ type: "refreshed", ref: refresh.ref, exp: now + 3600 });
    equal(await refreshed, { exp: now + 3600 }, "refreshed event");
    equal(client.tokenExpiry, now + 3600, "current token");
    equal(asked, 1, "getToken calls");
    equal(server.handshakes, 1, "handshakes");
  });
});

test("a refused refresh is reported and tried again; reconnecting with an expired token asks for one", async () => {
  await withServer(undefined, async (server, make) => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [token({ mode: "r", exp: now + 60, n: 2 }), token({ mode: "r", exp: now + 60, n: 3 })];
    const client = make({ token: token({ mode: "r", exp: now + 1, n: 1 }), getToken: async () => tokens.shift() });
    const socket = await server.nextSocket();
    const refresh = await socket.next(2000);
    const error = once(client, "error");
    socket.send({ type: "error", ref: refresh.ref, code: "unauthorized", reason: "bad signature" });
    equal((await error).code, "unauthorized", "reported");
    const retry = await socket.next(2000);
    equal(decodeClaims(retry.token).n, 3, "second token tried");
    await sleep(Math.max(0, (now + 1) * 1000 - Date.now() + 50));
    // The first token has expired meanwhile (a real server would have closed with 3001).
    tokens.push(token({ mode: "r", exp: now + 60, n: 4 }));
    socket.drop();
    const next = await server.nextSocket();
    equal(decodeClaims(next.token).n, 4, "reconnected with a fresh token");
  });
});

test("join, leave and presence frames reach the channel's handlers", async () => {
  await withServer(undefined, async (server, make) => {
    const client = make();
    const seen = [];
    client.subscribe("room", {
      presence: true,
      onMessage: () => {},
      onJoin: (f) => seen.push(["join", f.member.id]),
      onLeave: (f) => seen.push(["leave", f.member.id]),
    });
    const socket = await server.nextSocket();
    const [frame] = await answerSubscribes(socket, 1);
    equal(frame.presence, true, "presence asked");
    socket.send({ type: "join", channel: "room", member: { id: "u1", claims: {} } });
    socket.send({ type: "leave", channel: "room", member: { id: "u1", claims: {} } });
    const members = client.presence("room");
    const request = await socket.next();
    socket.send({ type: "presence", ref: request.ref, channel: "room", members: [{ id: "u2", claims: { mode: "r" } }] });
    equal((await members).members, [{ id: "u2", claims: { mode: "r" } }], "presence reply");
    equal(seen, [["join", "u1"], ["leave", "u1"]], "handlers");
  });
});

test("close() stops everything and rejects what waits", async () => {
  await withServer(() => ({ refuse: 503 }), async (server, make) => {
    const client = make();
    const subscribed = client.subscribe("chat", () => {});
    const published = client.publish("chat", "x");
    client.close();
    equal((await rejection(subscribed)).code, "closed", "subscribe");
    equal((await rejection(published)).code, "closed", "publish");
    await sleep(100);
    equal(server.handshakes, 0, "never connected");
  });
});

const passed = [];
const failed = [];
const only = process.argv[2];
for (const { name, body } of tests) {
  if (only && !name.includes(only)) continue;
  try {
    await Promise.race([body(), sleep(15000).then(() => { throw new Error("timed out after 15 s"); })]);
    passed.push(name);
  } catch (error) {
    failed.push({ name, error: String(error?.stack ?? error) });
  }
}
console.log(JSON.stringify({ ok: failed.length === 0, passed, failed }));
process.exit(failed.length === 0 ? 0 : 1);
