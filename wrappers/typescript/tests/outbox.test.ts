// REPLAY-1..REPLAY-6 in the outbox alone: numbering, acks, replays, coalescing, dropping.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Clock } from "../src/io/clock.js";
import { Outbox } from "../src/io/outbox.js";

function outbox(replay: boolean, maxMessages = 100): Outbox {
  return new Outbox({ jobIdJson: '"j_1"', replay, clock: new Clock(), maxMessages, maxBytes: 1 << 20 });
}

const body = (fields: object) => Buffer.from(JSON.stringify(fields));

function lines(box: Outbox): Record<string, unknown>[] {
  const batch = box.take(1 << 20);
  if (batch === undefined) return [];
  return batch.chunk
    .toString()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

test("REPLAY-1, REPLAY-2: numbered from 1; an ack forgets what it covers; the rest is resent after a rewind", () => {
  const box = outbox(true);
  box.add("started", body({}), false);
  box.add("progress", body({ percent: 1 }), false);
  box.add("log", body({ level: "info", message: "m" }), false);
  const first = lines(box);
  assert.deepEqual(first.map((m) => [m.type, m.seq]), [["started", 1], ["progress", 2], ["log", 3]]);
  box.ack(2);
  box.rewind();
  assert.deepEqual(lines(box), [first[2]], "REPLAY-4: resent unchanged, with its seq and timestamp");
});

test("REPLAY-4: resume drops what lastSeq covers and marks the terminal delivered", () => {
  const box = outbox(true);
  box.add("started", body({}), false);
  box.add("completed", body({ result: 1 }), false);
  lines(box);
  box.resume(1);
  assert.equal(box.delivered, false);
  assert.deepEqual(lines(box).map((m) => m.type), ["completed"]);
  box.resume(2);
  assert.equal(box.delivered, true);
});

test("REPLAY-6: while down only the latest unsent progress is kept, and a missing message carries over", () => {
  const box = outbox(true);
  box.add("progress", body({ percent: 10, message: "resizing" }), true);
  box.add("progress", body({ percent: 20 }), true);
  box.add("progress", body({ percent: 30 }), true);
  const sent = lines(box);
  assert.deepEqual(sent.map((m) => [m.percent, m.message]), [[30, "resizing"]]);
  assert.equal(sent[0]!.seq, 3, "gaps in seq are allowed");
});

test("REPLAY-6: connected, progress is never coalesced", () => {
  const box = outbox(false);
  for (const percent of [1, 2, 3]) box.add("progress", body({ percent }), false);
  assert.deepEqual(lines(box).map((m) => m.percent), [1, 2, 3]);
});

test("REPLAY-6: a full buffer while down drops the oldest logs and says how many, in one warn log", () => {
  const box = outbox(true, 10);
  box.add("started", body({}), true);
  box.add("checkpoint", body({ data: 1 }), true);
  for (let i = 1; i <= 30; i++) box.add("log", body({ level: "info", message: `line ${i}` }), true);
  box.add("completed", body({ result: null }), true);
  const sent = lines(box);
  assert.deepEqual(sent.slice(0, 2).map((m) => m.type), ["started", "checkpoint"], "never dropped");
  assert.equal(sent.at(-1)!.type, "completed");
  const notices = sent.filter((m) => m.level === "warn");
  assert.equal(notices.length, 1);
  const dropped = (notices[0]!.data as { dropped: number }).dropped;
  const kept = sent.filter((m) => m.type === "log" && m.level === "info");
  assert.equal(kept.length + dropped, 30);
  assert.equal(kept.at(-1)!.message, "line 30", "the oldest go first");
});

test("TIME-1, LIFE-3: without replay a line is stamped when written, never earlier than the last; a reconnect starts with started", () => {
  let now = 1000;
  const box = new Outbox({ jobIdJson: '"j_1"', replay: false, clock: new Clock(() => now), maxMessages: 10, maxBytes: 1 << 20 });
  box.add("log", body({ level: "info", message: "first" }), false);
  assert.equal(lines(box)[0]!.timestamp, 1000);
  now = 3000;
  box.add("log", body({ level: "info", message: "queued during an outage" }), true);
  now = 500; // the clock stepped back
  box.prefaceStarted();
  const sent = lines(box);
  assert.deepEqual(sent.map((m) => [m.type, m.seq, m.timestamp]), [["started", undefined, 1000], ["log", undefined, 1000]]);
});
