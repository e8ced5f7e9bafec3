// The Socket.IO connection (namespace /v1, same origin). Every reconnect authenticates with the
// current access token and `auth.since` = the last durable `seq` seen per workspace, so the edge
// replays what was missed before live events (docs/socket-events.md, "Replay on reconnect").

import { io } from "./vendor/socket.io.esm.min.js";
import { accessToken, refresh } from "./api.js";

/** Durable events: they come with `{workspaceId, seq}` as their second argument. */
export const DURABLE = new Set(["message.new", "message.updated", "message.deleted", "agent.updated"]);

export class Realtime {
  /**
   * `handlers`: `onEvent(name, payload, meta)` for every server event (meta: `{workspaceId, seq}`
   * or undefined), `onState(state, detail)` with `connecting`, `online`, `offline`, `caught-up`,
   * `error`, and `onReset(workspaceId)` when a workspace must be refetched over REST.
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.lastSeq = new Map();
    // Workspaces whose position is unknown when the connection drops (no durable event seen
    // yet): they cannot be replayed, so they are refetched over REST after the reconnect.
    this.blind = new Set();
    this.workspaceIds = [];
    this.wasDisconnected = false;
    this.quiet = null;
  }

  start(workspaceIds) {
    this.workspaceIds = workspaceIds;
    let token = null;
    this.socket = io("/v1", {
      transports: ["websocket", "polling"],
      reconnectionDelay: 500,
      reconnectionDelayMax: 2000,
      auth: (callback) => {
        accessToken()
          .then((fresh) => {
            token = fresh;
            callback(this.auth(fresh));
          })
          .catch(() => callback(this.auth(token)));
      },
    });
    const socket = this.socket;
    socket.on("connect", () => {
      const reconnected = this.wasDisconnected;
      this.wasDisconnected = false;
      this.handlers.onState("online", reconnected ? "catching up" : "");
      if (reconnected) {
        for (const workspaceId of this.blind) this.handlers.onReset(workspaceId);
        this.blind.clear();
        this.settle();
      }
    });
    socket.on("disconnect", (reason) => {
      this.wasDisconnected = true;
      for (const workspaceId of this.workspaceIds) {
        if (!this.lastSeq.has(workspaceId)) this.blind.add(workspaceId);
      }
      this.handlers.onState("offline", reason);
      // A server-side disconnect (logout, revocation, a slow connection) is not retried by the
      // client on its own; come back unless this browser signed out.
      if (reason === "io server disconnect") setTimeout(() => this.socket?.connect(), 1000);
    });
    socket.on("connect_error", (error) => {
      this.handlers.onState("error", error.message);
      if (socket.active) return; // a transport failure: the client retries by itself
      // Refused by the server (e.g. an expired token): refresh, then try again.
      const retry = () => setTimeout(() => this.socket?.connect(), 1000);
      // A failed refresh has already signed this browser out (see api.js).
      if (/token/.test(error.message)) refresh(token).then(retry, (failure) => this.handlers.onState("error", failure.message));
      else retry();
    });
    socket.onAny((name, payload, meta) => {
      if (DURABLE.has(name) && meta && typeof meta.seq === "number") {
        const last = this.lastSeq.get(meta.workspaceId) ?? 0;
        // A seq already had (two tabs, a replay overlapping what was shown) is dropped.
        if (meta.seq <= last) return;
        this.lastSeq.set(meta.workspaceId, meta.seq);
      }
      if (name === "sync.reset") this.handlers.onReset(payload?.workspaceId);
      this.handlers.onEvent(name, payload, meta);
      if (this.quiet) this.settle();
    });
    this.handlers.onState("connecting", "");
  }

  auth(token) {
    const since = {};
    for (const [workspaceId, seq] of this.lastSeq) {
      if (this.workspaceIds.includes(workspaceId)) since[workspaceId] = seq;
    }
    return Object.keys(since).length ? { token, since } : { token };
  }

  /** "Caught up" once the replay after a reconnect has gone quiet for a moment. */
  settle() {
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => {
      this.quiet = null;
      if (this.socket?.connected) this.handlers.onState("caught-up", "");
    }, 400);
  }

  emit(name, payload) {
    return new Promise((resolve) => {
      if (!this.socket?.connected) {
        resolve({ error: { code: "OFFLINE", message: "not connected; try again when back online" } });
        return;
      }
      this.socket.timeout(10_000).emit(name, payload, (error, answer) => {
        if (error) resolve({ error: { code: "TIMEOUT", message: "the server did not answer in time" } });
        else resolve(answer ?? {});
      });
    });
  }

  stop() {
    this.socket?.disconnect();
    this.socket = null;
  }
}
