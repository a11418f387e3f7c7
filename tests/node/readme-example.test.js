// The README's JavaScript client (examples/readme-client.mjs), run verbatim as its own Node
// process against a test hub; only the port in its URL is changed.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { ADMIN_KEY, ask, startHub } from "./harness.js";

const here = path.dirname(fileURLToPath(import.meta.url));

describe("the README's JavaScript client", () => {
  let hub;
  before(async () => {
    hub = await startHub({ paceMs: 5 });
  });
  after(async () => {
    await hub?.stop();
  });

  it("streams the answer to stdout and exits", async () => {
    const source = readFileSync(path.join(here, "examples", "readme-client.mjs"), "utf8");
    assert.ok(source.includes("http://127.0.0.1:8080"), "the example targets the default address");
    const readme = readFileSync(path.join(here, "..", "..", "README.md"), "utf8");
    assert.ok(readme.includes("```js\n" + source + "```"), "the example is the README's code, verbatim");
    const dir = path.join(here, ".build"); // inside tests/node so @microsoft/signalr resolves
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "readme-client.mjs");
    writeFileSync(file, source.replace("http://127.0.0.1:8080", hub.base));

    const { stdout, stderr } = await new Promise((resolve, reject) => {
      execFile(process.execPath, [file], { env: { ...process.env, KEY: ADMIN_KEY }, timeout: 15000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`)) : resolve({ stdout, stderr }),
      );
    });
    const expected = await ask(hub, "What is RAG?", 5);
    assert.equal(stdout, `${expected.answer}\n[offline, ${expected.metadata.tokens} tokens]\n`, `stderr: ${stderr}`);
    // Nothing logged at Warning or above (e.g. "Result given for 'receivetoken' method but
    // server is not expecting a result." when a handler returns a value).
    assert.equal(stderr, "");
  });
});
