// Talking to the hub's REST API: the browser session (an HttpOnly cookie the page cannot
// read: the key typed at sign-in is sent once and never kept), JSON requests, and readable
// error messages.

// Not a credential: only whether this tab signed in, so a reload while the hub is down
// keeps the page up (and reconnecting) instead of asking for a key it may not need.
const SIGNED_IN_SLOT = 'ragstream.signedIn';

export const session = {
  /** Trades an API key for the hub's session cookie. Resolves to who signed in. */
  async start(key) {
    const who = await api('/api/v1/session', { method: 'POST', body: { apiKey: key } });
    remember(true);
    return who;
  },

  /** Who is signed in, or null when nobody is (401). Rejects when the hub cannot be reached. */
  async current() {
    try {
      const who = await api('/api/v1/session');
      remember(true);
      return who;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        remember(false);
        return null;
      }
      throw e;
    }
  },

  /** Signs out on the hub (the cookie stops working everywhere). Rejects when it could not. */
  async end() {
    await api('/api/v1/session', { method: 'DELETE' });
    remember(false);
  },

  /** The hub refused the session (revoked key, expired): forget that we were signed in. */
  forget() {
    remember(false);
  },

  /** Whether this tab signed in and has not seen the session end. */
  get probably() {
    try {
      return sessionStorage.getItem(SIGNED_IN_SLOT) === '1';
    } catch {
      return false;
    }
  },
};

function remember(on) {
  try {
    if (on) sessionStorage.setItem(SIGNED_IN_SLOT, '1');
    else sessionStorage.removeItem(SIGNED_IN_SLOT);
  } catch {
    // Private mode: a reload while the hub is down asks to sign in again.
  }
}

/** An error the hub (or the network) gave back, with what a person should read. */
export class ApiError extends Error {
  constructor({ status = 0, code = 'error', message = '', retryAfter = null, network = false }) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    /** True when the hub could not be reached at all (it is down, or we are offline). */
    this.network = network;
  }

  get friendly() {
    return friendlyMessage(this);
  }
}

const UPSTREAM = {
  upstream_auth: 'the provider refused the hub\'s credentials; an administrator must fix the provider settings',
  upstream_rate_limited: 'the provider is rate-limiting the hub',
  upstream_overloaded: 'the provider is overloaded',
  upstream_unavailable: 'the provider is unavailable',
  upstream_unreachable: 'the provider cannot be reached',
  upstream_rejected: 'the provider rejected the request',
  upstream_timeout: 'the provider took too long',
  upstream_error: 'the provider reported an error mid-answer',
  upstream_protocol: 'the provider sent something the hub could not read',
  upstream_interrupted: 'the provider\'s connection broke off mid-answer',
};

function capitalise(text) {
  const t = String(text).trim().replace(/\.$/, '');
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

/** Turns a hub error code (HTTP status or stream error) into a sentence for people. */
export function friendlyMessage({ status = 0, code = '', message = '', retryAfter = null, network = false }) {
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : '';
  if (network) return 'The hub cannot be reached. It may be restarting, or you are offline.';
  switch (code) {
    case 'unauthorized':
      return 'Your API key was not accepted (401). It may have been revoked, or your session ended: sign in again.';
    case 'forbidden':
      return `Not allowed (403): ${message || 'this key may not do that.'}`;
    case 'too_many_streams':
      return `Too many answers at once (429): you already have the most answers streaming that your key allows. Wait for one to finish, or stop it.${wait}`;
    case 'server_busy':
      return `The hub is busy (429): it is at its limit of concurrent answers.${wait || ' Try again shortly.'}`;
    case 'ended_by_admin':
      return 'An administrator ended this answer.';
    case 'signed_out':
      return 'You signed out, so this answer was ended. Sign in again to ask.';
    case 'cancelled':
      return 'Stopped.';
    case 'uploads_busy':
      return `The hub is busy with other uploads (503): ${message}${wait}`;
    case 'quota_exceeded':
      return `Your tenant is at its limit (409): ${message}`;
    case 'payload_too_large':
      return `Too large (413): ${message || 'the hub refuses a file this size'}.`.replace(/\.\.$/, '.');
    case 'unsupported_media_type':
      return `Not a kind of file the hub takes (415): ${message || 'only .md and .txt files'}.`.replace(/\.\.$/, '.');
    case 'conversation_not_found':
      return 'That conversation no longer exists on the hub (it may have been deleted), so this question starts a new one.';
    case 'question_too_long':
    case 'invalid_question':
    case 'empty_question':
      return message || 'That question cannot be asked.';
    case 'internal':
      return `The hub failed while answering (${status || 'internal error'}). ${message}`.trim();
    default:
      break;
  }
  if (code.startsWith('upstream_')) {
    const why = UPSTREAM[code] || 'the language model provider returned an error';
    return `The language model failed to answer (${code}): ${why}.${message ? ` ${capitalise(message)}.` : ''} Try again${retryAfter ? ` in ${retryAfter} s` : ''}.`.replace(/\.\./g, '.');
  }
  if (status === 401) return friendlyMessage({ code: 'unauthorized' });
  if (status === 403) return friendlyMessage({ code: 'forbidden', message });
  if (status === 429) return friendlyMessage({ code: 'server_busy', retryAfter });
  if (/upstream|provider|model|timeout|rate_limited|overloaded/.test(code) || status === 502 || status === 503 || status === 504) {
    return `The language model failed to answer${code ? ` (${code})` : ''}: ${message || 'the upstream provider returned an error'}. Try again.`;
  }
  if (status >= 500) return `The hub had a problem (${status}): ${message || code}`;
  if (status >= 400) return `${message || code} (${status})`;
  return message || code || 'Something went wrong.';
}

/** Reads a hub error body (`{"error":{"code","message"}}`) from a failed response. */
export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || '';
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status.
  }
  if (response.status === 401) code = 'unauthorized';
  const retry = Number.parseInt(response.headers.get('Retry-After') || '', 10);
  return new ApiError({
    status: response.status,
    code,
    message,
    retryAfter: Number.isFinite(retry) ? retry : null,
  });
}

/**
 * A JSON request, authenticated by the session cookie. Resolves to the parsed body (or null
 * for 204); rejects with an ApiError.
 */
export async function api(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, signal, cache: 'no-store', credentials: 'same-origin' };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError({ network: true, code: 'network', message: String(e && e.message) });
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** Whether the hub answers at all (no key needed). */
export async function hubIsUp(timeoutMs = 4000) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch('/healthz', { cache: 'no-store', signal: controller.signal });
    return response.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Absolute WebSocket URL for a path on this origin. */
export function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}
