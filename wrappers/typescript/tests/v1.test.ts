// A v1 worker against a peer that never writes back (the original server).

import assert from "node:assert/strict";
import { test } from "node:test";
import { checkStream, TEST_WORKERS, testbed, v1Payload, waitFor } from "./peer.js";

const bed = testbed();
const peer = (options: { tcp?: boolean } = {}) => bed.peer(options);
const worker = bed.worker.bind(bed);

for (const tcp of [false, true]) {
  test(`TRANS-1, NEG-3: a v1 worker completes over ${tcp ? "TCP" : "a Unix socket"}: no hello, no seq`, async () => {
    const p = await peer({ tcp });
    const w = worker(v1Payload(p, { scenario: "complete" }));
    assert.equal(await w.wait(), 0);
    await p.waitType("completed");
    const messages = p.messages().filter((m) => m.type !== "heartbeat");
    assert.deepEqual(messages.map((m) => m.type), ["started", "progress", "completed"]);
    assert.ok(p.messages().every((m) => m.seq === undefined && m.jobId === "j_1"));
    assert.deepEqual([messages[1]!.percent, messages[1]!.message, messages[2]!.result], [50, "halfway", { ok: true }]);
    checkStream(p.messages());
    assert.equal(w.stdout.length, 0, "FIX-3: nothing on stdout");
    await p.stop();
  });
}

test("HB-2: heartbeats go on while the job code blocks its thread (Atomics.wait)", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "sleep", ms: 3000 }, { heartbeatIntervalMs: 50 }));
  assert.equal(await w.wait(), 0);
  await p.waitType("completed");
  const received = p.received;
  assert.equal(received[0]!.message.type, "started");
  assert.equal(received.at(-1)!.message.type, "completed");
  const beats = received.filter((r) => r.message.type === "heartbeat");
  assert.ok(beats.length >= 8 && beats.length <= 3000 / 25 + 2, `${beats.length} heartbeats`);
  // Judged by the worker's own timestamps (receipt times bunch up when this
  // test process is starved), with a bound far below the 3 s the job code
  // blocks: a heartbeat on the job's thread shows one gap of the whole block.
  const times = [received[0]!, ...beats, received.at(-1)!].map((r) => r.message.timestamp as number);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  assert.ok(Math.max(...gaps) < 1500, `gaps ${gaps.map(Math.round)}`);
  assert.deepEqual(p.messages("completed")[0]!.result, { slept: 3000 });
  await p.stop();
});

test("WRAP-2, EXIT-2: an exception fails the job with its text and stack; exit 1", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "fail", message: "disk full" }));
  assert.equal(await w.wait(), 1);
  const failed = await p.waitType("failed");
  assert.equal(failed.error, "disk full");
  assert.match(failed.stack as string, /Error: disk full\n\s+at /);
  assert.equal(p.types().at(-1), "failed");
  await p.stop();
});

test("FIX-2: crash exits with its status and sends nothing more", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "crash", code: 7 }));
  assert.equal(await w.wait(), 7);
  assert.ok(!p.types().includes("completed") && !p.types().includes("failed"));
  await p.stop();
});

test("WRAP-3, FRAME-2: hostile strings, megabytes of them, arrive byte-exact as valid JSON", async () => {
  const controls = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("");
  const hostile = `quote" backslash\\ ${controls} del\u007f é中🎉𝄞\u{10ffff} \u2028 \\ud800 `;
  const text = hostile.repeat(Math.ceil((2 << 20) / hostile.length)); // over 2 MiB, about 6 MB on the wire
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "echo", text, value: { text, lone: "a\ud800b" } }));
  assert.equal(await w.wait(20_000), 0);
  await p.waitType("completed");
  for (const r of p.received) {
    assert.doesNotMatch(r.raw.toString("latin1"), /[\u0000-\u0009\u000b-\u001f]/, "no raw control character");
    assert.equal(new TextDecoder("utf-8", { fatal: true }).decode(r.raw).length > 0, true, "valid UTF-8");
  }
  assert.equal(p.messages("log")[0]!.message, text);
  assert.equal(p.messages("progress")[0]!.message, text);
  assert.deepEqual(p.messages("completed")[0]!.result, { text, lone: "a\ufffdb" });
  await p.stop();
});

test("WRAP-3: random text from every Unicode plane, lone surrogates included, arrives as sent (seeded)", async () => {
  let seed = 20261201;
  const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const texts: string[] = [];
  for (let i = 0; i < 2000; i++) {
    let text = "";
    for (let j = random(12); j > 0; j--) {
      const plane = random(17);
      const point = plane === 0 ? random(0x10000) : plane * 0x10000 + random(0x10000);
      text += point >= 0xd800 && point <= 0xdfff ? String.fromCharCode(point) : String.fromCodePoint(point);
    }
    texts.push(text);
  }
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "echo", text: texts.join(""), value: texts }));
  assert.equal(await w.wait(), 0);
  const completed = await p.waitType("completed");
  const wellFormed = (t: string) => t.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
  assert.deepEqual(completed.result, texts.map(wellFormed));
  assert.equal(p.messages("log")[0]!.message, wellFormed(texts.join("")));
  await p.stop();
});

test("MSG-4, WRAP-4: a burst of progress arrives whole and in order", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "progress", count: 20_000 }));
  assert.equal(await w.wait(), 0);
  await p.waitType("completed");
  const progress = p.messages("progress");
  assert.equal(progress.length, 20_000);
  assert.ok(progress.every((m, i) => m.message === `step ${i + 1}` && m.percent === ((i + 1) * 100) / 20_000));
  await p.stop();
});

test("RECONNECT-1, LIFE-3: after a drop the v1 worker reconnects and sends started again", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "logs", count: 40, intervalMs: 25 }));
  await waitFor("a few logs", () => p.messages("log").length >= 5);
  p.drop();
  assert.equal(await w.wait(), 0);
  await p.waitType("completed");
  const connections = new Set(p.received.map((r) => r.conn));
  assert.ok(connections.size >= 2);
  for (const conn of connections) {
    assert.equal(p.received.find((r) => r.conn === conn)!.message.type, "started", `connection ${conn} starts with started`);
  }
  const logs = p.messages("log").map((m) => m.message);
  assert.deepEqual([...new Set(logs)], Array.from({ length: 40 }, (_, i) => `line ${i + 1}`));
  checkStream(p.messages());
  await p.stop();
});

test("ENV-2: empty stdin, everything from the environment (DONKEYLABS_TCP_PORT)", async () => {
  const p = await peer({ tcp: true });
  const w = worker(undefined, { env: { DONKEYLABS_JOB_ID: "j_1", DONKEYLABS_JOB_NAME: "n", DONKEYLABS_TCP_PORT: String(p.port) } });
  assert.equal(await w.wait(), 0);
  assert.deepEqual((await p.waitType("completed")).result, { ok: true });
  await p.stop();
});

test("PAY-6: a missing or malformed payload exits 2 after one stderr line, and never connects", async () => {
  const p = await peer();
  const env = { EXTJOB_JOB_ID: "j_1", EXTJOB_JOB_NAME: "n", EXTJOB_SOCKET_PATH: p.address };
  for (const [stdin, withEnv, names] of [
    [undefined, false, /jobId/],
    ["not json\n", true, /not valid JSON/],
    ['{"jobId":"j_1","name":"n","data":{},"socketPath":"/s","heartbeatIntervalMs":0}\n', false, /heartbeatIntervalMs/],
  ] as const) {
    const w = worker(stdin, withEnv ? { env } : {});
    assert.equal(await w.wait(), 2);
    const lines = w.stderr.toString().trim().split("\n");
    assert.equal(lines.length, 1, w.stderr.toString());
    assert.match(lines[0]!, names);
  }
  assert.equal(p.received.length, 0);
  assert.equal(p.sockets.length, 0);
  await p.stop();
});

test("RECONNECT-6: no server within the reconnect window: exit 1 after one stderr line, the job code never runs", async () => {
  const dir = bed.dir();
  const w = worker({ jobId: "j_1", name: "n", data: { scenario: "crash", code: 9 }, socketPath: `${dir}/nobody.sock`, reconnectWindowMs: 300 });
  assert.equal(await w.wait(), 1);
  assert.match(w.stderr.toString(), /cannot connect/);
});

test("WRAP-5: job code printing to a broken stdout and stderr does not kill the worker", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, {}), { script: `${TEST_WORKERS}/noisy.js`, brokenStdio: true });
  assert.equal(await w.wait(), 0);
  assert.deepEqual((await p.waitType("completed")).result, { printed: 200 });
  await p.stop();
});

test("WRAP-5: with stdout and stderr closed at the start, job code that prints never writes into the protocol", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, {}), { script: `${TEST_WORKERS}/noisy.js`, closedStdio: true });
  assert.equal(await w.wait(), 0);
  assert.deepEqual((await p.waitType("completed")).result, { printed: 200 });
  assert.ok(p.received.every((r) => r.raw[0] === 0x7b), "every line the peer read is a message");
  await p.stop();
});

test("CANCEL-3: SIGTERM is a cancel request the job code sees, not a death", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, { scenario: "cancel", ms: 20_000 }));
  await p.waitType("started");
  w.child.kill("SIGTERM");
  assert.equal(await w.wait(), 1);
  assert.equal((await p.waitType("failed")).error, "cancelled");
  await p.stop();
});

test("WRAP-2: an exception that escapes the handler (thrown from a timer) fails the job with its stack", async () => {
  const p = await peer();
  const w = worker(v1Payload(p, {}), { script: `${TEST_WORKERS}/stray.js` });
  assert.equal(await w.wait(), 1);
  const failed = await p.waitType("failed");
  assert.equal(failed.error, "stray boom");
  assert.match(failed.stack as string, /Error: stray boom\n\s+at /);
  await p.stop();
});
