// The seed's React client as a page of the hub's own origin, for the session tests.
//
// `seed/hooks/useSSE.ts`, `seed/hooks/useWebSocket.ts` and `seed/components/StreamingChat.tsx`
// are the seed's code, copied verbatim (not edited); `seed-transpiled/` holds their committed
// JavaScript (`npm run transpile-seed`; `seed.test.mjs` checks it matches), which is what the
// pages run. `fixtures/*.tsx` are ours, around the hooks. Pages are bundled with React (from
// this folder's node_modules) by esbuild at test time, into a test-only static folder: the
// repository's static/ files linked one by one, plus `seed/<page>.html` and `seed/<page>.js`
// for each page below.
// The hub under test serves that folder (RAGSTREAM_STATIC_DIR), so the page is really
// served by the hub, under its Content-Security-Policy, while the product's static/ ships
// no test fixture.

import { build } from 'esbuild';
import { mkdtempSync, mkdirSync, readdirSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO } from './hub.mjs';

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Each page mounts one component: the seed's StreamingChat, or a probe around a seed hook. */
const PAGES = {
  'streaming-chat': ['./seed-transpiled/components/StreamingChat.js', 'StreamingChat'],
  'use-sse': ['./fixtures/UseSSEProbe', 'UseSSEProbe'],
  'use-websocket': ['./fixtures/UseWebSocketProbe', 'UseWebSocketProbe'],
};

function entry(module, name) {
  return `
import React from 'react';
import { createRoot } from 'react-dom/client';
import { ${name} } from '${module}';

createRoot(document.getElementById('root')).render(React.createElement(${name}));
`;
}

// No inline script: the hub's CSP allows scripts from its own origin only.
function html(name) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>seed: ${name}</title></head>
<body><div id="root"></div><script type="module" src="/static/seed/${name}.js"></script></body>
</html>
`;
}

/** Paths of the pages on the hub. */
export const SEED_PAGES = {
  streamingChat: '/static/seed/streaming-chat.html',
  useSSE: '/static/seed/use-sse.html',
  useWebSocket: '/static/seed/use-websocket.html',
};

/**
 * Builds the static folder; returns { dir, dispose }. Pass `dir` as the hub's
 * RAGSTREAM_STATIC_DIR.
 */
export async function buildSeedStatic() {
  const dir = mkdtempSync(join(tmpdir(), 'ragstream-seed-static-'));
  const staticDir = join(REPO, 'static');
  for (const entry of readdirSync(staticDir)) symlinkSync(join(staticDir, entry), join(dir, entry));
  mkdirSync(join(dir, 'seed'));
  for (const [name, [module, component]] of Object.entries(PAGES)) {
    const result = await build({
      stdin: { contents: entry(module, component), resolveDir: HERE, loader: 'tsx', sourcefile: `${name}.tsx` },
      bundle: true,
      format: 'esm',
      target: 'es2020',
      jsx: 'transform', // the seed imports React itself: classic React.createElement
      define: { 'process.env.NODE_ENV': '"production"' },
      outfile: join(dir, 'seed', `${name}.js`),
      logLevel: 'silent',
    });
    if (result.errors.length) throw new Error(`the seed fixture did not build: ${JSON.stringify(result.errors)}`);
    writeFileSync(join(dir, 'seed', `${name}.html`), html(name));
  }
  return { dir, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
