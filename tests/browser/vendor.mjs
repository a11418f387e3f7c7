// Copies the ESM builds of marked and DOMPurify, with their licences, into static/vendor/.
// Run after changing their versions in package.json: `npm ci && npm run vendor`.
import { copyFileSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const vendor = join(here, '..', '..', 'static', 'vendor');
mkdirSync(vendor, { recursive: true });

// The hub does not serve the source maps, so the pointer to them is dropped.
function copyModule(from, to) {
  const text = readFileSync(join(modules, from), 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
  writeFileSync(join(vendor, to), text);
}

copyModule('marked/lib/marked.esm.js', 'marked.esm.js');
copyFileSync(join(modules, 'marked/LICENSE'), join(vendor, 'LICENSE.marked.md'));
copyModule('dompurify/dist/purify.es.mjs', 'purify.es.mjs');
copyFileSync(join(modules, 'dompurify/LICENSE'), join(vendor, 'LICENSE.dompurify.txt'));
copyFileSync(join(modules, 'dompurify/LICENSE-MPL'), join(vendor, 'LICENSE-MPL.dompurify.txt'));

const versions = ['marked', 'dompurify'].map((name) => {
  const pkg = JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8'));
  return `${name} ${pkg.version} (${pkg.license})`;
});
writeFileSync(join(vendor, 'VERSIONS.txt'), versions.join('\n') + '\n');
console.log('vendored:', versions.join(', '));
