// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) logs in against a real Tessera and
// calls a tool on an MCP server that accepts Tessera's access tokens, verified offline.
//
// Usage: node mcp_login.mjs MODE USERNAME PASSWORD [TLS_CERT TLS_KEY]
//   MODE dcr:  the SDK registers itself at Tessera's registration endpoint (RFC 7591).
//   MODE cimd: the SDK's client ID is the URL of a Client ID Metadata Document
//              (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25) that this script
//              serves over https with TLS_CERT/TLS_KEY (a certificate for 127.0.0.1).
//
// A two-step handshake, because Tessera must know the MCP server's URL (the RFC 8707 resource
// its clients may ask for) before it starts, and the URL has a port only once it listens:
//   1. the script listens (MCP server, callback, metadata document) and prints one JSON line:
//      {"mcp_url": ..., "redirect_uri": ..., "client_id_url": ...};
//   2. it reads two lines on stdin: Tessera's issuer, and an access token Tessera issued for
//      another audience (which the MCP server must refuse); then it runs the login and prints
//      one JSON report. It exits non-zero on any failure.
//
// The MCP server: McpServer + Streamable HTTP (stateless), behind the SDK's requireBearerAuth
// with a verifier that checks the JWT with jose against Tessera's JWKS (iss, aud = this server's
// URL, exp); the SDK's mcpAuthMetadataRouter serves RFC 9728 protected resource metadata.
// The MCP client: the SDK's Client, StreamableHTTPClientTransport and an OAuthClientProvider
// whose redirectToAuthorization plays the user agent (cookie jar, login form, consent form).
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import readline from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';

const [mode, username, password, tlsCert, tlsKey] = process.argv.slice(2);
if (!['dcr', 'cimd'].includes(mode) || !username || !password || (mode === 'cimd' && !(tlsCert && tlsKey))) {
  console.error('usage: node mcp_login.mjs dcr|cimd USERNAME PASSWORD [TLS_CERT TLS_KEY]');
  process.exit(2);
}
const SCOPES = ['read'];

async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server.address().port;
}

// --- 1. Listen: the MCP server, the client's loopback callback, the metadata document. ---

const mcpApp = createMcpExpressApp();
const mcpServer = http.createServer(mcpApp);
const mcpUrl = `http://127.0.0.1:${await listen(mcpServer)}/mcp`;

// The loopback redirect URI (RFC 8252 §7.3): the user agent lands here with the code.
let deliverCode;
const codeArrived = new Promise((resolve) => { deliverCode = resolve; });
const callbackServer = http.createServer((req, res) => {
  const params = new URL(req.url, 'http://127.0.0.1').searchParams;
  deliverCode(Object.fromEntries(params));
  res.end('You may close this window.');
});
const redirectUri = `http://127.0.0.1:${await listen(callbackServer)}/callback`;

const clientMetadata = {
  client_name: 'MCP interop client',
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

let clientIdUrl;
let documentServer;
const documentFetches = [];
if (mode === 'cimd') {
  documentServer = https.createServer({ cert: readFileSync(tlsCert), key: readFileSync(tlsKey) }, (req, res) => {
    documentFetches.push(req.url);
    if (req.method === 'GET' && req.url === '/mcp-client/client.json') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ client_id: clientIdUrl, ...clientMetadata }));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  clientIdUrl = `https://127.0.0.1:${await listen(documentServer)}/mcp-client/client.json`;
}

console.log(JSON.stringify({ mcp_url: mcpUrl, redirect_uri: redirectUri, client_id_url: clientIdUrl ?? null }));

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const readLine = async (what) => {
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin ended before ${what}`);
  return value.trim();
};
const issuer = await readLine("Tessera's issuer");
const otherAudienceToken = await readLine('the token for another audience');
const base = new URL(issuer);

// --- 2. The MCP server's auth: RFC 9728 metadata, and offline JWT verification. ---

const asMetadataResponse = await fetch(new URL('/.well-known/oauth-authorization-server', base));
if (!asMetadataResponse.ok) throw new Error(`Tessera's metadata: ${asMetadataResponse.status}`);
const oauthMetadata = await asMetadataResponse.json();
const jwks = createRemoteJWKSet(new URL(oauthMetadata.jwks_uri));

const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      // RFC 8707: the token must have been issued for this server (aud = its URL).
      ({ payload } = await jwtVerify(token, jwks, { issuer: oauthMetadata.issuer, audience: mcpUrl }));
    } catch (e) {
      throw new InvalidTokenError(`the access token is not valid here: ${e.code ?? e.message}`);
    }
    return {
      token,
      clientId: payload.client_id,
      scopes: typeof payload.scope === 'string' ? payload.scope.split(' ') : [],
      expiresAt: payload.exp,
      resource: new URL(Array.isArray(payload.aud) ? payload.aud[0] : payload.aud),
      extra: { sub: payload.sub, aud: payload.aud, iss: payload.iss },
    };
  },
};

mcpApp.use(mcpAuthMetadataRouter({
  oauthMetadata,
  resourceServerUrl: new URL(mcpUrl),
  scopesSupported: SCOPES,
  resourceName: 'Tessera interop MCP server',
}));
const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(new URL(mcpUrl));
const bearer = requireBearerAuth({ verifier, requiredScopes: SCOPES, resourceMetadataUrl, expectedResource: new URL(mcpUrl) });

function buildMcpServer() {
  const server = new McpServer({ name: 'tessera-interop', version: '1.0.0' });
  server.registerTool('whoami', { description: "The caller's subject and scope, from its access token" }, async (extra) => {
    const who = {
      sub: extra.authInfo.extra.sub,
      scope: extra.authInfo.scopes.join(' '),
      aud: extra.authInfo.extra.aud,
      client_id: extra.authInfo.clientId,
    };
    return { content: [{ type: 'text', text: JSON.stringify(who) }], structuredContent: who };
  });
  return server;
}

// Stateless Streamable HTTP: a server and a transport per request.
mcpApp.post('/mcp', bearer, async (req, res) => {
  const server = buildMcpServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => { transport.close(); server.close(); });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
mcpApp.all('/mcp', bearer, (_req, res) => res.status(405).set('allow', 'POST').end());

// --- 3. The user agent: a cookie jar and manual redirects, so each hop can be checked. ---

const jar = new Map();
async function browse(url, init = {}) {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
  const response = await fetch(new URL(url, base), { ...init, headers, redirect: 'manual' });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair] = cookie.split(';');
    const at = pair.indexOf('=');
    const [name, value] = [pair.slice(0, at), pair.slice(at + 1)];
    if (/Max-Age=0/i.test(cookie)) jar.delete(name);
    else jar.set(name, value);
  }
  return response;
}
const unescapeHtml = (s) => s.replaceAll('&#x2f;', '/').replaceAll('&#x3d;', '=').replaceAll('&#x3f;', '?')
  .replaceAll('&quot;', '"').replaceAll('&#x27;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>')
  .replaceAll('&amp;', '&');
const hidden = (html, name) => {
  const match = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!match) throw new Error(`no ${name} field in the page`);
  return unescapeHtml(match[1]);
};
const formAction = (html) => unescapeHtml(html.match(/<form method="post" action="([^"]*)"/)[1]);
const pageText = (html) => unescapeHtml(html.replace(/<(script|style)[\s\S]*?<\/\1>/g, '').replace(/<[^>]+>/g, ' '))
  .replace(/\s+/g, ' ').trim();
const form = (fields) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

const report = { mode, mcp_url: mcpUrl, redirect_uri: redirectUri, client_id_url: clientIdUrl ?? null };

/// Drives an authorization URL as a browser would: follows redirects, logs in on the login
/// page, allows on the consent page, and stops on the redirect to the client's callback.
async function frontChannel(authorizationUrl) {
  report.authorization_request = Object.fromEntries(new URL(authorizationUrl).searchParams);
  let response = await browse(authorizationUrl);
  for (let hops = 0; hops < 10; hops++) {
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      if (location.startsWith(redirectUri)) {
        // The last hop: the user agent lands on the client's loopback listener.
        await fetch(location);
        return;
      }
      response = await browse(location);
      continue;
    }
    if (response.status !== 200) throw new Error(`front channel: ${response.status} ${pageText(await response.text())}`);
    const html = await response.text();
    if (html.includes('name="password"')) {
      response = await browse(formAction(html), form({
        csrf_token: hidden(html, 'csrf_token'), next: hidden(html, 'next'), username, password,
      }));
      if (response.status !== 303) throw new Error(`login failed: ${response.status}`);
    } else if (html.includes('name="decision"')) {
      report.consent_page = pageText(html);
      response = await browse(formAction(html), form({ csrf_token: hidden(html, 'csrf_token'), decision: 'allow' }));
    } else {
      throw new Error(`an unexpected page: ${pageText(html).slice(0, 500)}`);
    }
  }
  throw new Error('too many hops in the front channel');
}

// --- 4. The MCP client: the SDK's OAuth client provider, in memory. ---

const stored = {};
const provider = {
  get redirectUrl() { return redirectUri; },
  get clientMetadata() { return clientMetadata; },
  clientMetadataUrl: clientIdUrl,
  state: () => (stored.state = crypto.randomUUID()),
  clientInformation: () => stored.clientInformation,
  saveClientInformation: (info) => { stored.clientInformation = info; },
  tokens: () => stored.tokens,
  saveTokens: (tokens) => { stored.tokens = tokens; },
  saveCodeVerifier: (verifier) => { stored.codeVerifier = verifier; },
  codeVerifier: () => stored.codeVerifier,
  redirectToAuthorization: (url) => frontChannel(url),
};

// Without a token the MCP server refuses and says where its metadata is (RFC 9728 §5.1).
{
  const response = await fetch(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'ping' }),
  });
  report.unauthenticated = { status: response.status, www_authenticate: response.headers.get('www-authenticate') };
  const other = await fetch(mcpUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      authorization: `Bearer ${otherAudienceToken}`,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'ping' }),
  });
  report.other_audience = { status: other.status, www_authenticate: other.headers.get('www-authenticate') };
  const metadata = await fetch(resourceMetadataUrl);
  report.protected_resource_metadata = await metadata.json();
}

const client = new Client({ name: 'tessera-interop-client', version: '1.0.0' });
let transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
try {
  await client.connect(transport);
  throw new Error('the MCP server let an unauthenticated client connect');
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
}
const callback = await codeArrived;
if (callback.error) throw new Error(`the authorization failed: ${JSON.stringify(callback)}`);
if (callback.state !== stored.state) throw new Error('the callback state does not match');
report.callback_iss = callback.iss ?? null;
await transport.finishAuth(callback.code);

transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
await client.connect(transport);
report.tools = (await client.listTools()).tools.map((t) => t.name);
const result = await client.callTool({ name: 'whoami', arguments: {} });
if (result.isError) throw new Error(`whoami failed: ${JSON.stringify(result)}`);
report.whoami = JSON.parse(result.content[0].text);
report.client_id = stored.clientInformation.client_id;
report.registered = stored.clientInformation;
report.access_token = stored.tokens.access_token;
report.token_claims = decodeJwt(stored.tokens.access_token);
report.has_refresh_token = typeof stored.tokens.refresh_token === 'string';
report.document_fetches = documentFetches;

// An access token the MCP server no longer accepts: the SDK refreshes (with the refresh token
// and the same resource) and retries, without the user.
{
  const firstRefreshToken = stored.tokens.refresh_token;
  stored.tokens = { ...stored.tokens, access_token: 'no-longer-valid' };
  const again = new Client({ name: 'tessera-interop-client', version: '1.0.0' });
  await again.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider }));
  const refreshed = await again.callTool({ name: 'whoami', arguments: {} });
  if (refreshed.isError) throw new Error(`whoami after the refresh failed: ${JSON.stringify(refreshed)}`);
  report.after_refresh = {
    whoami: JSON.parse(refreshed.content[0].text),
    refresh_token_rotated: stored.tokens.refresh_token !== firstRefreshToken,
    token_claims: decodeJwt(stored.tokens.access_token),
  };
  await again.close();
}

// The user's list of authorized apps, seen with the same browser session.
{
  const page = await browse('/o/authorized_tokens/');
  const html = await page.text();
  report.authorized_tokens = {
    status: page.status,
    text: pageText(html),
    client_ids: [...html.matchAll(/name="client_id" value="([^"]*)"/g)].map((m) => unescapeHtml(m[1])),
  };
}

await client.close();
for (const server of [mcpServer, callbackServer, documentServer]) server?.closeAllConnections?.();
for (const server of [mcpServer, callbackServer, documentServer]) server?.close();
console.log(JSON.stringify(report));
process.exit(0);
