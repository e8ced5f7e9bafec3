// The benchmark peer: what a team would otherwise build with Node. socket.io 4.8 on namespace
// /v1 with the Redis adapter (so any number of nodes deliver every room event), the same
// handshake check as the Crawbl edge (an Ed25519-signed JWT in X-Token, Authorization: Bearer
// or auth.token, checked locally) and the same rooms (workspace:{id}) and event shapes. With
// DATABASE_URL it also takes the send route, POST /v1/workspaces/{w}/conversations/{c}/messages,
// the plain way: one INSERT (idempotent on localId), then `message.new` to the room.
//
//   PORT=9001 REDIS_URL=redis://127.0.0.1:6379 PEER_PUBLIC_KEY=<base64url Ed25519 key> \
//   [DATABASE_URL=postgres://…] node server.mjs
import { createPublicKey, randomUUID, verify } from "node:crypto";
import { createServer } from "node:http";

import { createAdapter } from "@socket.io/redis-adapter";
import pg from "pg";
import { createClient } from "redis";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 9001);
const publicKey = createPublicKey({
  key: { kty: "OKP", crv: "Ed25519", x: process.env.PEER_PUBLIC_KEY },
  format: "jwk",
});

/** The token's claims if its signature, audience and expiry hold, else null. */
function claimsOf(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return null;
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], "base64url");
  if (!verify(null, signed, publicKey, signature)) return null;
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  if (claims.aud !== "crawbl-edge" || claims.exp * 1000 < Date.now()) return null;
  return claims;
}

/** The token of a handshake or an HTTP request. */
function tokenOf(request) {
  const header = request.headers["x-token"];
  if (header) return header;
  const authorization = request.headers.authorization ?? "";
  if (authorization.toLowerCase().startsWith("bearer ")) return authorization.slice(7).trim();
  return request.auth?.token;
}

const publisher = createClient({ url: process.env.REDIS_URL });
const subscriber = publisher.duplicate();
await Promise.all([publisher.connect(), subscriber.connect()]);

const database = process.env.DATABASE_URL
  ? new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
  : null;
await database?.query(`CREATE TABLE IF NOT EXISTS messages (
  id uuid PRIMARY KEY, workspace_id text NOT NULL, conversation_id text NOT NULL,
  author_id text NOT NULL, local_id text NOT NULL, text text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (conversation_id, local_id))`);

const sendRoute = /^\/v1\/workspaces\/([^/]+)\/conversations\/([^/]+)\/messages$/;

function reply(response, status, body) {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

async function send(request, response, [, workspaceId, conversationId]) {
  const claims = claimsOf(tokenOf(request));
  if (!claims) return reply(response, 401, { error: { code: "UNAUTHENTICATED" } });
  if (!(claims.workspaces ?? []).includes(workspaceId)) {
    return reply(response, 404, { error: { code: "NOT_FOUND" } });
  }
  let body = "";
  for await (const chunk of request) {
    body += chunk;
    if (body.length > 1 << 20) return reply(response, 413, { error: { code: "TOO_LARGE" } });
  }
  let input;
  try {
    input = JSON.parse(body);
  } catch {
    return reply(response, 400, { error: { code: "INVALID_JSON" } });
  }
  const text = input?.content?.text;
  if (typeof input?.localId !== "string" || typeof text !== "string") {
    return reply(response, 400, { error: { code: "VALIDATION_FAILED" } });
  }
  const { rows } = await database.query(
    `INSERT INTO messages (id, workspace_id, conversation_id, author_id, local_id, text)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (conversation_id, local_id) DO UPDATE SET local_id = EXCLUDED.local_id
     RETURNING *`,
    [randomUUID(), workspaceId, conversationId, claims.sub, input.localId, text],
  );
  const row = rows[0];
  const message = {
    id: row.id,
    workspaceId,
    conversationId,
    role: "user",
    authorId: row.author_id,
    localId: row.local_id,
    content: { type: "text", text: row.text },
    status: "sent",
    createdAt: row.created_at.toISOString(),
    updatedAt: row.created_at.toISOString(),
  };
  io.of("/v1").to(`workspace:${workspaceId}`).emit("message.new", message);
  reply(response, 201, { data: message });
}

const http = createServer((request, response) => {
  const route = request.method === "POST" && database && sendRoute.exec(request.url ?? "");
  if (!route) return reply(response, 404, { error: { code: "NOT_FOUND" } });
  send(request, response, route).catch((error) => {
    console.error(error);
    reply(response, 503, { error: { code: "UNAVAILABLE" } });
  });
});
const io = new Server(http, {
  adapter: createAdapter(publisher, subscriber),
  transports: ["websocket"],
  maxHttpBufferSize: 64 * 1024,
});
io.of("/v1").use((socket, next) => {
  const claims = claimsOf(tokenOf(socket.handshake));
  if (!claims) return next(new Error("invalid or expired token"));
  for (const workspace of claims.workspaces ?? []) socket.join(`workspace:${workspace}`);
  next();
});
io.of("/v1").on("connection", () => {});
http.listen(port, "127.0.0.1", () => console.log(`peer listening on 127.0.0.1:${port}`));
