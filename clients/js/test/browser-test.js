// The browser half of browser.py: two scenarios against the real server, run side by side.
// Parameters (JSON in the URL fragment, never sent to the server):
//   channel, rw (a token of mode rw), short (mode r, exp a few seconds ahead),
//   fresh (the same claims as short, a later exp), count (numbered messages to resume),
//   scale (stretches every wait: 3 under ThreadSanitizer).
// The outcome is written to #result (data-done="1") and to the console as one JSON line.
import { PgwsClient, tokenExpiry } from "../pgws.js";

const params = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const url = location.origin.replace(/^http/, "ws") + "/";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const scale = params.scale ?? 1;

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

function innerPayload(payload) {
  try {
    const envelope = JSON.parse(payload);
    return typeof envelope?.payload === "string" ? envelope.payload : payload;
  } catch {
    return payload;
  }
}

class Checks {
  constructor(name) {
    this.name = name;
    this.checks = {};
    this.failures = [];
  }
  check(name, condition, detail) {
    this.checks[name] = Boolean(condition);
    if (!condition) this.failures.push(`${this.name}: ${name}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
  }
}

const clients = [];
function client(token, options = {}) {
  const made = new PgwsClient(url, { token, reconnect: { initialDelay: 100, maxDelay: 2000 }, ...options });
  clients.push(made);
  return made;
}

/** The reader's socket is closed under it (the test hook) while a writer keeps publishing. */
async function resume() {
  const c = new Checks("resume");
  const channel = params.channel + "-resume";
  const count = params.count ?? 150;
  // A reconnect delay of 0.5 to 1 s: the writer publishes a good many messages meanwhile,
  // which can only come back as a replay.
  const reader = client(params.rw, { reconnect: { initialDelay: 1000, maxDelay: 2000 } });
  const numbers = [];
  const states = [];
  const resubscribed = [];
  let offsetWhenLost;
  let resuming = false;
  let replayed = 0;
  reader.on("state", (event) => {
    states.push(event.state);
    if (event.state === "reconnecting" && offsetWhenLost === undefined) offsetWhenLost = reader.offset(channel);
    if (event.state === "open" && event.resumed) resuming = true;
  });
  reader.on("subscribed", (event) => {
    if (event.resubscribe) resubscribed.push(event);
    resuming = false;
  });
  reader.on("message", () => {
    if (resuming) replayed += 1;
  });
  await reader.subscribe(channel, (message) => {
    const text = innerPayload(message.payload);
    if (text.startsWith("n:")) numbers.push(Number(text.slice(2)));
  });
  const writer = client(params.rw);
  let sent = 0;
  const writing = (async () => {
    while (sent < count) {
      sent += 1;
      await writer.publish(channel, `n:${sent}`);
      await sleep(5);
    }
  })();
  await waitFor("a third of the messages", () => numbers.length >= count / 3);
  const socket = reader._socketForTests;
  socket.close(4000, "dropped by the test");
  await writing;
  await waitFor("every numbered message", () => numbers.length >= count, 30000).catch(() => {});
  await sleep(200);
  c.check("reconnected", states.includes("reconnecting") && states.at(-1) === "open", states);
  c.check("a new socket", reader._socketForTests !== socket && reader._socketForTests !== null);
  c.check("resubscribed once", resubscribed.length === 1, resubscribed);
  c.check("since = offset of the last message before the drop", resubscribed[0]?.since === offsetWhenLost && typeof offsetWhenLost === "string", { since: resubscribed[0]?.since, offsetWhenLost });
  c.check("recovered: true", resubscribed[0]?.recovered === true, resubscribed[0]);
  c.check("missed messages came as a replay before subscribed", replayed >= 1, { replayed });
  c.checks.replayed = replayed;
  const inOrder = numbers.length === count && numbers.every((n, i) => n === i + 1);
  const firstWrong = numbers.findIndex((n, i) => n !== i + 1);
  c.check("every message exactly once, in order", inOrder, {
    received: numbers.length, firstWrong, around: numbers.slice(Math.max(0, firstWrong - 3), firstWrong + 3), states, resubscribed, replayed,
  });
  return c;
}

/** The first token expires a few seconds after start; getToken hands the next one. */
async function refresh() {
  const c = new Checks("refresh");
  const channel = params.channel + "-refresh";
  const shortExp = tokenExpiry(params.short);
  const freshExp = tokenExpiry(params.fresh);
  c.check("time left on the short token at start", shortExp * 1000 - Date.now() > 2000, { secondsLeft: shortExp - Date.now() / 1000 });
  let asked = 0;
  const reader = client(params.short, {
    getToken: async () => {
      asked += 1;
      return params.fresh;
    },
  });
  const states = [];
  reader.on("state", (event) => states.push(event.state));
  const refreshed = [];
  reader.on("refreshed", (event) => refreshed.push({ ...event, at: Date.now() / 1000 }));
  const errors = [];
  reader.on("error", (error) => errors.push(error.code));
  const got = [];
  await reader.subscribe(channel, (message) => got.push(innerPayload(message.payload)));
  const socket = reader._socketForTests;
  const writer = client(params.rw);
  await writer.publish(channel, "before exp");
  await waitFor("the message before exp", () => got.includes("before exp"));
  // Past the short token's exp, plus the server's one-second expiry check, plus slack.
  await sleep(Math.max(0, shortExp * 1000 - Date.now()) + 2500);
  await writer.publish(channel, "after exp");
  await waitFor("the message after exp", () => got.includes("after exp"), 10000).catch(() => {});
  c.check("refreshed before exp", refreshed.length === 1 && refreshed[0].at < shortExp, refreshed);
  c.check("refreshed exp is the new token's", refreshed[0]?.exp === freshExp, { refreshed: refreshed[0]?.exp, freshExp });
  c.check("getToken asked once", asked === 1, asked);
  c.check("no error", errors.length === 0, errors);
  c.check("same socket, never closed (no 3001)", reader._socketForTests === socket && states.join() === "connecting,open", states);
  c.check("messages before and after the first exp", got.join("|") === "before exp|after exp", got);
  c.check("client's current token is the fresh one", reader.tokenExpiry === freshExp, reader.tokenExpiry);
  return c;
}

const output = document.getElementById("result");
let result;
try {
  const outcomes = await Promise.allSettled([resume(), refresh()]);
  const checks = {};
  const failures = [];
  for (const [index, outcome] of outcomes.entries()) {
    if (outcome.status === "fulfilled") {
      checks[outcome.value.name] = outcome.value.checks;
      failures.push(...outcome.value.failures);
    } else {
      failures.push(`${["resume", "refresh"][index]} threw: ${outcome.reason?.stack ?? outcome.reason}`);
    }
  }
  result = { ok: failures.length === 0, checks, failures, userAgent: navigator.userAgent };
} catch (error) {
  result = { ok: false, failures: [`threw: ${error?.stack ?? error}`] };
} finally {
  for (const made of clients) made.close();
}
output.textContent = JSON.stringify(result);
output.dataset.done = "1";
console.log("RESULT " + JSON.stringify(result));
