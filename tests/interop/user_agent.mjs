// A tiny user agent for the interop scripts: a cookie jar and manual redirects (so each hop can
// be checked), and the person at it, who logs in on the login page and allows on the consent
// page.

const unescapeHtml = (s) => s.replaceAll('&#x2f;', '/').replaceAll('&#x3d;', '=').replaceAll('&#x3f;', '?')
  .replaceAll('&quot;', '"').replaceAll('&#x27;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>')
  .replaceAll('&amp;', '&');

/// The value of a page's hidden form field.
export const hidden = (html, name) => {
  const match = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!match) throw new Error(`no ${name} field in the page`);
  return unescapeHtml(match[1]);
};
const formAction = (html) => unescapeHtml(html.match(/<form method="post" action="([^"]*)"/)[1]);

/// A page's text without its markup, for error messages and checks.
export const pageText = (html) => unescapeHtml(html.replace(/<(script|style)[\s\S]*?<\/\1>/g, '').replace(/<[^>]+>/g, ' '))
  .replace(/\s+/g, ' ').trim();

/// A urlencoded POST.
export const form = (fields) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

export class UserAgent {
  /// `base`: the server's URL; `username`/`password`: who logs in; `redirectUri`: where the
  /// front channel ends.
  /// `nextCode`, if given, answers the second-factor form: a function returning the next code
  /// to type (an authenticator app's, or a recovery code).
  constructor({ base, username, password, redirectUri, nextCode }) {
    Object.assign(this, { base: new URL(base), username, password, redirectUri, nextCode });
    this.jar = new Map();
    this.codesTyped = 0;
    this.passwordsTyped = 0;
  }

  /// One request with the cookie jar, never following redirects.
  async browse(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.jar.size) headers.set('cookie', [...this.jar].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(new URL(url, this.base), { ...init, headers, redirect: 'manual' });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const at = pair.indexOf('=');
      const [name, value] = [pair.slice(0, at), pair.slice(at + 1)];
      if (/Max-Age=0/i.test(cookie)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return response;
  }

  /// Drives an authorization URL as a person would: follows redirects, logs in on the login
  /// page, allows on the consent page, and stops at the redirect to the client. Returns that
  /// callback URL and the consent page's text (if one was shown).
  async frontChannel(authorizationUrl) {
    let consentPage = null;
    let response = await this.browse(authorizationUrl);
    for (let hops = 0; hops < 10; hops++) {
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        if (location.startsWith(this.redirectUri)) return { callback: new URL(location), consentPage };
        response = await this.browse(location);
        continue;
      }
      const html = await response.text();
      if (response.status !== 200) throw new Error(`front channel: ${response.status} ${pageText(html)}`);
      if (html.includes('name="password"')) {
        this.passwordsTyped += 1;
        response = await this.browse(formAction(html), form({
          csrf_token: hidden(html, 'csrf_token'), next: hidden(html, 'next'),
          username: this.username, password: this.password,
        }));
        if (response.status !== 303) throw new Error(`login failed: ${response.status}`);
      } else if (html.includes('name="code"') && this.nextCode) {
        this.codesTyped += 1;
        response = await this.browse(formAction(html), form({
          csrf_token: hidden(html, 'csrf_token'), next: hidden(html, 'next'), code: this.nextCode(),
        }));
        if (response.status !== 303) throw new Error(`the second factor failed: ${response.status}`);
      } else if (html.includes('name="decision"')) {
        consentPage = pageText(html);
        response = await this.browse(formAction(html), form({ csrf_token: hidden(html, 'csrf_token'), decision: 'allow' }));
      } else {
        throw new Error(`an unexpected page: ${pageText(html).slice(0, 500)}`);
      }
    }
    throw new Error('too many hops in the front channel');
  }
}
