// A client's key-set host for tests: serves one JWK Set file over https (reading it on every
// request, so a test can rotate the keys by rewriting it) and counts the requests.
//
// Usage: node serve_jwks.mjs CERT_FILE KEY_FILE JWKS_FILE
// Prints the port it listens on (127.0.0.1), then one line per request served.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const [cert, key, jwks] = process.argv.slice(2);
const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' });
  res.end(readFileSync(jwks));
  console.log(`served ${req.url}`);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
