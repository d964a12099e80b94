// The ring between the job's thread and the I/O thread: whole messages, in order, across its edge.

import assert from "node:assert/strict";
import { test } from "node:test";
import { allocateShared, Kind, RingReader, RingWriter } from "../src/shared.js";

test("WRAP-4: messages of every size cross a small ring whole and in order, wrapping at its edge", () => {
  const buffers = allocateShared(64);
  let wakes = 0;
  const writer = new RingWriter(buffers, () => (wakes += 1));
  const reader = new RingReader(buffers);
  assert.equal(reader.idle(), true);
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 2000; i++) {
    const text = `${i}:${"é🎉x".repeat(Math.floor(random() * 8))}`;
    const bytes = Buffer.byteLength(text);
    writer.put(Kind.log, text, bytes);
    const message = reader.next();
    assert.ok(message, `message ${i}`);
    assert.equal(message.kind, Kind.log);
    assert.equal(message.body.toString(), text);
    assert.equal(reader.next(), undefined);
    assert.equal(reader.idle(), true);
  }
  assert.equal(wakes, 2000, "one wake per message when the reader waits for each");
});

test("a burst posts one wake, not one per message", () => {
  const buffers = allocateShared(1 << 16);
  let wakes = 0;
  const writer = new RingWriter(buffers, () => (wakes += 1));
  const reader = new RingReader(buffers);
  reader.idle();
  for (let i = 0; i < 100; i++) writer.put(Kind.progress, `{"percent":${i}}`, Buffer.byteLength(`{"percent":${i}}`));
  assert.equal(wakes, 1);
  for (let i = 0; i < 100; i++) assert.equal(reader.next()!.body.toString(), `{"percent":${i}}`);
});
