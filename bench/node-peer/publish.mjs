// Publishes `message.delta` events to a room of the peer's nodes through Redis (the emitter
// speaks the adapter's protocol), each carrying its publish time in microseconds, like
// `crawbl-load fan-out` does for the Crawbl edge.
//
//   REDIS_URL=redis://127.0.0.1:6379 node publish.mjs <room> <events per second> <seconds>
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const [room, rate, seconds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const client = createClient({ url: process.env.REDIS_URL });
await client.connect();
const emitter = new Emitter(client).of("/v1");

const total = Math.round(rate * seconds);
const started = performance.now();
for (let index = 0; index < total; index++) {
  const due = started + (index * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const micros = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
  emitter.to(room).emit("message.delta", {
    messageId: "fan-out",
    conversationId: "fan-out",
    agentId: "fan-out",
    delta: micros.toString(),
    index,
  });
}
console.log(`published ${total}`);
await client.quit();
