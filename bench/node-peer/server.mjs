// The benchmark peer: what a team would otherwise build with Node. socket.io 4.8 on namespace
// /v1 with the Redis adapter (so any number of nodes deliver every room event), the same
// handshake check as the Crawbl edge (an Ed25519-signed JWT in X-Token, Authorization: Bearer
// or auth.token, checked locally) and the same rooms (workspace:{id}) and event shapes.
//
//   PORT=9001 REDIS_URL=redis://127.0.0.1:6379 PEER_PUBLIC_KEY=<base64url Ed25519 key> node server.mjs
import { createPublicKey, verify } from "node:crypto";
import { createServer } from "node:http";

import { createAdapter } from "@socket.io/redis-adapter";
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

function tokenOf(handshake) {
  const header = handshake.headers["x-token"];
  if (header) return header;
  const authorization = handshake.headers.authorization ?? "";
  if (authorization.toLowerCase().startsWith("bearer ")) return authorization.slice(7).trim();
  return handshake.auth?.token;
}

const publisher = createClient({ url: process.env.REDIS_URL });
const subscriber = publisher.duplicate();
await Promise.all([publisher.connect(), subscriber.connect()]);

const http = createServer();
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
