// The errors the package throws at job code, and its one way to speak (stderr).

import { writeSync } from "node:fs";

/** The payload is missing or malformed (PAY-6); the message names what is wrong, on one line. */
export class PayloadError extends Error {
  override name = "PayloadError";
}

/** A line would exceed the server's `maxLineBytes` (LIMIT-1); `size` is its length in bytes. */
export class MessageTooLargeError extends RangeError {
  override name = "MessageTooLargeError";
  constructor(
    readonly kind: string,
    readonly size: number,
    readonly limit: number,
  ) {
    super(`a ${kind} line of ${size} bytes exceeds maxLineBytes ${limit} (LIMIT-1)`);
  }
}

/** The job already sent its terminal message; nothing may follow it (LIFE-4). */
export class JobFinishedError extends Error {
  override name = "JobFinishedError";
}

/**
 * Throw (or return from the handler as a rejection) to fail the job and ask
 * the server not to retry it (`retryable: false`, CKPT-4).
 */
export class PermanentError extends Error {
  override name = "PermanentError";
}

/** The reason of `job.signal` once a cancel was requested (CANCEL-3). */
export class CancelledError extends Error {
  override name = "CancelledError";
  constructor(
    /** `requested`, `timeout`, `shutdown`, `SIGTERM`, ... */
    readonly reason: string,
    /** How long the server waits for the terminal message (CANCEL-2); undefined when unknown. */
    readonly deadlineMs: number | undefined,
  ) {
    super(`cancel requested (${reason})`);
  }
}

/** One diagnostic line on standard error; a closed or broken stderr is not our problem (WRAP-5). */
export function note(text: string): void {
  try {
    writeSyncAll(2, `extjob-worker: ${text.replace(/\n/g, " ")}\n`);
  } catch {
    // WRAP-5: nowhere left to say it
  }
}

function writeSyncAll(fd: number, text: string): void {
  const bytes = Buffer.from(text);
  for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
}
