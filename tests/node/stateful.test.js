// SignalR stateful reconnect (issue 12) with the official client's withStatefulReconnect(),
// and resuming an answer by id on a brand new connection (ResumeAnswer, AnswerStarted).
//
// The hub runs behind a small TCP proxy (CutProxy below) that drops connections the way a
// network does: both sockets destroyed at once, no close frame, no SignalR Close. The client
// then sees an abnormal close and reconnects its WebSocket with its connection token.
//
// The hub here has a short grace window (RAGSTREAM_RESUME_GRACE_SECS=3), so what a test
// leaves detached on purpose is stopped before the next test needs the slots.

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

import * as signalR from "@microsoft/signalr";

import {
  ADMIN_KEY,
  QUESTIONS,
  RS,
  RawSocket,
  api,
  connections,
  dropConnection,
  sleep,
  startHub,
  stats,
  waitFor,
  waitForStats,
  withTimeout,
} from "./harness.js";

const { HubConnectionBuilder, HubConnectionState } = signalR;
const GRACE_SECS = 3;
const SHORT_GRACE_SECS = 2;

// ---------------------------------------------------------------------------------------
// A TCP proxy that cuts connections for real

class CutProxy {
  constructor(target) {
    this.target = target;
    this.links = new Set(); // [client, upstream] pairs alive now
    this.requests = []; // the first line of every request that came through
    this.refusing = false;
  }

  start() {
    this.server = net.createServer((client) => {
      if (this.refusing) {
        client.resetAndDestroy();
        return;
      }
      const upstream = net.connect(this.target, "127.0.0.1");
      const link = [client, upstream];
      this.links.add(link);
      client.once("data", (chunk) => this.requests.push(chunk.toString("latin1").split("\r\n")[0]));
      client.pipe(upstream);
      upstream.pipe(client);
      const drop = () => {
        this.links.delete(link);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", drop);
      upstream.on("error", drop);
      client.on("close", drop);
      upstream.on("close", drop);
    });
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => {
        this.port = this.server.address().port;
        this.hubUrl = `http://127.0.0.1:${this.port}/api/v1/chat/ws`;
        resolve(this);
      });
    });
  }

  /** Drops every connection now: a reset on both sides, nothing more goes through. */
  cut() {
    for (const [client, upstream] of [...this.links]) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    this.links.clear();
  }

  /** WebSocket upgrades that came with `?id=<token>`, in order: the tokens. */
  socketTokens() {
    return this.requests
      .map((line) => /^GET \/api\/v1\/chat\/ws\?id=([^& ]+)/.exec(line)?.[1])
      .filter(Boolean)
      .map(decodeURIComponent);
  }

  close() {
    this.refusing = true;
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------
// Official-client helpers (as in signalr.test.js)

class CaptureLogger {
  constructor() {
    this.lines = [];
    this.problems = [];
  }
  log(level, message) {
    const line = `${signalR.LogLevel[level]}: ${message}`;
    if (level >= signalR.LogLevel.Warning) this.problems.push(line);
    this.lines.push(line);
    if (this.lines.length > 300) this.lines.shift();
    if (process.env.SIGNALR_LOG) console.error(`[signalr] ${line}`);
  }
  tail(n = 30) {
    return `client log (last ${n}):\n  ${this.lines.slice(-n).join("\n  ")}`;
  }
}

const openConnections = new Set();

function build(url, { stateful = false, reconnect = false } = {}) {
  const logger = new CaptureLogger();
  let builder = new HubConnectionBuilder()
    .withUrl(url, { accessTokenFactory: () => ADMIN_KEY })
    .configureLogging(logger);
  if (stateful) builder = builder.withStatefulReconnect();
  if (reconnect) builder = builder.withAutomaticReconnect();
  const connection = builder.build();
  connection.logger = logger;
  connection.events = [];
  connection.onreconnecting((e) => connection.events.push(["reconnecting", e?.message]));
  connection.onreconnected(() => connection.events.push(["reconnected"]));
  connection.onclose((e) => connection.events.push(["close", e?.message]));
  openConnections.add(connection);
  return connection;
}

async function start(connection) {
  await withTimeout(connection.start(), 8000, "HubConnection.start()", () => connection.logger.tail());
  assert.equal(connection.state, HubConnectionState.Connected);
  return connection;
}

async function stopAll() {
  const all = [...openConnections];
  openConnections.clear();
  await Promise.all(all.map((c) => withTimeout(c.stop(), 5000, "HubConnection.stop()").catch(() => {})));
}

/** Records the pushed client methods of SendMessage answers. */
function collect(connection) {
  const seen = { tokens: [], completes: [], errors: [], started: [] };
  // Handlers return nothing: a returned value would be sent back as a client result.
  connection.on("ReceiveToken", (token) => {
    seen.tokens.push(token);
  });
  connection.on("StreamComplete", (metadata) => {
    seen.completes.push(metadata);
  });
  connection.on("Error", (message) => {
    seen.errors.push(message);
  });
  seen.text = () => seen.tokens.join("");
  return seen;
}

function assertQuiet(connection) {
  assert.deepEqual(connection.logger.problems, [], "the client logged no warnings or errors");
}

/** Answers by question, from POST /api/v1/ask on an unpaced hub with the same documents. */
function answerCache(getHub) {
  const cache = new Map();
  return async (question, topK) => {
    const k = `${topK}|${question}`;
    if (!cache.has(k)) {
      const res = await api(getHub(), "POST", "/api/v1/ask", { body: { question, topK } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      cache.set(k, res.body);
    }
    return cache.get(k);
  };
}

// ---------------------------------------------------------------------------------------

describe(`SignalR stateful reconnect and ResumeAnswer (pace 40 ms, grace ${GRACE_SECS} s, behind a cutting proxy)`, () => {
  let hub;
  let reference;
  let proxy;
  const answer = answerCache(() => reference);
  const rawSockets = [];

  before(async () => {
    reference = await startHub({ paceMs: 0 });
    hub = await startHub({
      paceMs: 40,
      maxStreamsPerUser: 10,
      env: { RAGSTREAM_RESUME_GRACE_SECS: String(GRACE_SECS), ...(process.env.HUB_LOG ? { RUST_LOG: process.env.HUB_LOG } : {}) },
    });
  });
  afterEach(async () => {
    await stopAll();
    for (const ws of rawSockets.splice(0)) ws.close();
    await proxy?.close();
    proxy = null;
    await waitForStats(hub, (s) => s.activeStreams === 0, {
      timeout: (GRACE_SECS + 3) * 1000,
      label: "no active streams after the test",
    });
  });
  after(async () => {
    await stopAll();
    await proxy?.close();
    await hub?.stop();
    await reference?.stop();
  });

  const behindProxy = async () => {
    proxy = await new CutProxy(hub.port).start();
    return proxy;
  };

  // -- negotiate -----------------------------------------------------------------------------

  it("negotiate answers useStatefulReconnect only to a client that asked for it", async () => {
    const negotiate = async (query) => {
      const res = await fetch(`${hub.hubUrl}/negotiate?${query}`, {
        method: "POST",
        headers: { "X-API-Key": ADMIN_KEY },
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(res.status, 200);
      return res.json();
    };
    assert.equal((await negotiate("negotiateVersion=1&useStatefulReconnect=true")).useStatefulReconnect, true);
    assert.equal((await negotiate("negotiateVersion=1")).useStatefulReconnect, undefined);
    assert.equal((await negotiate("negotiateVersion=1&useStatefulReconnect=false")).useStatefulReconnect, undefined);
    assert.equal((await negotiate("useStatefulReconnect=true")).useStatefulReconnect, undefined, "not in version 0");
  });

  // -- stateful reconnect --------------------------------------------------------------------

  it("withStatefulReconnect: a SendMessage answer cut twice mid-stream ends with exactly the uninterrupted text", async () => {
    const expected = await answer(QUESTIONS.eiffel, 5);
    assert.ok(expected.metadata.tokens >= 30, `a long answer (${expected.metadata.tokens} tokens)`);
    const p = await behindProxy();
    const c = await start(build(p.hubUrl, { stateful: true }));
    const connectionId = c.connectionId;
    const seen = collect(c);
    const pending = c.invoke("SendMessage", QUESTIONS.eiffel, 5);
    pending.catch(() => {});

    for (const at of [5, 15]) {
      await waitFor(() => seen.tokens.length >= at, { timeout: 10000, label: `${at} tokens; ${c.logger.tail()}` });
      p.cut();
    }
    const result = await withTimeout(pending, 15000, "SendMessage completes after the cuts", () => c.logger.tail());
    assert.equal(result ?? null, null);

    assert.equal(seen.text(), expected.answer, "no token lost or repeated");
    assert.equal(seen.completes.length, 1, "one StreamComplete");
    assert.equal(seen.completes[0].tokens, expected.metadata.tokens);
    assert.deepEqual(seen.errors, []);
    assert.deepEqual(c.events, [], "stateful reconnect is invisible to the application: no reconnecting, no close");
    assert.equal(c.state, HubConnectionState.Connected);
    assert.equal(c.connectionId, connectionId, "the same connection");

    const tokens = p.socketTokens();
    assert.equal(tokens.length, 3, `one socket, then two reconnects: ${JSON.stringify(p.requests)}`);
    assert.equal(new Set(tokens).size, 1, "every reconnect came back with the same connection token");

    // The connection goes on: another answer on it is exact too.
    const again = await answer(QUESTIONS.bridge, 3);
    seen.tokens.length = 0;
    await withTimeout(c.invoke("SendMessage", QUESTIONS.bridge, 3), 15000, "a second SendMessage");
    assert.equal(seen.text(), again.answer);
    assertQuiet(c);
  });

  it("withStatefulReconnect: two AskStreams cut mid-stream both end with exactly their texts", async () => {
    const [ea, eb] = [await answer(QUESTIONS.rag, 3), await answer(QUESTIONS.bridge, 3)];
    const p = await behindProxy();
    const c = await start(build(p.hubUrl, { stateful: true }));
    const streams = [QUESTIONS.rag, QUESTIONS.bridge].map((q) => {
      const s = { items: [] };
      s.done = new Promise((resolve, reject) => {
        c.stream("AskStream", q, 3).subscribe({ next: (i) => s.items.push(i), complete: resolve, error: reject });
      });
      s.done.catch(() => {});
      return s;
    });
    await waitFor(() => streams.every((s) => s.items.length >= 3), { timeout: 10000, label: "items on both streams" });
    p.cut();
    await withTimeout(Promise.all(streams.map((s) => s.done)), 20000, "both streams complete", () => c.logger.tail());
    assert.equal(streams[0].items.join(""), ea.answer);
    assert.equal(streams[1].items.join(""), eb.answer);
    assert.deepEqual(c.events, []);
    assertQuiet(c);
  });

  it("withStatefulReconnect: the client's own unacknowledged invocations are replayed once, not run twice", async () => {
    const expected = await answer(QUESTIONS.rag, 2);
    const conversations = async () => (await api(hub, "GET", "/api/v1/conversations?limit=100")).body.total;
    const before = await conversations();
    const p = await behindProxy();
    const c = await start(build(p.hubUrl, { stateful: true }));
    const seen = collect(c);
    // Cut right after the invocation went out: the hub has it but has not acked it yet
    // (acks wait a second), so the client sends it again after reconnecting.
    const pending = c.invoke("SendMessage", QUESTIONS.rag, 2);
    pending.catch(() => {});
    await waitFor(() => seen.tokens.length >= 1, { timeout: 5000, label: "the answer started" });
    p.cut();
    await withTimeout(pending, 15000, "SendMessage completes", () => c.logger.tail());
    assert.equal(p.socketTokens().length, 2, "the client reconnected");
    assert.equal(seen.text(), expected.answer);
    assert.deepEqual(seen.errors, [], "no 'still running' refusal of a second copy");
    assert.equal(seen.completes.length, 1, "one answer, not two");
    assert.equal(await conversations(), before + 1, "one conversation turn was started");
    assertQuiet(c);
  });

  it("without stateful reconnect a cut behaves as before: the call fails and the connection closes", async () => {
    const p = await behindProxy();
    const c = await start(build(p.hubUrl));
    const seen = collect(c);
    const pending = c.invoke("SendMessage", QUESTIONS.eiffel, 5);
    await waitFor(() => seen.tokens.length >= 3, { timeout: 10000, label: "three tokens" });
    p.cut();
    await assert.rejects(withTimeout(pending, 5000, "the pending invoke settles"));
    await waitFor(() => c.events.some(([e]) => e === "close"), { timeout: 5000, label: "onclose" });
    assert.equal(c.state, HubConnectionState.Disconnected);
    assert.equal(p.socketTokens().length, 1, "no WebSocket reconnect with the token");
    // Its answer is detached as before: stopped once the grace window is over.
    await waitForStats(hub, (s) => s.activeStreams === 0, { timeout: (GRACE_SECS + 2) * 1000, label: "slot freed" });
  });

  it("stop() on a stateful connection is an explicit stop: the answer ends at once and the token dies", async () => {
    const p = await behindProxy();
    const c = await start(build(p.hubUrl, { stateful: true }));
    const seen = collect(c);
    const pending = c.invoke("SendMessage", QUESTIONS.eiffel, 5);
    pending.catch(() => {});
    await waitFor(() => seen.tokens.length >= 3, { timeout: 10000, label: "three tokens" });
    const [token] = p.socketTokens();
    await withTimeout(c.stop(), 5000, "stop()");
    await waitForStats(hub, (s) => s.activeStreams === 0, { timeout: 1000, label: "stopped at once, no grace" });
    await assert.rejects(RawSocket.open(`${hub.wsUrl}?id=${encodeURIComponent(token)}`), (e) => e.statusCode === 404);
  });

  it("an administrator ending a stateful connection ends it for good: the token's retry is refused, automatic reconnect makes a new one", async () => {
    const p = await behindProxy();
    const c = await start(build(p.hubUrl, { stateful: true, reconnect: true }));
    const firstId = c.connectionId;
    const seen = collect(c);
    const pending = c.invoke("SendMessage", QUESTIONS.eiffel, 5);
    pending.catch(() => {});
    await waitFor(() => seen.tokens.length >= 3, { timeout: 10000, label: "three tokens" });
    // Ours is the newest SignalR connection with an answer streaming; an earlier test's
    // connection may still be listed while it closes (a 404 on CI once).
    const mine = (await connections(hub))
      .filter((x) => x.protocol === "signalr" && x.activeStreams > 0)
      .sort((a, b) => b.id - a.id)[0];
    assert.ok(mine, "our connection is listed");
    await dropConnection(hub, mine.id);

    // Within the grace window (3 s), so a detached answer would still fail this; not a
    // tighter bound, which a loaded CI machine missed once.
    await waitForStats(hub, (s) => s.activeStreams === 0, { timeout: 2500, label: "its answer stopped at once" });
    await assert.rejects(withTimeout(pending, 5000, "the pending invoke settles"));
    await waitFor(() => c.events.some(([e]) => e === "reconnected" || e === "close"), {
      timeout: 10000,
      label: `a new connection; ${c.logger.tail()}`,
    });
    assert.deepEqual(c.events.map(([e]) => e), ["reconnecting", "reconnected"], JSON.stringify(c.events));
    assert.notEqual(c.connectionId, firstId, "a new connection, not the old one resumed");
    const tokens = p.socketTokens();
    assert.equal(tokens.length, 3, `the old token once more (refused), then a new one: ${JSON.stringify(p.requests)}`);
    assert.equal(tokens[1], tokens[0]);
    assert.notEqual(tokens[2], tokens[0]);

    const expected = await answer(QUESTIONS.bridge, 3);
    seen.tokens.length = 0;
    await withTimeout(c.invoke("SendMessage", QUESTIONS.bridge, 3), 15000, "SendMessage on the new connection");
    assert.equal(seen.text(), expected.answer);
  });

  // -- raw protocol --------------------------------------------------------------------------

  it("raw: after a reconnect the hub sends Sequence first, then what was not acknowledged, and acks what it received", async () => {
    const res = await api(hub, "POST", "/api/v1/chat/ws/negotiate?negotiateVersion=1&useStatefulReconnect=true");
    assert.equal(res.body.useStatefulReconnect, true);
    const token = encodeURIComponent(res.body.connectionToken);
    const ws = await RawSocket.open(`${hub.wsUrl}?id=${token}`);
    rawSockets.push(ws);
    assert.deepEqual(await ws.handshake({ protocol: "json", version: 2 }), {});
    ws.send(JSON.stringify({ type: 4, invocationId: "s1", target: "AskStream", arguments: [QUESTIONS.bridge, 3] }) + RS);
    const ack = await ws.waitRecord((r) => r.type === 8, { timeout: 3000, label: "the hub acks the invocation" });
    assert.deepEqual(ack, { type: 8, sequenceId: 1 });
    await ws.waitRecord((r) => r.type === 2, { timeout: 3000, label: "a stream item" });
    const before = ws.records.filter((r) => r.type === 2).map((r) => r.item);
    ws.close(); // abrupt: no close frame, no Close message

    const again = await RawSocket.open(`${hub.wsUrl}?id=${token}`);
    rawSockets.push(again);
    const first = await again.waitRecord(() => true, { timeout: 3000, label: "the first record after the reconnect" });
    assert.deepEqual(first, { type: 9, sequenceId: 1 }, "nothing was acknowledged: the replay starts at 1");
    again.send(`{"type":9,"sequenceId":2}${RS}`);
    const done = await again.waitRecord((r) => r.type === 3, { timeout: 15000, label: "the Completion" });
    assert.deepEqual(done, { type: 3, invocationId: "s1" });
    const items = again.records.filter((r) => r.type === 2).map((r) => r.item);
    assert.deepEqual(items.slice(0, before.length), before, "the replay repeats what the first socket got");
    assert.equal(items.join(""), (await answer(QUESTIONS.bridge, 3)).answer);
    assert.deepEqual(again.incomplete, []);
  });

  // -- ResumeAnswer --------------------------------------------------------------------------

  it("ResumeAnswer on a brand new connection continues an answer whose connection was lost (stream and invoke)", async () => {
    const expected = await answer(QUESTIONS.eiffel, 5);
    const p = await behindProxy();
    const a = await start(build(p.hubUrl));
    const seen = collect(a);
    a.on("AnswerStarted", (answerId, invocationId) => {
      seen.started.push([answerId, invocationId]);
    });
    assert.equal(await withTimeout(a.invoke("EnableAnswerStarted"), 5000, "EnableAnswerStarted") ?? null, null);
    const pending = a.invoke("SendMessage", QUESTIONS.eiffel, 5);
    pending.catch(() => {});
    await waitFor(() => seen.tokens.length >= 5, { timeout: 10000, label: "five tokens" });
    assert.equal(seen.started.length, 1, "AnswerStarted came once");
    const [answerId, invocationId] = seen.started[0];
    assert.equal(typeof answerId, "string");
    assert.equal(typeof invocationId, "string", "an invoke's AnswerStarted names its invocation");
    p.cut();
    await assert.rejects(withTimeout(pending, 5000, "the cut invoke settles"));
    const have = seen.text();
    assert.ok(expected.answer.startsWith(have) && have.length < expected.answer.length);

    // A new connection, straight to the hub, as a reloaded page would make.
    const b = await start(build(hub.hubUrl));
    const items = [];
    await withTimeout(
      new Promise((resolve, reject) => {
        b.stream("ResumeAnswer", answerId, have.length).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject });
      }),
      20000,
      "ResumeAnswer stream completes",
      () => b.logger.tail(),
    );
    assert.equal(have + items.join(""), expected.answer, "no character lost or repeated");

    // Invoked, from the start: the whole answer as SendMessage pushes it, then its metadata.
    const c = await start(build(hub.hubUrl));
    const again = collect(c);
    await withTimeout(c.invoke("ResumeAnswer", answerId), 10000, "ResumeAnswer invoke");
    assert.equal(again.text(), expected.answer);
    assert.equal(again.completes.length, 1);
    assert.equal(again.completes[0].answer_id, answerId);

    await assert.rejects(c.invoke("ResumeAnswer", "no-such-answer", 0), /No such answer/);
    await assert.rejects(c.invoke("ResumeAnswer", answerId, -1), /answerId, after/);
    // (a logged its cut.)
    for (const conn of [b, c]) assertQuiet(conn);
  });

  it("AnswerStarted is sent only after EnableAnswerStarted, and names an AskStream's invocation", async () => {
    const c = await start(build(hub.hubUrl));
    const started = [];
    c.on("AnswerStarted", (answerId, invocationId) => {
      started.push([answerId, invocationId]);
    });
    const seen = collect(c);
    await withTimeout(c.invoke("SendMessage", QUESTIONS.rag, 2), 10000, "SendMessage");
    assert.deepEqual(started, [], "no AnswerStarted unless asked for");
    await c.invoke("EnableAnswerStarted", true);
    const items = [];
    await withTimeout(
      new Promise((resolve, reject) => {
        c.stream("AskStream", QUESTIONS.rag, 2).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject });
      }),
      10000,
      "AskStream",
    );
    assert.equal(started.length, 1);
    assert.equal(typeof started[0][1], "string");
    await c.invoke("EnableAnswerStarted", false);
    await withTimeout(c.invoke("SendMessage", QUESTIONS.rag, 2), 10000, "SendMessage");
    assert.equal(started.length, 1, "switched off again");
    assert.equal(seen.completes.length, 2);
    assertQuiet(c);
  });
});

// ---------------------------------------------------------------------------------------

describe(`SignalR stateful reconnect: nobody back in time (pace 150 ms, grace ${SHORT_GRACE_SECS} s)`, () => {
  // An answer here lasts ~10 s, well past the grace window, so what stops it is the window.
  let hub;
  let reference;
  let proxy;
  const answer = answerCache(() => reference);

  before(async () => {
    reference = await startHub({ paceMs: 0 });
    hub = await startHub({ paceMs: 150, env: { RAGSTREAM_RESUME_GRACE_SECS: String(SHORT_GRACE_SECS) } });
  });
  after(async () => {
    await stopAll();
    await proxy?.close();
    await hub?.stop();
    await reference?.stop();
  });

  it("nobody back within the grace window: the answer stops, its slot is freed, the token dies, the turn is stored cancelled", async () => {
    const expected = await answer(QUESTIONS.eiffel, 5);
    proxy = await new CutProxy(hub.port).start();
    const p = proxy;
    const c = await start(build(p.hubUrl, { stateful: true }));
    const seen = collect(c);
    const pending = c.invoke("SendMessage", QUESTIONS.eiffel, 5);
    pending.catch(() => {});
    await waitFor(() => seen.tokens.length >= 3, { timeout: 10000, label: "three tokens" });
    await waitForStats(hub, (s) => s.activeStreams === 1, { timeout: 2000, label: "one active stream" });
    const [token] = p.socketTokens();

    // The network goes away for good: the client's reconnect is refused, so it gives up.
    p.refusing = true;
    const cutAt = Date.now();
    p.cut();
    await waitFor(() => c.events.some(([e]) => e === "close"), { timeout: 5000, label: `onclose; ${c.logger.tail()}` });
    await assert.rejects(pending);

    // The hub keeps the answer for the grace window, then stops it.
    await sleep(1000);
    assert.equal((await stats(hub)).activeStreams, 1, "detached, still running within the grace window");
    await waitForStats(hub, (s) => s.activeStreams === 0, {
      timeout: (SHORT_GRACE_SECS + 2) * 1000,
      interval: 50,
      label: "the answer stopped after the grace window",
    });
    const elapsed = Date.now() - cutAt;
    assert.ok(elapsed >= SHORT_GRACE_SECS * 1000 - 200, `stopped after the grace window, not before (${elapsed} ms)`);

    // The token was good for this connection's reconnect only, and only while it lived.
    await assert.rejects(RawSocket.open(`${hub.wsUrl}?id=${encodeURIComponent(token)}`), (e) => e.statusCode === 404);

    const list = await api(hub, "GET", "/api/v1/conversations?limit=1");
    assert.equal(list.status, 200, JSON.stringify(list.body));
    const convo = await api(hub, "GET", `/api/v1/conversations/${list.body.conversations[0].id}`);
    const turn = convo.body.messages.at(-1);
    assert.equal(turn.role, "assistant");
    assert.equal(turn.status, "cancelled", JSON.stringify(turn));
    assert.ok(turn.content.length >= seen.text().length, "it kept generating while detached");
    assert.ok(expected.answer.startsWith(turn.content), "the text generated until the stop");
    assert.ok(turn.content.length < expected.answer.length, "cut short");
  });

});
