// Small DOM helpers shared by the chat and admin pages. Text always goes in as text
// (textContent), never as HTML.

/** el('div.card#main', {title: 'x', onclick: fn, dataset: {a: 1}}, 'text', child, …) */
export function el(spec, attrs = {}, ...children) {
  const [, tag = 'div', rest = ''] = /^([a-z0-9-]*)(.*)$/i.exec(spec);
  const node = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(node.dataset, value);
    } else if (name === 'text') {
      node.textContent = value;
    } else if (value === true) {
      node.setAttribute(name, '');
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '–';
  const n = Number(ms);
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  const minutes = Math.floor(n / 60000);
  if (minutes < 60) return `${minutes} min ${Math.round((n % 60000) / 1000)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatNumber(n, digits = 0) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '–';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function formatDate(value) {
  if (!value) return '–';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** A button that asks for a second click before it acts (no blocking confirm() dialogs). */
export function confirmButton(label, confirmLabel, action, { className = 'danger-ghost small' } = {}) {
  const button = el('button', { type: 'button', class: className, text: label });
  let armed = null;
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = confirmLabel;
      button.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove('armed');
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.classList.remove('armed');
    }
  });
  button.addEventListener('blur', () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      button.classList.remove('armed');
    }
  });
  return button;
}

/** A short message at the corner of the screen. */
export function toast(message, kind = 'info', ms = 4000) {
  let host = $('#toasts');
  if (!host) {
    host = el('div#toasts.toasts', { role: 'status', 'aria-live': 'polite' });
    document.body.append(host);
  }
  const item = el(`div.toast.${kind}`, {}, message);
  host.append(item);
  setTimeout(() => item.classList.add('leaving'), ms);
  setTimeout(() => item.remove(), ms + 400);
}
