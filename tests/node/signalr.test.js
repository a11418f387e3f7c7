// ragstream's SignalR JSON hub protocol on /api/v1/chat/ws, proven with the official
// @microsoft/signalr client (issue 4), plus raw-socket checks of what the client cannot
// show (handshake errors, framing, Close messages, cancellation completions, liveness).
//
// Each describe block runs its own hub process (see harness.js); tests inside a block run
// one after another and leave no connection or stream behind.

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import * as signalR from "@microsoft/signalr";
import React from "react";
import TestRenderer from "react-test-renderer";
import ts from "typescript";

import {
  ADMIN_KEY,
  QUESTIONS,
  RS,
  RawSocket,
  api,
  ask,
  connections,
  dropConnection,
  sleep,
  startHub,
  stats,
  waitFor,
  waitForStats,
  withTimeout,
} from "./harness.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const { HubConnectionBuilder, HubConnectionState, HttpTransportType } = signalR;
const BAD_KEY = "rsk_this_is_not_a_valid_key_0000";

// ---------------------------------------------------------------------------------------
// Official-client helpers

/** Keeps the client's log (all levels) so a timeout can say what the client saw. */
class CaptureLogger {
  constructor() {
    this.lines = [];
    this.problems = []; // Warning and above: the client disliked something
  }
  log(level, message) {
    const line = `${signalR.LogLevel[level]}: ${message}`;
    if (level >= signalR.LogLevel.Warning) this.problems.push(line);
    this.lines.push(line);
    if (this.lines.length > 200) this.lines.shift();
    if (process.env.SIGNALR_LOG) console.error(`[signalr] ${line}`);
  }
  tail(n = 25) {
    return `client log (last ${n}):\n  ${this.lines.slice(-n).join("\n  ")}`;
  }
}

const openConnections = new Set();

function build(url, options = {}, { reconnect, configure } = {}) {
  const logger = new CaptureLogger();
  let builder = new HubConnectionBuilder().withUrl(url, options).configureLogging(logger);
  if (reconnect) builder = reconnect === true ? builder.withAutomaticReconnect() : builder.withAutomaticReconnect(reconnect);
  if (configure) builder = configure(builder);
  const connection = builder.build();
  connection.logger = logger;
  openConnections.add(connection);
  return connection;
}

const keyFactory = { accessTokenFactory: () => ADMIN_KEY };
const KEY_HEADER = { "X-API-Key": ADMIN_KEY };

async function start(connection, timeout = 8000) {
  await withTimeout(connection.start(), timeout, "HubConnection.start()", () => connection.logger.tail());
  assert.equal(connection.state, HubConnectionState.Connected);
  return connection;
}

/** The client logged no warning or error (unknown pushed methods, unexpected results, ...). */
function assertQuiet(connection) {
  assert.deepEqual(connection.logger.problems, [], "the client logged no warnings or errors");
}

async function stopAll() {
  const all = [...openConnections];
  openConnections.clear();
  await Promise.all(all.map((c) => withTimeout(c.stop(), 5000, "HubConnection.stop()").catch(() => {})));
}

/** Records the pushed client methods of a SendMessage answer. */
function collect(connection) {
  const seen = { tokens: [], completes: [], errors: [], order: [] };
  connection.on("ReceiveToken", (...args) => {
    seen.tokens.push(args[0]);
    seen.order.push("token");
    if (args.length !== 1) seen.badArity = args;
  });
  connection.on("StreamComplete", (metadata) => {
    seen.completes.push(metadata);
    seen.order.push("complete");
  });
  connection.on("Error", (message) => {
    seen.errors.push(message);
    seen.order.push("error");
  });
  return seen;
}

/** invoke() with a deadline; resolves to the result, rejects with the server's error. */
function invoke(connection, timeout, ...args) {
  return withTimeout(connection.invoke(...args), timeout, `invoke(${JSON.stringify(args)})`, () =>
    connection.logger.tail(),
  );
}

/** Subscribes to AskStream; `done` resolves to the items on complete and rejects on error. */
function subscribeAskStream(connection, question, topK) {
  const state = { items: [], completed: false, error: null };
  state.done = new Promise((resolve, reject) => {
    state.subscription = connection.stream("AskStream", question, topK).subscribe({
      next: (item) => state.items.push(item),
      complete: () => {
        state.completed = true;
        resolve(state.items);
      },
      error: (err) => {
        state.error = err;
        reject(err);
      },
    });
  });
  state.done.catch(() => {});
  return state;
}

/** Connections the hub lists that were not in `before` (a Set of ids). */
async function newConnections(hub, before) {
  return (await connections(hub)).filter((c) => !before.has(c.id));
}

async function connectionIds(hub) {
  return new Set((await connections(hub)).map((c) => c.id));
}

/** A raw socket that has completed the SignalR handshake. */
async function rawSignalR(hub) {
  const ws = await RawSocket.open(hub.wsUrl, { headers: KEY_HEADER });
  const reply = await ws.handshake();
  assert.equal(reply.error, undefined, `handshake accepted: ${JSON.stringify(reply)}`);
  assert.equal(reply.type, undefined, "a handshake reply has no type");
  return ws;
}

function receiveTokens(records) {
  return records.filter((r) => r.type === 1 && r.target === "ReceiveToken");
}

/** Answers by question, from POST /api/v1/ask (the reference for every streamed answer). */
function answerCache(getHub) {
  const cache = new Map();
  return async (question, topK) => {
    const k = `${topK}|${question}`;
    if (!cache.has(k)) cache.set(k, await ask(getHub(), question, topK));
    return cache.get(k);
  };
}

// ---------------------------------------------------------------------------------------

describe("SignalR: negotiation, auth, SendMessage, AskStream, reconnect, framing (pace 5 ms)", () => {
  let hub;
  const answer = answerCache(() => hub);
  const rawSockets = [];
  const raw = async (p) => {
    const ws = await p;
    rawSockets.push(ws);
    return ws;
  };

  before(async () => {
    hub = await startHub({ paceMs: 5, maxStreamsPerUser: 5 });
  });
  afterEach(async () => {
    await stopAll();
    for (const ws of rawSockets.splice(0)) ws.close();
    await waitForStats(hub, (s) => s.activeStreams === 0, { timeout: 5000, label: "no active streams after the test" });
  });
  after(async () => {
    await stopAll();
    await hub?.stop();
  });

  // -- negotiation -----------------------------------------------------------------------

  it("negotiate v1 answers a connection id, a token and WebSockets/Text", async () => {
    const res = await fetch(`${hub.hubUrl}/negotiate?negotiateVersion=1`, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${ADMIN_KEY}`,
        "X-Requested-With": "XMLHttpRequest",
        "X-SignalR-User-Agent": "Microsoft SignalR/10.0 (10.0.11; Linux; NodeJS; v20)",
      },
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = JSON.parse(text);
    assert.equal(body.negotiateVersion, 1, text);
    assert.equal(typeof body.connectionId, "string", text);
    assert.ok(body.connectionId.length > 0, text);
    assert.equal(typeof body.connectionToken, "string", text);
    assert.ok(body.connectionToken.length > 0, text);
    const wsTransport = body.availableTransports.find((t) => t.transport === "WebSockets");
    assert.ok(wsTransport, `WebSockets offered: ${text}`);
    assert.ok(wsTransport.transferFormats.includes("Text"), text);
    assert.equal(body.useStatefulReconnect, undefined, "no stateful reconnect the client did not ask for");

    // The token is what the client puts in ?id=: a handshake over it succeeds.
    const ws = await raw(RawSocket.open(`${hub.wsUrl}?id=${body.connectionToken}`));
    const reply = await ws.handshake();
    assert.deepEqual(reply, {}, "handshake reply over the negotiated connection");
  });

  it("negotiate v0 answers a connection id the client can connect with", async () => {
    for (const route of ["/negotiate", "/negotiate?negotiateVersion=0"]) {
      const res = await fetch(`${hub.hubUrl}${route}`, {
        method: "POST",
        headers: { "X-API-Key": ADMIN_KEY },
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      assert.equal(res.status, 200, `${route}: ${text}`);
      const body = JSON.parse(text);
      assert.ok(body.negotiateVersion === undefined || body.negotiateVersion === 0, `${route}: ${text}`);
      assert.equal(typeof body.connectionId, "string", `${route}: ${text}`);
      assert.ok(
        body.availableTransports.some((t) => t.transport === "WebSockets" && t.transferFormats.includes("Text")),
        `${route}: ${text}`,
      );
      // A v0 client uses the connection id as the token.
      const ws = await raw(RawSocket.open(`${hub.wsUrl}?id=${body.connectionId}`));
      assert.deepEqual(await ws.handshake(), {}, `${route}: handshake over ?id=<connectionId>`);
    }
  });

  it("negotiate without a key or with a wrong key is 401", async () => {
    for (const headers of [{}, { Authorization: `Bearer ${BAD_KEY}` }, { "X-API-Key": BAD_KEY }]) {
      const res = await fetch(`${hub.hubUrl}/negotiate?negotiateVersion=1`, {
        method: "POST",
        headers,
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(res.status, 401, `headers ${JSON.stringify(headers)}`);
    }
    const res = await fetch(`${hub.hubUrl}/negotiate?negotiateVersion=1&access_token=${BAD_KEY}`, {
      method: "POST",
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(res.status, 401, "?access_token=<bad key>");
  });

  it("connects with negotiation (accessTokenFactory), is listed as a signalr connection, and stop() closes it", async () => {
    const before = await connectionIds(hub);
    const c = await start(build(hub.hubUrl, keyFactory));
    assert.equal(typeof c.connectionId, "string", "a negotiated connection has an id");
    assert.ok(c.connectionId.length > 0);
    const mine = await waitFor(
      async () => (await newConnections(hub, before)).find((x) => x.kind === "ws" && x.protocol === "signalr"),
      { timeout: 3000, label: "the hub lists a ws connection with protocol signalr" },
    );
    assert.equal(typeof mine.id, "number");

    await withTimeout(c.stop(), 5000, "stop()");
    assert.equal(c.state, HubConnectionState.Disconnected);
    await waitFor(async () => !(await connectionIds(hub)).has(mine.id), {
      timeout: 3000,
      label: `connection ${mine.id} gone from admin/connections after stop()`,
    });
  });

  it("connects with skipNegotiation over WebSockets, and with an X-API-Key header; a key in ?access_token is refused", async () => {
    // Only single-use tickets may travel in a URL: a long-lived key there is a 401, valid or not.
    for (const [name, url, options] of [
      ["skipNegotiation + ?access_token=<key>", `${hub.hubUrl}?access_token=${ADMIN_KEY}`, { skipNegotiation: true, transport: HttpTransportType.WebSockets }],
      ["negotiate + ?access_token=<key>", `${hub.hubUrl}?access_token=${ADMIN_KEY}`, {}],
    ]) {
      const c = build(url, options);
      const err = await withTimeout(c.start().then(() => null, (e) => e), 8000, `${name}: start() settles`);
      assert.ok(err instanceof Error, `${name}: start() rejected`);
      if (!options.skipNegotiation) assert.ok(err.statusCode === 401 || /401/.test(err.message), `${name}: ${err.message}`);
    }
    await assert.rejects(RawSocket.open(`${hub.wsUrl}?access_token=${ADMIN_KEY}`), (e) => e.statusCode === 401);

    const expected = await answer(QUESTIONS.bridge, 3);
    const variants = [
      ["skipNegotiation + accessTokenFactory", hub.hubUrl, { skipNegotiation: true, transport: HttpTransportType.WebSockets, ...keyFactory }],
      ["negotiate + X-API-Key header", hub.hubUrl, { headers: { "X-API-Key": ADMIN_KEY } }],
      ["skipNegotiation + X-API-Key header", hub.hubUrl, { skipNegotiation: true, transport: HttpTransportType.WebSockets, headers: { "X-API-Key": ADMIN_KEY } }],
    ];
    for (const [name, url, options] of variants) {
      const c = build(url, options);
      await start(c).catch((e) => {
        throw new Error(`${name}: ${e.message}`);
      });
      if (options.skipNegotiation) assert.equal(c.connectionId, null, `${name}: no negotiate, no connection id`);
      const seen = collect(c);
      await invoke(c, 10000, "SendMessage", QUESTIONS.bridge, 3);
      assert.equal(seen.tokens.join(""), expected.answer, name);
      assertQuiet(c);
      await c.stop();
    }
  });

  it("a stream ticket works as access_token: in the hub URL, and minted per connect by accessTokenFactory (survives a reconnect)", async () => {
    const mint = async () => {
      const res = await api(hub, "POST", "/api/v1/stream-tickets");
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(typeof res.body.ticket, "string");
      return res.body.ticket;
    };
    const expected = await answer(QUESTIONS.eiffel, 2);

    // A ticket in the URL, the browser way: negotiate spends it, ?id= stands for it after.
    const ticket = await mint();
    const c1 = await start(build(`${hub.hubUrl}?access_token=${ticket}`, {}));
    const seen1 = collect(c1);
    await invoke(c1, 10000, "SendMessage", QUESTIONS.eiffel, 2);
    assert.equal(seen1.tokens.join(""), expected.answer);
    // Single use: the same ticket cannot start a second connection.
    const again = build(`${hub.hubUrl}?access_token=${ticket}`, {});
    await assert.rejects(withTimeout(again.start(), 5000, "start() with a spent ticket"));

    // A fresh ticket per connect: automatic reconnect works with tickets too.
    let minted = 0;
    const c2 = build(hub.hubUrl, { accessTokenFactory: () => (minted++, mint()) }, { reconnect: true });
    const events = [];
    c2.onreconnected((id) => events.push(["reconnected", id]));
    c2.onclose((e) => events.push(["close", e?.message]));
    const before = await connectionIds(hub);
    await start(c2);
    const mine = await waitFor(
      async () => (await newConnections(hub, before)).find((x) => x.protocol === "signalr"),
      { timeout: 3000, label: "the ticket connection in admin/connections" },
    );
    await dropConnection(hub, mine.id);
    await waitFor(() => events.length > 0, { timeout: 10000, label: `reconnect with a new ticket; ${c2.logger.tail()}` });
    assert.equal(events[0][0], "reconnected", JSON.stringify(events));
    assert.ok(minted >= 2, `a new ticket for the reconnect (minted ${minted})`);
    const seen2 = collect(c2);
    await invoke(c2, 10000, "SendMessage", QUESTIONS.eiffel, 2);
    assert.equal(seen2.tokens.join(""), expected.answer);
  });

  it("fails cleanly with a bad key: start() rejects (401) quickly, no hang", async () => {
    const variants = [
      ["negotiate + accessTokenFactory", hub.hubUrl, { accessTokenFactory: () => BAD_KEY }],
      ["negotiate + ?access_token", `${hub.hubUrl}?access_token=${BAD_KEY}`, {}],
      ["negotiate, no key", hub.hubUrl, {}],
      ["skipNegotiation + accessTokenFactory", hub.hubUrl, { skipNegotiation: true, transport: HttpTransportType.WebSockets, accessTokenFactory: () => BAD_KEY }],
    ];
    for (const [name, url, options] of variants) {
      const c = build(url, options, { reconnect: true });
      const t0 = Date.now();
      const err = await withTimeout(
        c.start().then(
          () => null,
          (e) => e,
        ),
        8000,
        `${name}: start() settles`,
      );
      assert.ok(err instanceof Error, `${name}: start() rejected`);
      assert.ok(Date.now() - t0 < 5000, `${name}: rejected in ${Date.now() - t0} ms`);
      assert.equal(c.state, HubConnectionState.Disconnected, name);
      if (!options.skipNegotiation) {
        // HttpError from negotiate carries the status.
        assert.ok(err.statusCode === 401 || /401/.test(err.message), `${name}: 401 in ${err.message}`);
      }
    }
  });

  // -- SendMessage ------------------------------------------------------------------------

  it("SendMessage streams ReceiveToken tokens that reassemble the /ask answer, then StreamComplete(metadata)", async () => {
    const expected = await answer(QUESTIONS.eiffel, 3);
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    const result = await invoke(c, 10000, "SendMessage", QUESTIONS.eiffel, 3);
    seen.order.push("resolved");

    assert.equal(result ?? null, null, "SendMessage completes with a null result");
    assert.equal(seen.badArity, undefined, "ReceiveToken has exactly one argument");
    assert.ok(seen.tokens.length > 1, "several tokens");
    assert.ok(seen.tokens.every((t) => typeof t === "string"));
    assert.equal(seen.tokens.join(""), expected.answer);
    assert.deepEqual(seen.errors, []);
    assert.equal(seen.completes.length, 1, "one StreamComplete");
    assert.deepEqual(seen.order.slice(-2), ["complete", "resolved"], "invoke resolves after StreamComplete");

    const meta = seen.completes[0];
    assert.equal(typeof meta, "object", `StreamComplete metadata: ${JSON.stringify(meta)}`);
    assert.equal(meta.provider, "offline");
    assert.equal(meta.tokens, seen.tokens.length, "metadata.tokens counts the tokens sent");
    assert.equal(meta.tokens, expected.metadata.tokens, "same token count as /ask");
    assert.equal(typeof meta.ttft_ms, "number");
    assert.ok(Array.isArray(meta.sources) && meta.sources.length >= 1, "sources");
    assert.deepEqual(
      meta.sources.map((s) => s.documentId),
      expected.sources.map((s) => s.documentId),
      "same sources as /ask",
    );
    assertQuiet(c);
  });

  it("SendMessage is a conversation turn: the metadata names the conversation, a third argument continues it", async () => {
    const expected = await answer(QUESTIONS.eiffel, 2);
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    await invoke(c, 10000, "SendMessage", QUESTIONS.eiffel, 2);
    assert.equal(seen.tokens.join(""), expected.answer, "a first turn answers like /ask");
    const conversationId = seen.completes[0].conversation_id;
    assert.equal(typeof conversationId, "string", "StreamComplete's metadata names the new conversation");
    const firstAnswer = seen.tokens.join("");

    seen.tokens.length = 0;
    await invoke(c, 10000, "SendMessage", "When was it built?", 2, conversationId);
    assert.equal(seen.completes.length, 2);
    assert.equal(seen.completes[1].conversation_id, conversationId, "the same conversation continues");
    assert.ok(
      seen.completes[1].sources.some((s) => s.title === "The Eiffel Tower"),
      "the follow-up was searched with the question before it",
    );

    const { status, body } = await api(hub, "GET", `/api/v1/conversations/${conversationId}`);
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(
      body.messages.map((m) => [m.role, m.status]),
      [
        ["user", null],
        ["assistant", "complete"],
        ["user", null],
        ["assistant", "complete"],
      ],
    );
    assert.equal(body.messages[0].content, QUESTIONS.eiffel);
    assert.equal(body.messages[1].content, firstAnswer);
    assert.equal(body.messages[3].content, seen.tokens.join(""));
    assertQuiet(c);
  });

  it("SendMessage with an unknown or another user's conversation id fails that call only", async () => {
    const tenant = await api(hub, "POST", "/api/v1/admin/tenants", { body: { name: "signalr-other" } });
    assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
    const key = await api(hub, "POST", "/api/v1/admin/keys", { body: { tenantId: tenant.body.id, name: "other" } });
    assert.equal(key.status, 201, JSON.stringify(key.body));
    const theirs = await api(hub, "POST", "/api/v1/conversations", { key: key.body.key, body: { title: "theirs" } });
    assert.equal(theirs.status, 201, JSON.stringify(theirs.body));

    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    for (const id of ["conversation-42", theirs.body.id]) {
      await assert.rejects(invoke(c, 5000, "SendMessage", QUESTIONS.rag, 2, id), /no such conversation/);
    }
    await assert.rejects(invoke(c, 5000, "SendMessage", QUESTIONS.rag, 2, 42), /conversationId must be a string/);
    assert.deepEqual(seen.tokens, [], "no tokens for refused calls");
    assert.equal(c.state, HubConnectionState.Connected);
    await invoke(c, 10000, "SendMessage", QUESTIONS.rag, 2, null);
    assert.equal(typeof seen.completes[0].conversation_id, "string", "null starts a new conversation");
  });

  it("a non-blocking send('SendMessage') streams too", async () => {
    const expected = await answer(QUESTIONS.bridge, 2);
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    await withTimeout(c.send("SendMessage", QUESTIONS.bridge, 2), 5000, "send()");
    await waitFor(() => seen.completes.length === 1 || seen.errors.length > 0, {
      timeout: 10000,
      label: `StreamComplete after send(); ${c.logger.tail(10)}`,
    });
    assert.deepEqual(seen.errors, []);
    assert.equal(seen.tokens.join(""), expected.answer);
    // The server must not answer a non-blocking invocation with a Completion: the client
    // would log it as unknown; give it a moment and check the connection is still fine.
    await sleep(100);
    assert.equal(c.state, HubConnectionState.Connected);
    assertQuiet(c);
  });

  it("bad SendMessage calls and unknown methods fail that call only; the connection stays open", async () => {
    const expected = await answer(QUESTIONS.eiffel, 1);
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    const bad = [
      ["SendMessage", "", 5],
      ["SendMessage", QUESTIONS.eiffel, 0],
      ["SendMessage", QUESTIONS.eiffel, "five"],
      ["SendMessage"],
      ["SendMessage", "x".repeat(4001), 3],
      ["NoSuchMethod", 1, 2],
    ];
    for (const args of bad) {
      const errorsBefore = seen.errors.length;
      const outcome = await withTimeout(
        c.invoke(...args).then(
          (result) => ({ result }),
          (error) => ({ error }),
        ),
        5000,
        `invoke(${JSON.stringify(args)}) settles`,
      );
      if (outcome.error) {
        assert.ok(outcome.error.message.length > 0, `${JSON.stringify(args)}: error message`);
      } else {
        // Acceptable only as the seed's pattern: an Error(message) push, then completion.
        assert.notEqual(args[0], "NoSuchMethod", "an unknown method must be an error completion");
        await waitFor(() => seen.errors.length > errorsBefore, {
          timeout: 2000,
          label: `${JSON.stringify(args)} resolved, so an Error(message) push is expected`,
        });
        assert.equal(typeof seen.errors.at(-1), "string");
      }
      assert.equal(c.state, HubConnectionState.Connected, `${JSON.stringify(args)}: still connected`);
    }
    assert.deepEqual(seen.tokens, [], "no tokens for refused calls");
    assert.deepEqual(seen.completes, [], "no StreamComplete for refused calls");

    await invoke(c, 10000, "SendMessage", QUESTIONS.eiffel, 1);
    assert.equal(seen.tokens.join(""), expected.answer, "a good call works afterwards");
  });

  // -- AskStream and concurrency ------------------------------------------------------------

  it("AskStream streams items that reassemble the /ask answer, then completes", async () => {
    const expected = await answer(QUESTIONS.rag, 3);
    const c = await start(build(hub.hubUrl, keyFactory));
    const s = subscribeAskStream(c, QUESTIONS.rag, 3);
    const items = await withTimeout(s.done, 10000, "AskStream complete", () => c.logger.tail());
    assert.ok(items.length > 1);
    assert.ok(items.every((t) => typeof t === "string"), "items are token strings");
    assert.equal(items.join(""), expected.answer);
    assertQuiet(c);
  });

  it("runs two answers at once on one connection: two AskStreams, interleaved, each exact", async () => {
    const [ea, eb] = [await answer(QUESTIONS.eiffel, 3), await answer(QUESTIONS.bridge, 3)];
    assert.notEqual(ea.answer, eb.answer);
    const c = await start(build(hub.hubUrl, keyFactory));
    const events = [];
    const a = subscribeAskStream(c, QUESTIONS.eiffel, 3);
    const b = subscribeAskStream(c, QUESTIONS.bridge, 3);
    // Order of arrival across both streams.
    const origA = a.items.push.bind(a.items);
    const origB = b.items.push.bind(b.items);
    a.items.push = (x) => (events.push("a"), origA(x));
    b.items.push = (x) => (events.push("b"), origB(x));
    a.done.then(() => events.push("A-done"));
    b.done.then(() => events.push("B-done"));

    const [ia, ib] = await withTimeout(Promise.all([a.done, b.done]), 15000, "both AskStreams complete", () =>
      c.logger.tail(),
    );
    assert.equal(ia.join(""), ea.answer, "first stream exact");
    assert.equal(ib.join(""), eb.answer, "second stream exact");
    const firstB = events.indexOf("b");
    const firstA = events.indexOf("a");
    assert.ok(
      firstB < events.indexOf("A-done") && firstA < events.indexOf("B-done"),
      `answers ran at once (interleaved), not one after the other: ${events.join(",")}`,
    );
    assertQuiet(c);
  });

  it("runs two SendMessage invokes at once on one connection: both complete, tokens are the two answers interleaved", async () => {
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    // Each answer's tokens alone first.
    await invoke(c, 10000, "SendMessage", QUESTIONS.eiffel, 3);
    const ta = seen.tokens.splice(0);
    await invoke(c, 10000, "SendMessage", QUESTIONS.rag, 3);
    const tb = seen.tokens.splice(0);
    seen.completes.splice(0);
    assert.equal(ta.join(""), (await answer(QUESTIONS.eiffel, 3)).answer);
    assert.equal(tb.join(""), (await answer(QUESTIONS.rag, 3)).answer);

    const both = await withTimeout(
      Promise.all([c.invoke("SendMessage", QUESTIONS.eiffel, 3), c.invoke("SendMessage", QUESTIONS.rag, 3)]),
      15000,
      "two concurrent invokes",
      () => c.logger.tail(),
    );
    assert.deepEqual(both.map((r) => r ?? null), [null, null]);
    assert.equal(seen.completes.length, 2, "two StreamComplete");
    assert.deepEqual([...seen.tokens].sort(), [...ta, ...tb].sort(), "token multiset = both answers");
    const joined = seen.tokens.join("");
    assert.ok(
      joined !== ta.join("") + tb.join("") && joined !== tb.join("") + ta.join(""),
      "the answers were streamed at once (interleaved), not one after the other",
    );
    assertQuiet(c);
  });

  // -- reconnect ----------------------------------------------------------------------------

  it("survives a server-side drop (admin DELETE) through withAutomaticReconnect", async () => {
    const expected = await answer(QUESTIONS.bridge, 3);
    const before = await connectionIds(hub);
    const c = build(hub.hubUrl, keyFactory, { reconnect: true });
    const events = [];
    c.onreconnecting((e) => events.push(["reconnecting", e?.message]));
    c.onreconnected((id) => events.push(["reconnected", id]));
    c.onclose((e) => events.push(["close", e?.message]));
    await start(c);
    const firstId = c.connectionId;
    const mine = await waitFor(
      async () => (await newConnections(hub, before)).find((x) => x.kind === "ws" && x.protocol === "signalr"),
      { timeout: 3000, label: "our signalr connection in admin/connections" },
    );

    const seen = collect(c);
    await dropConnection(hub, mine.id);
    await waitFor(() => events.some(([e]) => e === "reconnected" || e === "close"), {
      timeout: 10000,
      label: `onreconnected; events ${JSON.stringify(events)}; ${c.logger.tail()}`,
    });
    assert.equal(events[0]?.[0], "reconnecting", `events: ${JSON.stringify(events)}`);
    assert.match(
      events[0][1] ?? "",
      /Server returned an error on close/,
      "the drop arrived as a Close message with an error and allowReconnect",
    );
    assert.equal(events[1]?.[0], "reconnected", `events: ${JSON.stringify(events)}`);
    assert.equal(c.state, HubConnectionState.Connected);
    assert.notEqual(c.connectionId, firstId, "a new negotiate, a new connection id");

    const now = await connections(hub);
    assert.ok(!now.some((x) => x.id === mine.id), "the dropped connection is gone");
    assert.ok(now.some((x) => x.protocol === "signalr"), "the reconnected one is listed");

    await invoke(c, 10000, "SendMessage", QUESTIONS.bridge, 3);
    assert.equal(seen.tokens.join(""), expected.answer, "SendMessage works after the reconnect");
  });

  it("raw: admin DELETE sends Close {type:7, error, allowReconnect:true} then closes the socket", async () => {
    const before = await connectionIds(hub);
    const ws = await raw(RawSocket.open(hub.wsUrl, { headers: KEY_HEADER }));
    const pending = await waitFor(async () => (await newConnections(hub, before)).find((x) => x.kind === "ws"), {
      timeout: 3000,
      label: "the raw socket in admin/connections",
    });
    assert.equal(pending.protocol, null, "no protocol before the first frame");
    await ws.handshake();
    await waitFor(async () => (await connections(hub)).find((x) => x.id === pending.id && x.protocol === "signalr"), {
      timeout: 3000,
      label: "protocol signalr after the handshake",
    });
    await dropConnection(hub, pending.id);
    const close = await ws.waitRecord((r) => r.type === 7, { timeout: 3000, label: "Close message" });
    assert.equal(typeof close.error, "string");
    assert.ok(close.error.length > 0);
    assert.equal(close.allowReconnect, true);
    await ws.waitClose(3000);
    assert.deepEqual(ws.incomplete, [], "every server message ends with 0x1E");
  });

  // -- raw protocol: handshake, framing ------------------------------------------------------

  it("raw: an unsupported protocol handshake gets {error} + 0x1E and a close", async () => {
    for (const request of [
      { protocol: "messagepack", version: 1 },
      { protocol: "json", version: 99 },
    ]) {
      const ws = await raw(RawSocket.open(hub.wsUrl, { headers: KEY_HEADER }));
      const reply = await ws.handshake(request);
      assert.equal(typeof reply.error, "string", `${JSON.stringify(request)} → ${JSON.stringify(reply)}`);
      assert.ok(reply.error.length > 0);
      assert.ok(ws.frames[0].text.endsWith(RS), "the error ends with 0x1E");
      await ws.waitClose(5000);
    }
  });

  it("raw: a malformed handshake gets {error} + 0x1E and a close", async () => {
    for (const text of [
      `{"protocol":"json"}${RS}`,
      `{"protocol":"json","version":"1"}${RS}`,
      `{"protocol":"json","version":1${RS}`,
      `{"protocol":42,"version":1}${RS}`,
    ]) {
      const ws = await raw(RawSocket.open(hub.wsUrl, { headers: KEY_HEADER }));
      ws.send(text);
      const reply = await ws.waitRecord(() => true, { timeout: 5000, label: `reply to ${JSON.stringify(text)}` });
      assert.equal(typeof reply.error, "string", `${JSON.stringify(text)} → ${JSON.stringify(ws.frames)}`);
      await ws.waitClose(5000);
    }
  });

  it("raw: two messages in one frame (ping + invocation) are both handled", async () => {
    const expected = await answer(QUESTIONS.eiffel, 3);
    const ws = await raw(rawSignalR(hub));
    ws.send(
      `{"type":6}${RS}` +
        JSON.stringify({ type: 1, invocationId: "7", target: "SendMessage", arguments: [QUESTIONS.eiffel, 3] }) +
        RS,
    );
    const completion = await ws.waitRecord((r) => r.type === 3 && r.invocationId === "7", {
      timeout: 10000,
      label: "Completion for invocation 7",
    });
    assert.equal(completion.error, undefined, JSON.stringify(completion));
    assert.equal(completion.result ?? null, null);
    const tokens = receiveTokens(ws.records);
    assert.equal(tokens.map((r) => r.arguments[0]).join(""), expected.answer);
    for (const r of tokens) {
      assert.equal(r.invocationId, undefined, "ReceiveToken is fire-and-forget (no invocationId)");
      assert.equal(r.arguments.length, 1);
    }
    const complete = ws.records.filter((r) => r.type === 1 && r.target === "StreamComplete");
    assert.equal(complete.length, 1);
    assert.equal(complete[0].invocationId, undefined);
    assert.equal(complete[0].arguments[0].provider, "offline");
    assert.ok(
      ws.records.indexOf(complete[0]) < ws.records.indexOf(completion),
      "StreamComplete is pushed before the invocation's Completion",
    );
    assert.deepEqual(ws.incomplete, [], "every server message ends with 0x1E");
  });

  it("raw: the handshake and the first invocation in one frame", async () => {
    const expected = await answer(QUESTIONS.rag, 2);
    const ws = await raw(RawSocket.open(hub.wsUrl, { headers: KEY_HEADER }));
    ws.send(
      `{"protocol":"json","version":1}${RS}` +
        JSON.stringify({ type: 1, invocationId: "0", target: "SendMessage", arguments: [QUESTIONS.rag, 2] }) +
        RS,
    );
    await ws.waitRecord((r) => r.type === 3 && r.invocationId === "0", { timeout: 10000, label: "Completion 0" });
    assert.deepEqual(ws.records[0], {}, "handshake reply first");
    assert.equal(
      receiveTokens(ws.records)
        .map((r) => r.arguments[0])
        .join(""),
      expected.answer,
    );
  });

  it("raw: one message split across several frames is handled", async () => {
    const expected = await answer(QUESTIONS.bridge, 3);
    const ws = await raw(rawSignalR(hub));
    const message = JSON.stringify({ type: 1, invocationId: "8", target: "SendMessage", arguments: [QUESTIONS.bridge, 3] });
    const cut = Math.floor(message.length / 2);
    ws.send(message.slice(0, cut));
    await sleep(50);
    ws.send(message.slice(cut));
    await sleep(50);
    ws.send(RS); // the separator alone in a third frame
    await ws.waitRecord((r) => r.type === 3 && r.invocationId === "8", { timeout: 10000, label: "Completion 8" });
    assert.equal(
      receiveTokens(ws.records)
        .map((r) => r.arguments[0])
        .join(""),
      expected.answer,
    );
    // The tail of a split message and the head of the next in one frame.
    const next = JSON.stringify({ type: 1, invocationId: "9", target: "SendMessage", arguments: [QUESTIONS.bridge, 3] });
    const from = ws.records.length;
    ws.send(`{"type":`);
    await sleep(50);
    ws.send(`6}${RS}${next.slice(0, 20)}`);
    await sleep(50);
    ws.send(`${next.slice(20)}${RS}`);
    await ws.waitRecord((r) => r.type === 3 && r.invocationId === "9", { from, timeout: 10000, label: "Completion 9" });
    assert.deepEqual(ws.incomplete, [], "every server message ends with 0x1E");
  });

  it("raw: a WebSocket with an unknown ?id= is refused (404)", async () => {
    await assert.rejects(
      RawSocket.open(`${hub.wsUrl}?id=no-such-connection-token`, { headers: KEY_HEADER }),
      (e) => e.statusCode === 404,
    );
  });

  it("raw: a bad key on the WebSocket upgrade is refused (401)", async () => {
    await assert.rejects(RawSocket.open(`${hub.wsUrl}?access_token=${BAD_KEY}`), (e) => e.statusCode === 401);
  });

  // -- the seed's hook ---------------------------------------------------------------------

  it("the seed's useWebSocket hook, unchanged, streams an answer", async () => {
    const { useWebSocket } = await loadSeedHook();
    const expected = await answer(QUESTIONS.rag, 5);
    // The seed passes its credential in the hub URL: a single-use ticket (negotiate spends it).
    const minted = await api(hub, "POST", "/api/v1/stream-tickets");
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const hubUrl = `${hub.hubUrl}?access_token=${minted.body.ticket}`;
    const before = await connectionIds(hub);
    const h = React.createElement;
    const probe = { ready: false };

    function Chat({ url }) {
      const { isConnected, error, sendMessage, on, off } = useWebSocket(url);
      const [text, setText] = React.useState("");
      const [metadata, setMetadata] = React.useState(null);
      React.useEffect(() => {
        if (!isConnected) return undefined;
        const onToken = (token) => setText((t) => t + token);
        const onComplete = (m) => setMetadata(m ?? {});
        on("ReceiveToken", onToken);
        on("StreamComplete", onComplete);
        probe.ready = true;
        return () => {
          off("ReceiveToken", onToken);
          off("StreamComplete", onComplete);
          probe.ready = false;
        };
      }, [isConnected, on, off]);
      Object.assign(probe, { isConnected, error, sendMessage, metadata });
      return h(
        "div",
        null,
        h("span", { id: "status" }, isConnected ? "connected" : "disconnected"),
        h("p", { id: "answer" }, text),
      );
    }

    let renderer;
    await TestRenderer.act(async () => {
      renderer = TestRenderer.create(h(Chat, { url: hubUrl }));
    });
    try {
      await waitFor(() => probe.isConnected || probe.error, { timeout: 8000, label: "isConnected or error" });
      assert.equal(probe.error, null, `the hook connected: ${probe.error?.message}`);
      await waitFor(() => probe.ready, { timeout: 3000, label: "handlers registered" });
      assert.equal(renderer.root.findByProps({ id: "status" }).children.join(""), "connected");
      const mine = (await newConnections(hub, before)).find((x) => x.protocol === "signalr");
      assert.ok(mine, "the hook's connection is a signalr connection");

      await TestRenderer.act(async () => {
        const result = await withTimeout(probe.sendMessage("SendMessage", QUESTIONS.rag, 5), 10000, "sendMessage");
        assert.equal(result ?? null, null);
      });
      await waitFor(() => probe.metadata, { timeout: 3000, label: "StreamComplete rendered" });
      assert.equal(renderer.root.findByProps({ id: "answer" }).children.join(""), expected.answer);
      assert.equal(probe.metadata.provider, "offline");

      // Unmounting runs the hook's cleanup (connection.stop()); the hub sees the socket go.
      await TestRenderer.act(async () => renderer.unmount());
      renderer = null;
      await waitFor(async () => !(await connectionIds(hub)).has(mine.id), {
        timeout: 3000,
        label: "the hook's connection closed after unmount",
      });
    } finally {
      if (renderer) await TestRenderer.act(async () => renderer.unmount());
    }
  });
});

/** Transpiles seed/useWebSocket.ts (verbatim from the seed) and imports it. */
async function loadSeedHook() {
  const source = readFileSync(path.join(here, "seed", "useWebSocket.ts"), "utf8");
  const out = ts.transpileModule(source, {
    fileName: "useWebSocket.ts",
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2020, strict: true },
  });
  const errors = (out.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  assert.deepEqual(
    errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")),
    [],
    "the seed hook transpiles",
  );
  const dir = path.join(here, ".build"); // inside tests/node so `react` and `@microsoft/signalr` resolve
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "useWebSocket.mjs");
  writeFileSync(file, out.outputText);
  return import(pathToFileURL(file).href);
}

// ---------------------------------------------------------------------------------------

describe("SignalR: cancellation and per-user limits (pace 200 ms, 2 streams per user)", () => {
  let hub;
  // Reference answers come from a second, unpaced hub with the same documents (the offline
  // provider is deterministic): /ask on the 200 ms hub would take 10+ s per answer.
  let reference;
  const answer = answerCache(() => reference);
  const rawSockets = [];

  before(async () => {
    reference = await startHub({ paceMs: 0 });
    hub = await startHub({ paceMs: 200, maxStreamsPerUser: 2 });
  });
  afterEach(async () => {
    await stopAll();
    for (const ws of rawSockets.splice(0)) ws.close();
    await waitForStats(hub, (s) => s.activeStreams === 0, { timeout: 5000, label: "no active streams after the test" });
  });
  after(async () => {
    await stopAll();
    await hub?.stop();
    await reference?.stop();
  });

  it("disposing an AskStream subscription stops the answer: activeStreams falls to 0 within a second", async () => {
    const expected = await answer(QUESTIONS.eiffel, 5);
    const total = expected.metadata.tokens;
    assert.ok(total >= 15, `a long answer (${total} tokens at 200 ms)`);
    const c = await start(build(hub.hubUrl, keyFactory));
    const s = subscribeAskStream(c, QUESTIONS.eiffel, 5);
    await waitFor(() => s.items.length >= 2 || s.error, { timeout: 5000, label: `two items; ${c.logger.tail(10)}` });
    assert.equal(s.error, null);
    await waitForStats(hub, (st) => st.activeStreams === 1, { timeout: 1000, label: "activeStreams 1 while streaming" });

    const t0 = Date.now();
    s.subscription.dispose();
    await waitForStats(hub, (st) => st.activeStreams === 0, {
      timeout: 1000,
      interval: 20,
      label: "activeStreams 0 within a second of dispose()",
    });
    const elapsed = Date.now() - t0;
    const left = (total - s.items.length) * 200;
    assert.ok(left > elapsed + 1000, `without the cancel the answer had ~${left} ms to go (fell in ${elapsed} ms)`);
    assert.equal(s.completed, false);

    // The connection is still usable: a new stream starts.
    assert.equal(c.state, HubConnectionState.Connected);
    const again = subscribeAskStream(c, QUESTIONS.bridge, 3);
    await waitFor(() => again.items.length >= 1 || again.error, { timeout: 3000, label: "an item on a new stream" });
    assert.equal(again.error, null);
    assert.ok((await answer(QUESTIONS.bridge, 3)).answer.startsWith(again.items[0]));
    again.subscription.dispose();
    await sleep(300); // late items and the Completion for the cancelled stream
    assertQuiet(c);
  });

  it("a connection that goes away mid-answer frees its stream (client stop() and admin drop)", async () => {
    for (const how of ["stop", "drop"]) {
      const before = await connectionIds(hub);
      const c = await start(build(hub.hubUrl, keyFactory));
      const seen = collect(c);
      const pending = c.invoke("SendMessage", QUESTIONS.bridge, 3);
      pending.catch(() => {});
      await waitFor(() => seen.tokens.length >= 2, { timeout: 5000, label: `${how}: two tokens` });
      await waitForStats(hub, (st) => st.activeStreams === 1, { timeout: 1000, label: `${how}: one active stream` });
      if (how === "stop") {
        await withTimeout(c.stop(), 5000, "stop()");
      } else {
        const mine = (await newConnections(hub, before)).find((x) => x.protocol === "signalr");
        assert.ok(mine, "our connection is listed");
        await dropConnection(hub, mine.id);
      }
      await assert.rejects(withTimeout(pending, 3000, `${how}: the pending invoke settles`));
      await waitForStats(hub, (st) => st.activeStreams === 0, {
        timeout: 1000,
        label: `${how}: activeStreams 0 within a second`,
      });
    }
  });

  it("raw: CancelInvocation ends the stream with a Completion and no more items", async () => {
    const ws = await rawSignalR(hub);
    rawSockets.push(ws);
    ws.send(JSON.stringify({ type: 4, invocationId: "s1", target: "AskStream", arguments: [QUESTIONS.eiffel, 5] }) + RS);
    await ws.waitRecord((r) => r.type === 2 && r.invocationId === "s1", { timeout: 3000, label: "a StreamItem" });
    const item = ws.records.find((r) => r.type === 2);
    assert.equal(typeof item.item, "string");
    ws.send(JSON.stringify({ type: 5, invocationId: "s1" }) + RS);
    const completion = await ws.waitRecord((r) => r.type === 3 && r.invocationId === "s1", {
      timeout: 1500,
      label: "Completion after CancelInvocation",
    });
    assert.equal(completion.result, undefined, "a stream's Completion carries no result");
    await waitForStats(hub, (st) => st.activeStreams === 0, { timeout: 1000, label: "activeStreams 0" });
    await sleep(500);
    const at = ws.records.indexOf(completion);
    assert.deepEqual(
      ws.records.slice(at + 1).filter((r) => r.invocationId === "s1"),
      [],
      "nothing for s1 after its Completion",
    );
  });

  it("over the per-user limit the invocation is refused with an error completion; the connection stays open", async () => {
    const c = await start(build(hub.hubUrl, keyFactory));
    const seen = collect(c);
    const a = subscribeAskStream(c, QUESTIONS.eiffel, 5);
    const b = subscribeAskStream(c, QUESTIONS.bridge, 5);
    await waitFor(() => (a.items.length > 0 && b.items.length > 0) || a.error || b.error, {
      timeout: 5000,
      label: "both streams running",
    });
    await waitForStats(hub, (st) => st.activeStreams === 2, { timeout: 1000, label: "activeStreams 2" });

    const refused = await withTimeout(
      c.invoke("SendMessage", QUESTIONS.rag, 3).then(
        () => null,
        (e) => e,
      ),
      5000,
      "the third answer settles",
    );
    assert.ok(refused instanceof Error, "invoke over the limit rejects");
    assert.ok(refused.message.length > 0);
    assert.deepEqual(seen.tokens, [], "no tokens for the refused answer");

    const third = subscribeAskStream(c, QUESTIONS.rag, 3);
    await assert.rejects(withTimeout(third.done, 5000, "a third AskStream is refused"));
    assert.equal(third.items.length, 0);

    assert.equal(c.state, HubConnectionState.Connected, "still connected");
    assert.equal(a.error, null);
    assert.equal(b.error, null);
    a.subscription.dispose();
    b.subscription.dispose();
    await waitForStats(hub, (st) => st.activeStreams === 0, { timeout: 2000, label: "slots released" });

    const after = subscribeAskStream(c, QUESTIONS.rag, 3);
    await waitFor(() => after.items.length >= 1 || after.error, { timeout: 3000, label: "a stream after the slots freed" });
    assert.equal(after.error, null);
    after.subscription.dispose();
    assertQuiet(c);
  });
});

// ---------------------------------------------------------------------------------------

describe("SignalR: liveness (heartbeat 1 s, client timeout 3 s)", () => {
  let hub;
  const rawSockets = [];

  before(async () => {
    hub = await startHub({
      paceMs: 5,
      env: { RAGSTREAM_HEARTBEAT_SECS: "1", RAGSTREAM_CLIENT_TIMEOUT_SECS: "3" },
    });
  });
  afterEach(async () => {
    await stopAll();
    for (const ws of rawSockets.splice(0)) ws.close();
  });
  after(async () => {
    await stopAll();
    await hub?.stop();
  });

  it("the server pings (type 6) an idle connection", async () => {
    const ws = await rawSignalR(hub);
    rawSockets.push(ws);
    const from = ws.records.length;
    const ping = await ws.waitRecord((r) => r.type === 6, { from, timeout: 2500, label: "a server Ping" });
    assert.deepEqual(ping, { type: 6 }, "a Ping has no other fields");
    ws.send(`{"type":6}${RS}`);
  });

  it("a silent client is closed after the client timeout", async () => {
    const ws = await RawSocket.open(hub.wsUrl, { headers: KEY_HEADER, autoPong: false });
    rawSockets.push(ws);
    await ws.handshake();
    const t0 = Date.now();
    await ws.waitClose(7000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 2000, `closed for silence, not at once (${elapsed} ms)`);
  });

  it("the official client, pinging every second, stays connected past the timeout", async () => {
    const c = build(hub.hubUrl, keyFactory, {
      configure: (b) => b.withKeepAliveInterval(1000).withServerTimeout(2500),
    });
    const closed = [];
    c.onclose((e) => closed.push(e?.message ?? "closed"));
    await start(c);
    await sleep(5000);
    assert.deepEqual(closed, [], "no close");
    assert.equal(c.state, HubConnectionState.Connected);
    const seen = collect(c);
    await invoke(c, 10000, "SendMessage", QUESTIONS.eiffel, 2);
    assert.equal(seen.completes.length, 1);
    assertQuiet(c);
  });
});
