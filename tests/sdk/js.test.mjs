// The official `openai` npm package against the real hub binary: streaming and not, the
// `sources` extension read from the SDK's objects, and the SDK's own error classes.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";

import OpenAI from "openai";

import { ADMIN_KEY, QUESTIONS, startHub } from "../node/harness.js";

describe("the official openai npm package", () => {
  let hub;
  const client = (options = {}) => new OpenAI({ baseURL: `${hub.base}/v1`, apiKey: ADMIN_KEY, timeout: 20000, ...options });
  const messages = [{ role: "user", content: QUESTIONS.eiffel }];

  before(async () => {
    // One stream per key, so a second one at once is a real 429.
    hub = await startHub({ paceMs: 15, maxStreamsPerUser: 1 });
  });
  after(async () => {
    await hub?.stop();
  });

  it("streams chunks: sources first, cited text, a stop, usage", async () => {
    const stream = await client().chat.completions.create({
      model: "ragstream",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks[0].sources.some((s) => s.title === "The Eiffel Tower"), JSON.stringify(chunks[0]));
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.match(text, /330/);
    assert.match(text, /\[1\]/);
    assert.deepEqual(chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason), ["stop"]);
    assert.ok(chunks.at(-1).usage.completion_tokens > 0);
  });

  it("answers in one completion with sources", async () => {
    const completion = await client().chat.completions.create({
      model: "ragstream",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: QUESTIONS.bridge },
      ],
      temperature: 0.2,
      max_completion_tokens: 200,
    });
    assert.equal(completion.object, "chat.completion");
    assert.match(completion.choices[0].message.content, /1937/);
    assert.ok(completion.sources.some((s) => s.title === "Golden Gate Bridge"), JSON.stringify(completion.sources));
  });

  it("a wrong key is an AuthenticationError", async () => {
    await assert.rejects(
      client({ apiKey: "not-a-key", maxRetries: 0 }).chat.completions.create({ model: "ragstream", messages }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
    );
  });

  it("an unknown model and an unsupported parameter are BadRequestErrors naming the field", async () => {
    await assert.rejects(client().chat.completions.create({ model: "gpt-unknown", messages }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, "model");
      assert.equal(e.code, "model_not_found");
      return true;
    });
    await assert.rejects(
      client().chat.completions.create({ model: "ragstream", messages, tools: [{ type: "function", function: { name: "f" } }] }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "tools",
    );
  });

  it("a second stream over the per-key limit is a RateLimitError with Retry-After", async () => {
    const held = await client().chat.completions.create({ model: "ragstream", messages, stream: true });
    const reading = held[Symbol.asyncIterator]();
    await reading.next();
    try {
      await assert.rejects(client({ maxRetries: 0 }).chat.completions.create({ model: "ragstream", messages }), (e) => {
        assert.ok(e instanceof OpenAI.RateLimitError, String(e));
        assert.equal(e.headers.get("retry-after"), "1");
        return true;
      });
    } finally {
      held.controller.abort();
    }
  });

  it("lists ragstream among the models", async () => {
    const ids = [];
    for await (const model of client().models.list()) ids.push(model.id);
    assert.ok(ids.includes("ragstream"), ids.join(", "));
  });
});
