// A stream that fails after it started must be an error the official SDKs raise, never a
// quiet end. The hub's upstream here is a small OpenAI-shaped server that sends two chunks
// and then `data: {"error":…}`; the hub relays that as its own error chunk.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import OpenAI from "openai";

import { ADMIN_KEY, startHub } from "../node/harness.js";
import { runPython } from "./python.mjs";

/** An upstream that streams "Hel", "lo", then an in-stream error. */
function failingUpstream() {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      const chunk = (delta) => `data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta }] })}\n\n`;
      res.write(chunk({ role: "assistant", content: "Hel" }));
      res.write(chunk({ content: "lo" }));
      res.end(`data: ${JSON.stringify({ error: { message: "the model fell over", type: "server_error" } })}\n\n`);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

describe("a stream that fails after its first chunk", () => {
  let upstream;
  let hub;
  before(async () => {
    upstream = await failingUpstream();
    hub = await startHub({
      env: {
        RAGSTREAM_PROVIDER: "openai",
        OPENAI_API_KEY: "sk-mock",
        OPENAI_BASE_URL: `http://127.0.0.1:${upstream.address().port}/v1`,
        OPENAI_MODEL: "gpt-mock",
        RAGSTREAM_UPSTREAM_MAX_RETRIES: "0",
      },
    });
  });
  after(async () => {
    await hub?.stop();
    upstream?.close();
  });

  it("is an APIError in the npm package, after the text that came", async () => {
    const client = new OpenAI({ baseURL: `${hub.base}/v1`, apiKey: ADMIN_KEY, timeout: 20000 });
    const stream = await client.chat.completions.create({
      model: "ragstream",
      messages: [{ role: "user", content: "What is RAG?" }],
      stream: true,
    });
    let text = "";
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      })(),
      (e) => {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.match(e.message, /the model fell over/);
        return true;
      },
    );
    assert.equal(text, "Hello");
  });

  it("is an APIError in the Python SDK", async () => {
    const { stdout } = await runPython("midstream_error.py", hub);
    assert.match(stdout, /^raised APIError after 'Hello': .*the model fell over/);
  });
});
