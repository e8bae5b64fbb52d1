// Publishes events the way an outside service would, with the npm package `nats` (no fnmesh
// code involved). Used by events_adapter_test.cc:
//   node events_publish.mjs <npm prefix> <nats url> <subject> <count>
// publishes <count> events on fnmesh.events.<subject> with JetStream publish, payload
// bytes "js-<i>" 0x00 0xff and Content-Type application/octet-stream, then one with core
// publish, payload "core événement" and Content-Type text/plain; charset=utf-8. Prints
// "published <count + 1>" once the JetStream acks are in and the core one is flushed.
import { createRequire } from "node:module";

const [prefix, url, subject, count] = process.argv.slice(2);
const { connect, headers } = createRequire(`${prefix}/`)("nats");

const nc = await connect({ servers: url, name: "events-publish.mjs" });
const js = nc.jetstream();
const full = `fnmesh.events.${subject}`;

for (let i = 0; i < Number(count); i++) {
  const h = headers();
  h.set("Content-Type", "application/octet-stream");
  const payload = Buffer.concat([Buffer.from(`js-${i}`), Buffer.from([0x00, 0xff])]);
  const ack = await js.publish(full, payload, { headers: h, msgID: `events-publish-${i}` });
  if (ack.duplicate) throw new Error(`event ${i} stored twice`);
}

const h = headers();
h.set("Content-Type", "text/plain; charset=utf-8");
nc.publish(full, Buffer.from("core événement"), { headers: h });
await nc.flush();
await nc.drain();
console.log(`published ${Number(count) + 1}`);
