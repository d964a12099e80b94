// FRAME-2, WRAP-3: correct JSON for every string the job code gives.

import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeJson, encodeObject } from "../src/encode.js";
import { loadVectors } from "./peer.js";

const CONTROLS = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("");
const HOSTILE = `quote" backslash\\ tab\t cr\r nl\n ${CONTROLS} del\u007f é中 🎉𝄞\u{10ffff} \u2028\u2029 \\ud800 literal`;

function assertWireSafe(text: string): void {
  assert.doesNotMatch(text, /[\u0000-\u001f]/, "FRAME-2: a raw control character");
  const bytes = Buffer.from(text, "utf8");
  assert.equal(bytes.toString("utf8"), text, "valid UTF-8");
  assert.ok(!/(^|[^\\])(\\\\)*\\ud[89a-f]/i.test(text), "FRAME-2: an unpaired surrogate escape");
}

test("WRAP-3: hostile strings round-trip exactly", () => {
  const encoded = encodeJson({ message: HOSTILE });
  assertWireSafe(encoded);
  assert.equal((JSON.parse(encoded) as { message: string }).message, HOSTILE);
});

test("WRAP-3: every control character, each alone", () => {
  for (let code = 0; code < 32; code++) {
    const text = `a${String.fromCharCode(code)}b`;
    const encoded = encodeJson(text);
    assertWireSafe(encoded);
    assert.equal(JSON.parse(encoded), text);
  }
});

test("FRAME-2: lone surrogates become U+FFFD, pairs stay", () => {
  const cases: [string, string][] = [
    ["\ud800", "\ufffd"],
    ["a\udfffb", "a\ufffdb"],
    ["\udc00\ud800", "\ufffd\ufffd"], // reversed: two lone ones
    ["\ud83c\udf89", "🎉"],
    ["\ud83c\ud83c\udf89", "\ufffd🎉"],
    ["\\\ud800", "\\\ufffd"], // a backslash, then a lone surrogate
  ];
  for (const [input, expected] of cases) {
    const encoded = encodeJson({ s: input });
    assertWireSafe(encoded);
    assert.equal((JSON.parse(encoded) as { s: string }).s, expected, JSON.stringify(input));
  }
});

test("WRAP-3: multi-megabyte text", () => {
  const text = `${HOSTILE}\ud800`.repeat(40_000); // about 4 MiB
  const encoded = encodeJson(text);
  assertWireSafe(encoded);
  assert.equal(JSON.parse(encoded), text.replaceAll("\ud800", "\ufffd"));
});

test("FRAME-2: NaN and Infinity never reach the wire; undefined is null", () => {
  assert.equal(encodeJson({ a: Number.NaN, b: Number.POSITIVE_INFINITY }), '{"a":null,"b":null}');
  assert.equal(encodeJson(undefined), "null");
  assert.throws(() => encodeJson({ n: 1n }), /cannot encode as JSON/);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.throws(() => encodeJson(cycle), /cannot encode as JSON/);
});

test("MSG-4, MSG-6: data must be an object", () => {
  assert.equal(encodeObject(undefined, "data"), undefined);
  assert.equal(encodeObject(null, "data"), undefined);
  assert.equal(encodeObject({ k: 1 }, "data"), '{"k":1}');
  assert.throws(() => encodeObject([1, 2], "data"), /plain object/);
  assert.throws(() => encodeObject("x", "data"), /plain object/);
});

test("FRAME-1..FRAME-3: the shared line vectors decode and re-encode as they should", () => {
  for (const vector of loadVectors("lines.json")) {
    const raw = vector.line !== undefined ? Buffer.from(vector.line, "utf8") : Buffer.from(vector.lineBase64!, "base64");
    let value: unknown;
    let parsed = true;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(raw));
    } catch {
      parsed = false;
    }
    if (vector.error === "invalid_json") {
      // JSON.parse is lenient about one thing FRAME-2 forbids: lone surrogate escapes
      const lone = parsed && /\\ud[89ab]/i.test(raw.toString());
      assert.ok(!parsed || lone, `${vector.description}: decoded a line that is not JSON`);
      continue;
    }
    if (!vector.valid) continue; // JSON of the wrong shape: a server-side concern
    assert.ok(parsed, vector.description);
    const encoded = encodeJson(value);
    assertWireSafe(encoded);
    assert.deepEqual(JSON.parse(encoded), value, vector.description);
  }
});
