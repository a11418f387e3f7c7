// Server-Sent Events over fetch(): unlike EventSource it can read the HTTP status and error
// body of a refused stream (401, 429, 400), send a body, and never reconnects by itself (the
// page decides when to ask again). The parser follows the WHATWG "event stream" rules: lines end in
// CRLF, LF or CR (and may be split anywhere across chunks), `:` starts a comment, `data:`
// lines join with "\n", a blank line dispatches.

import { errorFrom, ApiError } from './api.js';

export class SseParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.buffer = '';
    this.pendingCR = false;
    this.reset();
    this.lastEventId = '';
  }

  reset() {
    this.data = [];
    this.event = '';
    this.hasData = false;
  }

  push(chunk) {
    let text = chunk;
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i += 1) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      this.line(this.buffer.slice(start, i));
      if (c === '\r') {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === '\n') i += 1;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === '') {
      if (this.hasData) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) {
      this.onComment(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      default:
        // `retry` and unknown fields: our reconnects follow their own backoff.
        break;
    }
  }
}

/**
 * Opens an event stream with fetch. Resolves once the stream has ended (the server closed
 * it); rejects with an ApiError for a refused stream (HTTP error) or a broken connection
 * (`network: true`), or with an AbortError when `signal` aborts.
 *
 * `onOpen()` is called once the 200 response arrived; `onEvent({event,data,id})` per event.
 */
export async function streamEvents(url, { method = 'GET', body, headers = {}, signal, onOpen, onEvent, onComment }) {
  const init = {
    method,
    headers: { Accept: 'text/event-stream', ...headers },
    signal,
    cache: 'no-store',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError({ network: true, code: 'network', message: String(e && e.message) });
  }
  if (!response.ok) throw await errorFrom(response);
  const type = response.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream')) {
    throw new ApiError({ status: response.status, code: 'not_event_stream', message: `expected an event stream, got ${type || 'no content type'}` });
  }
  if (onOpen) onOpen(response);
  const parser = new SseParser(onEvent, onComment);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      let result;
      try {
        result = await reader.read();
      } catch (e) {
        if (e && e.name === 'AbortError') throw e;
        if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
        throw new ApiError({ network: true, code: 'network', message: String(e && e.message) });
      }
      if (result.done) break;
      parser.push(result.value);
    }
    // An event without its closing blank line is discarded, as the spec says.
  } finally {
    reader.releaseLock();
  }
}
