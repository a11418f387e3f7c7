// The list of the user's conversations (GET /api/v1/conversations): a sidebar on wide
// screens, a drawer behind the ☰ button on narrow ones. Opening one asks the chat page to
// load it; deleting one removes it from the hub.

import { api, ApiError } from './api.js';
import { el, $, clear, confirmButton } from './ui.js';

const PAGE = 30;
const WIDE = window.matchMedia('(min-width: 1180px)');

function relative(value) {
  const then = new Date(value).getTime();
  if (!Number.isFinite(then)) return '';
  const s = Math.max(0, (Date.now() - then) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(value).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

export class ConversationList {
  constructor({ onOpen, onDeleted, onError }) {
    Object.assign(this, { onOpen, onDeleted, onError });
    this.panel = $('#history');
    this.list = $('#history-list');
    this.more = $('#history-more');
    this.toggle = $('#history-toggle');
    this.backdrop = $('#history-backdrop');
    this.current = null;
    this.items = [];
    this.total = 0;
    this.enabled = false;
    this.toggle.addEventListener('click', () => (this.isOpen() ? this.close() : this.open()));
    $('#history-close').addEventListener('click', () => this.close());
    this.backdrop.addEventListener('click', () => this.close());
    this.more.addEventListener('click', () => this.refresh(this.items.length + PAGE));
    this.panel.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !WIDE.matches) {
        ev.stopPropagation();
        this.close();
      }
    });
    WIDE.addEventListener('change', () => this.layout());
  }

  /** Shows the list (after sign-in) or hides it (signed out). */
  enable(on) {
    this.enabled = on;
    document.body.classList.toggle('has-history', on);
    this.toggle.hidden = !on;
    if (!on) {
      this.items = [];
      clear(this.list);
    }
    this.layout();
    if (on) this.refresh();
  }

  isOpen() {
    return this.enabled && (WIDE.matches || this.panel.dataset.open === 'true');
  }

  layout() {
    const show = this.enabled && (WIDE.matches || this.panel.dataset.open === 'true');
    this.panel.hidden = !show;
    this.backdrop.hidden = !(show && !WIDE.matches);
    this.toggle.setAttribute('aria-expanded', String(show && !WIDE.matches));
  }

  open() {
    this.panel.dataset.open = 'true';
    this.layout();
    const target = this.list.querySelector('[aria-current="true"] .open') || this.list.querySelector('.open') || $('#history-close');
    target.focus();
  }

  close() {
    this.panel.dataset.open = 'false';
    this.layout();
    if (!WIDE.matches) this.toggle.focus();
  }

  setCurrent(id) {
    this.current = id;
    for (const li of this.list.querySelectorAll('li[data-id]')) {
      li.setAttribute('aria-current', String(li.dataset.id === id));
    }
    if (id && !this.items.some((c) => c.id === id)) this.refresh();
  }

  async refresh(limit = Math.max(PAGE, this.items.length)) {
    if (!this.enabled) return;
    try {
      const body = await api(`/api/v1/conversations?limit=${Math.min(100, limit)}`);
      this.items = body.conversations || [];
      this.total = body.total ?? this.items.length;
      this.render();
    } catch (e) {
      if (e instanceof ApiError && e.network) return; // the status pill says so already
      this.onError(e);
    }
  }

  render() {
    clear(this.list);
    if (!this.items.length) {
      this.list.append(el('li.empty', {}, 'No conversations yet. Your questions will be kept here.'));
    }
    for (const c of this.items) {
      const title = c.title || 'Untitled conversation';
      const open = el('button.open', { type: 'button', title }, el('span.t', {}, title), el('span.when', {}, relative(c.updatedAt)));
      open.addEventListener('click', () => {
        if (!WIDE.matches) this.close();
        this.onOpen(c.id);
      });
      const remove = confirmButton('×', 'Delete?', async () => {
        try {
          await api(`/api/v1/conversations/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
          this.onDeleted(c.id);
        } catch (e) {
          this.onError(e);
        }
        await this.refresh();
      }, { className: 'ghost small delete' });
      remove.setAttribute('aria-label', `Delete the conversation “${title}”`);
      this.list.append(el('li', { dataset: { id: c.id }, 'aria-current': String(c.id === this.current) }, open, remove));
    }
    this.more.hidden = this.items.length >= this.total;
  }
}
