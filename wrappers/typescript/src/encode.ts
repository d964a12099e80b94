// JSON for the wire (FRAME-2, WRAP-3): compact, every control character
// escaped, valid UTF-8 only, no NaN or Infinity, no unpaired surrogates.

/** A value the job code gave could not be encoded as JSON (a BigInt, a cycle, ...). */
export class EncodingError extends TypeError {
  override name = "EncodingError";
}

// JSON.stringify (ES2019 "well-formed") writes a lone surrogate as an escape
// such as \ud800, which FRAME-2 forbids. An escape is one only when an odd
// number of backslashes leads up to it (\\ud800 is a backslash and text).
const LONE_SURROGATE_ESCAPE = /(\\+)u(d[89a-f][0-9a-f]{2})/g;

/**
 * Encode `value` as one line's worth of JSON. Control characters come out
 * escaped (JSON.stringify does that), lone surrogates become U+FFFD, and
 * NaN and Infinity become null (JSON.stringify's rule for JavaScript).
 * `undefined` (or a function) encodes as null.
 */
export function encodeJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new EncodingError(`cannot encode as JSON: ${(error as Error).message}`);
  }
  if (text === undefined) return "null";
  if (!text.includes("\\ud")) return text;
  return text.replace(LONE_SURROGATE_ESCAPE, (match: string, slashes: string) =>
    slashes.length % 2 === 1 ? `${slashes.slice(1)}\ufffd` : match,
  );
}

/** The `data` of progress and log must be a JSON object (MSG-4, MSG-6); undefined and null mean none. */
export function encodeObject(value: unknown, what: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  const text = encodeJson(value);
  if (text === "null") return undefined;
  if (text[0] !== "{") {
    throw new TypeError(`${what} must be a plain object, not ${text.slice(0, 20)} (MSG-4, MSG-6)`);
  }
  return text;
}
