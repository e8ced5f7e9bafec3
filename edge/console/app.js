// The console app: state, hash routes (#/chat/<id>, #/agents, #/events, #/operations), and what
// each socket event changes. Views are rebuilt from state; a streaming reply only has its text
// node extended, so long replies stay cheap.

import * as rest from "./api.js";
import { Realtime } from "./realtime.js";
import { badge, describe, field, formError, h, messageItem, showFormError, time } from "./views.js";

const $ = (selector) => document.querySelector(selector);
const main = $("#main");

const state = {
  session: rest.loadSession(),
  workspaceId: localStorage.getItem("crawbl.workspace"),
  conversations: [],
  olderConversations: [], // pages after the first, loaded with "Load older conversations"
  conversationsCursor: null, // the next older page of conversations, null at the end
  openConversationId: null,
  messages: new Map(), // conversationId -> Map(messageId -> message), oldest first
  messageCursors: new Map(), // conversationId -> cursor of its next older page (null: none)
  editing: null, // the id of the message being edited in place
  // What is typed but not sent, kept when the chat view is rebuilt (a reset, a reconnect, a
  // switch) and per conversation: conversationId -> composer text, and the new-conversation form.
  drafts: new Map(),
  newConversation: { title: "", agentId: "" },
  usage: new Map(), // workspaceId -> {used, limit?, resetsAt?}: tokens this month
  deltas: new Map(), // messageId -> next delta index expected
  liveTools: new Map(), // messageId -> Map(callId -> call), from agent.tool before the final update
  agents: new Map(),
  members: new Map(),
  typing: new Map(), // conversationId -> Map(key -> {label, until})
  events: [], // the inspector's log
  eventCount: 0,
  filters: { name: "", conversation: "" },
  connection: "offline",
  opsTimer: null,
};
let realtime = null;

// For debugging in the browser's console (and the browser tests): the state and the socket.
window.crawblConsole = { state, get socket() { return realtime?.socket; } };

// ---------------------------------------------------------------- errors and announcements

function showError(error) {
  const box = $("#error");
  box.replaceChildren(h("span", {}, describe(error)),
    h("button", { type: "button", class: "link", onclick: () => { box.hidden = true; } }, "Dismiss"));
  box.hidden = false;
}

function announce(text) {
  $("#announcer").textContent = text;
}

function setBanner(text, kind) {
  const banner = $("#banner");
  banner.hidden = !text;
  banner.textContent = text ?? "";
  banner.className = `banner ${kind ?? ""}`;
}

// ---------------------------------------------------------------- session and workspace

const workspace = () => state.session?.workspaces?.find((w) => w.id === state.workspaceId);
const isAdmin = () => ["owner", "admin"].includes(workspace()?.role);
const wsPath = (rest_) => `/workspaces/${state.workspaceId}${rest_}`;
const agentSlugs = () => new Set([...state.agents.values()].map((agent) => agent.slug.toLowerCase()));

async function startSession() {
  state.session = rest.loadSession();
  $("#session").hidden = false;
  $("#nav").hidden = false;
  $("#who").textContent = state.session.user?.displayName ?? state.session.user?.email ?? "";
  await refreshWorkspaces();
  realtime = new Realtime({ onEvent, onState, onReset: (workspaceId) => {
    if (workspaceId === state.workspaceId) loadWorkspace().then(render);
  } });
  realtime.start((state.session.workspaces ?? []).map((w) => w.id));
  await loadWorkspace();
}

/**
 * The user's workspaces, fetched again: the switcher, and what the socket's `since` covers.
 * Runs when the edge says the user joined or left one (`workspace.joined`, `workspace.left`),
 * when an event of an unknown workspace arrives, after a reconnect (memberships may have
 * changed meanwhile) and when the tab comes back into view.
 */
async function refreshWorkspaces() {
  try {
    const { data } = await rest.get("/workspaces");
    state.session.workspaces = data;
  } catch (error) {
    showError(error);
  }
  const workspaces = state.session.workspaces ?? [];
  const previous = state.workspaceId;
  if (!workspaces.some((w) => w.id === state.workspaceId)) state.workspaceId = workspaces[0]?.id ?? null;
  const select = $("#workspace");
  select.replaceChildren(...workspaces.map((w) =>
    h("option", { value: w.id, selected: w.id === state.workspaceId }, `${w.name} (${w.role})`)));
  if (realtime) realtime.workspaceIds = workspaces.map((w) => w.id);
  if (currentSection() === "workspaces" && !document.activeElement?.closest("form")) renderWorkspaces();
  // Removed from the open workspace: show the one now selected.
  if (realtime && previous && previous !== state.workspaceId) await switchWorkspace(state.workspaceId);
}

const refreshWorkspacesSoon = debounce(refreshWorkspaces, 300);
const knownWorkspace = (id) => (state.session?.workspaces ?? []).some((w) => w.id === id);

async function switchWorkspace(workspaceId) {
  state.workspaceId = workspaceId;
  state.openConversationId = null;
  state.editing = null;
  state.messages.clear();
  state.messageCursors.clear();
  $("#workspace").value = workspaceId ?? "";
  await loadWorkspace();
  if (currentSection() === "chat" && route().id) location.hash = "#/chat";
  else render();
}

/** The month's token use, for owners and admins (members cannot read it). */
async function loadUsage() {
  if (!isAdmin()) return renderUsage();
  try {
    const { data } = await rest.get(wsPath("/usage"));
    state.usage.set(data.workspaceId, { ...data.quota, total: data.total, agents: data.agents });
  } catch (error) {
    showError(error);
  }
  renderUsage();
}

const numberFormat = new Intl.NumberFormat();
function usageText(usage) {
  if (!usage) return "";
  const used = numberFormat.format(usage.used ?? 0);
  return usage.limit === undefined || usage.limit === null
    ? `${used} tokens this month (no limit)`
    : `${used} of ${numberFormat.format(usage.limit)} tokens this month`;
}

/** The header's indicator: the open workspace's tokens this month, for owners and admins. */
function renderUsage() {
  const indicator = $("#usage");
  const usage = state.usage.get(state.workspaceId);
  indicator.hidden = !isAdmin() || !usage;
  indicator.textContent = usageText(usage);
  const over = usage?.limit !== undefined && usage?.limit !== null && usage.used >= usage.limit;
  indicator.className = `usage${over ? " over" : ""}`;
  const detail = $("#ops-usage");
  if (detail) detail.replaceChildren(usageDetail(usage));
}

// Loads may overlap (the switcher changed while the first workspace was still loading): each
// keeps what it fetched only if its workspace is still the open one, so the last switch wins.
const stillOpen = (workspaceId) => workspaceId === state.workspaceId;

async function loadWorkspace() {
  const workspaceId = state.workspaceId;
  if (!workspaceId) return;
  localStorage.setItem("crawbl.workspace", workspaceId);
  const [agents] = await Promise.all([
    rest.get(wsPath("/agents")).catch((error) => { showError(error); return { data: [] }; }),
    loadMembers(),
  ]);
  if (!stillOpen(workspaceId)) return;
  state.agents = new Map(agents.data.map((agent) => [agent.id, agent]));
  state.olderConversations = [];
  await Promise.all([loadConversations(true), loadUsage()]);
  if (!stillOpen(workspaceId)) return;
  // Threads not open are fetched again when opened (they may be stale after a reset).
  state.messages.clear();
  state.messageCursors.clear();
  if (state.openConversationId) await loadMessages(state.openConversationId);
}

async function loadMembers() {
  const workspaceId = state.workspaceId;
  try {
    const { data } = await rest.get(wsPath("/members"));
    if (!stillOpen(workspaceId)) return;
    state.members = new Map(data.map((member) => [member.user?.id, member]));
  } catch (error) {
    showError(error);
  }
}

/**
 * The first page of conversations, fetched again after changes (the server counts unread
 * messages). Older pages loaded before are kept after it; `fresh` also resets the cursor.
 */
async function loadConversations(fresh = false) {
  const workspaceId = state.workspaceId;
  try {
    const { items, next } = await rest.page(wsPath("/conversations?limit=100"));
    if (!stillOpen(workspaceId)) return;
    const first = new Set(items.map((c) => c.id));
    state.olderConversations = state.olderConversations.filter((c) => !first.has(c.id));
    state.conversations = [...items, ...state.olderConversations];
    if (fresh || !state.olderConversations.length) state.conversationsCursor = next;
  } catch (error) {
    showError(error);
  }
}

async function loadOlderConversations(button) {
  button.disabled = true;
  const workspaceId = state.workspaceId;
  try {
    const { items, next } = await rest.page(wsPath("/conversations?limit=100"), state.conversationsCursor);
    if (!stillOpen(workspaceId)) return;
    const known = new Set(state.conversations.map((c) => c.id));
    const older = items.filter((c) => !known.has(c.id));
    state.olderConversations.push(...older);
    state.conversations.push(...older);
    state.conversationsCursor = next;
    renderConversationList();
    $(`#conversation-list [data-id="${CSS.escape(older[0]?.id ?? "")}"]`)?.focus();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

/** `action`, once calls have paused for `ms`. */
function debounce(action, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, ms);
  };
}

/** The server counts unread messages: refetch the list after a burst of changes. */
const reloadConversationsSoon = debounce(async () => {
  await loadConversations();
  renderConversationList();
}, 250);

async function loadMessages(conversationId) {
  try {
    const { items, next } = await rest.page(wsPath(`/conversations/${conversationId}/messages?limit=100`));
    state.messages.set(conversationId, new Map(items.reverse().map((message) => [message.id, message])));
    state.messageCursors.set(conversationId, next);
  } catch (error) {
    showError(error);
  }
}

/** The next older page of the open thread, put before what is shown; the reader stays put. */
async function loadOlderMessages(button) {
  const conversationId = state.openConversationId;
  button.disabled = true;
  try {
    const { items, next } = await rest.page(
      wsPath(`/conversations/${conversationId}/messages?limit=100`), state.messageCursors.get(conversationId));
    const thread = state.messages.get(conversationId) ?? new Map();
    const older = items.reverse().filter((message) => !thread.has(message.id));
    state.messages.set(conversationId, new Map([...older.map((m) => [m.id, m]), ...thread]));
    state.messageCursors.set(conversationId, next);
    if (conversationId !== state.openConversationId) return;
    const list = $("#messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    renderThread();
    list.scrollTop = list.scrollHeight - fromBottom;
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

/** Moves the read position to the newest message of the open conversation. */
const markReadSoon = debounce(async () => {
  const conversationId = state.openConversationId;
  const messages = [...(state.messages.get(conversationId)?.values() ?? [])];
  const newest = messages.at(-1);
  const conversation = state.conversations.find((c) => c.id === conversationId);
  if (!newest || !conversation || document.visibilityState !== "visible") return;
  if (conversation.lastReadMessageId === newest.id && !conversation.unreadCount) return;
  try {
    await rest.post(wsPath(`/conversations/${conversationId}/read`), { messageId: newest.id });
    conversation.unreadCount = 0;
    conversation.lastReadMessageId = newest.id;
    renderConversationList();
  } catch (error) {
    showError(error);
  }
}, 150);

// ---------------------------------------------------------------- socket events

function onState(connection, detail) {
  state.connection = connection;
  const label = {
    connecting: "connecting…", online: "online", offline: "offline", "caught-up": "online", error: "offline",
  }[connection];
  const indicator = $("#connection");
  indicator.textContent = label;
  indicator.className = `connection ${connection}`;
  if (connection === "offline" || connection === "error") {
    setBanner(`Offline — reconnecting…${detail ? ` (${detail})` : ""}`, "offline");
  } else if (connection === "online" && detail) {
    setBanner("Back online — catching up…", "catching-up");
    // Memberships may have changed while the connection was down.
    refreshWorkspacesSoon();
  } else if (connection === "caught-up") {
    setBanner("Back online — caught up.", "caught-up");
    setTimeout(() => { if (state.connection === "caught-up") setBanner(null); }, 4000);
  } else if (connection === "online") {
    setBanner(null);
  }
  recordEvent(`(${connection})`, detail ? { detail } : {}, undefined, true);
}

function recordEvent(name, payload, meta, local = false) {
  state.eventCount += 1;
  state.events.push({
    n: state.eventCount, at: new Date().toISOString(), name, local,
    seq: meta?.seq, workspaceId: meta?.workspaceId ?? payload?.workspaceId,
    conversationId: payload?.conversationId, payload,
  });
  if (state.events.length > 2000) state.events.splice(0, state.events.length - 2000);
  if (currentSection() === "events") renderEventsSoon();
}

function onEvent(name, payload, meta) {
  recordEvent(name, payload, meta);
  // A workspace the user was added to (or created elsewhere) since the list was fetched: the
  // socket is in its room already, so its events come before the switcher knows it.
  const workspaceId = meta?.workspaceId ?? payload?.workspaceId;
  if (workspaceId && state.session && !knownWorkspace(workspaceId)) refreshWorkspacesSoon();
  switch (name) {
    case "workspace.joined":
    case "workspace.left":
      return refreshWorkspacesSoon();
    case "message.new":
    case "message.updated":
      return onMessage(payload, name === "message.new");
    case "message.deleted":
      if (meta?.workspaceId !== state.workspaceId) return reloadConversationsSoon();
      return onMessage({ ...messageOf(payload.conversationId, payload.id), deletedAt: new Date().toISOString(), content: { type: "text", text: "" } }, false);
    case "usage.update":
      state.usage.set(payload.workspaceId, { ...state.usage.get(payload.workspaceId), used: payload.used, limit: payload.limit });
      return renderUsage();
    case "message.delta":
      return onDelta(payload);
    case "agent.tool":
      return onTool(payload);
    case "agent.typing":
      return setTyping(payload.conversationId, `agent:${payload.agentId}`,
        state.agents.get(payload.agentId)?.name ?? "An agent", payload.isTyping);
    case "user.typing":
      if (!state.members.has(payload.userId)) {
        // Someone who joined since the members were loaded.
        return loadMembers().then(() => setTyping(payload.conversationId, `user:${payload.userId}`,
          memberName(payload.userId), payload.isTyping));
      }
      return setTyping(payload.conversationId, `user:${payload.userId}`, memberName(payload.userId), payload.isTyping);
    case "agent.status": {
      const agent = state.agents.get(payload.agentId);
      if (agent) agent.status = payload.status;
      return renderAgentStrip();
    }
    case "agent.updated":
      if (payload.workspaceId === state.workspaceId) {
        if (payload.archivedAt) state.agents.delete(payload.id);
        else state.agents.set(payload.id, { ...state.agents.get(payload.id), ...payload });
        renderAgentStrip();
        if (currentSection() === "agents" && !document.activeElement?.closest("form")) render();
      }
      return;
    case "conversation.read":
      if (payload.userId === state.session?.user?.id) reloadConversationsSoon();
      return;
    default:
      return;
  }
}

/** Whether `message` comes before the oldest one loaded of a thread that has older pages. */
function olderThanShown(thread, message) {
  const oldest = thread.values().next().value;
  return Boolean(state.messageCursors.get(message.conversationId) && oldest && message.createdAt
    && message.createdAt < oldest.createdAt);
}

const messageOf = (conversationId, id) => state.messages.get(conversationId)?.get(id) ?? { id, conversationId };
const memberName = (userId) => state.members.get(userId)?.user?.displayName ?? "Someone";

function onMessage(message, isNew) {
  if (message.workspaceId && message.workspaceId !== state.workspaceId) return;
  const thread = state.messages.get(message.conversationId);
  if (thread && !isNew && !thread.has(message.id) && olderThanShown(thread, message)) {
    // A change to a message on an older page than those loaded: it shows when that page does.
    return reloadConversationsSoon();
  }
  if (thread) {
    thread.set(message.id, message);
    if (message.status !== "streaming") {
      state.deltas.delete(message.id);
      state.liveTools.delete(message.id);
    }
  }
  if (message.conversationId === state.openConversationId) {
    renderMessage(message);
    renderStop();
    const mine = message.role === "user" && message.authorId === state.session?.user?.id;
    if (!mine && !isNew && message.status !== "streaming") {
      announce(`${authorName(message)}: ${message.content?.text ?? ""}`.slice(0, 300));
    }
    markReadSoon();
  }
  reloadConversationsSoon();
}

function onDelta(delta) {
  const message = state.messages.get(delta.conversationId)?.get(delta.messageId);
  if (!message || message.status !== "streaming") return;
  // Deltas are volatile: one missed (or a repeat) leaves the text as it is until the final
  // message.updated brings all of it.
  const expected = state.deltas.get(delta.messageId) ?? 0;
  if (delta.index !== expected) return;
  state.deltas.set(delta.messageId, expected + 1);
  message.content = { ...message.content, text: (message.content?.text ?? "") + delta.delta };
  if (delta.conversationId !== state.openConversationId) return;
  const text = document.querySelector(`.msg[data-id="${CSS.escape(message.id)}"] .msg-text`);
  if (text) stickToBottom($("#messages"), () => text.append(delta.delta));
  else renderMessage(message);
}

function onTool(call) {
  const calls = state.liveTools.get(call.messageId) ?? new Map();
  calls.set(call.callId, call);
  state.liveTools.set(call.messageId, calls);
  const message = state.messages.get(call.conversationId)?.get(call.messageId);
  if (message && call.conversationId === state.openConversationId) renderMessage(message);
}

function setTyping(conversationId, key, label, isTyping) {
  const typists = state.typing.get(conversationId) ?? new Map();
  if (isTyping) typists.set(key, { label, until: Date.now() + 8000 });
  else typists.delete(key);
  state.typing.set(conversationId, typists);
  renderTyping();
}

// ---------------------------------------------------------------- routing and rendering

function route() {
  const [section = "", id = ""] = location.hash.replace(/^#\/?/, "").split("/");
  return { section, id: decodeURIComponent(id) };
}
const currentSection = () => route().section || "chat";

window.addEventListener("hashchange", () => render());
window.addEventListener("crawbl:signed-out", () => {
  location.hash = "#/sign-in";
  location.reload();
});
window.addEventListener("storage", (event) => {
  // Signed out (or in as someone else) in another tab.
  if (event.key === "crawbl.session" && !event.newValue) location.reload();
});
setInterval(renderTyping, 2000);

// Renders may overlap: a view that awaits a fetch (agents, a thread opened by its address) must
// not replace a view rendered after it (the user moved on meanwhile). Each render takes a
// number; an async view draws only while its number is still the latest.
let renders = 0;
const superseded = (ticket) => ticket !== renders;

async function render() {
  const ticket = ++renders;
  clearInterval(state.opsTimer);
  state.opsTimer = null;
  if (!state.session) return renderAuth(route().section === "sign-up" ? "sign-up" : "sign-in");
  const { section, id } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === (section || "chat")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  switch (section || "chat") {
    case "agents": return renderAgents(id, ticket);
    case "events": return renderEvents();
    case "operations": return renderOperations();
    case "workspaces": return renderWorkspaces();
    default: return renderChat(id || null, ticket);
  }
}

// Sign up and sign in.
function renderAuth(mode) {
  $("#session").hidden = true;
  $("#nav").hidden = true;
  const signUp = mode === "sign-up";
  const email = h("input", { type: "email", autocomplete: "email", required: true });
  const password = h("input", { type: "password", autocomplete: signUp ? "new-password" : "current-password", required: true, minlength: 8 });
  const name = h("input", { type: "text", autocomplete: "name", required: true });
  const error = formError("auth-error");
  const form = h("form", { class: "card auth", onsubmit: async (event) => {
    event.preventDefault();
    showFormError(error, null);
    try {
      if (signUp) await rest.signUp(email.value, password.value, name.value);
      else await rest.signIn(email.value, password.value);
      location.hash = "#/chat";
      await startSession();
      render();
    } catch (failure) {
      showFormError(error, failure);
    }
  } },
  h("h1", {}, signUp ? "Create an account" : "Sign in"),
  field("Email", email),
  field("Password", password, signUp ? "At least 8 characters." : undefined),
  signUp ? field("Display name", name) : null,
  error,
  h("button", { type: "submit", class: "primary" }, signUp ? "Create account" : "Sign in"),
  h("p", {}, signUp ? "Have an account? " : "New here? ",
    h("a", { href: signUp ? "#/sign-in" : "#/sign-up" }, signUp ? "Sign in" : "Create an account")));
  main.replaceChildren(form);
  email.focus();
}

// Chat: conversations, the open thread, the composer.
async function renderChat(conversationId, ticket) {
  if (conversationId && conversationId !== state.openConversationId) {
    state.openConversationId = conversationId;
    if (!state.messages.has(conversationId)) await loadMessages(conversationId);
  }
  if (!conversationId) state.openConversationId = null;
  if (conversationId && !state.conversations.some((c) => c.id === conversationId)) {
    // Opened by its address before the list has it (new, or on an older page): fetch it alone.
    try {
      const { data } = await rest.get(wsPath(`/conversations/${conversationId}`));
      if (!state.conversations.some((c) => c.id === data.id)) state.conversations.unshift(data);
    } catch (error) {
      showError(error);
    }
  }
  if (superseded(ticket)) return;
  const conversation = state.conversations.find((c) => c.id === state.openConversationId);
  const draft = state.newConversation;
  const title = h("input", { type: "text", id: "new-conversation-title", maxlength: 200, placeholder: "New conversation",
    value: draft.title, oninput: (event) => { draft.title = event.target.value; } });
  const agentChoice = h("select", { id: "new-conversation-agent", onchange: (event) => { draft.agentId = event.target.value; } },
    h("option", { value: "" }, "Workspace default"),
    [...state.agents.values()].map((agent) => h("option", { value: agent.id, selected: agent.id === draft.agentId }, agent.name)));
  const createError = formError("create-error");
  const create = h("form", { class: "new-conversation", onsubmit: async (event) => {
    event.preventDefault();
    showFormError(createError, null);
    try {
      const body = { title: title.value || undefined, agentId: agentChoice.value || undefined };
      const { data } = await rest.post(wsPath("/conversations"), body);
      state.newConversation = { title: "", agentId: "" };
      state.conversations.unshift(data);
      state.messages.set(data.id, new Map());
      location.hash = `#/chat/${data.id}`;
    } catch (failure) {
      showFormError(createError, failure);
    }
  } }, field("Title", title), field("Agent", agentChoice), createError,
  h("button", { type: "submit" }, "Create conversation"));

  const list = h("ul", { class: "conversation-list", id: "conversation-list" });
  const side = h("section", { class: "conversations", "aria-labelledby": "conversations-heading" },
    h("h2", { id: "conversations-heading" }, "Conversations"), create, list,
    h("button", { type: "button", id: "older-conversations", hidden: true,
      onclick: (event) => loadOlderConversations(event.currentTarget) }, "Load older conversations"));

  let thread;
  if (conversation) {
    const text = h("textarea", { id: "composer-text", rows: 3, maxlength: 32768,
      placeholder: "Write a message. @slug mentions an agent.",
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          event.target.form.requestSubmit();
        }
      },
      oninput: (event) => {
        state.drafts.set(conversation.id, event.target.value);
        typingSignal(true);
        // A refusal was about the message sent; a new one starts clean.
        showFormError(sendError, null);
      } });
    const sendError = formError("send-error");
    const composer = h("form", { class: "composer", id: "composer", onsubmit: (event) => {
      event.preventDefault();
      send(text, sendError);
    } },
    field("Message", text, "Enter sends, Shift+Enter starts a new line."),
    sendError,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Send"),
      h("button", { type: "button", id: "stop", onclick: stopReply }, "Stop reply")));
    thread = h("section", { class: "thread", "aria-labelledby": "thread-heading" },
      h("h2", { id: "thread-heading" }, conversation.title || "Untitled conversation"),
      h("div", { class: "agent-strip", id: "agent-strip", role: "group", "aria-label": "Agents (select to mention)" }),
      h("button", { type: "button", id: "older-messages", hidden: true,
        onclick: (event) => loadOlderMessages(event.currentTarget) }, "Load older messages"),
      h("ol", { class: "messages", id: "messages", "aria-label": "Messages" }),
      h("p", { class: "typing", id: "typing" }),
      composer);
  } else {
    thread = h("section", { class: "thread empty", "aria-label": "No conversation open" },
      h("p", {}, state.conversations.length ? "Pick a conversation, or create one." : "Create a conversation to start."));
  }
  // Rebuilt under the user's hands (a reset, a reconnect): what they type keeps its focus.
  const focused = document.activeElement;
  const keepFocus = focused?.id && main.contains(focused) ? { id: focused.id, start: focused.selectionStart, end: focused.selectionEnd } : null;
  main.replaceChildren(h("div", { class: "chat" }, side, thread));
  if (conversation) $("#composer-text").value = state.drafts.get(conversation.id) ?? "";
  if (keepFocus) {
    const again = document.getElementById(keepFocus.id);
    again?.focus();
    if (again && typeof keepFocus.start === "number") again.setSelectionRange?.(keepFocus.start, keepFocus.end);
  }
  renderConversationList();
  if (conversation) {
    renderThread();
    renderAgentStrip();
    renderTyping();
    renderStop();
    markReadSoon();
  }
}

function renderConversationList() {
  const list = $("#conversation-list");
  if (!list) return;
  const focused = document.activeElement?.dataset?.id;
  list.replaceChildren(...state.conversations.map((conversation) => {
    const open = conversation.id === state.openConversationId;
    return h("li", {}, h("a", {
      class: "conversation", href: `#/chat/${conversation.id}`,
      dataset: { id: conversation.id, unread: conversation.unreadCount ?? 0 },
      "aria-current": open ? "true" : undefined,
    },
    h("span", { class: "title" }, conversation.title || "Untitled conversation"),
    badge(open ? 0 : conversation.unreadCount ?? 0),
    h("span", { class: "preview" }, conversation.lastMessage?.content?.text?.slice(0, 80) ?? "")));
  }));
  if (focused) list.querySelector(`[data-id="${CSS.escape(focused)}"]`)?.focus();
  $("#older-conversations").hidden = !state.conversationsCursor;
}

/** The open conversation's messages, all rebuilt (opening it, or after an older page). */
function renderThread() {
  const list = $("#messages");
  if (!list) return;
  list.replaceChildren();
  for (const message of state.messages.get(state.openConversationId)?.values() ?? []) renderMessage(message);
  $("#older-messages").hidden = !state.messageCursors.get(state.openConversationId);
}

const authorName = (message) => {
  if (message.role === "agent") return state.agents.get(message.agentId)?.name ?? "Agent";
  if (message.authorId === state.session?.user?.id) return "You";
  return memberName(message.authorId);
};

function renderMessage(message) {
  const list = $("#messages");
  if (!list || message.conversationId !== state.openConversationId) return;
  const existing = list.querySelector(`.msg[data-id="${CSS.escape(message.id)}"]`);
  const editing = state.editing === message.id && !message.deletedAt;
  // An update from elsewhere (another tab) leaves an open edit box, and what is typed in it, be.
  if (editing && existing?.querySelector(".edit-form")) return;
  if (state.editing === message.id && !editing) state.editing = null;
  const mine = message.role === "user" && message.authorId === state.session?.user?.id;
  const item = messageItem(message, {
    authorName: authorName(message), slugs: agentSlugs(), liveTools: state.liveTools.get(message.id),
    actions: mine && !message.deletedAt && !editing ? messageActions(message) : null,
    editor: editing ? editForm(message) : null,
  });
  stickToBottom(list, () => (existing ? existing.replaceWith(item) : list.append(item)));
  item.querySelector(".edit-form textarea")?.focus();
}

/** Edit and delete, on the caller's own messages. */
function messageActions(message) {
  const about = (message.content?.text ?? "").slice(0, 40);
  return h("div", { class: "msg-actions" },
    h("button", { type: "button", class: "small", "aria-label": `Edit your message: ${about}`, onclick: () => {
      state.editing = message.id;
      renderMessage(message);
    } }, "Edit"),
    h("button", { type: "button", class: "small danger", "aria-label": `Delete your message: ${about}`,
      onclick: () => deleteMessage(message) }, "Delete"));
}

/** The inline edit box: Enter saves, Shift+Enter starts a new line, Escape cancels. */
function editForm(message) {
  const text = h("textarea", { rows: 2, maxlength: 32768, "aria-label": "Edit message",
    onkeydown: (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        event.target.form.requestSubmit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeEditor(message.id);
      }
    } });
  text.value = message.content?.text ?? "";
  const error = formError(`edit-error-${message.id}`);
  return h("form", { class: "edit-form", onsubmit: async (event) => {
    event.preventDefault();
    showFormError(error, null);
    try {
      const { data } = await rest.patch(wsPath(`/conversations/${message.conversationId}/messages/${message.id}`),
        { content: { type: "text", text: text.value } });
      state.messages.get(message.conversationId)?.set(data.id, data);
      closeEditor(data.id);
      announce("Message edited.");
    } catch (failure) {
      showFormError(error, failure);
    }
  } },
  text,
  h("small", { class: "hint" }, "Enter saves, Escape cancels."),
  error,
  h("div", { class: "actions" },
    h("button", { type: "submit", class: "small primary" }, "Save"),
    h("button", { type: "button", class: "small", onclick: () => closeEditor(message.id) }, "Cancel")));
}

function closeEditor(messageId) {
  state.editing = null;
  const message = state.messages.get(state.openConversationId)?.get(messageId);
  if (!message) return;
  renderMessage(message);
  document.querySelector(`.msg[data-id="${CSS.escape(messageId)}"] .msg-actions button`)?.focus();
}

async function deleteMessage(message) {
  // The browser's own dialog: keyboard-usable and read out by screen readers.
  if (!window.confirm(`Delete this message?\n\n${(message.content?.text ?? "").slice(0, 200)}`)) return;
  try {
    await rest.del(wsPath(`/conversations/${message.conversationId}/messages/${message.id}`));
    // The tombstone as message.deleted makes it (the event may come first, or later).
    onMessage({ ...messageOf(message.conversationId, message.id), deletedAt: new Date().toISOString(),
      content: { type: "text", text: "" } }, false);
    announce("Message deleted.");
    $("#composer-text")?.focus();
  } catch (error) {
    showError(error);
  }
}

/** Makes a change to the thread; a reader at the bottom stays there, one reading up is left be. */
function stickToBottom(list, change) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  change();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderAgentStrip() {
  const strip = $("#agent-strip");
  if (!strip) return;
  strip.replaceChildren(...[...state.agents.values()].map((agent) =>
    h("button", { type: "button", class: `agent-chip ${agent.status}`, dataset: { agentId: agent.id, status: agent.status },
      "aria-label": `Mention ${agent.name} (@${agent.slug}), ${agent.status}`,
      onclick: () => {
        const text = $("#composer-text");
        text.value = `${text.value}${text.value && !text.value.endsWith(" ") ? " " : ""}@${agent.slug} `;
        text.focus();
      } },
    h("span", { class: "dot", "aria-hidden": "true" }), `${agent.name} · ${agent.status}`)));
}

function renderTyping() {
  const line = $("#typing");
  if (!line) return;
  const typists = state.typing.get(state.openConversationId) ?? new Map();
  const now = Date.now();
  for (const [key, typist] of typists) if (typist.until < now) typists.delete(key);
  const names = [...typists.values()].map((typist) => typist.label);
  line.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

function streamingReplies() {
  return [...(state.messages.get(state.openConversationId)?.values() ?? [])]
    .filter((message) => message.role === "agent" && message.status === "streaming");
}

function renderStop() {
  const stop = $("#stop");
  if (stop) stop.disabled = streamingReplies().length === 0;
}

let typingSent = 0;
let typingIdle = null;
function typingSignal(isTyping) {
  const conversationId = state.openConversationId;
  if (!conversationId || !realtime) return;
  clearTimeout(typingIdle);
  if (isTyping) {
    typingIdle = setTimeout(() => typingSignal(false), 4000);
    if (Date.now() - typingSent < 3000) return;
    typingSent = Date.now();
  } else {
    typingSent = 0;
  }
  realtime.emit("typing", { conversationId, isTyping });
}

async function send(textarea, errorBox) {
  const text = textarea.value.trim();
  if (!text) return;
  showFormError(errorBox, null);
  const conversationId = state.openConversationId;
  try {
    const { data } = await rest.post(wsPath(`/conversations/${conversationId}/messages`), {
      localId: crypto.randomUUID(), content: { type: "text", text },
    });
    state.drafts.delete(conversationId);
    // The box shown now: the view may have been rebuilt while the send was on its way.
    const shown = $("#composer-text");
    if (shown && state.openConversationId === conversationId) shown.value = "";
    typingSignal(false);
    onMessage(data, true);
  } catch (error) {
    showFormError(errorBox, error.code === "QUOTA_EXCEEDED" ? quotaError(error) : error);
    if (error.code === "QUOTA_EXCEEDED") loadUsage();
  }
}

/** A send refused for the monthly quota, said plainly with when sending works again. */
function quotaError(error) {
  const when = error.retryAfter === undefined
    ? "when the month's quota resets"
    : `on ${new Date(Date.now() + error.retryAfter * 1000).toLocaleString()}`;
  return {
    message: `This workspace has used its monthly token quota. Sending works again ${when}.`,
    code: error.code, status: error.status,
  };
}

async function stopReply() {
  const replies = streamingReplies();
  const errorBox = $("#send-error");
  showFormError(errorBox, null);
  for (const reply of replies) {
    const answer = await realtime.emit("message.cancel", { conversationId: reply.conversationId, messageId: reply.id });
    if (answer.data) onMessage(answer.data, false);
    if (answer.error && answer.error.code !== "TURN_FINISHED") showFormError(errorBox, answer.error);
  }
}

// Agents: list, create, edit (owners and admins).
async function renderAgents(agentId, ticket) {
  const workspaceId = state.workspaceId;
  try {
    const { data } = await rest.get(wsPath("/agents"));
    if (stillOpen(workspaceId)) state.agents = new Map(data.map((agent) => [agent.id, agent]));
  } catch (error) {
    showError(error);
  }
  if (superseded(ticket)) return;
  const creating = agentId === "new";
  const agent = creating ? { name: "", slug: "", description: "", systemPrompt: "", model: "", tools: [] } : state.agents.get(agentId);
  const list = h("ul", { class: "agent-list" }, [...state.agents.values()].map((item) =>
    h("li", {}, h("a", { href: `#/agents/${item.id}`, "aria-current": item.id === agentId ? "true" : undefined },
      h("span", { class: `dot ${item.status}`, "aria-hidden": "true" }), `${item.name} (@${item.slug}) · ${item.status}`))));
  const admin = isAdmin();
  const side = h("section", { "aria-labelledby": "agents-heading", class: "agents-side" },
    h("h2", { id: "agents-heading" }, "Agents"),
    admin ? null : h("p", { class: "note" }, "You are a member of this workspace: agents are read-only for you; owners and admins edit them."),
    list, admin ? h("a", { href: "#/agents/new", class: "button" }, "New agent") : null);
  let editor = h("section", { class: "agent-editor", "aria-label": "Agent" }, h("p", {}, "Pick an agent to see its settings."));
  if (agent) {
    const input = (value, attributes = {}) => h("input", { type: "text", value: value ?? "", disabled: !admin, ...attributes });
    const name = input(agent.name, { required: true });
    const slug = input(agent.slug, { required: true, disabled: !admin || !creating });
    const description = input(agent.description);
    const prompt = h("textarea", { rows: 8, disabled: !admin });
    prompt.value = agent.systemPrompt ?? "";
    const model = input(agent.model);
    const temperature = input(agent.temperature ?? "", { type: "number", min: 0, max: 2, step: 0.1 });
    const tools = input((agent.tools ?? []).join(", "));
    const error = formError("agent-error");
    const saved = h("p", { class: "saved", role: "status" });
    // The server's checks (and their codes) are the ones that count: no second set in the form.
    editor = h("form", { class: "card agent-editor", novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      showFormError(error, null);
      saved.textContent = "";
      const body = {
        name: name.value, description: description.value, systemPrompt: prompt.value, model: model.value,
        temperature: temperature.value === "" ? null : Number(temperature.value),
        tools: tools.value.split(",").map((tool) => tool.trim()).filter(Boolean),
      };
      try {
        const { data } = creating
          ? await rest.post(wsPath("/agents"), { ...body, slug: slug.value })
          : await rest.patch(wsPath(`/agents/${agent.id}`), body);
        state.agents.set(data.id, data);
        saved.textContent = `Saved ${data.name}.`;
        if (creating) location.hash = `#/agents/${data.id}`;
      } catch (failure) {
        showFormError(error, failure);
      }
    } },
    h("h2", {}, creating ? "New agent" : agent.name),
    field("Name", name), field("Slug", slug, "Mention it in a message as @slug."),
    field("Description", description), field("System prompt", prompt), field("Model", model),
    field("Temperature", temperature, "0 to 2; empty for the model's default."),
    field("Tools", tools, "Built-in tool names, separated by commas (e.g. time, calculator)."),
    error, saved,
    h("button", { type: "submit", class: "primary", disabled: !admin }, creating ? "Create agent" : "Save changes"));
  }
  main.replaceChildren(h("div", { class: "agents" }, side, editor));
}

// The event inspector: every socket event with its seq, filterable.
let eventsFrame = null;
function renderEventsSoon() {
  if (eventsFrame) return;
  eventsFrame = requestAnimationFrame(() => { eventsFrame = null; renderEventRows(); });
}

function renderEvents() {
  const name = h("input", { type: "search", value: state.filters.name, placeholder: "message.", oninput: (event) => {
    state.filters.name = event.target.value;
    renderEventRows();
  } });
  const conversation = h("select", { onchange: (event) => {
    state.filters.conversation = event.target.value;
    renderEventRows();
  } }, h("option", { value: "" }, "All conversations"),
  state.conversations.map((c) => h("option", { value: c.id, selected: c.id === state.filters.conversation }, c.title || c.id)));
  main.replaceChildren(h("section", { class: "inspector", "aria-labelledby": "events-heading" },
    h("h2", { id: "events-heading" }, "Event inspector"),
    h("p", {}, "Every Socket.IO event this tab received, newest first. Durable events carry their seq; lines in parentheses are the connection's own changes."),
    h("div", { class: "filters" }, field("Event name contains", name), field("Conversation", conversation),
      h("button", { type: "button", onclick: () => { state.events = []; renderEventRows(); } }, "Clear")),
    h("table", { class: "events" },
      h("caption", { class: "visually-hidden" }, "Socket events"),
      h("thead", {}, h("tr", {}, ["#", "seq", "time", "event", "conversation", "payload"].map((column) => h("th", { scope: "col" }, column)))),
      h("tbody", { id: "event-rows" }))));
  renderEventRows();
}

function renderEventRows() {
  const body = $("#event-rows");
  if (!body) return;
  const { name, conversation } = state.filters;
  const rows = state.events.filter((event) =>
    (!name || event.name.includes(name)) && (!conversation || event.conversationId === conversation))
    .slice(-300).reverse();
  body.replaceChildren(...rows.map((event) => h("tr", { dataset: { event: event.name, seq: event.seq ?? "" }, class: event.local ? "local" : "" },
    h("td", {}, String(event.n)), h("td", { class: "seq" }, event.seq ?? "—"), h("td", {}, time(event.at)),
    h("td", {}, event.name), h("td", { class: "id" }, event.conversationId ?? ""),
    h("td", {}, h("code", {}, JSON.stringify(event.payload).slice(0, 240))))));
}

// Workspaces: the user's, and a new one.
function renderWorkspaces() {
  const name = h("input", { type: "text", maxlength: 100, required: true, autocomplete: "off" });
  const error = formError("workspace-error");
  const form = h("form", { class: "card new-workspace", onsubmit: async (event) => {
    event.preventDefault();
    showFormError(error, null);
    try {
      const { data } = await rest.post("/workspaces", { name: name.value });
      // The edge has put this page's socket into the new workspace's room already.
      await refreshWorkspaces();
      await switchWorkspace(data.id);
      location.hash = "#/chat";
    } catch (failure) {
      showFormError(error, failure);
    }
  } },
  h("h3", {}, "New workspace"),
  field("Workspace name", name, "You will be its owner; it starts with its own agents."),
  error,
  h("button", { type: "submit", class: "primary" }, "Create workspace"));
  const workspaces = state.session?.workspaces ?? [];
  main.replaceChildren(h("section", { class: "workspaces", "aria-labelledby": "workspaces-heading" },
    h("h2", { id: "workspaces-heading" }, "Workspaces"),
    h("ul", { class: "workspace-list", id: "workspace-list" }, workspaces.map((w) =>
      h("li", { dataset: { id: w.id } },
        h("span", { class: "title" }, w.name), ` · ${w.role}`,
        w.id === state.workspaceId
          ? h("span", { class: "tag" }, "open")
          : h("button", { type: "button", class: "small", "aria-label": `Open ${w.name}`,
            onclick: () => switchWorkspace(w.id).then(() => { location.hash = "#/chat"; }) }, "Open")))),
    form));
}

/** The month's tokens in the operations view: used, limit, when it resets, by agent. */
function usageDetail(usage) {
  if (!usage) return h("p", {}, "No usage yet.");
  const agents = usage.agents ?? [];
  return h("div", {},
    h("dl", { class: "rates" },
      h("dt", {}, "Tokens this month"), h("dd", { id: "ops-usage-used" }, numberFormat.format(usage.used ?? 0)),
      h("dt", {}, "Monthly limit"), h("dd", { id: "ops-usage-limit" },
        usage.limit === undefined || usage.limit === null ? "none" : numberFormat.format(usage.limit)),
      usage.resetsAt ? [h("dt", {}, "Resets"), h("dd", {}, new Date(usage.resetsAt).toLocaleString())] : null),
    agents.length
      ? h("table", {}, h("caption", {}, "Tokens by agent, this month"),
        h("thead", {}, h("tr", {}, ["agent", "input", "output", "turns"].map((column) => h("th", { scope: "col" }, column)))),
        h("tbody", {}, agents.map((row) => h("tr", {},
          h("td", {}, state.agents.get(row.key)?.name ?? row.key), h("td", {}, numberFormat.format(row.inputTokens)),
          h("td", {}, numberFormat.format(row.outputTokens)), h("td", {}, String(row.turns))))))
      : null);
}

// Operations, for owners and admins.
function renderOperations() {
  const section = h("section", { class: "operations", "aria-labelledby": "ops-heading" },
    h("h2", { id: "ops-heading" }, "Operations"));
  main.replaceChildren(section);
  if (!isAdmin()) {
    section.append(h("p", { class: "note", id: "ops-note" }, "The operations view is for workspace owners and admins. You are a member of this workspace."));
    return;
  }
  const body = h("div", { id: "ops-body" }, h("p", {}, "Loading…"));
  section.append(h("p", {}, "Refreshed every 3 seconds."),
    h("section", { "aria-labelledby": "ops-usage-heading" }, h("h3", { id: "ops-usage-heading" }, "Usage"),
      h("div", { id: "ops-usage" }, usageDetail(state.usage.get(state.workspaceId)))),
    body);
  const load = async () => {
    loadUsage();
    try {
      const answer = await rest.get(wsPath("/operations"));
      const { generatedAt, nodes, runtimes, rates, recentErrors } = answer.data ?? answer;
      const table = (caption, columns, rows) => h("table", {}, h("caption", {}, caption),
        h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col" }, column)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length }, "None."))));
      body.replaceChildren(
        h("p", {}, `As of ${time(generatedAt)}.`),
        h("dl", { class: "rates" },
          h("dt", {}, `Events, last ${rates.windowSeconds} s`), h("dd", { id: "ops-events" }, String(rates.events)),
          h("dt", {}, `Turns, last ${rates.windowSeconds} s`), h("dd", { id: "ops-turns" }, String(rates.turns))),
        table("Edge nodes", ["node", "sockets", "started", "this node"], nodes.map((node) =>
          h("tr", { class: "node" }, h("td", { class: "id" }, node.id), h("td", {}, String(node.sockets)),
            h("td", {}, new Date(node.startedAt).toLocaleString()), h("td", {}, node.current ? "yes" : "")))),
        table("Runtimes", ["workspace", "state"], runtimes.map((runtime) =>
          h("tr", {}, h("td", { class: "id" }, runtime.workspaceId), h("td", { class: `state-${runtime.state}` }, runtime.state)))),
        table("Recent errors (failed turns, newest first)", ["at", "code", "message", "conversation"], recentErrors.map((error) =>
          h("tr", {}, h("td", {}, time(error.at)), h("td", {}, error.code), h("td", {}, error.message),
            h("td", {}, h("a", { href: `#/chat/${error.conversationId}` }, error.conversationId))))));
    } catch (error) {
      body.replaceChildren(h("p", { class: "form-error", role: "alert" },
        error.code === "ADMIN_REQUIRED" ? "The operations view is for workspace owners and admins. " : "", describe(error)));
    }
  };
  load();
  state.opsTimer = setInterval(() => { if (currentSection() === "operations") load(); }, 3000);
}

// ---------------------------------------------------------------- start

$("#sign-out").addEventListener("click", async () => {
  realtime?.stop();
  realtime = null;
  await rest.signOut();
  state.session = null;
  location.hash = "#/sign-in";
  location.reload();
});

$("#workspace").addEventListener("change", async (event) => {
  await switchWorkspace(event.target.value);
  if (currentSection() === "workspaces") location.hash = "#/chat";
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  if (state.openConversationId) markReadSoon();
  if (state.session) refreshWorkspacesSoon();
});

(async () => {
  if (state.session) {
    try {
      await startSession();
    } catch (error) {
      showError(error);
    }
  }
  render();
})();
