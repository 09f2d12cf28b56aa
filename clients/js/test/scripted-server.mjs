// A scripted WebSocket server for the client's own tests (unit.mjs): Node's http module and
// RFC 6455 framing, nothing else. Each test decides what the server answers, so the client's
// rules (which closes end it, what it resends after a reconnect, how it matches replies) can
// be checked for cases the real server produces only rarely (3003, 1008, a refused first
// handshake). The real server is tested in node-client.mjs and browser.py.
import { createHash } from "node:crypto";
import { createServer } from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** One accepted socket: frames in as parsed JSON (`frames`, `next()`), frames out with `send`. */
export class ScriptedSocket {
  constructor(socket, request, protocols) {
    this.socket = socket;
    this.request = request;
    this.protocols = protocols;
    this.frames = [];
    this.waiting = [];
    this.closed = false;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    socket.on("data", (chunk) => this.#read(chunk));
    socket.on("close", () => {
      this.closed = true;
      for (const waiter of this.waiting.splice(0)) waiter.reject(new Error("socket closed"));
    });
    socket.on("error", () => {});
  }

  /** The bearer token the client offered. */
  get token() {
    const entry = this.protocols.find((p) => p.startsWith("bearer."));
    return entry ? entry.slice("bearer.".length) : null;
  }

  /** The next client frame (parsed JSON), waiting up to `timeout` ms. */
  next(timeout = 5000) {
    if (this.frames.length > 0) return Promise.resolve(this.frames.shift());
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(waiter), 1);
        reject(new Error(`no client frame within ${timeout} ms`));
      }, timeout);
      waiter.resolve = (value) => {
        clearTimeout(timer);
        resolve(value);
      };
      waiter.reject = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      this.waiting.push(waiter);
    });
  }

  send(frame) {
    this.#write(0x1, Buffer.from(typeof frame === "string" ? frame : JSON.stringify(frame)));
  }

  /** A close frame with `code` and `reason`, then the TCP connection ends. */
  close(code, reason = "") {
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    this.#write(0x8, body);
    this.socket.end();
  }

  /** The TCP connection ends without a close frame (the client sees 1006). */
  drop() {
    this.socket.destroy();
  }

  #write(opcode, payload) {
    if (this.socket.destroyed) return;
    let header;
    if (payload.length < 126) {
      header = Buffer.from([0x80 | opcode, payload.length]);
    } else if (payload.length < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode;
      header[1] = 126;
      header.writeUInt16BE(payload.length, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 127;
      header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    this.socket.write(Buffer.concat([header, payload]));
  }

  #read(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const fin = (this.buffer[0] & 0x80) !== 0;
      const opcode = this.buffer[0] & 0x0f;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + 4 + length) return;
      const mask = this.buffer.subarray(offset, offset + 4);
      const payload = Buffer.from(this.buffer.subarray(offset + 4, offset + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      this.buffer = this.buffer.subarray(offset + 4 + length);
      if (opcode === 0x8) {
        this.#write(0x8, payload.subarray(0, 2));
        this.socket.end();
      } else if (opcode === 0x9) {
        this.#write(0xa, payload);
      } else if (opcode === 0x1 || opcode === 0x0) {
        this.fragments.push(payload);
        if (fin) {
          const text = Buffer.concat(this.fragments).toString("utf8");
          this.fragments = [];
          const frame = JSON.parse(text);
          const waiter = this.waiting.shift();
          if (waiter) waiter.resolve(frame);
          else this.frames.push(frame);
        }
      }
    }
  }
}

/**
 * Starts a server on a free loopback port. `onUpgrade(request, protocols)` returns
 * `{refuse: status}` or `{protocol}` (the subprotocol to select, or null for none); each
 * accepted socket is pushed to `sockets` and handed to whoever awaits `nextSocket()`.
 */
export async function startScriptedServer(onUpgrade = () => ({ protocol: "pgws.v1" })) {
  const sockets = [];
  const waiting = [];
  let handshakes = 0;
  const server = createServer((request, response) => {
    response.writeHead(404).end();
  });
  server.on("upgrade", (request, socket) => {
    handshakes += 1;
    const protocols = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim()).filter(Boolean);
    const decision = onUpgrade(request, protocols);
    if (decision.refuse) {
      socket.end(`HTTP/1.1 ${decision.refuse} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    const accept = createHash("sha1").update(request.headers["sec-websocket-key"] + GUID).digest("base64");
    const lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept}`];
    if (decision.protocol) lines.push(`Sec-WebSocket-Protocol: ${decision.protocol}`);
    socket.write(lines.join("\r\n") + "\r\n\r\n");
    const scripted = new ScriptedSocket(socket, request, protocols);
    sockets.push(scripted);
    const waiter = waiting.shift();
    if (waiter) waiter(scripted);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  let consumed = 0;
  return {
    url: `ws://127.0.0.1:${port}/`,
    sockets,
    get handshakes() {
      return handshakes;
    },
    /** The next accepted socket not handed out yet. */
    nextSocket(timeout = 5000) {
      if (consumed < sockets.length) return Promise.resolve(sockets[consumed++]);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no connection within ${timeout} ms`)), timeout);
        waiting.push((socket) => {
          clearTimeout(timer);
          consumed += 1;
          resolve(socket);
        });
      });
    },
    async close() {
      for (const socket of sockets) socket.socket.destroy();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
