// The REST client: the session (tokens in localStorage, so every tab of this origin shares one
// sign-in), requests with the access token, and one refresh with the refresh token on 401.

const SESSION_KEY = "crawbl.session";

/** An error answer of the API: `code` and `message` as the server sent them. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    // Seconds until a retry can succeed (`Retry-After`, e.g. on 429 QUOTA_EXCEEDED), if given.
    this.retryAfter = retryAfter;
  }
  toString() {
    return `${this.message} (${this.code}${this.status ? `, HTTP ${this.status}` : ""})`;
  }
}

export function loadSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
  } catch {
    return null;
  }
}

function saveSession(session) {
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

function sessionFrom(data) {
  return {
    accessToken: data.accessToken,
    refreshToken: data.refreshToken,
    expiresAt: Date.now() + data.expiresIn * 1000,
    user: data.user,
    workspaces: data.workspaces,
  };
}

async function call(method, path, { body, token } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(`/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "NETWORK_ERROR", `the server cannot be reached: ${error.message}`);
  }
  if (response.status === 204) return null;
  const json = await response.json().catch(() => null);
  if (!response.ok) {
    const error = json?.error ?? {};
    const retryAfter = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
    throw new ApiError(
      response.status,
      error.code ?? `HTTP_${response.status}`,
      error.message ?? response.statusText,
      Number.isNaN(retryAfter) ? undefined : retryAfter,
    );
  }
  return json;
}

export async function signUp(email, password, displayName) {
  const { data } = await call("POST", "/auth/sign-up", { body: { email, password, displayName } });
  saveSession(sessionFrom(data));
  return loadSession();
}

export async function signIn(email, password) {
  const { data } = await call("POST", "/auth/sign-in", { body: { email, password } });
  saveSession(sessionFrom(data));
  return loadSession();
}

export async function signOut() {
  const session = loadSession();
  saveSession(null);
  if (session) {
    // The session ends on the server too; a failure here still leaves this browser signed out.
    await call("POST", "/auth/logout", { token: session.accessToken }).catch(() => {});
  }
}

/**
 * A fresh access token. Refresh tokens rotate and a reused one revokes the session, so tabs
 * refresh one at a time (a Web Lock) and a tab that finds the token already refreshed by
 * another uses that one.
 */
export async function refresh(staleToken) {
  const run = async () => {
    const session = loadSession();
    if (!session) throw new ApiError(401, "SIGNED_OUT", "you are signed out");
    if (session.accessToken !== staleToken && session.expiresAt > Date.now() + 30_000) {
      return session.accessToken;
    }
    try {
      const { data } = await call("POST", "/auth/refresh", {
        body: { refreshToken: session.refreshToken },
      });
      saveSession({ ...sessionFrom(data), user: data.user ?? session.user });
      return data.accessToken;
    } catch (error) {
      if (error.status === 401) {
        // The session is over (revoked, expired or signed out elsewhere): back to sign-in.
        saveSession(null);
        window.dispatchEvent(new Event("crawbl:signed-out"));
      }
      throw error;
    }
  };
  return navigator.locks ? navigator.locks.request("crawbl.refresh", run) : run();
}

/** The current access token, refreshed first when it is about to expire. */
export async function accessToken() {
  const session = loadSession();
  if (!session) throw new ApiError(401, "SIGNED_OUT", "you are signed out");
  if (session.expiresAt < Date.now() + 30_000) return refresh(session.accessToken);
  return session.accessToken;
}

/** An authenticated call; on 401 the token is refreshed once and the call made again. */
export async function api(method, path, body) {
  const token = await accessToken();
  try {
    return await call(method, path, { body, token });
  } catch (error) {
    if (error.status !== 401) throw error;
    return call(method, path, { body, token: await refresh(token) });
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** A list's page and the cursor of the next (older) one: `null` at the end. */
export async function page(path, cursor) {
  const separator = path.includes("?") ? "&" : "?";
  const answer = await get(cursor ? `${path}${separator}before=${encodeURIComponent(cursor)}` : path);
  return { items: answer.data, next: answer.nextCursor ?? null };
}
