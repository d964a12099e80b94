// An extended worker against a peer that welcomes and acknowledges (auth, replay, control, spool, checkpoint).

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { checkStream, extendedPayload, loadVectors, type Peer, TEST_WORKERS, TOKEN, testbed, waitFor, type WorkerProcess } from "./peer.js";

const bed = testbed();
const peer = () => bed.peer({ extended: true });

function worker(p: Peer, payload: unknown, script?: string): WorkerProcess {
  return bed.worker(payload, { dir: p.dir, ...(script ? { script: `${TEST_WORKERS}/${script}` } : {}) });
}

test("AUTH-2, REPLAY-1: hello with the token and pid first, then every sequenced message numbered in order", async () => {
  const p = await peer();
  const w = worker(p, extendedPayload(p, { scenario: "logs", count: 20 }));
  assert.equal(await w.wait(), 0);
  const [hello, ...rest] = p.messages();
  assert.deepEqual([hello!.type, hello!.token, hello!.pid, hello!.protocolVersion], ["hello", TOKEN, w.child.pid, 1]);
  assert.deepEqual(hello!.features, ["auth", "replay", "control", "spool", "checkpoint"]);
  const sequenced = rest.filter((m) => m.type !== "heartbeat");
  assert.deepEqual(sequenced.map((m) => m.seq), Array.from({ length: 22 }, (_, i) => i + 1));
  assert.ok(rest.filter((m) => m.type === "heartbeat").every((m) => m.seq === undefined));
  checkStream(p.messages());
});

test("REPLAY-4, REPLAY-5: acks withheld, then a drop: what lastSeq does not cover is resent, each log recorded once", async () => {
  const p = await peer();
  const w = worker(p, extendedPayload(p, { scenario: "logs", count: 30, intervalMs: 20 }));
  await waitFor("ten logs", () => p.messages("log").length >= 10);
  p.acks = false;
  await waitFor("twenty logs", () => p.messages("log").length >= 20);
  p.lastSeq -= 5; // the peer "forgets" the last five it recorded, as a server that crashed before its commit
  p.recorded.splice(-5);
  p.acks = true;
  p.drop();
  assert.equal(await w.wait(), 0);
  const logs = p.recorded.filter((m) => m.type === "log").map((m) => m.message);
  assert.deepEqual(logs, Array.from({ length: 30 }, (_, i) => `line ${i + 1}`));
  const connections = new Set(p.received.map((r) => r.conn));
  assert.ok(connections.size >= 2);
  for (const conn of connections) assert.equal(p.received.find((r) => r.conn === conn)!.message.type, "hello");
});

test("REPLAY-6: while the server is away a full buffer drops the oldest logs and says how many; nothing else is lost", async () => {
  const p = await peer();
  const w = worker(p, extendedPayload(p, { count: 3000, intervalMs: 10 }), "flood.js"); // 3 s at least
  await waitFor("logs to flow", () => p.messages("log").length >= 20);
  await p.stop(); // the server goes away (what it recorded stays: it is durable)
  await new Promise((resolve) => setTimeout(resolve, 1500)); // the outage: hundreds of logs, a buffer of 50
  await p.start();
  assert.equal(await w.wait(), 0);
  const recorded = p.recorded;
  assert.deepEqual(recorded.at(-1)!.result, { count: 3000 });
  assert.deepEqual(recorded.find((m) => m.type === "checkpoint")!.data, { done: 3000 }, "a checkpoint is never dropped");
  const notices = recorded.filter((m) => m.type === "log" && m.level === "warn");
  assert.ok(notices.length >= 1, "the drop is reported");
  const dropped = (notices.at(-1)!.data as { dropped: number }).dropped;
  const lines = recorded.filter((m) => m.type === "log" && m.level === "info").map((m) => (m.data as { i: number }).i);
  assert.deepEqual(lines, [...new Set(lines)].sort((a, b) => a - b), "in order, each once");
  assert.equal(lines.at(-1), 3000, "the newest are kept");
  assert.ok(lines.length + dropped >= 3000 && dropped > 0, `${lines.length} kept, ${dropped} dropped`);
  const seqs = recorded.map((m) => m.seq as number);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
});

test("CANCEL-3, HB-2: a cancel reaches job code that never yields its thread; heartbeats go on meanwhile", async () => {
  const p = await peer();
  const w = worker(p, extendedPayload(p, { ms: 15_000 }), "blocking.js");
  await p.waitType("started");
  await waitFor("heartbeats while blocked", () => p.messages("heartbeat").length >= 5);
  p.send(p.sockets.at(-1)!, { type: "cancel", reason: "requested", deadlineMs: 5000 });
  assert.equal(await w.wait(), 0);
  const completed = await p.waitType("completed");
  assert.deepEqual(completed.result, { cancelled: "requested", aborted: true, deadlineMs: 5000 });
});

test("CKPT-1, CKPT-2: a checkpoint is saved and sequenced, then the retry resumes from it", async () => {
  const p = await peer();
  const value = { step: 3, text: "tab\there" };
  const first = worker(p, extendedPayload(p, { scenario: "checkpoint", value }));
  assert.equal(await first.wait(), 1);
  assert.deepEqual(p.messages("checkpoint")[0]!.data, value);
  assert.equal(p.messages("failed")[0]!.error, "checkpoint saved");
  assert.equal(p.messages("failed")[0]!.retryable, undefined, "CKPT-4: retryable");
  const p2 = await peer();
  const second = worker(p2, extendedPayload(p2, { scenario: "checkpoint", value }, { attempt: 2, checkpoint: value }));
  assert.equal(await second.wait(), 0);
  assert.deepEqual((await p2.waitType("completed")).result, { resumedFrom: value });
});

test("SPOOL-2, RECONNECT-3: the server never comes back: hello and the unacknowledged result are spooled", async () => {
  const p = await peer();
  const payload = extendedPayload(p, { scenario: "logs", count: 3, intervalMs: 300 }, { reconnectWindowMs: 2000 }); // also the first connection's (RECONNECT-6)
  const w = worker(p, payload);
  await p.waitType("started");
  // The ack of the newest log may still be on its way when the server goes:
  // the worker rightly spools what it never saw acknowledged. What was acked
  // a whole log interval before the outage (started and line 1) must not be there.
  await waitFor("two logs", () => p.messages("log").length >= 2);
  const ackedLongBefore = p.messages("log")[0]!.seq as number;
  await p.stop();
  assert.equal(await w.wait(), 0);
  const spoolPath = payload.spoolPath as string;
  assert.ok(existsSync(spoolPath) && !existsSync(`${spoolPath}.tmp`));
  const lines = readFileSync(spoolPath, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines[0]!.type, "hello");
  assert.equal(lines[0]!.token, TOKEN);
  const spooled = lines.slice(1);
  assert.equal(spooled.at(-1)!.type, "completed");
  assert.ok(spooled.every((m) => (m.seq as number) > ackedLongBefore), "only what was not acknowledged");
  assert.ok((spooled[0]!.seq as number) <= p.lastSeq + 1, "nothing unacknowledged left out");
  const seqs = spooled.map((m) => m.seq as number);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  const replayed = spooled.filter((m) => (m.seq as number) > p.lastSeq); // REPLAY-5: the rest are duplicates
  const logs = [...p.recorded, ...replayed].filter((m) => m.type === "log").map((m) => m.message);
  assert.deepEqual(logs, ["line 1", "line 2", "line 3"], "nothing lost, nothing twice");
  assert.match(w.stderr.toString(), /spooled/);
});

test("MSG-3..MSG-8, CKPT-1: every valid worker message of the shared vectors is what the API sends for it", async () => {
  const vectors = loadVectors("worker-messages.json").filter((v) => {
    const m = v.data as Record<string, unknown>;
    return v.valid && m.jobId === "j_1" && !("somethingNew" in m) && ["progress", "log", "completed", "failed", "checkpoint"].includes(m.type as string);
  });
  assert.ok(vectors.length > 20);
  const normal = (m: Record<string, unknown>) => {
    const copy: Record<string, unknown> = { ...m };
    for (const key of ["timestamp", "seq", "stack"]) delete copy[key];
    for (const [key, value] of Object.entries(copy)) {
      if (value === null && key !== "result" && !(key === "data" && copy.type === "checkpoint")) delete copy[key]; // MSG-2
    }
    if (copy.type === "completed" && copy.result === undefined) copy.result = null; // MSG-7
    return copy;
  };
  // One worker for every message that does not end the job, one for each that does.
  const terminal = (v: (typeof vectors)[number]) => ["completed", "failed"].includes((v.data as Record<string, unknown>).type as string);
  const runs = [vectors.filter((v) => !terminal(v)), ...vectors.filter(terminal).map((v) => [v])];
  await Promise.all(
    runs.map(async (run) => {
      const p = await peer();
      const w = worker(p, extendedPayload(p, { messages: run.map((v) => v.data) }), "api-call.js");
      await w.wait();
      const sent = p.messages().filter((m) => !["hello", "started", "heartbeat"].includes(m.type as string));
      run.forEach((vector, i) => {
        assert.ok(sent[i], `${vector.description}: nothing sent`);
        assert.deepEqual(normal(sent[i]!), normal(vector.data as Record<string, unknown>), vector.description);
      });
    }),
  );
});
