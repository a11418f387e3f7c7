// The three ways the chat page gets an answer, behind one interface:
//
//   const t = createTransport('sse' | 'ws' | 'json');
//   t.onStatus(({status, attempt, retryInMs}) => …);   // connecting, connected, reconnecting, offline
//   t.start();
//   const handle = t.ask({question, topK, conversationId},
//                        {onConversation, onSources, onToken, onDone, onError, onInterrupted, onRestart});
//   handle.stop();
//   t.close();
//
// SSE and JSON answers each use their own HTTP request, so their "connection" is the hub's
// reachability: probed at start, every few seconds while idle, and whenever a request fails;
// a failed probe switches to reconnecting with exponential backoff and jitter. WebSocket keeps
// one socket for every answer, with an application-level ping to find dead sockets.
// Every request is authenticated by the page's session cookie: no key and no ticket travels
// with it. An answer cut off by a lost connection is asked again once the hub is back.
//
// Every question is a turn of a conversation (the hub's agent chat): without a
// conversationId the hub starts one and names it in the answer's first event.
// The same choice of transport reaches /api/v1/agent/chat/stream (SSE), /api/v1/chat/ws
// (WebSocket) or /api/v1/agent/chat (JSON).

import { ApiError, hubIsUp, session, wsUrl, api } from './api.js';
import { streamEvents } from './sse.js';

/** Exponential backoff with "equal jitter": half the step is fixed, half is random. */
export class Backoff {
  constructor({ base = 500, factor = 2, cap = 10000 } = {}) {
    Object.assign(this, { base, factor, cap });
    this.attempt = 0;
  }

  next() {
    const step = Math.min(this.cap, this.base * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.round(step / 2 + Math.random() * (step / 2));
  }

  reset() {
    this.attempt = 0;
  }
}

const PROBE_EVERY_MS = 5000;
const MAX_RESUMES = 5;

/** Connection state shared by every transport: status, listeners, backoff, online/offline. */
class Link {
  constructor() {
    this.status = 'idle';
    this.listeners = new Set();
    this.authListeners = new Set();
    this.waiters = [];
    this.backoff = new Backoff();
    this.retryTimer = null;
    this.retryAt = 0;
    this.closed = false;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.setStatus('offline');
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
  }

  /** Called when the hub refuses the key itself (401) outside of an answer. */
  onUnauthorized(listener) {
    this.authListeners.add(listener);
  }

  onStatus(listener) {
    this.listeners.add(listener);
    listener(this.snapshot());
    return () => this.listeners.delete(listener);
  }

  snapshot() {
    return {
      status: this.status,
      attempt: this.backoff.attempt,
      retryInMs: this.retryTimer ? Math.max(0, this.retryAt - Date.now()) : 0,
    };
  }

  setStatus(status) {
    if (this.closed) return;
    if (status === 'offline') this.cancelRetry();
    this.status = status;
    if (status === 'connected') {
      this.backoff.reset();
      const waiters = this.waiters.splice(0);
      waiters.forEach((w) => w.resolve());
    }
    const snap = this.snapshot();
    this.listeners.forEach((l) => l(snap));
  }

  /** Resolves when connected (at once if connected now); rejects when `signal` aborts. */
  waitConnected(signal) {
    if (this.status === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.waiters.push(waiter);
      if (signal) {
        signal.addEventListener('abort', () => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new DOMException('aborted', 'AbortError'));
        }, { once: true });
      }
    });
  }

  scheduleRetry(fn) {
    this.cancelRetry();
    if (this.closed) return;
    if (!navigator.onLine) {
      this.setStatus('offline');
      return;
    }
    const delay = this.backoff.next();
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      fn();
    }, delay);
    this.setStatus('reconnecting');
  }

  cancelRetry() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  reconnectNow() {}

  close() {
    this.closed = true;
    this.cancelRetry();
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.listeners.clear();
  }
}

/** For transports that open one HTTP request per answer (SSE, JSON). */
class HttpLink extends Link {
  constructor() {
    super();
    this.active = 0;
    this.probing = false;
    this.probeTimer = null;
    this.onVisible = () => {
      if (document.visibilityState === 'visible' && this.status === 'connected') this.probe();
    };
    document.addEventListener('visibilitychange', this.onVisible);
  }

  start() {
    this.setStatus(navigator.onLine ? 'connecting' : 'offline');
    this.probe();
  }

  async probe() {
    if (this.closed || this.probing) return;
    if (!navigator.onLine) {
      this.setStatus('offline');
      return;
    }
    this.probing = true;
    const up = await hubIsUp();
    this.probing = false;
    if (this.closed) return;
    if (up) {
      this.cancelRetry();
      this.setStatus('connected');
      this.scheduleProbe();
    } else {
      this.scheduleRetry(() => this.probe());
    }
  }

  scheduleProbe() {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      // A running answer proves the link; a hidden tab need not poll.
      if (this.active === 0 && document.visibilityState === 'visible') this.probe();
      else this.scheduleProbe();
    }, PROBE_EVERY_MS);
  }

  /** A request reached the hub. */
  reportUp() {
    if (this.status !== 'connected') {
      this.cancelRetry();
      this.setStatus('connected');
      this.scheduleProbe();
    }
  }

  /** A request could not reach the hub. */
  reportDown() {
    if (this.status === 'connected' || this.status === 'connecting') {
      this.scheduleRetry(() => this.probe());
    }
  }

  reconnectNow() {
    this.cancelRetry();
    this.probe();
  }

  close() {
    clearTimeout(this.probeTimer);
    document.removeEventListener('visibilitychange', this.onVisible);
    super.close();
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function isAbort(e) {
  return e && e.name === 'AbortError';
}

/**
 * Runs one answer over HTTP, asking again after a lost connection (the hub restarted, the
 * network dropped) once the link is back. `attemptOnce(signal, resumeFrom)` returns true when
 * the answer ended (done or error), false when the connection broke first.
 */
function runHttpAnswer(link, handlers, attemptOnce) {
  const controller = new AbortController();
  let stopped = false;
  (async () => {
    link.active += 1;
    try {
      for (let resumes = 0; ; resumes += 1) {
        try {
          if (await attemptOnce(controller.signal)) return;
          throw new ApiError({ network: true, code: 'network', message: 'the stream ended early' });
        } catch (e) {
          if (isAbort(e) || stopped) return;
          if (!(e instanceof ApiError) || !e.network) {
            handlers.onError(e instanceof ApiError ? e : new ApiError({ code: 'client', message: String(e) }));
            return;
          }
          link.reportDown();
          if (resumes >= MAX_RESUMES) {
            handlers.onError(e);
            return;
          }
          handlers.onInterrupted(e);
          await link.waitConnected(controller.signal);
        }
      }
    } catch (e) {
      if (!isAbort(e)) handlers.onError(new ApiError({ code: 'client', message: String(e) }));
    } finally {
      link.active -= 1;
    }
  })();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}

class SseTransport extends HttpLink {
  constructor() {
    super();
    this.kind = 'sse';
  }

  ask({ question, topK, conversationId }, handlers) {
    // The hub names the answer (X-Answer-Id) and numbers its events (`<answerId>:<seq>`):
    // after a lost connection the same answer is picked up where it broke off, and only
    // an answer the hub no longer has (restarted, or gone past its grace window) is asked
    // again.
    let answerId = null;
    let lastSeq = 0;
    let conversation = conversationId || null;
    return runHttpAnswer(this, handlers, async (signal) => {
      let ended = false;
      const onEvent = ({ event, data, id }) => {
        const at = id.lastIndexOf(':');
        const seq = at > 0 ? Number(id.slice(at + 1)) : Number.NaN;
        if (Number.isFinite(seq)) {
          if (seq <= lastSeq) return;
          lastSeq = seq;
        }
        const body = parseJson(data);
        if (!body) return;
        if (event === 'conversation' || (typeof body.conversationId === 'string' && body.token === undefined && !body.done)) {
          conversation = body.conversationId;
          handlers.onConversation(body.conversationId);
        } else if (event === 'sources' || Array.isArray(body.sources) && body.token === undefined && !body.done) {
          handlers.onSources(body.sources || []);
        } else if (body.error) {
          ended = true;
          const error = new ApiError({ code: body.error.code, message: body.error.message });
          error.metadata = body.metadata || null;
          handlers.onError(error);
        } else if (body.done) {
          ended = true;
          handlers.onDone(body.metadata || {});
        } else if (typeof body.token === 'string') {
          handlers.onToken(body.token);
        }
      };
      const onOpen = (response) => {
        this.reportUp();
        const id = response.headers.get('X-Answer-Id');
        if (id && id !== answerId) {
          if (answerId) handlers.onRestart();
          answerId = id;
          lastSeq = 0;
        }
      };
      // A refusal (401, 429, ...) still proves the hub is reachable.
      const reachable = (e) => {
        if (e instanceof ApiError && !e.network) this.reportUp();
        throw e;
      };
      if (answerId) {
        try {
          await streamEvents(`/api/v1/answers/${encodeURIComponent(answerId)}/stream`, {
            headers: { 'Last-Event-ID': `${answerId}:${lastSeq}` },
            signal,
            onOpen,
            onEvent,
          }).catch(reachable);
          return ended;
        } catch (e) {
          if (!(e instanceof ApiError) || e.status !== 404) throw e;
          // The hub no longer has it: ask again below.
          answerId = null;
          lastSeq = 0;
          handlers.onRestart();
        }
      }
      const body = { message: question, topK };
      if (conversation) body.conversationId = conversation;
      await streamEvents('/api/v1/agent/chat/stream', {
        method: 'POST',
        body,
        signal,
        onOpen,
        onEvent,
      }).catch(reachable);
      return ended;
    });
  }
}

class JsonTransport extends HttpLink {
  constructor() {
    super();
    this.kind = 'json';
  }

  ask({ question, topK, conversationId }, handlers) {
    return runHttpAnswer(this, handlers, async (signal) => {
      let body;
      const request = { message: question, topK };
      if (conversationId) request.conversationId = conversationId;
      try {
        body = await api('/api/v1/agent/chat', { method: 'POST', body: request, signal });
      } catch (e) {
        if (e instanceof ApiError && !e.network) this.reportUp();
        throw e;
      }
      this.reportUp();
      handlers.onRestart();
      if (body.conversationId) handlers.onConversation(body.conversationId);
      handlers.onSources(body.sources || []);
      if (body.answer) handlers.onToken(body.answer);
      handlers.onDone(body.metadata || {});
      return true;
    });
  }
}

const WS_PING_EVERY_MS = 15000;
const WS_PONG_WITHIN_MS = 10000;

class WsTransport extends Link {
  constructor() {
    super();
    this.kind = 'ws';
    this.socket = null;
    this.answers = new Map();
    this.outbox = [];
    this.seq = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.connecting = false;
  }

  start() {
    this.setStatus(navigator.onLine ? 'connecting' : 'offline');
    this.connect();
  }

  async connect() {
    if (this.closed || this.connecting || this.socket) return;
    this.connecting = true;
    // A refused upgrade shows the page nothing but a close, so ask first whether the session
    // still stands (which also proves the hub is back).
    let signedIn;
    try {
      signedIn = await session.current();
    } catch {
      this.connecting = false;
      this.scheduleRetry(() => this.connect());
      return;
    }
    if (!signedIn) {
      this.connecting = false;
      // A session that ended will not come back by retrying: tell the page and stop here.
      const e = new ApiError({ status: 401, code: 'unauthorized' });
      this.setStatus('offline');
      this.failAll(e);
      this.authListeners.forEach((l) => l(e));
      return;
    }
    if (this.closed) {
      this.connecting = false;
      return;
    }
    const socket = new WebSocket(wsUrl('/api/v1/chat/ws'));
    this.socket = socket;
    this.connecting = false;
    socket.addEventListener('open', () => {
      if (socket !== this.socket) return;
      // The first text frame chooses the plain protocol.
      socket.send(JSON.stringify({ type: 'ping' }));
      this.setStatus('connected');
      this.startPings();
      this.flush();
    });
    socket.addEventListener('message', (ev) => {
      if (socket === this.socket) this.onFrame(ev.data);
    });
    socket.addEventListener('close', () => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.stopPings();
      if (this.closed) return;
      for (const [, answer] of this.answers) {
        if (!answer.interrupted) {
          answer.interrupted = true;
          answer.handlers.onInterrupted(new ApiError({ network: true, code: 'network' }));
        }
      }
      this.scheduleRetry(() => this.connect());
    });
  }

  startPings() {
    this.stopPings();
    this.pingTimer = setInterval(() => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
      this.socket.send(JSON.stringify({ type: 'ping' }));
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.socket && this.socket.close(), WS_PONG_WITHIN_MS);
    }, WS_PING_EVERY_MS);
  }

  stopPings() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  onFrame(text) {
    clearTimeout(this.pongTimer);
    const frame = parseJson(text);
    if (!frame || frame.type === 'pong' || frame.type === 'ping') return;
    const answer = frame.id && this.answers.get(frame.id);
    if (!answer) {
      if (frame.error && !frame.id) console.warn('ragstream: hub error frame', frame.error.code);
      return;
    }
    if (frame.error && frame.error.code === 'answer_not_found' && answer.resuming) {
      // The hub no longer has the answer (restarted, or past its grace window): ask again.
      answer.resuming = false;
      answer.answerId = null;
      answer.seq = 0;
      answer.handlers.onRestart();
      this.send(answer.frame);
      return;
    }
    answer.resuming = false;
    answer.interrupted = false;
    if (typeof frame.answerId === 'string' && frame.answerId !== answer.answerId) {
      if (answer.answerId) answer.handlers.onRestart();
      answer.answerId = frame.answerId;
      answer.seq = 0;
    }
    if (Number.isFinite(frame.seq)) {
      // A resumed answer never repeats what arrived before the break.
      if (frame.seq <= answer.seq) return;
      answer.seq = frame.seq;
    }
    if (typeof frame.conversationId === 'string' && frame.token === undefined && !frame.done && !frame.error && !frame.sources) {
      // A resent question continues the conversation its first attempt started.
      answer.frame.conversationId = frame.conversationId;
      answer.handlers.onConversation(frame.conversationId);
    } else if (frame.error) {
      this.answers.delete(frame.id);
      const error = new ApiError({ code: frame.error.code, message: frame.error.message });
      error.metadata = frame.metadata || null;
      answer.handlers.onError(error);
    } else if (frame.done) {
      this.answers.delete(frame.id);
      answer.handlers.onDone(frame.metadata || {});
    } else if (Array.isArray(frame.sources)) {
      answer.handlers.onSources(frame.sources);
    } else if (typeof frame.token === 'string') {
      answer.handlers.onToken(frame.token);
    }
  }

  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
    } else {
      this.outbox.push(frame);
    }
  }

  /** After a (re)connect: resume every unfinished answer (or ask again one that never
   * started), then send anything queued. */
  flush() {
    const queued = this.outbox.splice(0);
    const pending = new Set(queued.map((f) => f.id));
    for (const [id, answer] of this.answers) {
      if (answer.interrupted && !pending.has(id)) {
        answer.resumes += 1;
        if (answer.resumes > MAX_RESUMES) {
          this.answers.delete(id);
          answer.handlers.onError(new ApiError({ network: true, code: 'network' }));
          continue;
        }
        if (answer.answerId) {
          answer.resuming = true;
          queued.push({ type: 'resume', id, answerId: answer.answerId, after: answer.seq });
        } else {
          queued.push(answer.frame);
        }
      }
    }
    queued.forEach((f) => this.send(f));
  }

  failAll(error) {
    const answers = [...this.answers.values()];
    this.answers.clear();
    this.outbox = [];
    answers.forEach((a) => a.handlers.onError(error));
  }

  ask({ question, topK, conversationId }, handlers) {
    this.seq += 1;
    const id = `c${this.seq}-${Math.random().toString(36).slice(2, 8)}`;
    const frame = { message: question, topK, id };
    if (conversationId) frame.conversationId = conversationId;
    this.answers.set(id, { handlers, frame, interrupted: false, resumes: 0, answerId: null, seq: 0, resuming: false });
    this.send(frame);
    return {
      stop: () => {
        if (!this.answers.has(id)) return;
        this.answers.delete(id);
        this.outbox = this.outbox.filter((f) => f.id !== id);
        if (this.socket && this.socket.readyState === WebSocket.OPEN) {
          this.socket.send(JSON.stringify({ type: 'cancel', id }));
        }
      },
    };
  }

  reconnectNow() {
    this.cancelRetry();
    if (!this.socket) {
      this.connect();
    } else if (this.socket.readyState === WebSocket.OPEN) {
      // Back online with the socket still open: prove it with a ping, or let the pong
      // timer close it and reconnect.
      this.setStatus('connected');
      this.socket.send(JSON.stringify({ type: 'ping' }));
      clearTimeout(this.pongTimer);
      const socket = this.socket;
      this.pongTimer = setTimeout(() => socket.close(), WS_PONG_WITHIN_MS);
    }
  }

  close() {
    super.close();
    this.stopPings();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, 'bye');
    this.answers.clear();
  }
}

export function createTransport(kind) {
  switch (kind) {
    case 'ws':
      return new WsTransport();
    case 'json':
      return new JsonTransport();
    default:
      return new SseTransport();
  }
}

export const TRANSPORTS = [
  { kind: 'sse', label: 'SSE', title: 'Server-Sent Events: one streamed HTTP response per answer' },
  { kind: 'ws', label: 'WebSocket', title: 'One WebSocket for every answer' },
  { kind: 'json', label: 'No streaming', title: 'One JSON response once the answer is complete' },
];
