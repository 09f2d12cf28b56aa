// Demo client for postgres-websockets. Plain browser JavaScript: no framework, no build
// step, and no network requests other than WebSockets to the server that served the page.
// Everything received is inserted with textContent, never parsed as HTML.
'use strict';

/** The test-only secret of sample.conf. A real page never knows the server's secret. */
const DEMO_SECRET = 'auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe';
/** sample.conf: audit-channel = "audit", meta-channel = "server-info". */
const AUDIT_CHANNEL = 'audit';
const META_CHANNEL = 'server-info';
/** Entries kept per pane; older ones are dropped. */
const MAX_ENTRIES = 300;
/** PostgreSQL identifiers hold at most 63 bytes. */
const MAX_CHANNEL_BYTES = 63;

/** What the close codes the server uses mean. */
const CLOSE_MEANINGS = {
  1000: 'normal closure',
  1001: 'going away: the server is shutting down, or the socket stopped answering pings',
  1002: 'protocol error',
  1003: 'binary messages are not supported',
  1005: 'closed without a status code',
  1006: 'connection lost or refused before it opened: bad or expired token, channel not allowed, too many connections, or server not reachable (the server log says which)',
  1007: 'the message was not valid UTF-8',
  1008: 'policy violation: a write on a read-only socket, a client too slow to read, or a message PostgreSQL refused',
  1009: 'message too large',
  1011: 'server error',
  1013: 'database unavailable, try again later',
  3001: 'the JWT expired',
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

/** The claims of a token pasted by the person, or null when they cannot be read. */
function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(part + '='.repeat((4 - part.length % 4) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims !== null && typeof claims === 'object' && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** Claims for a socket: mode, channel and, when `minutes` is a positive number, exp. */
function makeClaims(mode, channel, minutes, nowSeconds) {
  const claims = { mode, channel };
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

/** `wss://` on an https page, `ws://` otherwise; the channel is percent-encoded. */
function socketURL(channel, token, loc) {
  const scheme = loc.protocol === 'https:' ? 'wss://' : 'ws://';
  return scheme + loc.host + '/' + encodeURIComponent(channel) + '/' + token;
}

function describeClose(code) {
  return CLOSE_MEANINGS[code] || (code >= 4000 ? 'application-defined code' : 'unknown code');
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

  addMessage(data) {
    const receivedAt = new Date();
    const entry = element('li', 'entry');
    const head = element('p', 'entry-head');
    if (typeof data !== 'string') {
      head.append(element('span', 'event raw', 'binary'), ' ', timeElement(receivedAt));
      entry.append(head, element('p', 'payload empty', '(binary message)'));
      this.add(entry);
      return;
    }
    const envelope = parseEnvelope(data);
    if (envelope) {
      head.append(element('span', 'event', envelope.event));
      if (envelope.channel !== null) head.append(' ', element('span', 'channel', envelope.channel));
      head.append(' ', timeElement(envelope.deliveredAt || receivedAt));
      entry.append(head, payloadElement(envelope.payload));
      if (envelope.claims) entry.append(element('p', 'claims', 'claims ' + JSON.stringify(envelope.claims)));
      const details = element('details', 'raw-text');
      details.append(element('summary', null, 'envelope'), element('pre', null, data));
      entry.append(details);
    } else {
      head.append(element('span', 'event raw', 'NOTIFY'), ' ', element('span', 'kind', 'raw payload'), ' ',
        timeElement(receivedAt));
      entry.append(head, payloadElement(data));
    }
    this.add(entry);
  }

  addSent(text) {
    const entry = element('li', 'entry sent');
    const head = element('p', 'entry-head');
    head.append(element('span', 'event', 'you sent'), ' ', timeElement(new Date()));
    entry.append(head, payloadElement(text));
    this.add(entry);
  }
}

function payloadElement(text) {
  return text === '' ? element('p', 'payload empty', '(empty payload)') : element('p', 'payload', text);
}

/** One WebSocket shown in a pane. Events of a replaced socket are ignored. */
class Link {
  constructor(pane, onChange) {
    this.pane = pane;
    this.onChange = onChange || (() => {});
    this.socket = null;
    this.mode = null;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect(channel, token, mode) {
    this.detach();
    let socket;
    try {
      socket = new WebSocket(socketURL(channel, token, window.location));
    } catch (error) {
      this.pane.setState('cannot open a socket: ' + error.message, 'closed');
      this.onChange();
      return;
    }
    this.socket = socket;
    this.mode = mode;
    this.pane.setState(`connecting to “${channel}” (mode ${mode})…`, 'pending');
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      this.pane.setState(`open on “${channel}” (mode ${mode})`, 'open');
      this.onChange();
    });
    socket.addEventListener('message', (event) => {
      if (this.socket === socket) this.pane.addMessage(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      const reason = event.reason ? ` Server said: “${event.reason}”.` : '';
      this.pane.setState(`closed: ${event.code}, ${describeClose(event.code)}.${reason}`, 'closed');
      this.onChange();
    });
    this.onChange();
  }

  /** Closes the socket normally; its close event still updates the pane. */
  close() {
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) {
      this.pane.setState('closing…', 'pending');
      this.socket.close(1000, 'closed by the page');
    }
  }

  /** Forgets the current socket (closing it) so a new one can take its place. */
  detach() {
    const old = this.socket;
    this.socket = null;
    if (old && old.readyState <= WebSocket.OPEN) old.close(1000, 'replaced');
  }

  send(text) {
    this.socket.send(text);
  }
}

function setUpPage() {
  const $ = (id) => document.getElementById(id);
  const form = $('token-form');
  const channelInput = $('channel');
  const modeSelect = $('mode');
  const expiryInput = $('expiry');
  const ownTokenInput = $('own-token');
  const disconnectButton = $('disconnect');
  const formError = $('form-error');
  const tokenOutput = $('token');
  const claimsOutput = $('claims');
  const sendForm = $('send-form');
  const messageInput = $('message');
  const sendButton = $('send');
  const sendHint = $('send-hint');

  const channelPane = new Pane($('pane-channel'));
  const monitors = [
    { channel: AUDIT_CHANNEL, pane: new Pane($('pane-audit')) },
    { channel: META_CHANNEL, pane: new Pane($('pane-meta')) },
  ];

  const main = new Link(channelPane, updateControls);

  function updateControls() {
    const open = main.isOpen;
    messageInput.disabled = !open;
    sendButton.disabled = !open;
    messageInput.placeholder = open ? 'type a message, Enter sends' : 'connect first';
    disconnectButton.disabled = isIdle(main);
    if (open && main.mode === 'r') {
      sendHint.textContent = 'This token is read-only (mode r): sending makes the server close the socket with 1008.';
    } else if (open && main.mode === 'w') {
      sendHint.textContent = 'Mode w sends but does not read: your messages reach other readers, the audit pane shows them.';
    } else {
      sendHint.textContent = '';
    }
  }

  function updateSQLHint() {
    const channel = channelInput.value || 'chat';
    $('channel-title').textContent = channel;
    $('sql-notify').textContent = `NOTIFY ${sqlIdentifier(channel)}, 'hello from SQL';`;
    $('sql-pg-notify').textContent = `SELECT pg_notify(${sqlString(channel)}, 'hi');`;
  }

  async function connectMonitor(monitor) {
    monitor.button.hidden = true;
    try {
      const token = await mintToken({ mode: 'r', channel: monitor.channel });
      monitor.link.connect(monitor.channel, token, 'r');
    } catch (error) {
      monitor.pane.setState('cannot sign a token: ' + error.message, 'closed');
      monitor.button.hidden = false;
    }
  }

  function isIdle(link) {
    return link.socket === null || link.socket.readyState > WebSocket.OPEN;
  }

  for (const monitor of monitors) {
    monitor.button = monitor.pane.root.querySelector('.reconnect');
    monitor.link = new Link(monitor.pane, () => {
      monitor.button.hidden = !isIdle(monitor.link);
    });
    monitor.button.addEventListener('click', () => connectMonitor(monitor));
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
    if (token) {
      const claims = decodeClaims(token);
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
      const claims = makeClaims(mode, channel, minutes, Date.now() / 1000);
      try {
        token = await mintToken(claims);
      } catch (error) {
        formError.textContent = 'Could not sign the token: ' + error.message;
        return;
      }
      tokenOutput.textContent = token;
      claimsOutput.textContent = JSON.stringify(claims) +
        (claims.exp ? ` (expires ${new Date(claims.exp * 1000).toLocaleString()})` : '');
    }
    main.connect(channel, token, mode);
    for (const monitor of monitors) {
      if (isIdle(monitor.link) && canMintTokens()) connectMonitor(monitor);
    }
  });

  disconnectButton.addEventListener('click', () => main.close());

  sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = messageInput.value;
    if (!main.isOpen || text === '') return;
    main.send(text);
    channelPane.addSent(text);
    messageInput.value = '';
    messageInput.focus();
  });

  channelInput.addEventListener('input', updateSQLHint);
  updateSQLHint();
  updateControls();

  if (window.location.protocol !== 'http:' && window.location.protocol !== 'https:') {
    formError.textContent = 'Open this page through the server (for example http://localhost:3000/), not as a file.';
    return;
  }
  if (canMintTokens()) {
    for (const monitor of monitors) connectMonitor(monitor);
  } else {
    for (const monitor of monitors) {
      monitor.pane.setState('needs a token: this browser signs tokens only on https:// or http://localhost', 'closed');
    }
  }
}

if (typeof document !== 'undefined') setUpPage();
