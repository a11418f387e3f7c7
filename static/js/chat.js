// The chat page: sign in, pick a transport, ask; answers stream in as sanitised Markdown with
// numbered citations, a blinking cursor, a Stop button and timing under each answer.

import { api, session, ApiError, friendlyMessage } from './api.js';
import { createTransport, TRANSPORTS } from './transports.js';
import { renderMarkdown } from './markdown.js';
import { signIn } from './signin.js';
import { el, $, clear, formatMs, formatNumber, toast } from './ui.js';
import { ConversationList } from './history.js';

const TRANSPORT_SLOT = 'ragstream.transport';
const TOPK_SLOT = 'ragstream.topK';
const HISTORY_SLOT = 'ragstream.history';
const CONVERSATION_SLOT = 'ragstream.conversation';
const MAX_SAVED_TURNS = 50;

const page = {
  status: $('#status'),
  statusText: $('#status .status-text'),
  retryNow: $('#status .retry-now'),
  transportPicker: $('#transport'),
  conversation: $('#conversation'),
  welcome: $('#welcome'),
  welcomeDocs: $('#welcome-docs'),
  suggestions: $('#suggestions'),
  form: $('#composer'),
  question: $('#question'),
  topK: $('#topk'),
  send: $('#send'),
  stop: $('#stop'),
  signout: $('#signout'),
  newChat: $('#new-chat'),
  announcer: $('#announcer'),
};

let transport = null;
let transportKind = 'sse';
let current = null; // the Turn being answered
let turnCount = 0;
let statusTicker = null;
let signedIn = false;
let conversationId = null; // the hub's conversation these turns belong to

function setConversation(id) {
  conversationId = id || null;
  try {
    if (conversationId) sessionStorage.setItem(CONVERSATION_SLOT, conversationId);
    else sessionStorage.removeItem(CONVERSATION_SLOT);
  } catch {
    // ignore
  }
  page.newChat.hidden = !conversationId && turns.length === 0;
  sidebar.setCurrent(conversationId);
}

// ---------------------------------------------------------------------------------------------
// Status pill

const STATUS_TEXT = {
  idle: 'Not signed in',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

function showStatus(snapshot) {
  const { status } = snapshot;
  page.status.dataset.status = status;
  clearInterval(statusTicker);
  const paint = () => {
    let text = STATUS_TEXT[status] || status;
    if (status === 'reconnecting' && transport) {
      const { retryInMs, attempt } = transport.snapshot();
      if (retryInMs > 0) text = `Reconnecting in ${Math.ceil(retryInMs / 1000)} s (attempt ${attempt})`;
    }
    clear(page.statusText).append(text);
    if (status === 'connected') {
      page.statusText.append(el('span.status-via', {}, ` · ${TRANSPORTS.find((t) => t.kind === transportKind).label}`));
    }
  };
  paint();
  if (status === 'reconnecting') statusTicker = setInterval(paint, 500);
  page.retryNow.hidden = status !== 'reconnecting';
}

page.retryNow.addEventListener('click', () => transport && transport.reconnectNow());

// ---------------------------------------------------------------------------------------------
// Transport switch (remembered across reloads)

function savedTransport() {
  try {
    const kind = localStorage.getItem(TRANSPORT_SLOT);
    return TRANSPORTS.some((t) => t.kind === kind) ? kind : 'sse';
  } catch {
    return 'sse';
  }
}

function buildTransportPicker() {
  for (const t of TRANSPORTS) {
    const input = el('input', {
      type: 'radio',
      name: 'transport',
      id: `transport-${t.kind}`,
      value: t.kind,
      checked: t.kind === transportKind,
    });
    input.addEventListener('change', () => {
      if (input.checked) switchTransport(t.kind);
    });
    page.transportPicker.append(input, el('label', { for: `transport-${t.kind}`, title: t.title }, t.label));
  }
}

function switchTransport(kind) {
  transportKind = kind;
  try {
    localStorage.setItem(TRANSPORT_SLOT, kind);
  } catch {
    // Private mode: the choice lasts for this page only.
  }
  if (signedIn) startTransport();
}

function startTransport() {
  if (transport) transport.close();
  transport = createTransport(transportKind);
  transport.onStatus(showStatus);
  transport.onUnauthorized((e) => keyRejected(e));
  transport.start();
}

// ---------------------------------------------------------------------------------------------
// One question and its answer

function nearBottom() {
  const s = document.scrollingElement;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 160;
}

function scrollToBottom() {
  const s = document.scrollingElement;
  s.scrollTop = s.scrollHeight;
}

class Turn {
  constructor(question, kind) {
    turnCount += 1;
    this.id = `t${turnCount}`;
    this.question = question;
    this.kind = kind;
    this.text = '';
    this.sources = [];
    this.tokens = 0;
    this.state = 'waiting';
    this.renderQueued = false;
    this.sentAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.build();
  }

  build() {
    const kindLabel = TRANSPORTS.find((t) => t.kind === this.kind)?.label;
    this.body = el('div.answer-body.markdown', { 'aria-live': 'off' });
    this.typing = el('div.typing', { 'aria-hidden': 'true' },
      el('span.dots', {}, el('i'), el('i'), el('i')),
      el('span.typing-text', {}, 'Searching your documents…'));
    this.notice = el('p.notice', { role: 'alert', hidden: true });
    this.sourcesList = el('ol.sources-list');
    this.sourcesBox = el('section.sources', { hidden: true, 'aria-label': 'Sources' },
      el('h3', {}, 'Sources'), this.sourcesList);
    this.metrics = el('p.metrics', { 'aria-label': 'Answer timing' });
    this.actions = el('div.answer-actions');
    this.answer = el('div.answer', { dataset: { state: 'waiting', transport: this.kind } },
      el('div.answer-head', {}, el('span.avatar', { 'aria-hidden': 'true' }), el('span.who', {}, 'ragstream'), el('span.via', {}, kindLabel ? `via ${kindLabel}` : 'saved')),
      this.typing, this.body, this.notice, this.sourcesBox,
      el('footer.answer-foot', {}, this.metrics, this.actions));
    this.root = el('article.turn', { id: this.id, 'aria-label': `Question ${turnCount}` },
      el('div.question', {}, el('p', {}, this.question)),
      this.answer);
  }

  setState(state) {
    this.state = state;
    this.answer.dataset.state = state;
    this.answer.setAttribute('aria-busy', String(state === 'waiting' || state === 'streaming'));
  }

  onSources(sources) {
    this.sources = Array.isArray(sources) ? sources : [];
    clear(this.sourcesList);
    for (const s of this.sources) {
      const n = s.number;
      const passage = el('p.passage', {}, s.text || '');
      const item = el('li', { id: `${this.id}-src-${n}`, value: n },
        el('details', {},
          el('summary', {},
            el('span.num', { 'aria-hidden': 'true' }, String(n)),
            el('span.title', {}, s.title || 'Untitled'),
            el('span.snippet', { 'aria-hidden': 'true' }, (s.text || '').replace(/\s+/g, ' ').slice(0, 160)),
            Number.isFinite(s.score) ? el('span.score', { title: 'Retrieval score (BM25)' }, s.score >= 0.01 ? s.score.toFixed(2) : s.score.toPrecision(1)) : null),
          passage));
      this.sourcesList.append(item);
    }
    this.sourcesBox.hidden = this.sources.length === 0;
    this.typing.querySelector('.typing-text').textContent = this.sources.length
      ? `Found ${this.sources.length} passage${this.sources.length === 1 ? '' : 's'} · writing…`
      : 'Writing…';
    this.decorateCitations();
  }

  onToken(token) {
    const now = performance.now();
    if (this.firstAt === null) this.firstAt = now;
    this.lastAt = now;
    this.tokens += 1;
    this.text += token;
    if (this.state === 'waiting' || this.state === 'interrupted') this.setState('streaming');
    this.notice.hidden = true;
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    const run = () => {
      if (!this.renderQueued) return;
      this.renderQueued = false;
      this.render();
    };
    requestAnimationFrame(run);
    setTimeout(run, 50); // rAF does not run in a hidden tab
  }

  render() {
    const stick = nearBottom();
    this.body.innerHTML = renderMarkdown(this.text, this.id);
    this.decorateCitations();
    if (this.state === 'streaming') this.placeCursor();
    if (stick) scrollToBottom();
  }

  placeCursor() {
    let target = this.body;
    while (target.lastElementChild && !['PRE', 'TABLE', 'HR', 'BR'].includes(target.lastElementChild.tagName)
      && !target.lastElementChild.classList.contains('cite')) {
      target = target.lastElementChild;
    }
    if (target === this.body && !this.body.lastElementChild) target = this.body.appendChild(el('p'));
    target.append(el('span.cursor', { 'aria-hidden': 'true' }));
  }

  decorateCitations() {
    for (const a of this.body.querySelectorAll('a.cite')) {
      const n = Number(a.dataset.cite);
      const source = this.sources.find((s) => s.number === n);
      if (source) {
        a.title = source.title || `Source ${n}`;
        a.setAttribute('aria-label', `Source ${n}: ${source.title || ''}`);
      } else {
        a.classList.add('unknown');
      }
    }
  }

  onRestart() {
    this.text = '';
    this.tokens = 0;
    this.firstAt = null;
    this.notice.hidden = true;
    this.setState('waiting');
    this.body.innerHTML = '';
  }

  onInterrupted() {
    this.setState('interrupted');
    this.showNotice('Connection lost. The answer will go on from here as soon as the hub is back…', 'warn');
  }

  onDone(meta) {
    this.setState('done');
    if (!this.sources.length && Array.isArray(meta.sources)) this.onSources(meta.sources);
    this.meta = meta;
    this.render();
    this.markCited();
    this.showMetrics(meta);
    this.finish();
    announce(`Answer ready: ${this.body.textContent.slice(0, 300)}`);
  }

  /** Dims the retrieved passages that the answer does not cite. */
  markCited() {
    const cited = new Set([...this.body.querySelectorAll('a.cite')].map((a) => Number(a.dataset.cite)));
    if (!cited.size) return;
    for (const s of this.sources) {
      const item = document.getElementById(`${this.id}-src-${s.number}`);
      if (item) item.classList.toggle('uncited', !cited.has(s.number));
    }
  }

  onError(error) {
    const err = error instanceof ApiError ? error : new ApiError({ code: 'error', message: String(error) });
    this.setState(err.code === 'cancelled' ? 'stopped' : 'error');
    this.errorCode = err.code;
    this.render();
    this.showNotice(err.friendly, err.code === 'cancelled' ? 'info' : 'error');
    announce(err.friendly);
    // A provider that broke off says what it had produced (merged frames undercount).
    if (this.tokens) this.showMetrics(err.metadata || {});
    this.finish();
    if (err.code === 'unauthorized') keyRejected(err);
  }

  stopByUser() {
    if (this.handle) this.handle.stop();
    this.setState('stopped');
    this.render();
    this.showNotice(this.tokens ? `Stopped after ${this.tokens} token${this.tokens === 1 ? '' : 's'}.` : 'Stopped before the answer began.', 'info');
    if (this.tokens) this.showMetrics({});
    this.finish();
  }

  showNotice(text, kind) {
    this.notice.textContent = text;
    this.notice.dataset.kind = kind;
    this.notice.hidden = false;
  }

  metricValues(meta) {
    if (this.restored) {
      const tokens = Number.isFinite(meta.tokens) ? meta.tokens : null;
      const ttft = Number.isFinite(meta.ttft_ms) ? meta.ttft_ms : null;
      const total = Number.isFinite(meta.elapsed_ms) ? meta.elapsed_ms : null;
      const rate = total && ttft !== null && tokens > 1 && total > ttft ? (tokens - 1) / ((total - ttft) / 1000) : null;
      return { ttft, clientTtft: null, tokens, rate, total };
    }
    const clientTtft = this.firstAt === null ? null : this.firstAt - this.sentAt;
    const ttft = Number.isFinite(meta.ttft_ms) ? meta.ttft_ms : clientTtft;
    const tokens = Number.isFinite(meta.tokens) ? meta.tokens : this.tokens;
    let seconds = null;
    if (Number.isFinite(meta.elapsed_ms) && Number.isFinite(meta.ttft_ms)) seconds = (meta.elapsed_ms - meta.ttft_ms) / 1000;
    else if (this.firstAt !== null && this.lastAt > this.firstAt) seconds = (this.lastAt - this.firstAt) / 1000;
    const rate = seconds && seconds > 0 && tokens > 1 ? (tokens - 1) / seconds : null;
    const total = Number.isFinite(meta.elapsed_ms) ? meta.elapsed_ms : (this.lastAt ?? performance.now()) - this.sentAt;
    return { ttft, clientTtft, tokens, rate, total };
  }

  showMetrics(meta) {
    const v = this.metricValues(meta);
    clear(this.metrics);
    const item = (cls, label, value, title) => el(`span.metric.${cls}`, { title }, el('span.label', {}, label), ' ', el('b', {}, value));
    const items = [
      item('ttft', 'TTFT', formatMs(v.ttft), v.clientTtft !== null
        ? `Time to first token: ${formatMs(v.ttft)} at the hub, ${formatMs(v.clientTtft)} as seen in this browser`
        : 'Time to first token at the hub'),
      item('rate', 'Speed', v.rate === null ? '–' : `${formatNumber(v.rate, 1)} tok/s`, 'Tokens per second after the first token'),
      item('tokens', 'Tokens', formatNumber(v.tokens), 'Tokens in the answer'),
      item('total', 'Total', formatMs(v.total), 'From question to last token'),
    ];
    // A saved answer shows only what the hub kept.
    this.metrics.append(...items.filter((node) => !this.restored || node.querySelector('b').textContent !== '–'));
    if (meta.provider) {
      this.metrics.append(el('span.metric.model', { title: 'Provider and model' }, `${meta.provider}${meta.model ? ` · ${meta.model}` : ''}`));
    }
    this.metricsText = this.metrics.textContent;
  }

  finish() {
    this.typing.hidden = true;
    clear(this.actions);
    if (this.text) {
      this.actions.append(el('button.ghost.small', {
        type: 'button',
        text: 'Copy',
        title: 'Copy the answer as Markdown',
        onclick: async (ev) => {
          try {
            await navigator.clipboard.writeText(this.text);
            ev.target.textContent = 'Copied';
          } catch {
            ev.target.textContent = 'Copy failed';
          }
          setTimeout(() => { ev.target.textContent = 'Copy'; }, 1500);
        },
      }));
    }
    if (this.state !== 'done') {
      this.actions.append(el('button.ghost.small', {
        type: 'button',
        text: 'Ask again',
        onclick: () => ask(this.question),
      }));
    }
    if (current === this) {
      current = null;
      setBusy(false);
    }
    saveHistory();
    sidebar.refresh();
  }

  toJSON() {
    return {
      q: this.question,
      kind: this.kind,
      text: this.text,
      sources: this.sources,
      state: this.state,
      notice: this.notice.hidden ? null : { text: this.notice.textContent, kind: this.notice.dataset.kind },
      meta: this.meta || null,
      metrics: this.metricsText || null,
    };
  }

  static restore(saved) {
    const turn = new Turn(saved.q, saved.kind);
    turn.restored = true;
    turn.text = saved.text || '';
    turn.tokens = 0;
    turn.onSources(saved.sources || []);
    turn.setState(saved.state === 'done' ? 'done' : saved.state === 'stopped' ? 'stopped' : 'error');
    turn.meta = saved.meta;
    turn.body.innerHTML = renderMarkdown(turn.text, turn.id);
    turn.decorateCitations();
    turn.markCited();
    if (saved.notice) turn.showNotice(saved.notice.text, saved.notice.kind);
    if (saved.meta) turn.showMetrics(saved.meta);
    turn.typing.hidden = true;
    return turn;
  }
}

const turns = [];

function saveHistory() {
  try {
    const finished = turns.filter((t) => t.state !== 'waiting' && t.state !== 'streaming' && t.state !== 'interrupted');
    sessionStorage.setItem(HISTORY_SLOT, JSON.stringify(finished.slice(-MAX_SAVED_TURNS)));
  } catch {
    // Storage full or unavailable: history is a nicety.
  }
}

function restoreHistory() {
  let saved = [];
  try {
    saved = JSON.parse(sessionStorage.getItem(HISTORY_SLOT) || '[]');
  } catch {
    saved = [];
  }
  for (const s of Array.isArray(saved) ? saved : []) {
    const turn = Turn.restore(s);
    turn.finishRestored = true;
    turns.push(turn);
    page.conversation.append(turn.root);
    const again = el('button.ghost.small', { type: 'button', text: 'Ask again', onclick: () => ask(turn.question) });
    turn.actions.append(again);
  }
}

// Clicking a citation opens and highlights its source.
page.conversation.addEventListener('click', (ev) => {
  const cite = ev.target.closest('a.cite');
  if (!cite) return;
  ev.preventDefault();
  const target = document.getElementById(cite.getAttribute('href').slice(1));
  if (!target) return;
  const details = target.querySelector('details');
  if (details) details.open = true;
  target.classList.remove('flash');
  void target.offsetWidth;
  target.classList.add('flash');
  target.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
});

function setBusy(busy) {
  document.title = busy ? 'Answering… · ragstream' : 'ragstream · chat';
  page.send.hidden = busy;
  page.stop.hidden = !busy;
  page.transportPicker.disabled = busy;
  if (!busy && document.activeElement === page.stop) page.question.focus();
}

function topK() {
  const n = Number.parseInt(page.topK.value, 10);
  const k = Number.isFinite(n) ? Math.min(20, Math.max(1, n)) : 5;
  page.topK.value = String(k);
  try {
    localStorage.setItem(TOPK_SLOT, String(k));
  } catch {
    // ignore
  }
  return k;
}

function ask(question) {
  const q = (question || '').trim();
  if (!q || current || !signedIn) return;
  page.welcome.hidden = true;
  const turn = new Turn(q, transportKind);
  turns.push(turn);
  current = turn;
  page.conversation.append(turn.root);
  scrollToBottom();
  setBusy(true);
  const asked = conversationId;
  page.newChat.hidden = false;
  turn.handle = transport.ask({ question: q, topK: topK(), conversationId }, {
    onConversation: (id) => {
      if (current === turn) setConversation(id);
    },
    onSources: (s) => turn.onSources(s),
    onToken: (t) => turn.onToken(t),
    onDone: (m) => turn.onDone(m),
    onError: (e) => {
      turn.onError(e);
      // The conversation is gone (deleted, or another hub's): start a new one with this question.
      if (e.code === 'conversation_not_found' && asked && conversationId === asked) {
        setConversation(null);
        ask(q);
      }
    },
    onInterrupted: (e) => turn.onInterrupted(e),
    onRestart: () => turn.onRestart(),
  });
}

function stopCurrent() {
  if (current) current.stopByUser();
}

// ---------------------------------------------------------------------------------------------
// Composer

function autosize() {
  page.question.style.height = 'auto';
  page.question.style.height = `${Math.min(page.question.scrollHeight, 240)}px`;
}

page.question.addEventListener('input', autosize);
page.question.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    page.form.requestSubmit();
  }
});
page.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (current) return;
  const q = page.question.value;
  if (!q.trim()) {
    page.question.focus();
    return;
  }
  page.question.value = '';
  autosize();
  ask(q);
});
page.stop.addEventListener('click', stopCurrent);
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && current && !document.querySelector('dialog[open]')) {
    ev.preventDefault();
    stopCurrent();
  }
});

// ---------------------------------------------------------------------------------------------
// Sign-in

async function loadDocuments() {
  // The welcome shows the count and suggests the newest four.
  return api('/api/v1/documents?limit=4');
}

function showWelcome(documents) {
  clear(page.suggestions);
  const docs = (documents && documents.documents) || [];
  // The list is paged: `total` counts them all.
  const count = documents && Number.isFinite(documents.total) ? documents.total : docs.length;
  if (!docs.length) {
    page.welcomeDocs.textContent = 'No documents are loaded for your tenant yet. An administrator can upload .md and .txt files on the admin page; then ask away.';
  } else {
    page.welcomeDocs.textContent = `${formatNumber(count)} document${count === 1 ? '' : 's'} loaded. Answers stream in word by word, with numbered citations to the passages they come from.`;
    for (const d of docs.slice(0, 4)) {
      const q = `Tell me about ${d.title}`;
      page.suggestions.append(el('li', {}, el('button.chip', { type: 'button', onclick: () => ask(q) }, q)));
    }
  }
  page.welcome.hidden = turns.length > 0;
}

function enableComposer(on) {
  page.question.disabled = !on;
  page.send.disabled = !on;
  page.signout.hidden = !on;
}

async function requireSignIn(message = '', elsewhere = null) {
  signedIn = false;
  enableComposer(false);
  if (transport) {
    transport.close();
    transport = null;
  }
  showStatus({ status: 'idle' });
  sidebar.enable(false);
  const documents = await signIn({
    title: 'Sign in to ragstream',
    lead: 'Enter an API key to ask questions about your documents.',
    message,
    validate: loadDocuments,
    signedIn: elsewhere,
  });
  started(documents);
}

function started(documents) {
  signedIn = true;
  enableComposer(true);
  startTransport();
  sidebar.enable(true);
  sidebar.setCurrent(conversationId);
  showWelcome(documents);
  page.question.focus();
}

let rejecting = false;
function keyRejected(error) {
  if (rejecting) return;
  rejecting = true;
  session.forget();
  if (current) current.stopByUser();
  requireSignIn(error.friendly).finally(() => {
    rejecting = false;
  });
}

const sidebar = new ConversationList({
  onOpen: (id) => loadConversation(id),
  onDeleted: (id) => {
    if (id === conversationId) newConversation();
  },
  onError: (e) => {
    if (e instanceof ApiError && e.code === 'unauthorized') keyRejected(e);
    else toast(e instanceof ApiError ? e.friendly : String(e), 'error');
  },
});

const STORED_STATE = { complete: 'done', cancelled: 'stopped', error: 'error', interrupted: 'error', streaming: 'done' };

function storedNotice(message) {
  switch (message.status) {
    case 'cancelled':
      return { text: message.errorCode === 'ended_by_admin' ? friendlyMessage({ code: 'ended_by_admin' }) : 'Stopped.', kind: 'info' };
    case 'error':
      return { text: friendlyMessage({ code: message.errorCode || 'error' }), kind: 'error' };
    case 'interrupted':
      return { text: 'The hub stopped while this answer was being written.', kind: 'warn' };
    case 'streaming':
      return { text: 'This answer was still being written when the conversation was opened.', kind: 'info' };
    default:
      return null;
  }
}

/** Replaces the page with a conversation kept by the hub. */
async function loadConversation(id) {
  if (current) current.stopByUser();
  let body;
  try {
    body = await api(`/api/v1/conversations/${encodeURIComponent(id)}`);
  } catch (e) {
    sidebar.onError(e);
    sidebar.refresh();
    return;
  }
  turns.splice(0).forEach((t) => t.root.remove());
  page.welcome.hidden = true;
  const messages = body.messages || [];
  for (let i = 0; i < messages.length; i += 1) {
    if (messages[i].role !== 'user') continue;
    const answer = messages[i + 1] && messages[i + 1].role === 'assistant' ? messages[i + 1] : null;
    const turn = Turn.restore({
      q: messages[i].content,
      kind: 'saved',
      text: answer ? answer.content : '',
      sources: [],
      state: answer ? STORED_STATE[answer.status] || 'done' : 'error',
      notice: answer ? storedNotice(answer) : { text: 'This question has no answer.', kind: 'warn' },
      meta: answer ? { ttft_ms: answer.ttftMs ?? undefined, tokens: answer.tokens ?? undefined, provider: answer.provider, model: answer.model } : null,
    });
    turn.actions.append(el('button.ghost.small', { type: 'button', text: 'Ask again', onclick: () => ask(turn.question) }));
    turns.push(turn);
    page.conversation.append(turn.root);
  }
  setConversation(id);
  saveHistory();
  requestAnimationFrame(scrollToBottom);
  page.question.focus();
}

/** Clears the page for a new conversation (the old one stays on the hub). */
function newConversation() {
  if (current) current.stopByUser();
  turns.splice(0).forEach((t) => t.root.remove());
  try {
    sessionStorage.removeItem(HISTORY_SLOT);
  } catch {
    // ignore
  }
  setConversation(null);
  page.welcome.hidden = !signedIn;
}

page.newChat.addEventListener('click', () => {
  newConversation();
  page.question.focus();
});

page.signout.addEventListener('click', async () => {
  page.signout.disabled = true;
  try {
    // On the hub, so the cookie stops working for every tab of this browser.
    await session.end();
  } catch (e) {
    toast(`Not signed out: ${e instanceof ApiError ? e.friendly : String(e)}`, 'error');
    return;
  } finally {
    page.signout.disabled = false;
  }
  // The next person at this tab does not see this conversation.
  newConversation();
  requireSignIn();
});

/** Tells screen readers about an answer once, instead of token by token. */
function announce(text) {
  page.announcer.textContent = '';
  setTimeout(() => { page.announcer.textContent = text; }, 50);
}

async function boot() {
  transportKind = savedTransport();
  buildTransportPicker();
  try {
    const k = Number.parseInt(localStorage.getItem(TOPK_SLOT) || '', 10);
    if (k >= 1 && k <= 20) page.topK.value = String(k);
  } catch {
    // ignore
  }
  restoreHistory();
  try {
    conversationId = sessionStorage.getItem(CONVERSATION_SLOT) || null;
  } catch {
    conversationId = null;
  }
  page.newChat.hidden = !conversationId && turns.length === 0;
  if (turns.length) requestAnimationFrame(scrollToBottom);
  if (!session.probably) {
    // Not signed in from this tab: ask at once, unless the hub says another tab signed in.
    requireSignIn('', session.current().then(Boolean, () => false));
    return;
  }
  try {
    if (!(await session.current())) {
      requireSignIn();
      return;
    }
    started(await loadDocuments());
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unauthorized') {
      session.forget();
      requireSignIn(e.friendly);
    } else if (session.probably) {
      // The hub is down or busy: stay signed in, show the status and let the link reconnect.
      started(null);
    } else {
      requireSignIn(e instanceof ApiError ? e.friendly : String(e));
    }
  }
}

boot();
