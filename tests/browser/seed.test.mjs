// The seed fixture's committed JavaScript (seed-transpiled/) is exactly what the seed's
// verbatim TypeScript (seed/) transpiles to today, so the pages the session tests run are
// the seed's code and nothing else. No browser needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { transpileSeed, TRANSPILED_DIR, SEED_FILES } from './lib/transpile-seed.mjs';

test('the committed transpiled seed is what the verbatim seed transpiles to', async () => {
  const fresh = await transpileSeed();
  assert.equal(fresh.length, SEED_FILES.length);
  for (const [target, text] of fresh) {
    const committed = readFileSync(join(TRANSPILED_DIR, target), 'utf8');
    assert.equal(committed, text, `seed-transpiled/${target} is stale: run npm run transpile-seed`);
  }
  // What the seed's client relies on is in it: the EventSource, the SignalR hub connection.
  const useSSE = fresh.find(([t]) => t === 'hooks/useSSE.js')[1];
  assert.match(useSSE, /new EventSource\(/);
  const useWebSocket = fresh.find(([t]) => t === 'hooks/useWebSocket.js')[1];
  assert.match(useWebSocket, /HubConnectionBuilder/);
});
