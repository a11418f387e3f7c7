// The official `openai` Python SDK (tests/sdk/.venv, from requirements.txt) against the real
// hub binary: test_openai_sdk.py runs as a child process with the hub's address and key.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";

import { startHub } from "../node/harness.js";
import { runPython } from "./python.mjs";

describe("the official openai Python SDK", () => {
  let hub;
  before(async () => {
    // One stream per key, so a second one at once is a real 429.
    hub = await startHub({ paceMs: 15, maxStreamsPerUser: 1 });
  });
  after(async () => {
    await hub?.stop();
  });

  it("streams, answers, reads citations and raises the SDK's own errors", async () => {
    const { stderr } = await runPython("test_openai_sdk.py", hub, { timeout: 90000 });
    assert.match(stderr, /Ran 7 tests/);
    assert.match(stderr, /\nOK\n?$/);
  });
});
