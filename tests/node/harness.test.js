// The harness itself against the hub's REST API and plain WebSocket protocol: if these fail,
// the SignalR tests cannot tell you anything.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";

import { ADMIN_KEY, DOCUMENTS, QUESTIONS, RawSocket, api, ask, startHub, stats, waitFor } from "./harness.js";

describe("harness: the hub as a child process", () => {
  let hub;
  before(async () => {
    hub = await startHub({ paceMs: 5 });
  });
  after(async () => {
    await hub?.stop();
  });

  it("is healthy, has the test documents and answers /api/v1/ask", async () => {
    const health = await api(hub, "GET", "/healthz", { key: null });
    assert.equal(health.status, 200);

    const docs = await api(hub, "GET", "/api/v1/documents");
    assert.equal(docs.status, 200);
    const titles = docs.body.documents.map((d) => d.title).sort();
    assert.deepEqual(titles, DOCUMENTS.map((d) => d.title).sort());

    const a = await ask(hub, QUESTIONS.eiffel, 3);
    assert.match(a.answer, /330 metres/);
    assert.equal(a.metadata.provider, "offline");
    assert.ok(a.sources.length >= 1);
    // Deterministic: the same question gives the same answer.
    assert.equal((await ask(hub, QUESTIONS.eiffel, 3)).answer, a.answer);
  });

  it("rejects a wrong API key with 401", async () => {
    const res = await api(hub, "POST", "/api/v1/ask", { key: "x".repeat(32), body: { question: "q", topK: 1 } });
    assert.equal(res.status, 401);
  });

  it("reports hub counters on /api/v1/admin/stats", async () => {
    const s = await stats(hub);
    for (const field of ["connections", "wsConnections", "activeStreams"]) {
      assert.equal(typeof s[field], "number", `stats.${field} is a number: ${JSON.stringify(s)}`);
    }
  });

  it("keeps the plain WebSocket protocol working on /api/v1/chat/ws", async () => {
    const expected = await ask(hub, QUESTIONS.bridge, 3);
    const ws = await RawSocket.open(hub.wsUrl, { headers: { "X-API-Key": ADMIN_KEY } });
    try {
      ws.send(JSON.stringify({ message: QUESTIONS.bridge, topK: 3, id: "c1" }));
      const frames = () => ws.frames.map((f) => JSON.parse(f.text));
      await waitFor(() => frames().find((f) => f.done === true && f.id === "c1"), {
        timeout: 10000,
        label: `plain done frame; frames: ${JSON.stringify(ws.frames).slice(-1000)}`,
      });
      const text = frames()
        .filter((f) => typeof f.token === "string" && f.id === "c1")
        .map((f) => f.token)
        .join("");
      assert.equal(text, expected.answer);
    } finally {
      ws.close();
    }
  });
});
