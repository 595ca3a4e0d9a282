// A short program on openapi-fetch, typed by what openapi-typescript generates, unedited, from
// openapi/openapi.json: obtain an admin token, create a client, use it for client_credentials,
// introspect its token, list clients, delete it. `tsc` type-checks every call against the spec.
//
// Usage: node dist/demo.js BASE_URL ADMIN_CLIENT_ID ADMIN_CLIENT_SECRET
// Prints a JSON report; exits non-zero on any failure.
import createClient from "openapi-fetch";
import type { paths } from "./generated/schema.js";

declare const process: { argv: string[]; exit(code: number): never };
declare const Buffer: { from(s: string): { toString(encoding: string): string } };

const [baseUrl, adminId, adminSecret] = process.argv.slice(2);
const api = createClient<paths>({ baseUrl });

// Form bodies (application/x-www-form-urlencoded), as the token endpoints take them.
const form = (body: object) => new URLSearchParams(body as Record<string, string>);
const FORM = "application/x-www-form-urlencoded";
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;

function must<T>(value: T | undefined, error: unknown, what: string): T {
  if (value === undefined) {
    throw new Error(`${what} failed: ${JSON.stringify(error)}`);
  }
  return value;
}

const report: Record<string, unknown> = {};

// 1. An admin token.
const adminToken = await api.POST("/o/token/", {
  body: { grant_type: "client_credentials", scope: "tessera:admin" },
  bodySerializer: form,
  headers: { Authorization: basic(adminId, adminSecret), "Content-Type": FORM },
});
const admin = { Authorization: `Bearer ${must(adminToken.data, adminToken.error, "admin token").access_token}` };

// 2. Create a client.
const created = await api.POST("/api/v1/clients", {
  body: { name: "SDK app (TypeScript)", client_type: "confidential", grant_types: ["client_credentials"], scope: "read" },
  headers: admin,
});
const { client, client_secret } = must(created.data, created.error, "create client");
report.created = client.client_id;

// 3. The new client gets a token, 4. and introspects it.
const credentials = { Authorization: basic(client.client_id, client_secret ?? ""), "Content-Type": FORM };
const issued = await api.POST("/o/token/", {
  body: { grant_type: "client_credentials", scope: "read" },
  bodySerializer: form,
  headers: credentials,
});
const accessToken = must(issued.data, issued.error, "client token").access_token;
const introspected = await api.POST("/o/introspect/", {
  body: { token: accessToken },
  bodySerializer: form,
  headers: credentials,
});
const state = must(introspected.data, introspected.error, "introspection");
report.active = state.active;
report.introspected_client_id = state.client_id;

// 5. List every client, page by page; 6. delete the new one and see it gone.
const ids: string[] = [];
let cursor: string | undefined;
do {
  const page = await api.GET("/api/v1/clients", { params: { query: { limit: 2, cursor } }, headers: admin });
  const data = must(page.data, page.error, "list clients");
  ids.push(...data.items.map((c) => c.client_id));
  cursor = data.next_cursor ?? undefined;
} while (cursor);
report.listed = ids.includes(client.client_id);
const deleted = await api.DELETE("/api/v1/clients/{client_id}", {
  params: { path: { client_id: client.client_id } },
  headers: admin,
});
report.deleted = must(deleted.data, deleted.error, "delete").done;
const gone = await api.GET("/api/v1/clients/{client_id}", {
  params: { path: { client_id: client.client_id } },
  headers: admin,
});
report.after_delete = gone.error?.code;
report.after_delete_status = gone.response.status;

console.log(JSON.stringify(report));
