// The Python side of the SDK suite: the venv's interpreter and a runner for scripts here.

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { ADMIN_KEY } from "../node/harness.js";

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

