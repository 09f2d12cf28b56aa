// Demo page for postgres-websockets, on the structured protocol pgws.v1 through the
// JavaScript client (pgws.js, a copy of clients/js/pgws.js: the server serves only this
// folder). Plain browser JavaScript: no framework, no build step, and no network requests
// other than to the server that served the page. Everything received is inserted with
// textContent, never parsed as HTML.
import { PgwsClient, decodeClaims } from './pgws.js';

/** The test-only secret of sample.conf. A real page never knows the server's secret. */
const DEMO_SECRET = 'auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe';
/** sample.conf: audit-channel = "audit", meta-channel = "server-info". */
const AUDIT_CHANNEL = 'audit';
const META_CHANNEL = 'server-info';
/** Entries kept per pane; older ones are dropped. */
const MAX_ENTRIES = 300;
/** PostgreSQL identifiers hold at most 63 bytes. */
const MAX_CHANNEL_BYTES = 63;
/** Tokens minted here carry this tab's id as a claim, so the page knows its own messages when they come back. */
const TAB_ID = Math.random().toString(36).slice(2, 8);
/** Who this tab is when no name is given: its sub and name claims (presence members are subs). */
const GUEST_NAME = 'guest-' + TAB_ID;

/** What a close code means, for a close that came without a reason. */
const CLOSE_MEANINGS = {
  1000: 'normal closure',
  1001: 'going away: the server is shutting down, or the socket stopped answering pings',
  1002: 'protocol error',
  1005: 'closed without a status code',
  1006: 'connection lost, or refused before it opened (bad or expired token, channel not allowed, too many connections, server not reachable: the server log says which)',
  1007: 'a message was not valid UTF-8',
  1008: 'policy violation',
  1009: 'message too large',
  1011: 'server error',
  1013: 'database unavailable, try again later',
  3001: 'the JWT expired',
  3003: 'disconnected by an operator',
};

const utf8 = new TextEncoder();

// ---------------------------------------------------------------------------
// Tokens

/** base64url without padding (RFC 7515), from bytes. */
function base64url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

let signingKeyPromise = null;

function signingKey() {
  if (!signingKeyPromise) {
    signingKeyPromise = crypto.subtle.importKey(
      'raw', utf8.encode(DEMO_SECRET), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  }
  return signingKeyPromise;
}

/** Whether this browser lets the page sign tokens (Web Crypto needs https or localhost). */
function canMintTokens() {
  return typeof crypto !== 'undefined' && crypto.subtle !== undefined;
}

/** A compact HS256 JWT for `claims`, signed with the demo secret. */
async function mintToken(claims) {
  const header = { alg: 'HS256', typ: 'JWT' };
  const signingInput = base64url(utf8.encode(JSON.stringify(header))) + '.' +
    base64url(utf8.encode(JSON.stringify(claims)));
  const signature = await crypto.subtle.sign('HMAC', await signingKey(), utf8.encode(signingInput));
  return signingInput + '.' + base64url(new Uint8Array(signature));
}

/** Claims for a socket: mode, channel, this tab, who (sub, name), and, when `minutes` is a number, exp. */
function makeClaims(mode, channel, minutes, nowSeconds, user) {
  const claims = { mode, channel, tab: TAB_ID, sub: user, name: user };
  if (minutes !== null) claims.exp = Math.floor(nowSeconds + minutes * 60);
  return claims;
}

/** Why `name` cannot be a channel, or null when it can (the server applies the same rules). */
function channelProblem(name) {
  if (name.length === 0) return 'Enter a channel name.';
  if (name.includes('\u0000')) return 'A channel name cannot contain a NUL character.';
  const bytes = utf8.encode(name).length;
  if (bytes > MAX_CHANNEL_BYTES) {
    return `A channel name holds at most ${MAX_CHANNEL_BYTES} bytes of UTF-8; this one has ${bytes}.`;
  }
  return null;
}

/** The expiry field as minutes, null for none; throws with a message when it is not usable. */
function parseMinutes(text) {
  const trimmed = text.trim();
  if (trimmed === '') return null;
  const minutes = Number(trimmed);
  if (!Number.isFinite(minutes) || minutes <= 0) {
    throw new Error('The expiry must be a positive number of minutes, or empty for none.');
  }
  return minutes;
}

// ---------------------------------------------------------------------------
// Messages

/** The server's root as a WebSocket URL: the client subscribes itself (pgws.v1). */
function serverURL(loc) {
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/';
}

/** The server's reason first; the generic meaning of the code only when there is none. */
function describeClose(code, reason) {
  if (reason) return code ? `${reason} (${code})` : reason;
  if (code === null || code === undefined) return 'closed';
  return `${code}: ` + (CLOSE_MEANINGS[code] || (code >= 4000 ? 'application-defined code' : 'unknown code'));
}

/**
 * The parts of a postgres-websockets envelope, or null when `text` is not one (SQL code
 * can NOTIFY any text at all).
 */
function parseEnvelope(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  if (typeof value.event !== 'string' || !('payload' in value)) return null;
  const claims = value.claims !== null && typeof value.claims === 'object' && !Array.isArray(value.claims)
    ? value.claims : null;
  const deliveredAt = claims && typeof claims.message_delivered_at === 'number'
    ? new Date(claims.message_delivered_at * 1000) : null;
  let otherClaims = null;
  if (claims) {
    otherClaims = {};
    for (const [key, claim] of Object.entries(claims)) {
      if (key !== 'message_delivered_at') otherClaims[key] = claim;
    }
  }
  return {
    event: value.event,
    channel: typeof value.channel === 'string' ? value.channel : null,
    payload: typeof value.payload === 'string' ? value.payload : JSON.stringify(value.payload),
    deliveredAt: deliveredAt && !Number.isNaN(deliveredAt.getTime()) ? deliveredAt : null,
    claims: otherClaims,
  };
}

/** SQL for the hint: an identifier quoted only when it must be, and a string literal. */
function sqlIdentifier(name) {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
}

function sqlString(text) {
  return "'" + text.replace(/'/g, "''") + "'";
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString(undefined, { hour12: false });
}

// ---------------------------------------------------------------------------
// The page

/** A new element with an optional class and text (always as text, never as HTML). */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeElement(date) {
  const node = element('time', 'when', date.toLocaleTimeString(undefined, { hour12: false }) + '.' +
    String(date.getMilliseconds()).padStart(3, '0'));
  node.dateTime = date.toISOString();
  return node;
}

function channelTag(channel) {
  return element('span', 'channel', channel);
}

function offsetTag(offset) {
  const node = element('span', 'offset', offset);
  node.title = 'offset: the client sends the last one it got as "since" when it resubscribes';
  return node;
}

function payloadElement(text) {
  return text === '' ? element('p', 'payload empty', '(empty payload)') : element('p', 'payload', text);
}

/** One pane: a state line and a bounded log of entries. */
class Pane {
  constructor(root) {
    this.root = root;
    this.state = root.querySelector('.state');
    this.log = root.querySelector('.log');
    root.querySelector('.clear').addEventListener('click', () => this.log.replaceChildren());
  }

  setState(text, kind) {
    this.state.textContent = text;
    this.state.dataset.kind = kind;
  }

  add(entry) {
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(entry);
    while (this.log.childElementCount > MAX_ENTRIES) this.log.firstElementChild.remove();
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  /** A line about the connection itself (switched channel, reconnected, token refreshed). */
  addNote(text, kind = 'info') {
    const entry = element('li', 'entry note');
    entry.dataset.kind = kind;
    entry.append(element('p', null, text));
    this.add(entry);
  }

  /** A `message` frame: tagged with its channel and offset. */
  addMessage(message) {
    const receivedAt = new Date();
    const entry = element('li', 'entry');
    entry.dataset.channel = message.channel;
    const head = element('p', 'entry-head');
    const envelope = parseEnvelope(message.payload);
    if (envelope) {
      head.append(element('span', 'event', envelope.event), ' ', channelTag(message.channel));
      if (message.offset !== null) head.append(' ', offsetTag(message.offset));
      head.append(' ', timeElement(envelope.deliveredAt || receivedAt));
      entry.append(head, payloadElement(envelope.payload));
      if (envelope.claims) entry.append(element('p', 'claims', 'claims ' + JSON.stringify(envelope.claims)));
      const details = element('details', 'raw-text');
      details.append(element('summary', null, 'envelope'), element('pre', null, message.payload));
      entry.append(details);
    } else {
      head.append(element('span', 'event raw', 'NOTIFY'), ' ', channelTag(message.channel));
      if (message.offset !== null) head.append(' ', offsetTag(message.offset));
      head.append(' ', element('span', 'kind', 'raw payload'), ' ', timeElement(receivedAt));
      entry.append(head, payloadElement(message.payload));
    }
    this.add(entry);
  }

  /** What this page publishes: one entry, pending until the server answers. */
  addPublish(text, channel) {
    const entry = element('li', 'entry sent');
    entry.dataset.channel = channel;
    entry.dataset.status = 'pending';
    const head = element('p', 'entry-head');
    const status = element('span', 'status', 'sending…');
    const offset = element('span', 'offset-slot');
    head.append(element('span', 'event', 'you'), ' ', channelTag(channel), ' ', status, ' ', offset, ' ',
      timeElement(new Date()));
    const detail = element('p', 'status-detail');
    entry.append(head, payloadElement(text), detail);
    this.add(entry);
    return {
      text,
      channel,
      /** The server answered `published`: PostgreSQL committed the NOTIFY. */
      confirm(reply) {
        entry.dataset.status = 'confirmed';
        status.textContent = 'confirmed';
        status.title = 'the server answered "published": PostgreSQL committed the NOTIFY';
        if (reply.offset !== undefined && reply.offset !== null) offset.replaceChildren(offsetTag(reply.offset));
      },
      /** The server refused it (`error`), or the answer was lost with the connection. */
      refuse(error) {
        entry.dataset.status = 'refused';
        if (error.code === 'disconnected') {
          status.textContent = 'unconfirmed';
          detail.textContent = 'The connection was lost before the server answered: it may or may not have been published.';
        } else {
          status.textContent = 'refused';
          detail.textContent = `${error.code}: ${error.reason}`;
        }
      },
      /** The message came back on the channel (read modes): its offset. */
      echoed(message) {
        if (message.offset !== null) offset.replaceChildren(offsetTag(message.offset));
        entry.dataset.echoed = 'true';
      },
    };
  }
}

/**
 * The members of the page's channel: the `presence` answer, then joins and leaves as they
 * come, keyed by id (a member with several sockets is one entry).
 */
class PresencePane extends Pane {
  constructor(root) {
    super(root);
    this.list = root.querySelector('.members');
    this.members = new Map();
  }

  reset(members) {
    this.members = new Map(members.map((member) => [JSON.stringify(member.id), member]));
    this.render();
  }

  join(member) {
    this.members.set(JSON.stringify(member.id), member);
    this.render();
    this.addNote(`${this.label(member)} joined.`, 'ok');
  }

  leave(member) {
    this.members.delete(JSON.stringify(member.id));
    this.render();
    this.addNote(`${this.label(member)} left.`);
  }

  label(member) {
    const name = member.claims && typeof member.claims.name === 'string' ? member.claims.name : null;
    return name ?? (typeof member.id === 'string' ? member.id : JSON.stringify(member.id));
  }

  render() {
    const items = [...this.members.values()].map((member) => element('li', 'member', this.label(member)));
    this.list.replaceChildren(...items);
  }
}

/**
 * The envelope in `payload` when this page's connection published it: a token minted here
 * carries this tab's id (its `exp` changes with each refresh); a pasted one is recognised by
 * its claims, as they are.
 */
function ownEnvelope(payload, connection) {
  const envelope = parseEnvelope(payload);
  if (!envelope || !envelope.claims) return null;
  if (connection.minted) return envelope.claims.tab === TAB_ID ? envelope : null;
  return connection.claims && JSON.stringify(envelope.claims) === JSON.stringify(connection.claims) ? envelope : null;
}

function setUpPage() {
  const $ = (id) => document.getElementById(id);
  const form = $('token-form');
  const channelInput = $('channel');
  const modeSelect = $('mode');
  const expiryInput = $('expiry');
  const refreshInput = $('refresh');
  const ownTokenInput = $('own-token');
  const disconnectButton = $('disconnect');
  const dropButton = $('drop');
  const formError = $('form-error');
  const tokenOutput = $('token');
  const claimsOutput = $('claims');
  const sendForm = $('send-form');
  const messageInput = $('message');
  const sendButton = $('send');
  const sendHint = $('send-hint');
  const channelTitle = $('channel-title');

  const channelPane = new Pane($('pane-channel'));
  const presencePane = new PresencePane($('pane-presence'));
  const userInput = $('user');
  userInput.placeholder = GUEST_NAME;
  const revokeForm = $('revoke-form');
  const url = serverURL(window.location);
  // `make run` serves a tiny form beside the server, on the next port, that revokes a demo
  // user in SQL; elsewhere (tests, a server of your own) it is absent and so is the button.
  const adminURL = `${window.location.protocol}//${window.location.hostname}:${Number(window.location.port || 80) + 1}`;
  fetch(adminURL + '/ping').then((response) => {
    if (!response.ok) return;
    revokeForm.action = adminURL + '/revoke';
    revokeForm.hidden = false;
    revokeForm.nextElementSibling.hidden = false;
  }, () => {});

  /** The page's own connection: {client, channel, mode, claims, minted, awaitingEcho}. */
  let main = null;

  // --- Monitors: the meta pane's socket opens first, so it sees the audit socket's
  // ConnectionOpen (and the main socket's).
  const meta = { channel: META_CHANNEL, pane: new Pane($('pane-meta')), client: null, opening: null };
  const audit = { channel: AUDIT_CHANNEL, pane: new Pane($('pane-audit')), client: null, opening: null };

  function isLive(client) {
    return client !== null && client.state !== 'closed';
  }

  /** Opens a monitor's socket unless it has a live one; resolves once it LISTENs (or failed). */
  function connectMonitor(monitor) {
    if (!monitor.opening) {
      monitor.opening = openMonitor(monitor).finally(() => {
        monitor.opening = null;
      });
    }
    return monitor.opening;
  }

  async function openMonitor(monitor) {
    const button = monitor.pane.root.querySelector('.reconnect');
    button.hidden = true;
    if (isLive(monitor.client)) return;
    let token;
    try {
      token = await mintToken({ mode: 'r', channel: monitor.channel, tab: TAB_ID });
    } catch (error) {
      monitor.pane.setState('cannot sign a token: ' + error.message, 'closed');
      button.hidden = false;
      return;
    }
    const client = new PgwsClient(url, { token });
    monitor.client = client;
    showState(client, monitor.pane, () => `“${monitor.channel}”`, () => {
      button.hidden = client.state !== 'closed';
    });
    client.on('subscribed', (event) => {
      if (event.resubscribe) monitor.pane.addNote(recoveryText(event), event.recovered ? 'ok' : 'warn');
    });
    const subscribed = client.subscribe(monitor.channel, (message) => monitor.pane.addMessage(message));
    // Not longer than a few seconds: a server that does not answer must not hold up the page.
    await Promise.race([subscribed.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 5000))]);
  }

  async function connectMonitors() {
    await connectMonitor(meta);
    await connectMonitor(audit);
  }

  for (const monitor of [meta, audit]) {
    monitor.pane.root.querySelector('.reconnect').addEventListener('click', () => connectMonitor(monitor));
  }

  function recoveryText(event) {
    if (event.recovered) {
      return `Reconnected: resumed #${event.channel} after offset ${event.since ?? '(none)'}, recovered: true (nothing missed).`;
    }
    return `Reconnected to #${event.channel}, recovered: false: ` + (event.since === null
      ? 'no offset to resume from.'
      : `the server no longer holds everything after offset ${event.since}; messages may be missing.`);
  }

  /** Keeps a pane's state line in step with a client's `state` events. */
  function showState(client, pane, label, onChange = () => {}) {
    client.on('state', (event) => {
      if (event.state === 'connecting') {
        pane.setState(`connecting to ${label()}…`, 'pending');
      } else if (event.state === 'open') {
        pane.setState(`open on ${label()}` + (event.resumed ? ' (reconnected)' : ''), 'open');
      } else if (event.state === 'reconnecting') {
        const why = event.code === null || event.code === undefined ? event.reason : describeClose(event.code, event.reason);
        pane.setState(`lost (${why}); reconnecting in ${(event.delay / 1000).toFixed(1)} s…`, 'pending');
      } else if (event.state === 'closed') {
        pane.setState('closed: ' + describeClose(event.code, event.reason), 'closed');
      }
      onChange();
      if (client === main?.client) updateControls();
    });
  }

  // --- The page's own connection.

  function updateControls() {
    const live = main !== null && isLive(main.client);
    const open = live && main.client.state === 'open';
    // Publishes made while reconnecting wait in the client and go out once it is open.
    messageInput.disabled = !live;
    sendButton.disabled = !live;
    messageInput.placeholder = live ? 'type a message, Enter sends' : 'connect first';
    disconnectButton.disabled = !live;
    dropButton.disabled = !open;
    if (live && main.mode === 'r') {
      sendHint.textContent = 'This token is read-only (mode r): the server refuses what you send (forbidden); the socket stays open.';
    } else if (live && main.mode === 'w') {
      sendHint.textContent = 'Mode w publishes but does not read: your messages show here once confirmed, and in the audit pane.';
    } else {
      sendHint.textContent = '';
    }
  }

  function updateSQLHint() {
    const channel = main ? main.channel : (channelInput.value || 'chat');
    $('sql-notify').textContent = `NOTIFY ${sqlIdentifier(channel)}, 'hello from SQL';`;
    $('sql-pg-notify').textContent = `SELECT pg_notify(${sqlString(channel)}, 'hi');`;
  }

  function connectMain(channel, mode, token, claims, minted, getToken) {
    if (main) {
      main.client.close();
      if (main.channel !== channel) channelPane.addNote(`Left #${main.channel}; now on #${channel}.`);
    }
    // The heading changes here, when the switch happens, not while the field is edited.
    channelTitle.textContent = channel;
    const client = new PgwsClient(url, { token, getToken });
    const current = { client, channel, mode, claims, minted, awaitingEcho: [] };
    main = current;
    updateSQLHint();
    showState(client, channelPane, () => `“${channel}” (mode ${mode})` +
      (client.offset(channel) ? `, last offset ${client.offset(channel)}` : ''));
    client.on('subscribed', (event) => {
      if (event.resubscribe) channelPane.addNote(recoveryText(event), event.recovered ? 'ok' : 'warn');
    });
    client.on('unsubscribed', (event) => channelPane.addNote(`The server ended #${event.channel}: ${event.reason}.`, 'warn'));
    client.on('refreshed', (event) => {
      channelPane.addNote('Token refreshed without reconnecting' +
        (event.exp ? `; it now expires at ${formatTime(event.exp)}.` : '.'));
    });
    client.on('error', (error) => channelPane.addNote(`${error.code}: ${error.reason}`, 'warn'));
    $('presence-channel').textContent = `#${channel}`;
    $('revoke-sub').value = claims && typeof claims.sub === 'string' ? claims.sub : '';
    $('revoke-sql').textContent = `SELECT pgws.revoke('{"sub": ${JSON.stringify($('revoke-sub').value)}}', now() + interval '1 minute');`;
    presencePane.reset([]);
    showState(client, presencePane, () => `#${channel}`);
    // Who is on the channel: asked after every (re)subscribe, then kept by joins and leaves.
    const askPresence = () => {
      client.presence(channel).then((reply) => {
        if (main === current) presencePane.reset(reply.members);
      }, (error) => {
        if (main === current) presencePane.addNote(`presence: ${error.code}: ${error.reason}`, 'warn');
      });
    };
    client.on('subscribed', (event) => {
      if (event.channel === channel && event.resubscribe) askPresence();
    });
    if (mode.includes('r')) {
      client.subscribe(channel, {
        presence: true,
        onJoin: (event) => { if (main === current) presencePane.join(event.member); },
        onLeave: (event) => { if (main === current) presencePane.leave(event.member); },
        onMessage: (message) => {
          if (main !== current) return;
          // Our own message coming back: it completes the entry shown when it was sent.
          const envelope = ownEnvelope(message.payload, current);
          if (envelope) {
            const index = current.awaitingEcho.findIndex((sent) => sent.text === envelope.payload);
            if (index >= 0) {
              current.awaitingEcho.splice(index, 1)[0].echoed(message);
              return;
            }
          }
          channelPane.addMessage(message);
        },
      }).then(askPresence, () => {});
    } else {
      presencePane.addNote(`Mode ${mode} does not read #${channel}: only readers are on a channel, and only they may ask who is.`);
      channelPane.addNote(`Mode ${mode} does not read #${channel}: nothing arrives here but your own messages, confirmed.`);
    }
    updateControls();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formError.textContent = '';
    const channel = channelInput.value;
    let mode = modeSelect.value;
    const problem = channelProblem(channel);
    if (problem) {
      formError.textContent = problem;
      channelInput.focus();
      return;
    }
    let token = ownTokenInput.value.trim();
    const minted = token === '';
    const user = userInput.value.trim() || GUEST_NAME;
    let claims;
    let getToken;
    if (token) {
      claims = decodeClaims(token);
      tokenOutput.textContent = token;
      claimsOutput.textContent = claims ? JSON.stringify(claims) : '(cannot read the claims of this token)';
      mode = claims && typeof claims.mode === 'string' ? claims.mode : '?';
    } else {
      if (!canMintTokens()) {
        formError.textContent = 'This browser only signs tokens on https:// pages or on http://localhost. ' +
          'Open the page through localhost, or paste a token under “Use a token of your own”.';
        return;
      }
      let minutes;
      try {
        if (expiryInput.validity.badInput) throw new Error('The expiry must be a number of minutes, or empty for none.');
        minutes = parseMinutes(expiryInput.value);
      } catch (error) {
        formError.textContent = error.message;
        expiryInput.focus();
        return;
      }
      claims = makeClaims(mode, channel, minutes, Date.now() / 1000, user);
      try {
        token = await mintToken(claims);
      } catch (error) {
        formError.textContent = 'Could not sign the token: ' + error.message;
        return;
      }
      const showToken = (shown, shownClaims) => {
        tokenOutput.textContent = shown;
        claimsOutput.textContent = JSON.stringify(shownClaims) +
          (shownClaims.exp ? ` (expires ${new Date(shownClaims.exp * 1000).toLocaleString()})` : '');
      };
      showToken(token, claims);
      if (minutes !== null && refreshInput.checked) {
        // Before exp the client asks for a token with the same claims and a later exp, and
        // sends it as `refresh`: the socket stays open.
        getToken = async () => {
          const next = makeClaims(mode, channel, minutes, Date.now() / 1000, user);
          const fresh = await mintToken(next);
          showToken(fresh, next);
          return fresh;
        };
      }
    }
    await connectMonitors();
    connectMain(channel, mode, token, claims, minted, getToken);
  });

  disconnectButton.addEventListener('click', () => main?.client.close());

  dropButton.addEventListener('click', () => {
    // The client's test hook: its socket closes under it, as when a network drops. The
    // client reconnects, resubscribes with `since` and reports `recovered`.
    main?.client._socketForTests?.close(4000, 'dropped by the demo page');
  });

  sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = messageInput.value;
    if (!main || !isLive(main.client) || text === '') return;
    const current = main;
    const sent = channelPane.addPublish(text, current.channel);
    if (current.mode.includes('r')) current.awaitingEcho.push(sent);
    current.client.publish(current.channel, text).then(
      (reply) => sent.confirm(reply),
      (error) => {
        sent.refuse(error);
        const index = current.awaitingEcho.indexOf(sent);
        if (index >= 0) current.awaitingEcho.splice(index, 1);
      });
    messageInput.value = '';
    messageInput.focus();
  });

  channelInput.addEventListener('input', () => {
    if (!main) updateSQLHint();
  });
  updateSQLHint();
  updateControls();

  if (window.location.protocol !== 'http:' && window.location.protocol !== 'https:') {
    formError.textContent = 'Open this page through the server (for example http://localhost:3000/), not as a file.';
    return;
  }
  if (canMintTokens()) {
    connectMonitors();
  } else {
    for (const monitor of [meta, audit]) {
      monitor.pane.setState('needs a token: this browser signs tokens only on https:// or http://localhost', 'closed');
    }
  }
}

setUpPage();
