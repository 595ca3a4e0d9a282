// Builds DPoP proofs (RFC 9449 §4.2) with jose, for the tests of Tessera's DPoP checks: good
// proofs, and each kind of bad one (a private key in the header, `alg: none`, an HMAC, another
// `typ`, a wrong method, URL or time).
//
// Usage: node dpop_proofs.mjs < REQUEST.json
// REQUEST: {
//   "keys": { NAME: { "alg": "ES256" | "EdDSA" | "RS256" | "PS256", "private"?: JWK } },
//   "proofs": [ { "key": NAME, "htm": "POST", "htu": URL, "iat"?: seconds, "jti"?: string,
//                 "nonce"?: string, "access_token"?: string (its hash becomes `ath`),
//                 "typ"?: string, "alg"?: "none" | "HS256", "private_jwk"?: true } ]
// }
// A key without "private" is generated. Prints { "keys": { NAME: { "alg", "private", "public",
// "jkt" } }, "proofs": [ JWT ] }: "jkt" is jose's RFC 7638 thumbprint of the public key, and
// "private" lets a later run sign with the same key.
import { createHash, randomUUID } from 'node:crypto';
import { SignJWT, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';

const input = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));

const keys = {};
for (const [name, spec] of Object.entries(input.keys ?? {})) {
  let privateJwk = spec.private;
  if (!privateJwk) {
    const options = spec.alg === 'EdDSA' ? { crv: 'Ed25519', extractable: true } : { extractable: true };
    const pair = await generateKeyPair(spec.alg, options);
    privateJwk = await exportJWK(pair.privateKey);
  }
  const { d, p, q, dp, dq, qi, ...publicJwk } = privateJwk;
  keys[name] = {
    alg: spec.alg,
    private: privateJwk,
    public: publicJwk,
    jkt: await calculateJwkThumbprint(publicJwk, 'sha256'),
    signing: await importJWK(privateJwk, spec.alg),
  };
}

const proofs = [];
for (const spec of input.proofs ?? []) {
  const key = keys[spec.key];
  const claims = { htm: spec.htm, htu: spec.htu, jti: spec.jti ?? randomUUID() };
  if (spec.nonce !== undefined) claims.nonce = spec.nonce;
  if (spec.access_token !== undefined) {
    claims.ath = base64url.encode(createHash('sha256').update(spec.access_token).digest());
  }
  const iat = spec.iat ?? Math.floor(Date.now() / 1000);
  const header = { typ: spec.typ ?? 'dpop+jwt', jwk: spec.private_jwk ? key.private : key.public };
  if (spec.alg === 'none') {
    // jose signs nothing with `none`; the unsecured JWS (RFC 7515 §A.5) is built by hand.
    const part = (value) => base64url.encode(JSON.stringify(value));
    proofs.push(`${part({ ...header, alg: 'none' })}.${part({ ...claims, iat })}.`);
  } else if (spec.alg === 'HS256') {
    // Signed with an HMAC keyed with the public JWK's text: what an algorithm-confusion attack tries.
    const secret = new TextEncoder().encode(JSON.stringify(key.public));
    proofs.push(await new SignJWT(claims).setProtectedHeader({ ...header, alg: 'HS256' }).setIssuedAt(iat).sign(secret));
  } else {
    proofs.push(await new SignJWT(claims).setProtectedHeader({ ...header, alg: key.alg }).setIssuedAt(iat).sign(key.signing));
  }
}

for (const key of Object.values(keys)) delete key.signing;
console.log(JSON.stringify({ keys, proofs }));
