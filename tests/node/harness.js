// Test harness: runs the real hub binary as a child process on a free loopback port with a
// fresh SQLite database, and gives the tests small helpers around its REST API. Every await
// on the network has a deadline, and every hub started here is killed when the test file
// ends, passes or fails.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, "..", "..");
export const HUB_BIN =
  process.env.RAGSTREAM_BIN ?? path.join(REPO_ROOT, "target", "debug", "ragstream");

/** A 32-character admin key for the `default` tenant of every test hub. */
export const ADMIN_KEY = "rsk_node_test_admin_key_0123456789".slice(0, 32);

/** A small corpus with answers long enough (20+ tokens) for cancellation to be observable. */
export const DOCUMENTS = [
  {
    title: "The Eiffel Tower",
    text:
      "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. " +
      "It is named after the engineer Gustave Eiffel, whose company designed and built the tower " +
      "for the 1889 World's Fair. The tower is 330 metres tall, about the same height as an " +
      "81-storey building, and was the tallest man-made structure in the world for 41 years.",
  },
  {
    title: "Golden Gate Bridge",
    text:
      "The Golden Gate Bridge is a suspension bridge spanning the Golden Gate, the strait " +
      "connecting San Francisco Bay and the Pacific Ocean. It links San Francisco to Marin County " +
      "in California. Construction of the Golden Gate Bridge began in January 1933 and the bridge " +
      "opened to traffic in May 1937, painted in the colour called International Orange.",
  },
  {
    title: "Retrieval-Augmented Generation",
    text:
      "RAG stands for Retrieval-Augmented Generation. It is a way of answering questions with a " +
      "language model that first retrieves relevant passages from a collection of documents and " +
      "then gives those passages to the model together with the question, so that the answer " +
      "can cite its sources and stay grounded in the documents.",
  },
];

export const QUESTIONS = {
  eiffel: "How tall is the Eiffel Tower and who built it?",
  bridge: "When did the Golden Gate Bridge open and what colour is it?",
  rag: "What does RAG stand for and how does retrieval work?",
};

// ---------------------------------------------------------------------------------------
// Deadlines and polling

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves or rejects like `promise`, or rejects after `ms` with a message naming `label`. */
export function withTimeout(promise, ms, label, detail) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const extra = typeof detail === "function" ? detail() : detail;
      reject(new Error(`timed out after ${ms} ms: ${label}${extra ? `\n${extra}` : ""}`));
    }, ms);
  });
  return Promise.race([Promise.resolve(promise), deadline]).finally(() => clearTimeout(timer));
}

/**
 * Polls `probe` (sync or async) every `interval` ms until it returns a truthy value, which is
 * returned; rejects after `timeout` ms with the last value seen.
 */
export async function waitFor(probe, { timeout = 5000, interval = 25, label = "condition" } = {}) {
  const start = Date.now();
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - start >= timeout) {
      const seen = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${label} (${seen})`);
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------------------------------
// The hub process

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const live = new Set();

function killAllSync() {
  for (const hub of live) {
    try {
      hub.child.kill("SIGKILL");
    } catch {}
    try {
      rmSync(hub.dir, { recursive: true, force: true });
    } catch {}
  }
  live.clear();
}
process.on("exit", killAllSync);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    killAllSync();
    process.exit(130);
  });
}

/**
 * Starts the hub. Options: paceMs (offline provider delay between tokens), maxStreamsPerUser,
 * env (extra variables). Resolves once `GET /healthz` answers 200.
 */
export async function startHub({ paceMs = 5, maxStreamsPerUser = 5, env = {}, docs = true } = {}) {
  if (!existsSync(HUB_BIN)) {
    throw new Error(`${HUB_BIN} not found: run \`cargo build\` in ${REPO_ROOT} first`);
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "ragstream-node-"));
  const output = [];
  const child = spawn(HUB_BIN, [], {
    cwd: dir, // so a developer's ./.env in the repo does not leak into the tests
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      RAGSTREAM_ADDR: `127.0.0.1:${port}`,
      DATABASE_URL: `sqlite://${path.join(dir, "ragstream.db")}`,
      RAGSTREAM_ADMIN_KEY: ADMIN_KEY,
      RAGSTREAM_OFFLINE_PACE_MS: String(paceMs),
      RAGSTREAM_MAX_STREAMS_PER_USER: String(maxStreamsPerUser),
      RAGSTREAM_WORKERS: "2",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const keep = (chunk) => {
    output.push(chunk.toString());
    if (output.length > 400) output.splice(0, output.length - 400);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const base = `http://127.0.0.1:${port}`;
  const hub = {
    port,
    dir,
    child,
    base,
    hubUrl: `${base}/api/v1/chat/ws`,
    wsUrl: `ws://127.0.0.1:${port}/api/v1/chat/ws`,
    key: ADMIN_KEY,
    output: () => output.join(""),
    exited,
    async stop() {
      if (!live.has(hub)) return;
      live.delete(hub);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const done = await Promise.race([exited, sleep(5000).then(() => null)]);
        if (!done) {
          child.kill("SIGKILL");
          await Promise.race([exited, sleep(2000)]);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  live.add(hub);

  try {
    const early = exited.then(({ code, signal }) => {
      throw new Error(`hub exited during start (code ${code}, signal ${signal}):\n${hub.output()}`);
    });
    early.catch(() => {});
    await Promise.race([
      early,
      waitFor(
        async () => (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) })).status === 200,
        { timeout: 30000, interval: 50, label: `GET ${base}/healthz → 200` },
      ),
    ]);
    if (docs) await loadDocuments(hub);
  } catch (e) {
    await hub.stop();
    throw e;
  }
  return hub;
}

// ---------------------------------------------------------------------------------------
// REST helpers

/** `fetch` with the API key and a deadline; resolves to {status, headers, body} (body parsed if JSON). */
export async function api(hub, method, route, { body, key = hub.key, headers = {}, timeout = 10000 } = {}) {
  const init = {
    method,
    headers: { ...(key ? { "X-API-Key": key } : {}), ...headers },
    signal: AbortSignal.timeout(timeout),
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(hub.base + route, init);
  const text = await res.text();
  let parsed = text;
  if ((res.headers.get("content-type") ?? "").includes("json") && text) parsed = JSON.parse(text);
  return { status: res.status, headers: res.headers, body: parsed };
}

async function expectStatus(promise, status, what) {
  const res = await promise;
  if (res.status !== status) {
    throw new Error(`${what}: expected HTTP ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

export async function loadDocuments(hub, docs = DOCUMENTS) {
  const out = [];
  for (const doc of docs) {
    out.push(await expectStatus(api(hub, "POST", "/api/v1/documents", { body: doc }), 201, `POST document ${doc.title}`));
  }
  return out;
}

/** `POST /api/v1/ask` → {answer, sources, metadata}. */
export function ask(hub, question, topK = 5) {
  return expectStatus(api(hub, "POST", "/api/v1/ask", { body: { question, topK } }), 200, `ask ${question}`);
}

export function stats(hub) {
  return expectStatus(api(hub, "GET", "/api/v1/admin/stats"), 200, "GET admin/stats");
}

export async function connections(hub) {
  const body = await expectStatus(api(hub, "GET", "/api/v1/admin/connections"), 200, "GET admin/connections");
  return body.connections;
}

export function dropConnection(hub, id) {
  return expectStatus(api(hub, "DELETE", `/api/v1/admin/connections/${id}`), 204, `DELETE admin/connections/${id}`);
}

/** Polls admin stats until `predicate(stats)` holds; resolves to those stats. */
export function waitForStats(hub, predicate, { timeout = 5000, interval = 25, label = "stats" } = {}) {
  return waitFor(
    async () => {
      const s = await stats(hub);
      return predicate(s) ? s : false;
    },
    { timeout, interval, label },
  );
}

// ---------------------------------------------------------------------------------------
// A raw WebSocket (the `ws` package) for protocol-level tests: frames and 0x1E-separated
// records as they arrive, the close code, and waits with deadlines.

export const RS = "\x1e";

export class RawSocket {
  constructor(ws) {
    this.ws = ws;
    this.frames = []; // every text/binary message, as a string, in order
    this.records = []; // SignalR records (split on 0x1E), parsed when JSON, in order
    this.incomplete = []; // messages that did not end with 0x1E (the JS client rejects those)
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
      });
    });
    ws.on("error", () => {}); // surfaced through `closed`
    ws.on("message", (data, isBinary) => {
      const text = Buffer.isBuffer(data) ? data.toString("utf8") : Buffer.concat(data).toString("utf8");
      this.frames.push({ text, binary: isBinary });
      if (!text.includes(RS)) return; // not a SignalR message (e.g. the plain protocol)
      if (!text.endsWith(RS)) this.incomplete.push(text);
      for (const part of text.split(RS).slice(0, text.endsWith(RS) ? -1 : undefined)) {
        try {
          this.records.push(JSON.parse(part));
        } catch {
          this.records.push({ unparsable: part });
        }
      }
    });
  }

  /** Opens a socket; rejects with the HTTP status if the upgrade is refused. */
  static open(url, { headers = {}, timeout = 5000, autoPong = true } = {}) {
    return new Promise((resolve, reject) => {
      // Imported lazily so harness users that never open raw sockets need no `ws`.
      import("ws").then(({ default: WebSocket }) => {
        const ws = new WebSocket(url, { headers, autoPong, handshakeTimeout: timeout });
        const raw = new RawSocket(ws);
        ws.once("open", () => resolve(raw));
        ws.once("unexpected-response", (_req, res) => {
          const err = new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`);
          err.statusCode = res.statusCode;
          res.resume();
          ws.terminate();
          reject(err);
        });
        ws.once("error", (e) => reject(e));
      }, reject);
    });
  }

  send(text) {
    this.ws.send(text);
  }

  /** Sends a SignalR handshake and resolves to the handshake reply record. */
  async handshake(request = { protocol: "json", version: 1 }, timeout = 5000) {
    const before = this.records.length;
    this.send(JSON.stringify(request) + RS);
    await this.waitRecord(() => true, { from: before, timeout, label: "handshake reply" });
    return this.records[before];
  }

  /** Waits for a record (from index `from` on) that satisfies `predicate`; resolves to it. */
  waitRecord(predicate, { from = 0, timeout = 5000, label = "record" } = {}) {
    return waitFor(() => this.records.slice(from).find(predicate), {
      timeout,
      interval: 5,
      label: `${label}; records so far: ${JSON.stringify(this.records).slice(-1500)}; close: ${JSON.stringify(this.closeInfo)}`,
    });
  }

  /** Resolves to {code, reason} when the socket closes, or rejects after `timeout`. */
  waitClose(timeout = 5000) {
    return withTimeout(this.closed, timeout, "socket close", () => `records: ${JSON.stringify(this.records)}`);
  }

  close() {
    if (this.ws.readyState <= 1) this.ws.terminate();
  }
}
