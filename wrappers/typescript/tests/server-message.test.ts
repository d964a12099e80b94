// CTRL-1..CTRL-6: server messages are checked like their schemas; what fails is ignored.

import assert from "node:assert/strict";
import { test } from "node:test";
import { parseServerMessage, ServerMessageError } from "../src/io/server-message.js";
import { loadVectors } from "./peer.js";

test("CTRL-1..CTRL-5: the shared server-message vectors", () => {
  for (const vector of loadVectors("server-messages.json")) {
    const line = JSON.stringify(vector.data);
    if (vector.valid) {
      assert.doesNotThrow(() => parseServerMessage(line), vector.description);
      continue;
    }
    assert.throws(
      () => parseServerMessage(line),
      (error: unknown) => error instanceof ServerMessageError && error.code === vector.error,
      vector.description,
    );
  }
});

test("FRAME-3: a server line that is not JSON is invalid_json", () => {
  for (const line of ["hello", '{"type":"ack"', "", Buffer.from([0xff, 0xfe])]) {
    assert.throws(() => parseServerMessage(line), (e: unknown) => e instanceof ServerMessageError && e.code === "invalid_json");
  }
});
