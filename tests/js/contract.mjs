// The Socket.IO contract, checked with the npm socket.io-client that apps use, over each
// transport: long-polling only, websocket only, and polling upgraded to websocket (the client's
// default).
//
//   node contract.mjs <edge> <token> <workspaceId> <conversationId>
//
// For each transport: connect with auth.token; an ack (workspace.subscribe); an error ack
// (message.send to a conversation that does not exist); a binary attachment where JSON is
// expected gets an error ack and the socket stays up; message.send over the socket gets the
// message back and its message.new; the transport is cut and the client reconnects on its own
// and is served again. Prints {"<transport>": {...}} on success; exits 1 with the reason on
// stderr otherwise.

import { io } from "socket.io-client";

const [edge, token, workspaceId, conversationId] = process.argv.slice(2);
if (!conversationId) {
  console.error("usage: node contract.mjs <edge> <token> <workspaceId> <conversationId>");
  process.exit(2);
}
const WAIT_MS = 30_000;

function fail(message) {
  console.error(`contract.mjs: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function within(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${WAIT_MS} ms`)), WAIT_MS)),
  ]);
}

function once(socket, event) {
  return within(new Promise((resolve) => socket.once(event, resolve)), event);
}

async function run(name, transports) {
  const socket = io(`${edge}/v1`, {
    auth: { token },
    transports,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  });
  let opened = null;
  let upgradedTo = null;
  const upgraded = new Promise((resolve) =>
    socket.io.once("open", () => {
      opened = socket.io.engine.transport.name;
      socket.io.engine.once("upgrade", (transport) => {
        upgradedTo = transport.name;
        resolve();
      });
    }),
  );
  const events = [];
  socket.onAny((event, payload) => events.push({ event, payload }));
  const connectError = new Promise((_, reject) =>
    socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`))),
  );
  await within(Promise.race([once(socket, "connect"), connectError]), "connect");
  const result = { opened };

  const subscribed = await within(socket.emitWithAck("workspace.subscribe", { workspaceIds: [workspaceId] }), "subscribe ack");
  check(subscribed.ok === true, `${name}: subscribe answered ${JSON.stringify(subscribed)}`);

  const missing = await within(
    socket.emitWithAck("message.send", { conversationId: "no-such-conversation", localId: `${name}-missing`, content: { type: "text", text: "hi" } }),
    "error ack",
  );
  check(missing.error && typeof missing.error.code === "string", `${name}: expected an error ack, got ${JSON.stringify(missing)}`);
  result.errorCode = missing.error.code;

  const binary = await within(
    socket.emitWithAck("message.send", { conversationId, localId: `${name}-binary`, content: { type: "text", text: Buffer.from("not json text") } }),
    "binary ack",
  );
  check(binary.error && binary.error.code === "INVALID_PAYLOAD", `${name}: a binary attachment got ${JSON.stringify(binary)}`);
  check(socket.connected, `${name}: disconnected by a binary attachment`);

  const localId = `${name}-sent`;
  const sent = await within(
    socket.emitWithAck("message.send", { conversationId, localId, content: { type: "text", text: `over ${name}` } }),
    "message.send ack",
  );
  check(sent.data && sent.data.localId === localId, `${name}: message.send answered ${JSON.stringify(sent)}`);
  const deadline = Date.now() + WAIT_MS;
  while (!events.some(({ event, payload }) => event === "message.new" && payload.id === sent.data.id)) {
    check(Date.now() < deadline, `${name}: message.new of ${sent.data.id} never came`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  // Cut the transport (as a network loss does): the client reconnects on its own.
  if (transports.length > 1) {
    await within(upgraded, "upgrade");
    result.upgradedTo = upgradedTo;
  }
  result.before_cut = socket.io.engine.transport.name;
  const reconnected = once(socket, "connect");
  socket.io.engine.close();
  await reconnected;
  const again = await within(socket.emitWithAck("workspace.subscribe", { workspaceIds: [workspaceId] }), "subscribe ack after reconnecting");
  check(again.ok === true, `${name}: after reconnecting, subscribe answered ${JSON.stringify(again)}`);
  result.reconnected = true;
  socket.close();
  return result;
}

const report = {};
report.polling = await run("polling", ["polling"]);
report.websocket = await run("websocket", ["websocket"]);
report.upgrade = await run("upgrade", ["polling", "websocket"]);
check(report.polling.before_cut === "polling", `long-polling only ran over ${report.polling.before_cut}`);
check(report.upgrade.opened === "polling" && report.upgrade.upgradedTo === "websocket", `the default transports did not upgrade: ${JSON.stringify(report.upgrade)}`);
console.log(JSON.stringify(report));
process.exit(0);
