// The README's "OpenAI-compatible endpoint" section, run as written against a test hub: every
// `sh` block (the `curl -N` stream, the JSON completion, the model list), the Python example
// with the official SDK, and the JavaScript one. Only the address changes, so the README
// cannot drift from what the hub does.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { ADMIN_KEY, REPO_ROOT, startHub } from "../node/harness.js";
import { PYTHON } from "./python.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_BASE = "http://127.0.0.1:8080";

/** The fenced blocks of the README's OpenAI section, as {lang, code}. */
function sectionBlocks() {
  const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
  const start = readme.indexOf("\n## OpenAI-compatible endpoint\n");
  assert.ok(start >= 0, "the README has the section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map(([, lang, code]) => ({ lang, code }));
}

function run(command, args, { cwd = here, timeout = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, timeout, env: { ...process.env, KEY: ADMIN_KEY } }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`)) : resolve({ stdout, stderr }),
    );
  });
}

describe("the README's OpenAI-compatible examples", () => {
  let hub;
  let blocks;
  const local = (code) => {
    assert.ok(code.includes(DEFAULT_BASE), "the example targets the default address");
    return code.replaceAll(DEFAULT_BASE, hub.base);
  };
  before(async () => {
    hub = await startHub({ paceMs: 2 });
    blocks = sectionBlocks();
  });
  after(async () => {
    await hub?.stop();
  });

  it("the curl -N stream is chunks with sources, a stop, usage and [DONE]", async () => {
    const block = blocks.find((b) => b.lang === "sh" && b.code.includes("curl -N"));
    assert.ok(block, "a curl -N example");
    const { stdout } = await run("bash", ["-c", local(block.code)]);
    const data = stdout.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
    assert.equal(data.at(-1), "[DONE]", stdout);
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(chunks[0].sources.length > 0, stdout);
    assert.match(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), /Retrieval-Augmented Generation/);
    assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
    assert.ok(chunks.at(-1).usage.completion_tokens > 0);
  });

  it("the JSON completion and the model list", async () => {
    const block = blocks.find((b) => b.lang === "sh" && b.code.includes("/v1/models"));
    assert.ok(block, "the models example");
    const { stdout } = await run("bash", ["-c", local(block.code)]);
    // Two JSON documents, one after the other.
    const [completion, models] = stdout.replace(/}\s*{"object":"list"/, '}\n{"object":"list"').split("\n").map((l) => JSON.parse(l));
    assert.equal(completion.object, "chat.completion");
    assert.match(completion.choices[0].message.content, /330/);
    assert.ok(completion.sources.length > 0);
    assert.ok(models.data.some((m) => m.id === "ragstream"), stdout);
  });

  it("the Python example prints the sources and the streamed answer", async () => {
    const block = blocks.find((b) => b.lang === "python");
    assert.ok(block, "a Python example");
    mkdirSync(path.join(here, ".build"), { recursive: true });
    const file = path.join(here, ".build", "readme_example.py");
    writeFileSync(file, local(block.code));
    const { stdout } = await run(PYTHON, [file]);
    assert.match(stdout, /^\[1\] Retrieval-Augmented Generation$/m);
    assert.match(stdout, /Retrieval-Augmented Generation.*\[1\]/s);
  });

  it("the JavaScript example prints the answer and its sources", async () => {
    const block = blocks.find((b) => b.lang === "js");
    assert.ok(block, "a JavaScript example");
    mkdirSync(path.join(here, ".build"), { recursive: true }); // inside tests/sdk so `openai` resolves
    const file = path.join(here, ".build", "readme-example.mjs");
    writeFileSync(file, local(block.code));
    const { stdout, stderr } = await run(process.execPath, [file]);
    assert.match(stdout, /1937/);
    assert.match(stdout, /^\[\d\] Golden Gate Bridge$/m);
    assert.equal(stderr, "");
  });
});
