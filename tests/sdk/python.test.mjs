// The official `openai` Python SDK (tests/sdk/.venv, from requirements.txt) against the real
// hub binary: test_openai_sdk.py runs as a child process with the hub's address and key.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { ADMIN_KEY, startHub } from "../node/harness.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const PYTHON = process.env.RAGSTREAM_SDK_PYTHON ?? path.join(here, ".venv", "bin", "python");

/** Runs a Python file from tests/sdk with the hub's address and key; resolves to its output. */
export function runPython(file, hub, { timeout = 60000 } = {}) {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} not found: python3 -m venv tests/sdk/.venv && tests/sdk/.venv/bin/pip install -r tests/sdk/requirements.txt`);
  }
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [file],
      { cwd: here, timeout, env: { ...process.env, RAGSTREAM_BASE: hub.base, KEY: ADMIN_KEY } },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\nstdout: ${stdout}\nstderr: ${stderr}\nhub: ${hub.output()}`)) : resolve({ stdout, stderr }),
    );
  });
}

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
