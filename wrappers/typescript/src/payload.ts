// The payload: one JSON object on standard input (PAY-1..PAY-6), with the
// environment as the fallback for jobId, name and socketPath (ENV-2).

import { readSync } from "node:fs";
import { PayloadError } from "./errors.js";

export const V1_HEARTBEAT_MS = 5000; // HB-2: the interval when the payload names none
export const DEFAULT_RECONNECT_WINDOW_MS = 60_000; // RECONNECT-3
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024; // LIMIT-1
export const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024; // LIMIT-2

/** The job as the server described it (SPEC.md section 2). */
export interface Payload {
  readonly jobId: string;
  readonly name: string;
  readonly data: unknown;
  /** A Unix socket path or `tcp://HOST:PORT` (TRANS-1). */
  readonly socketPath: string;
  /** Extensions the server offers (NEG-1); empty from a v1 server. */
  readonly features: readonly string[];
  readonly token: string | undefined;
  readonly heartbeatIntervalMs: number | undefined;
  readonly heartbeatTimeoutMs: number | undefined;
  readonly reconnectWindowMs: number;
  readonly maxLineBytes: number;
  readonly attempt: number;
  readonly maxAttempts: number | undefined;
  readonly spoolPath: string | undefined;
  readonly hasCheckpoint: boolean;
  /** The last checkpoint of an earlier attempt (CKPT-2); undefined when there is none. */
  readonly checkpoint: unknown;
}

type Env = Readonly<Record<string, string | undefined>>;

const ENV_NAMES = {
  jobId: ["EXTJOB_JOB_ID", "DONKEYLABS_JOB_ID"],
  name: ["EXTJOB_JOB_NAME", "DONKEYLABS_JOB_NAME"],
  socketPath: ["EXTJOB_SOCKET_PATH", "DONKEYLABS_SOCKET_PATH"],
} as const;

// [field, minimum, requirement] of the optional integer fields (PAY-3)
const INT_FIELDS = [
  ["heartbeatIntervalMs", 10, "HB-1"],
  ["heartbeatTimeoutMs", 30, "STALE-1"],
  ["reconnectWindowMs", 0, "RECONNECT-3"],
  ["maxLineBytes", 65536, "LIMIT-1"],
  ["attempt", 1, "CKPT-3"],
  ["maxAttempts", 1, "CKPT-3"],
] as const;

/** Read the payload from file descriptor 0 (to end of file or the first newline, PAY-1) and parse it. */
export function readPayload(env: Env = process.env): Payload {
  return parsePayload(readStdinLine(), env);
}

/**
 * Parse one payload (text, bytes, or an already decoded object); take the
 * fields it lacks from `env` (ENV-2). Throws {@link PayloadError} with a
 * one-line reason (PAY-6).
 */
export function parsePayload(raw: string | Uint8Array | object, env: Env): Payload {
  const fields = decode(raw);
  const has = (key: string) => Object.hasOwn(fields, key) && fields[key] !== null;
  const jobId = requiredString(fields, "jobId", env);
  const name = requiredString(fields, "name", env);
  const socketPath = requiredString(fields, "socketPath", env);
  if (socketPath.startsWith("tcp://")) parseTcp(socketPath); // a bad address is a bad payload
  const ints: Record<string, number | undefined> = {};
  for (const [key, minimum, requirement] of INT_FIELDS) {
    if (!has(key)) continue;
    const value = fields[key];
    if (!Number.isSafeInteger(value) || (value as number) < minimum) {
      throw new PayloadError(
        `${key} must be an integer >= ${minimum}, not ${JSON.stringify(value)} (PAY-3, ${requirement})`,
      );
    }
    ints[key] = value as number;
  }
  if (has("protocolVersion") && fields.protocolVersion !== 1) {
    throw new PayloadError(`protocolVersion ${JSON.stringify(fields.protocolVersion)} is not supported (NEG-1)`);
  }
  const features = has("features") ? fields.features : [];
  if (!Array.isArray(features) || !features.every((f) => typeof f === "string")) {
    throw new PayloadError("features must be an array of strings (NEG-1)");
  }
  let token: string | undefined;
  if (has("token")) {
    const value = fields.token;
    if (typeof value !== "string" || [...value].length < 16 || [...value].length > 256) {
      throw new PayloadError("token must be a string of 16 to 256 characters (AUTH-1)");
    }
    if (!has("protocolVersion") || !has("features")) {
      throw new PayloadError("a payload with a token needs protocolVersion and features (PAY-3)");
    }
    token = value;
  }
  let spoolPath: string | undefined;
  if (has("spoolPath")) {
    if (typeof fields.spoolPath !== "string" || fields.spoolPath === "") {
      throw new PayloadError("spoolPath must be a non-empty string (SPOOL-1)");
    }
    spoolPath = fields.spoolPath;
  }
  return {
    jobId,
    name,
    // PAY-6: a payload that lacks only data is not malformed; data is then {}
    data: Object.hasOwn(fields, "data") ? fields.data : {},
    socketPath,
    features: features as string[],
    token,
    heartbeatIntervalMs: ints.heartbeatIntervalMs,
    heartbeatTimeoutMs: ints.heartbeatTimeoutMs,
    reconnectWindowMs: ints.reconnectWindowMs ?? DEFAULT_RECONNECT_WINDOW_MS,
    maxLineBytes: ints.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
    attempt: ints.attempt ?? 1,
    maxAttempts: ints.maxAttempts,
    spoolPath,
    hasCheckpoint: has("checkpoint"),
    checkpoint: has("checkpoint") ? fields.checkpoint : undefined,
  };
}

function decode(raw: string | Uint8Array | object): Record<string, unknown> {
  if (!(typeof raw === "string" || raw instanceof Uint8Array)) {
    if (Array.isArray(raw)) throw new PayloadError("payload is a JSON array, not an object (PAY-6)");
    return raw as Record<string, unknown>;
  }
  const text = typeof raw === "string" ? raw : Buffer.from(raw).toString("utf8");
  if (text.trim() === "") return {}; // ENV-2: everything from the environment
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PayloadError(`payload is not valid JSON (${(error as Error).message}) (PAY-6)`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const kind = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
    throw new PayloadError(`payload is a JSON ${kind}, not an object (PAY-6)`);
  }
  return value as Record<string, unknown>;
}

function requiredString(fields: Record<string, unknown>, key: keyof typeof ENV_NAMES, env: Env): string {
  if (Object.hasOwn(fields, key) && fields[key] !== null) {
    const value = fields[key];
    if (typeof value !== "string" || value === "") {
      throw new PayloadError(`${key} must be a non-empty string (PAY-2)`);
    }
    if (key !== "socketPath" && [...value].length > 256) {
      throw new PayloadError(`${key} is longer than 256 characters (PAY-2)`);
    }
    return value;
  }
  for (const name of ENV_NAMES[key]) {
    const value = env[name];
    if (value) return value;
  }
  if (key === "socketPath" && env.DONKEYLABS_TCP_PORT) return `tcp://127.0.0.1:${env.DONKEYLABS_TCP_PORT}`;
  throw new PayloadError(`payload has no ${key} and ${ENV_NAMES[key].join(" and ")} are not set (PAY-2, ENV-2)`);
}

/** Split `tcp://HOST:PORT` (TRANS-1); HOST may be a bracketed IPv6 address. */
export function parseTcp(socketPath: string): { host: string; port: number } {
  const rest = socketPath.slice("tcp://".length);
  const colon = rest.lastIndexOf(":");
  let host = colon > 0 ? rest.slice(0, colon) : "";
  const port = colon > 0 ? rest.slice(colon + 1) : "";
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (!host || !/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new PayloadError(`socketPath ${JSON.stringify(socketPath)} is not tcp://HOST:PORT (TRANS-1)`);
  }
  return { host, port: Number(port) };
}

/** Standard input up to its first newline or its end, at most the payload limit (PAY-1, LIMIT-2). */
function readStdinLine(): Buffer {
  const chunks: Buffer[] = [];
  let size = 0;
  const chunk = Buffer.allocUnsafe(1 << 16);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, chunk, 0, chunk.length, null);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); // a non-blocking pipe: wait for it
        continue;
      }
      if (code === "EOF" || code === "EBADF") break; // closed stdin: the environment may supply everything
      throw new PayloadError(`cannot read the payload from standard input: ${(error as Error).message}`);
    }
    if (n === 0) break;
    const part = Buffer.from(chunk.subarray(0, n));
    const newline = part.indexOf(0x0a);
    chunks.push(newline >= 0 ? part.subarray(0, newline) : part);
    size += newline >= 0 ? newline : n;
    if (size > MAX_PAYLOAD_BYTES + 1) {
      throw new PayloadError(`payload is larger than ${MAX_PAYLOAD_BYTES} bytes (PAY-4, LIMIT-2)`);
    }
    if (newline >= 0) break;
  }
  const line = Buffer.concat(chunks);
  const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length;
  if (end > MAX_PAYLOAD_BYTES) {
    throw new PayloadError(`payload is larger than ${MAX_PAYLOAD_BYTES} bytes (PAY-4, LIMIT-2)`);
  }
  return line.subarray(0, end);
}
