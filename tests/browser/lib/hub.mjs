// Starts a real ragstream hub for a test file: its own port, its own SQLite database in a
// temporary folder, the offline provider, and the repository's static/ pages.
//
// RAGSTREAM_BIN picks the binary (default <repo>/target/debug/ragstream);
// RAGSTREAM_STATIC_DIR the pages it serves (default <repo>/static).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = process.env.RAGSTREAM_BIN || join(REPO, 'target', 'debug', 'ragstream');
const STATIC_DIR = process.env.RAGSTREAM_STATIC_DIR || join(REPO, 'static');

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Hub {
  constructor({ pace = 25, maxStreamsPerUser = 5, env = {} } = {}) {
    this.adminKey = `test-admin-${randomBytes(11).toString('hex')}`; // 32 characters
    this.dir = mkdtempSync(join(tmpdir(), 'ragstream-browser-'));
    this.pace = pace;
    this.maxStreamsPerUser = maxStreamsPerUser;
    this.extraEnv = env;
    this.child = null;
    this.output = '';
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the hub (on the same port and database when it ran before) and waits for it. */
  async start() {
    if (!existsSync(BIN)) {
      throw new Error(`no hub binary at ${BIN}: run \`cargo build\` first, or set RAGSTREAM_BIN`);
    }
    if (!this.port) this.port = await freePort();
    const env = {
      ...process.env,
      RAGSTREAM_ADDR: `127.0.0.1:${this.port}`,
      DATABASE_URL: `sqlite://${join(this.dir, 'db.sqlite')}`,
      RAGSTREAM_ADMIN_KEY: this.adminKey,
      RAGSTREAM_PROVIDER: 'offline',
      RAGSTREAM_OFFLINE_PACE_MS: String(this.pace),
      RAGSTREAM_MAX_STREAMS_PER_USER: String(this.maxStreamsPerUser),
      RAGSTREAM_STATIC_DIR: STATIC_DIR,
      RAGSTREAM_WORKERS: '2',
      RUST_LOG: 'warn',
      ...this.extraEnv,
    };
    const child = spawn(BIN, [], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('exit', (code, signal) => {
      running.delete(child);
      if (!child.stopping) {
        // A hub that dies by itself is a finding: say so next to the failing test.
        process.stderr.write(`\n[hub on ${this.url} exited unexpectedly: ${code ?? signal}]\n${this.output.slice(-4000)}\n`);
      }
    });
    const deadline = Date.now() + 30000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`the hub exited at start (${child.exitCode ?? child.signalCode}):\n${this.output}`);
      }
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the hub did not come up on ${this.url}:\n${this.output}`);
      await sleep(100);
    }
    const page = await fetch(`${this.url}/`);
    if (!page.ok || !(page.headers.get('content-type') || '').includes('text/html')) {
      throw new Error(`the hub does not serve the chat page at / (${page.status}); is static serving in this build?`);
    }
    return this;
  }

  /** Ends the hub: SIGKILL to simulate a crash, SIGTERM (the default) for a clean stop. */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.stopping = true;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A JSON call with a key (the admin key by default). */
  async api(path, { method = 'GET', body, key = this.adminKey } = {}) {
    const headers = { 'X-API-Key': key };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    if (!res.ok) {
      const err = new Error(`${method} ${path} → ${res.status} ${text}`);
      err.status = res.status;
      err.body = json;
      throw err;
    }
    return json;
  }

  addDocument(title, text) {
    return this.api('/api/v1/documents', { method: 'POST', body: { title, text } });
  }

  async stats() {
    return this.api('/api/v1/admin/stats');
  }

  /** A new user key in the default tenant. */
  async createKey(name, { admin = false, tenantId = 'default' } = {}) {
    const created = await this.api('/api/v1/admin/keys', { method: 'POST', body: { tenantId, name, admin } });
    return created;
  }

  /** Polls until `predicate(stats)` holds; returns the last stats. */
  async waitForStats(predicate, { timeout = 10000, what = 'hub stats' } = {}) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
      last = await this.stats();
      if (predicate(last)) return last;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
      await sleep(100);
    }
  }
}

/** Sample documents every test file can ask about. */
export const SAMPLE_DOCS = [
  {
    title: 'The Eiffel Tower',
    text: `# The Eiffel Tower

The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower.

## Height

The tower is 330 metres tall, about the same height as an 81-storey building. It was the tallest man-made structure in the world until the Chrysler Building in New York City was finished in 1930.

## Construction

Construction of the tower began in January 1887 and was finished in March 1889. It was built as the centrepiece of the 1889 World's Fair, held to celebrate the centennial of the French Revolution. Around three hundred workers joined together eighteen thousand pieces of wrought iron using two and a half million rivets.

## Visiting

The tower has three levels for visitors, with restaurants on the first and second levels. The top level's upper platform is 276 metres above the ground, the highest observation deck accessible to the public in the European Union. Tickets can be bought to ascend by stairs or lift to the first and second levels.
`,
  },
  {
    title: 'Golden Gate Bridge',
    text: `# Golden Gate Bridge

The Golden Gate Bridge is a suspension bridge spanning the Golden Gate, the strait connecting San Francisco Bay and the Pacific Ocean. It links San Francisco to Marin County.

Construction began on January 5, 1933, and the bridge opened to traffic on May 27, 1937. Its chief engineer was Joseph Strauss.

The main span is 1,280 metres long, and the towers rise 227 metres above the water. The bridge is painted in a colour called International Orange, chosen to stay visible in the fog.
`,
  },
];

export async function seed(hub) {
  for (const doc of SAMPLE_DOCS) await hub.addDocument(doc.title, doc.text);
}
