// Section 2: the payload, the environment fallback, malformed payloads.

import assert from "node:assert/strict";
import { test } from "node:test";
import { PayloadError } from "../src/errors.js";
import { negotiate } from "../src/features.js";
import { parsePayload } from "../src/payload.js";
import { loadVectors } from "./peer.js";

test("PAY-2..PAY-6: the shared payload vectors, with no environment to fall back on", () => {
  for (const vector of loadVectors("payloads.json")) {
    const raw = JSON.stringify(vector.data);
    const data = vector.data as Record<string, unknown>;
    if (vector.valid) {
      const payload = parsePayload(raw, {});
      assert.equal(payload.jobId, data.jobId, vector.description);
      assert.deepEqual(payload.data, data.data, vector.description);
      assert.equal(payload.hasCheckpoint, "checkpoint" in data, vector.description);
    } else if (vector.description === "missing data") {
      // PAY-6: a payload that lacks only data is read with data {} (the schema still refuses it)
      assert.deepEqual(parsePayload(raw, {}).data, {});
    } else {
      assert.throws(
        () => parsePayload(raw, {}),
        (error: unknown) => error instanceof PayloadError && !error.message.includes("\n"),
        vector.description,
      );
    }
  }
});

test("ENV-2: empty stdin takes every field from the environment; EXTJOB_ first, a non-empty value wins", () => {
  const env = {
    EXTJOB_JOB_ID: "",
    DONKEYLABS_JOB_ID: "j_env",
    EXTJOB_JOB_NAME: "ours",
    DONKEYLABS_JOB_NAME: "theirs",
    DONKEYLABS_SOCKET_PATH: "",
    DONKEYLABS_TCP_PORT: "4242",
  };
  const payload = parsePayload("\n", env);
  assert.deepEqual([payload.jobId, payload.name, payload.socketPath], ["j_env", "ours", "tcp://127.0.0.1:4242"]);
  assert.deepEqual(payload.data, {});
  assert.deepEqual(negotiate(payload), []);
});

test("ENV-2: the payload's fields win over the environment; missing ones come from it", () => {
  assert.equal(parsePayload('{"jobId":"j_p","name":"n","data":1,"socketPath":"/s"}', { EXTJOB_JOB_ID: "j_env" }).jobId, "j_p");
  const partial = parsePayload('{"data":{"a":1}}', { EXTJOB_JOB_ID: "j", EXTJOB_JOB_NAME: "n", EXTJOB_SOCKET_PATH: "/s" });
  assert.deepEqual([partial.jobId, partial.data, partial.socketPath], ["j", { a: 1 }, "/s"]);
});

test("PAY-6: a malformed stdin is an error even when the environment is set", () => {
  const env = { EXTJOB_JOB_ID: "j", EXTJOB_JOB_NAME: "n", EXTJOB_SOCKET_PATH: "/s" };
  for (const [stdin, names] of [
    ["not json\n", /not valid JSON/],
    ["[1]\n", /not an object/],
    ['"text"', /not an object/],
  ] as const) {
    assert.throws(() => parsePayload(stdin, env), names);
  }
  for (const [stdin, names] of [
    ["", /jobId/],
    ['{"jobId":"j_1","name":"n","data":{}}', /socketPath/],
    ['{"jobId":"j_1","name":"n","data":{},"socketPath":"tcp://nowhere"}', /tcp:\/\/HOST:PORT/],
    ['{"jobId":"j_1","name":"n","data":{},"socketPath":"/s","attempt":0}', /attempt/],
  ] as const) {
    assert.throws(() => parsePayload(stdin, {}), names);
  }
});

test("TRANS-1: tcp://HOST:PORT with an IPv4 address, a name or a bracketed IPv6 address", () => {
  for (const socketPath of ["tcp://127.0.0.1:1", "tcp://localhost:65535", "tcp://[::1]:8080"]) {
    assert.equal(parsePayload({ jobId: "j", name: "n", data: {}, socketPath }, {}).socketPath, socketPath);
  }
  for (const socketPath of ["tcp://127.0.0.1", "tcp://:80", "tcp://h:0", "tcp://h:99999", "tcp://h:x"]) {
    assert.throws(() => parsePayload({ jobId: "j", name: "n", data: {}, socketPath }, {}), PayloadError);
  }
});

test("NEG-2: extensions need auth and a token; spool needs replay and a spool path; unknown names are ignored", () => {
  const base = { jobId: "j", name: "n", data: {}, socketPath: "/s", protocolVersion: 1 };
  const token = "0123456789abcdef";
  const all = ["auth", "replay", "control", "spool", "checkpoint", "teleport"];
  assert.deepEqual(negotiate(parsePayload({ ...base, features: all, token, spoolPath: "/x" }, {})), [
    "auth",
    "replay",
    "control",
    "spool",
    "checkpoint",
  ]);
  assert.deepEqual(negotiate(parsePayload({ ...base, features: all }, {})), []);
  assert.deepEqual(negotiate(parsePayload({ ...base, features: ["replay"], token }, {})), []);
  assert.deepEqual(negotiate(parsePayload({ ...base, features: ["auth", "spool"], token, spoolPath: "/x" }, {})), ["auth"]);
  assert.deepEqual(negotiate(parsePayload({ ...base, features: ["auth", "replay", "spool"], token }, {})), ["auth", "replay"]);
});
