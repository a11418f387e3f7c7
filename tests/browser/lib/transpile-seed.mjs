// The seed's React client, transpiled: `seed/` holds its TypeScript verbatim (not edited),
// `seed-transpiled/` the JavaScript the browser tests bundle, one file for each, made by
// `npm run transpile-seed` and committed so the fixture can be read and reviewed as what the
// browser runs. `seed.test.mjs` checks that the committed copy is what this transpiles now,
// so the two cannot drift apart.

import { transform } from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Seed files, relative to `seed/`, and their copies under `seed-transpiled/`. */
export const SEED_FILES = [
  ['hooks/useSSE.ts', 'hooks/useSSE.js'],
  ['hooks/useWebSocket.ts', 'hooks/useWebSocket.js'],
  ['components/StreamingChat.tsx', 'components/StreamingChat.js'],
];

const HEADER = '// Transpiled from tests/browser/seed/ by `npm run transpile-seed`: do not edit.\n';

/** The transpiled text of each seed file: [[path under seed-transpiled/, text], ...]. */
export async function transpileSeed() {
  const out = [];
  for (const [source, target] of SEED_FILES) {
    const code = readFileSync(join(HERE, 'seed', source), 'utf8');
    const result = await transform(code, {
      loader: source.endsWith('.tsx') ? 'tsx' : 'ts',
      jsx: 'transform', // the seed imports React itself: classic React.createElement
      format: 'esm',
      target: 'es2020',
      sourcefile: `seed/${source}`,
    });
    out.push([target, HEADER + result.code]);
  }
  return out;
}

export const TRANSPILED_DIR = join(HERE, 'seed-transpiled');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [target, text] of await transpileSeed()) {
    const path = join(TRANSPILED_DIR, target);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`wrote ${path}`);
  }
}
