// Server -> worker messages (CTRL-1..CTRL-5), checked like their schemas in
// schema/server/. A worker ignores what fails the check (CTRL-6).

export type ServerMessage =
  | { type: "welcome"; jobId: string; features: string[]; lastSeq: number; heartbeatIntervalMs: number }
  | { type: "ack"; jobId: string; seq: number }
  | { type: "cancel"; jobId: string; reason: string; deadlineMs: number }
  | { type: "error"; jobId: string; code: string; message: string }
  | { type: "private"; jobId: string };

/** A server line that is not a valid server message; `code` as in CTRL-5. */
export class ServerMessageError extends Error {
  override name = "ServerMessageError";
  constructor(
    readonly code: "invalid_json" | "invalid_message",
    message: string,
  ) {
    super(message);
  }
}

const ERROR_CODES = new Set([
  "invalid_json",
  "invalid_message",
  "line_too_long",
  "wrong_job",
  "auth",
  "unknown_type",
  "out_of_order",
  "duplicate_terminal",
]);

function integer(value: unknown, minimum: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= minimum;
}

function invalid(text: string): never {
  throw new ServerMessageError("invalid_message", text);
}

/** Parse and check one server line; throws {@link ServerMessageError}. */
export function parseServerMessage(line: string | Uint8Array): ServerMessage {
  let m: unknown;
  try {
    m = JSON.parse(typeof line === "string" ? line : Buffer.from(line).toString("utf8"));
  } catch (error) {
    throw new ServerMessageError("invalid_json", (error as Error).message);
  }
  if (typeof m !== "object" || m === null || Array.isArray(m)) invalid("not a JSON object (FRAME-1)");
  const o = m as Record<string, unknown>;
  const { type, jobId } = o;
  if (typeof type !== "string" || type === "") invalid("type must be a non-empty string (CTRL-1)");
  if (typeof jobId !== "string" || jobId === "" || [...jobId].length > 256) invalid("jobId must be 1-256 characters (CTRL-1)");
  if (!integer(o.timestamp, 0)) invalid("timestamp must be an integer >= 0 (CTRL-1)");
  switch (type) {
    case "welcome": {
      const { features, lastSeq, heartbeatIntervalMs } = o;
      if (o.protocolVersion !== 1) invalid("welcome: protocolVersion must be 1 (CTRL-2)");
      if (!Array.isArray(features) || !features.every((f) => typeof f === "string" && f !== "")) {
        invalid("welcome: features must be an array of names (CTRL-2)");
      }
      if (new Set(features).size !== features.length) invalid("welcome: features repeat (CTRL-2)");
      if (!integer(lastSeq, 0)) invalid("welcome: lastSeq must be an integer >= 0 (CTRL-2)");
      if (!integer(heartbeatIntervalMs, 10)) invalid("welcome: heartbeatIntervalMs must be an integer >= 10 (HB-1)");
      return { type, jobId, features: features as string[], lastSeq, heartbeatIntervalMs };
    }
    case "ack":
      if (!integer(o.seq, 1)) invalid("ack: seq must be an integer >= 1 (CTRL-3)");
      return { type, jobId, seq: o.seq };
    case "cancel":
      if (typeof o.reason !== "string" || o.reason === "") invalid("cancel: reason must be a non-empty string (CTRL-4)");
      if (!integer(o.deadlineMs, 0)) invalid("cancel: deadlineMs must be an integer >= 0 (CTRL-4)");
      return { type, jobId, reason: o.reason, deadlineMs: o.deadlineMs };
    case "error":
      if (typeof o.code !== "string" || !ERROR_CODES.has(o.code)) invalid("error: unknown code (CTRL-5)");
      if (typeof o.message !== "string") invalid("error: message must be a string (CTRL-5)");
      if (o.requirement != null && typeof o.requirement !== "string") invalid("error: requirement must be a string (CTRL-5)");
      if (o.seq != null && !integer(o.seq, 1)) invalid("error: seq must be an integer >= 1 (CTRL-5)");
      return { type, jobId, code: o.code, message: o.message };
    default:
      if (type.startsWith("x-")) return { type: "private", jobId }; // MSG-2
      return invalid(`unknown server message type ${JSON.stringify(type)} (CTRL-6)`);
  }
}
