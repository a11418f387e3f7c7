// The sign-in dialog shared by the chat and admin pages. The key is sent once to
// POST /api/v1/session, which answers with an HttpOnly session cookie, and then forgotten:
// it is never stored, kept in a variable, put in a URL or logged.

import { session, ApiError } from './api.js';
import { el } from './ui.js';

/**
 * Shows the dialog until the hub accepts a key and `validate()` (which runs signed in)
 * resolves. Resolves to what validate returned. `message` is shown above the form (e.g. why
 * the previous session ended). When `signedIn` (a promise) resolves true, the browser turned
 * out to be signed in already (another tab): the dialog closes as if a key had been accepted.
 */
export function signIn({ title = 'Sign in', lead = '', message = '', validate, signedIn = null }) {
  return new Promise((resolve) => {
    const input = el('input#api-key', {
      type: 'password',
      name: 'api-key',
      autocomplete: 'off',
      spellcheck: 'false',
      autocapitalize: 'off',
      required: true,
      placeholder: 'rsk_…',
      'aria-describedby': 'signin-help',
    });
    const reveal = el('button.ghost.small', { type: 'button', 'aria-pressed': 'false', text: 'Show' });
    reveal.addEventListener('click', () => {
      const shown = input.type === 'text';
      input.type = shown ? 'password' : 'text';
      reveal.textContent = shown ? 'Show' : 'Hide';
      reveal.setAttribute('aria-pressed', String(!shown));
      input.focus();
    });
    const error = el('p.form-error', { role: 'alert', hidden: !message }, message);
    const submit = el('button.primary', { type: 'submit', text: 'Sign in' });
    const form = el('form.signin-form', { method: 'dialog', novalidate: true },
      el('h1', {}, title),
      lead ? el('p.lead', {}, lead) : null,
      error,
      el('label', { for: 'api-key' }, 'API key'),
      el('div.input-row', {}, input, reveal),
      el('p.help#signin-help', {},
        'At first start the hub prints an admin key for the default tenant (',
        el('code', {}, 'rsk_…'),
        '). The page does not keep the key: the hub signs this browser in with a cookie that scripts cannot read.'),
      el('div.form-actions', {}, submit));
    const dialog = el('dialog.signin', { 'aria-labelledby': 'signin-title' }, form);
    form.querySelector('h1').id = 'signin-title';
    // Escape must not leave the page without a key.
    dialog.addEventListener('cancel', (ev) => ev.preventDefault());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) {
        error.textContent = 'Enter an API key.';
        error.hidden = false;
        input.focus();
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Checking…';
      try {
        await session.start(key);
        input.value = '';
        const result = await validate();
        dialog.close();
        dialog.remove();
        resolve(result);
      } catch (e) {
        const text = e instanceof ApiError
          ? (e.code === 'unauthorized' ? 'That key was not accepted (401). Check it and try again.' : e.friendly)
          : String(e);
        error.textContent = text;
        error.hidden = false;
        input.select();
        input.focus();
      } finally {
        submit.disabled = false;
        submit.textContent = 'Sign in';
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
    if (signedIn) {
      signedIn.then(async (yes) => {
        if (!yes || !dialog.isConnected || submit.disabled) return;
        try {
          const result = await validate();
          if (!dialog.isConnected) return;
          dialog.close();
          dialog.remove();
          resolve(result);
        } catch {
          // Not usable after all: the dialog stays.
        }
      }, () => {});
    }
  });
}
