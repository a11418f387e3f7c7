// Markdown for model output, safe by construction:
// 1. marked renders raw HTML (block or inline) as escaped text, never as markup;
// 2. images become plain links, so model output never makes the browser fetch anything;
// 3. `[n]` becomes a citation link to source n of the same answer;
// 4. DOMPurify sanitises the result with a short allow-list, as a second wall.

import { Marked } from '/static/vendor/marked.esm.js';
import DOMPurify from '/static/vendor/purify.es.mjs';

export function escapeHtml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const citation = {
  name: 'citation',
  level: 'inline',
  start(src) {
    const m = src.match(/\[\d{1,3}\](?!\()/);
    return m ? m.index : undefined;
  },
  tokenizer(src) {
    const m = /^\[(\d{1,3})\](?![(:[])/.exec(src);
    if (m) return { type: 'citation', raw: m[0], number: Number(m[1]) };
    return undefined;
  },
  renderer(token) {
    // The href is completed per answer in render(): marked renders without context.
    return `<a class="cite" href="#cite-${token.number}" data-cite="${token.number}">${token.number}</a>`;
  },
};

const markdown = new Marked({ gfm: true, breaks: false, async: false });
markdown.use({
  extensions: [citation],
  renderer: {
    // Raw HTML from a model is text, never markup.
    html(token) {
      const text = escapeHtml(token.text);
      return token.block ? `<p>${text.replace(/\n+$/, '')}</p>\n` : text;
    },
    // An image would be a request the model chose: show a link the reader can follow instead.
    image(token) {
      const label = escapeHtml(token.text || token.title || 'image');
      return `<a href="${escapeHtml(token.href || '')}" class="image-link">[image: ${label}]</a>`;
    },
  },
});

const SAFE_URL = /^(?:(?:https?|mailto):|#|\/(?!\/))/i;

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    const href = node.getAttribute('href') || '';
    if (!SAFE_URL.test(href)) {
      node.removeAttribute('href');
    } else if (!href.startsWith('#')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
    }
  }
});

const PURIFY = {
  ALLOWED_TAGS: [
    'a', 'p', 'br', 'hr', 'em', 'strong', 'del', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li',
    'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'sup', 'sub', 'span',
  ],
  ALLOWED_ATTR: ['href', 'title', 'class', 'data-cite', 'start', 'align', 'target', 'rel'],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  KEEP_CONTENT: true,
  RETURN_TRUSTED_TYPE: false,
};

/** Renders Markdown to sanitised HTML; citation links point at `#<idPrefix>-src-<n>`. */
export function renderMarkdown(text, idPrefix = 'a') {
  const html = markdown.parse(text || '');
  const withIds = html.replace(/href="#cite-(\d+)"/g, (_, n) => `href="#${idPrefix}-src-${n}"`);
  return DOMPurify.sanitize(withIds, PURIFY);
}

