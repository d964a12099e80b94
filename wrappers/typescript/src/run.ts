// runJob: a worker process around one handler (WRAP-2, EXIT-2, EXIT-3).

import { note, PayloadError } from "./errors.js";
import { Job, type JobOptions } from "./job.js";
import { type Payload, readPayload } from "./payload.js";

export interface RunOptions extends JobOptions {
  /** The payload, instead of reading standard input and the environment. */
  payload?: Payload;
  /** The environment for ENV-2 (default: process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Treat SIGTERM as a cancel request (CANCEL-3) instead of dying of it (default true). */
  handleSigterm?: boolean;
}

/** Job code: what it returns (or resolves to) completes the job; what it throws fails it. */
export type Handler<T, R> = (job: Job<T>) => R | Promise<R>;

/**
 * Run `handler` as this process's job and exit (WRAP-2).
 *
 * Reads the payload (exit 2 after one line on stderr when it is missing or
 * malformed, PAY-6), connects and sends started, then calls the handler.
 * Its result completes the job, an exception fails it with its text and
 * stack. Exits 0 after completed and 1 after failed (EXIT-2), as soon as the
 * server has the terminal message (EXIT-3). SIGTERM becomes a cancel request
 * (CANCEL-3), and a closed or broken stdout or stderr never kills the
 * process (WRAP-5).
 */
export async function runJob<T = unknown, R = unknown>(handler: Handler<T, R>, options: RunOptions = {}): Promise<never> {
  keepStdioHarmless();
  let payload: Payload;
  try {
    payload = options.payload ?? readPayload(options.env);
  } catch (error) {
    if (!(error instanceof PayloadError)) throw error;
    note(error.message);
    return process.exit(2);
  }
  let job: Job<T> | undefined;
  if (options.handleSigterm ?? true) {
    // Before started can go out: a server may signal as soon as it sees it.
    process.on("SIGTERM", () => job?.requestCancel("SIGTERM"));
  }
  job = new Job<T>(payload, options);
  const running = job;
  // WRAP-2: an exception the handler cannot catch (thrown from a timer or a
  // stray promise) fails the job like one it throws, instead of a bare exit 1.
  const failUncaught = (error: unknown) => {
    if (running.finished) {
      note(`exception after the terminal message: ${String(error)}`);
      return;
    }
    void running.fail(error).then(() => process.exit(running.exitStatus));
  };
  process.on("uncaughtException", failUncaught);
  process.on("unhandledRejection", failUncaught);
  const started = await running.whenStarted();
  if (started !== "started") {
    note(`cannot connect to ${payload.socketPath} within ${payload.reconnectWindowMs} ms (RECONNECT-6)`);
    return process.exit(1);
  }
  try {
    const result = await handler(running);
    if (!running.finished) void running.complete(result);
  } catch (error) {
    if (running.finished) note(`exception after the terminal message: ${String(error)}`);
    else void running.fail(error);
  }
  const outcome = await running.whenSettled();
  if (outcome === "spooled") note(`the server stayed away for ${payload.reconnectWindowMs} ms; result spooled to ${payload.spoolPath}`);
  if (outcome === "undelivered") note(`the server stayed away for ${payload.reconnectWindowMs} ms; result lost`);
  return process.exit(running.exitStatus);
}

/** WRAP-5: job code that prints to a closed or broken stdout or stderr must not take the process down. */
function keepStdioHarmless(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", () => {});
  }
}
