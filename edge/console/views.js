// DOM building: every view is built with `h`, which sets text with textContent (never HTML),
// so nothing a user or an agent wrote can inject markup.

/** `h("button", {type: "button", onclick}, "Text", child…)`: an element. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A labelled form field: `<label>` + control, with an id that ties them. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2)}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("small", { id: hintId, class: "hint" }, hint) : null);
}

/** Where a form says what went wrong: message and code. */
export function formError(id) {
  return h("p", { class: "form-error", id, role: "alert", hidden: true });
}

export function showFormError(element, error) {
  if (!element) return;
  element.hidden = !error;
  element.textContent = error ? describe(error) : "";
}

export function describe(error) {
  if (error?.code) return `${error.message} (${error.code}${error.status ? `, HTTP ${error.status}` : ""})`;
  return String(error?.message ?? error);
}

export function time(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

/** Text with `@slug` mentions of known agents marked. */
export function withMentions(text, slugs) {
  const parts = String(text ?? "").split(/(@[A-Za-z0-9_-]+)/);
  return parts.map((part) =>
    part.startsWith("@") && slugs.has(part.slice(1).toLowerCase())
      ? h("span", { class: "mention" }, part)
      : part,
  );
}

/** A tool call as a card: its name, arguments and (once back) result. */
export function toolCard(call) {
  const done = call.result !== undefined && call.result !== null;
  return h("details", { class: "tool", open: true, dataset: { callId: call.callId } },
    h("summary", {}, `Tool call: ${call.name}`, h("span", { class: `tool-state ${done ? "done" : "running"}` },
      done ? "result received" : "running…")),
    h("div", { class: "tool-body" },
      h("div", {}, h("strong", {}, "Arguments"), h("pre", {}, JSON.stringify(call.arguments ?? {}, null, 2))),
      done ? h("div", {}, h("strong", {}, "Result"), h("pre", {}, JSON.stringify(call.result, null, 2))) : null));
}

/**
 * One message of the thread (replaced whole when it changes, but for streamed text). `actions`:
 * controls shown under it (edit and delete, on the caller's own messages); `editor`: a form shown
 * in place of its text while it is edited.
 */
export function messageItem(message, { authorName, slugs, liveTools, actions, editor }) {
  const calls = new Map();
  for (const call of message.toolCalls ?? []) calls.set(call.callId, call);
  for (const call of liveTools?.values() ?? []) if (!calls.has(call.callId)) calls.set(call.callId, call);
  const status = message.status;
  const showStatus = !["sent", "delivered"].includes(status);
  const deleted = Boolean(message.deletedAt);
  return h("li", {
    class: `msg msg-${message.role}${deleted ? " msg-deleted" : ""}`,
    dataset: { id: message.id, role: message.role, status, edited: Boolean(message.editedAt), deleted },
  },
  h("div", { class: "msg-head" },
    h("span", { class: "author" }, authorName),
    h("time", { datetime: message.createdAt }, time(message.createdAt)),
    message.editedAt && !deleted
      ? h("span", { class: "tag edited", title: `edited ${new Date(message.editedAt).toLocaleString()}` }, "edited")
      : null,
    showStatus ? h("span", { class: `tag status-${status}` }, status) : null),
  [...calls.values()].map(toolCard),
  editor ?? h("div", { class: "msg-text" }, deleted ? h("em", {}, "This message was deleted.") : withMentions(message.content?.text, slugs)),
  actions ?? null);
}

export function badge(count) {
  return count > 0 ? h("span", { class: "badge", "aria-label": `${count} unread` }, String(count)) : null;
}
