// The client against the real server, from Node. Started by the Swift integration test
// (Tests/IntegrationTests/JavaScriptClientTests.swift), which starts the server and mints
// the tokens:
//   node --experimental-websocket node-client.mjs --url ws://127.0.0.1:PORT/ --channel C \
//     --rw TOKEN(mode rw) --r TOKEN(mode r) [--count 200] [--scale 1]
// (--scale stretches every wait: the Swift side passes 3 under ThreadSanitizer)
// Prints one JSON line {"ok":..., "checks":{...}, "failures":[...]} and exits 0 when ok.
import { createConnection, createServer } from "node:net";
import { PgwsClient } from "../pgws.js";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
for (const name of ["url", "channel", "rw", "r"]) {
  if (!args[name]) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
}
const count = Number(args.count ?? 200);
const scale = Number(args.scale ?? 1);
const channel = args.channel;

const checks = {};
const failures = [];
function check(name, condition, detail) {
  checks[name] = Boolean(condition);
  if (!condition) failures.push(detail === undefined ? name : `${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function waitFor(what, condition, timeout = 20000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (condition()) return resolve();
      if (Date.now() - started > timeout * scale) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

/** The payload a reader gets for a client's publish is raw mode's envelope; SQL payloads come as they are. */
function innerPayload(payload) {
  try {
    const envelope = JSON.parse(payload);
    return typeof envelope?.payload === "string" ? envelope.payload : payload;
  } catch {
    return payload;
  }
}

/**
 * A TCP relay in front of the server: `drop()` destroys every relayed connection at once,
 * so the client sees its socket end without a close frame (1006), as when a network fails.
 */
async function startRelay(target) {
  const pairs = new Set();
  let refusing = false;
  const server = createServer((inbound) => {
    if (refusing) {
      inbound.destroy();
      return;
    }
    const outbound = createConnection({ host: target.hostname, port: Number(target.port) });
    const pair = { inbound, outbound };
    pairs.add(pair);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const end = () => {
      pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", end).on("close", end);
    outbound.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `ws://127.0.0.1:${server.address().port}/`,
    get connections() {
      return pairs.size;
    },
    /** While refusing, new connections are cut at once (the client's attempts fail before opening). */
    set refusing(value) {
      refusing = value;
    },
    drop() {
      for (const { inbound, outbound } of pairs) {
        inbound.destroy();
        outbound.destroy();
      }
      pairs.clear();
    },
    close() {
      this.drop();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const clients = [];
function client(url, token) {
  const made = new PgwsClient(url, { token, reconnect: { initialDelay: 100, maxDelay: 2000 } });
  clients.push(made);
  return made;
}

let relay = null;
try {
  // 1. Subscribe, publish (resolved by `published`), receive.
  const first = client(args.url, args.rw);
  const got = [];
  const subscribed = await first.subscribe(channel, (message) => got.push(message));
  check("subscribed reply", subscribed.channel === channel && subscribed.recovered === false, subscribed);
  const published = await first.publish(channel, "hello from node");
  check("publish resolved by published", published.type === "published" && published.channel === channel, published);
  await waitFor("own message", () => got.length >= 1);
  check("message payload", innerPayload(got[0].payload) === "hello from node", got[0]);
  check("message offset", typeof got[0].offset === "string" && /^[A-Za-z0-9:._-]+$/.test(got[0].offset), got[0]);
  check("offset kept", first.offset(channel) === got[0].offset, [first.offset(channel), got[0].offset]);

  // 2. A read-only token: its publish is rejected with `forbidden`, the socket stays open.
  const reader = client(args.url, args.r);
  await reader.subscribe(channel, () => {});
  try {
    await reader.publish(channel, "not allowed");
    check("read-only publish rejected", false, "it was published");
  } catch (error) {
    check("read-only publish rejected", error.code === "forbidden" && typeof error.reason === "string" && error.reason !== "", { code: error.code, reason: error.reason });
  }
  check("read-only socket stays open", reader.state === "open", reader.state);
  first.close();
  reader.close();

  // 3. Resume: a writer keeps publishing numbered messages while the reader's TCP connection
  // is cut; the reader reconnects, resubscribes with `since`, and has each exactly once, in order.
  relay = await startRelay(new URL(args.url));
  const resumer = client(relay.url, args.rw);
  const numbers = [];
  const states = [];
  const subscribedEvents = [];
  let offsetWhenLost;
  let resuming = false;
  let replayed = 0;
  resumer.on("state", (event) => {
    states.push(event.state);
    if (event.state === "reconnecting" && offsetWhenLost === undefined) offsetWhenLost = resumer.offset(resumeChannel);
    if (event.state === "open" && event.resumed) resuming = true;
  });
  resumer.on("subscribed", (event) => {
    subscribedEvents.push(event);
    resuming = false;
  });
  // Messages between the reopened socket and its `subscribed` reply are the replay.
  resumer.on("message", () => {
    if (resuming) replayed += 1;
  });
  const resumeChannel = channel + "-resume";
  await resumer.subscribe(resumeChannel, (message) => {
    const text = innerPayload(message.payload);
    if (text.startsWith("n:")) numbers.push(Number(text.slice(2)));
  });
  const writer = client(args.url, args.rw);
  let sent = 0;
  const writing = (async () => {
    while (sent < count) {
      sent += 1;
      await writer.publish(resumeChannel, `n:${sent}`);
      await sleep(5);
    }
  })();
  await waitFor("a third of the messages before the cut", () => numbers.length >= count / 3);
  // Cut, and keep the way back closed until the writer has published 20 more: the reader's
  // attempts fail meanwhile, and what it missed can only come back as a replay.
  relay.refusing = true;
  relay.drop();
  const afterCut = numbers.length;
  const sentAtCut = sent;
  await waitFor("20 messages published during the cut", () => sent >= Math.min(count, sentAtCut + 20));
  relay.refusing = false;
  await writing;
  // On a timeout the checks below say what came and what did not.
  await waitFor("every numbered message", () => numbers.length >= count, 30000).catch(() => {});
  await sleep(200); // duplicates, if any, would come now
  const resubscribed = subscribedEvents.filter((event) => event.resubscribe);
  check("reconnected", states.includes("reconnecting") && states.at(-1) === "open", states);
  check("resubscribed once", resubscribed.length === 1, resubscribed);
  check("resubscribed with since", resubscribed[0]?.since !== null && resubscribed[0]?.since !== undefined, resubscribed[0]);
  check("since = offset of the last message before the cut", resubscribed[0]?.since === offsetWhenLost, { since: resubscribed[0]?.since, offsetWhenLost });
  check("recovered: true", resubscribed[0]?.recovered === true, resubscribed[0]);
  check("recovered() getter", resumer.recovered(resumeChannel) === true);
  check("missed messages came as a replay before subscribed", replayed >= 1, { replayed });
  checks.replayed = replayed;
  const expected = Array.from({ length: count }, (_, i) => i + 1);
  const inOrder = numbers.length === count && numbers.every((n, i) => n === expected[i]);
  const firstWrong = numbers.findIndex((n, i) => n !== i + 1);
  check("every message exactly once, in order", inOrder, {
    received: numbers.length, firstWrong, around: numbers.slice(Math.max(0, firstWrong - 3), firstWrong + 3),
    states, resubscribed, afterCut, replayed,
  });
  checks.cutAfter = afterCut;
  checks.resubscribeSince = resubscribed[0]?.since ?? null;
} catch (error) {
  failures.push(`threw: ${error?.stack ?? error}`);
} finally {
  for (const made of clients) made.close();
  await relay?.close();
}

const ok = failures.length === 0;
console.log(JSON.stringify({ ok, checks, failures }));
process.exit(ok ? 0 : 1);
