// Replay on reconnect, checked with the npm socket.io-client that apps use.
//
//   node replay.mjs <edgeA> <edgeB> <token> <workspaceId> <conversationId>
//
// Connects to edge A, sees one turn (durable events 1..3), disconnects, sends two more turns
// over REST while away, reconnects to edge B with auth.since = {workspaceId: 3}, and checks it
// gets exactly 4..9 from the log, in order and before anything live, then 10..12 live with
// nothing twice. Prints {"before": [...], "replayed": [...], "live": [...]} on success; exits 1
// with the reason on stderr otherwise.

import { io } from "socket.io-client";

const [edgeA, edgeB, token, workspaceId, conversationId] = process.argv.slice(2);
if (!conversationId) {
  console.error("usage: node replay.mjs <edgeA> <edgeB> <token> <workspaceId> <conversationId>");
  process.exit(2);
}
const WAIT_MS = 30_000;

function fail(message) {
  console.error(`replay.mjs: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

/** A connected socket and every event it receives, as {name, seq} (seq null if volatile). */
async function open(edge, auth) {
  const socket = io(`${edge}/v1`, {
    auth: { token, ...auth },
    transports: ["websocket"],
    reconnection: false,
  });
  const events = [];
  const waiters = [];
  socket.onAny((name, payload, position) => {
    const seq = position && typeof position.seq === "number" ? position.seq : null;
    if (seq !== null) {
      check(position.workspaceId === workspaceId, `wrong workspace in ${JSON.stringify(position)}`);
    }
    events.push({ name, seq, payload });
    for (const waiter of waiters.splice(0)) waiter();
  });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`)));
  });
  const untilSeq = async (seq) => {
    const deadline = Date.now() + WAIT_MS;
    while (!events.some((event) => event.seq === seq)) {
      check(Date.now() < deadline, `seq ${seq} never arrived; got ${JSON.stringify(events.map((e) => [e.name, e.seq]))}`);
      await new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  return { socket, events, untilSeq };
}

async function send(localId, text) {
  const response = await fetch(
    `${edgeA}/v1/workspaces/${workspaceId}/conversations/${conversationId}/messages?wait=true`,
    {
      method: "POST",
      headers: { "content-type": "application/json", "x-token": token },
      body: JSON.stringify({ localId, content: { type: "text", text } }),
    },
  );
  check(response.status === 201, `send ${localId} answered ${response.status}: ${await response.text()}`);
}

const durable = (events) => events.filter((event) => event.seq !== null).map((event) => event.seq);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

try {
  const first = await open(edgeA, {});
  await send("js-1", "before the drop");
  await first.untilSeq(3);
  const before = durable(first.events);
  first.socket.disconnect();

  await send("js-2", "while away");
  await send("js-3", "still away");

  const second = await open(edgeB, { since: { [workspaceId]: 3 } });
  await second.untilSeq(9);
  const replayed = durable(second.events);
  check(
    second.events.every((event) => event.seq !== null),
    `only durable events are replayed, got ${JSON.stringify(second.events.map((e) => e.name))}`,
  );
  const seen = second.events.length;

  await send("js-4", "back again");
  await second.untilSeq(12);
  await sleep(500);
  const live = durable(second.events.slice(seen));
  check(
    second.events.slice(seen).some((event) => event.name === "message.delta"),
    "live events include the volatile ones",
  );
  check(new Set(durable(second.events)).size === durable(second.events).length, "a durable event arrived twice");
  second.socket.disconnect();
  console.log(JSON.stringify({ before, replayed, live }));
  process.exit(0);
} catch (error) {
  fail(error.stack || String(error));
}
