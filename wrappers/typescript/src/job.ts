// What job code sees of its job (WRAP-1): the payload, progress, log,
// checkpoint, complete, fail, and the cancel request (CANCEL-3).

import { inspect } from "node:util";
import { Worker } from "node:worker_threads";
import { encodeJson, encodeObject, EncodingError } from "./encode.js";
import { CancelledError, JobFinishedError, MessageTooLargeError, note, PermanentError } from "./errors.js";
import { type Feature, negotiate } from "./features.js";
import type { Outcome } from "./io/session.js";
import type { ThreadData, ThreadMessage } from "./io/thread.js";
import { type Payload, V1_HEARTBEAT_MS } from "./payload.js";
import { allocateShared, CancelFlag, isConnected, Kind, type KindCode, RingWriter, type SharedBuffers } from "./shared.js";

export const LEVELS = ["debug", "info", "warn", "error"] as const;
/** The level of a log message (MSG-6). */
export type Level = (typeof LEVELS)[number];
/** The `data` of a progress or log message: a JSON object (MSG-4, MSG-6). */
export type Data = Readonly<Record<string, unknown>>;

export type { Outcome };

/** Tuning for tests and unusual jobs; the defaults follow REPLAY-6. */
export interface JobOptions {
  /** Messages the buffer holds before the job code waits (default 10,000). */
  maxBufferedMessages?: number;
  /** Bytes the buffer holds before the job code waits (default 64 MiB). */
  maxBufferedBytes?: number;
  /** Bytes of the ring between the job's thread and the I/O thread (a power of two, default 4 MiB). */
  ringBytes?: number;
}

export interface FailOptions {
  /** The stack to send; by default the error's own (with its causes). */
  stack?: string;
  /** false asks the server not to retry the job (CKPT-4); a {@link PermanentError} implies it. */
  retryable?: boolean;
}

// The envelope of a line at most: {"type":"K","jobId":J,"timestamp":T,"seq":S
// with 16 digits each for T and S (2^53 has 16).
const ENVELOPE_BYTES = '{"type":"","jobId":,"timestamp":,"seq":'.length + 32;

/**
 * One attempt of a job. `T` is the type of its `data`: the server sends
 * whatever JSON the job was enqueued with, so check it if you do not trust
 * the producer.
 *
 * Every method sends at once and returns: messages travel to the server on
 * a thread of their own, which also heartbeats, reconnects and replays, so
 * the job code may block its thread for as long as it likes.
 */
export class Job<T = unknown> {
  /** The extensions in use: those the payload offers and this package implements (NEG-2). */
  readonly features: readonly Feature[];
  /** Resolves once a cancel is requested (CANCEL-3), with the reason; never rejects. */
  readonly whenCancelled: Promise<CancelledError>;

  private readonly buffers: SharedBuffers;
  private readonly ring: RingWriter;
  private readonly cancelFlag: CancelFlag;
  private readonly controller = new AbortController();
  private readonly envelopeBytes: number;
  private readonly thread: Worker;
  private readonly settled: Promise<Outcome>;
  private readonly started: Promise<Outcome | "started">;
  private resolveCancelled!: (reason: CancelledError) => void;
  private terminal: "completed" | "failed" | undefined;
  private checkpointValue: unknown;
  private checkpointSaved: boolean;

  /** Start the attempt: the I/O thread connects and sends started (LIFE-1). Use {@link runJob} unless you need more. */
  constructor(
    readonly payload: Payload,
    options: JobOptions = {},
  ) {
    this.features = negotiate(payload);
    this.checkpointValue = payload.checkpoint;
    this.checkpointSaved = payload.hasCheckpoint;
    const jobIdJson = encodeJson(payload.jobId);
    this.envelopeBytes = ENVELOPE_BYTES + Buffer.byteLength(jobIdJson) + "checkpoint".length;
    this.buffers = allocateShared(options.ringBytes ?? 4 * 1024 * 1024);
    this.cancelFlag = new CancelFlag(this.buffers);
    this.whenCancelled = new Promise((resolve) => (this.resolveCancelled = resolve));
    const data: ThreadData = {
      buffers: this.buffers,
      config: {
        jobId: payload.jobId,
        jobIdJson,
        socketPath: payload.socketPath,
        features: this.features,
        token: payload.token,
        heartbeatIntervalMs: payload.heartbeatIntervalMs ?? V1_HEARTBEAT_MS,
        reconnectWindowMs: payload.reconnectWindowMs,
        spoolPath: payload.spoolPath,
        pid: process.pid, // AUTH-2: the process the server spawned, not the thread
      },
      maxMessages: options.maxBufferedMessages ?? 10_000,
      maxBytes: options.maxBufferedBytes ?? 64 * 1024 * 1024,
    };
    this.thread = new Worker(new URL("./io/thread.js", import.meta.url), {
      workerData: data,
      stdout: false,
      stderr: false,
    });
    this.ring = new RingWriter(this.buffers, () => this.thread.postMessage(0));
    let onStarted!: (value: Outcome | "started") => void;
    let onSettled!: (outcome: Outcome) => void;
    this.started = new Promise((resolve) => (onStarted = resolve));
    this.settled = new Promise((resolve) => (onSettled = resolve));
    this.thread.on("message", (message: ThreadMessage) => {
      if (message.type === "started") onStarted("started");
      else if (message.type === "cancel") this.cancelWith(message.reason, message.deadlineMs);
      else {
        onStarted(message.outcome);
        onSettled(message.outcome);
        this.thread.unref(); // the attempt is over: the I/O thread no longer keeps the process alive
      }
    });
    this.thread.on("error", (error) => note(`the I/O thread failed: ${inspect(error)}`));
    // The I/O thread ends only after it settled, or when it failed: then nothing was delivered.
    this.thread.on("exit", () => {
      onStarted("undelivered");
      onSettled("undelivered");
    });
  }

  /** Wait until started is written, or the first connection failed for the reconnect window (RECONNECT-6). */
  whenStarted(): Promise<Outcome | "started"> {
    return this.started;
  }

  /** Wait until the terminal message is delivered, spooled or given up (EXIT-3). */
  whenSettled(): Promise<Outcome> {
    return this.settled;
  }

  // ---- what the server said

  get id(): string {
    return this.payload.jobId;
  }

  get name(): string {
    return this.payload.name;
  }

  /** The job's input, as enqueued (PAY-2). */
  get data(): T {
    return this.payload.data as T;
  }

  /** This attempt's number, 1 for the first (CKPT-3). */
  get attempt(): number {
    return this.payload.attempt;
  }

  get maxAttempts(): number | undefined {
    return this.payload.maxAttempts;
  }

  /** Whether there is a checkpoint: from an earlier attempt (CKPT-2) or saved by this one. */
  get hasCheckpoint(): boolean {
    return this.checkpointSaved;
  }

  /** The last checkpoint (undefined when there is none). */
  get lastCheckpoint(): unknown {
    return this.checkpointValue;
  }

  /** Whether the connection to the server is up; messages are buffered while it is not. */
  get connected(): boolean {
    return isConnected(this.buffers);
  }

  /** True once complete or fail was called. */
  get finished(): boolean {
    return this.terminal !== undefined;
  }

  /** EXIT-2: 0 after completed, 1 after failed (or with no terminal message). */
  get exitStatus(): number {
    return this.terminal === "completed" ? 0 : 1;
  }

  // ---- reporting

  /** Report `percent` (0-100) done, with an optional message and data (MSG-4). */
  progress(percent: number, message?: string, data?: Data): void {
    if (typeof percent !== "number" || !(percent >= 0 && percent <= 100)) {
      throw new RangeError(`percent must be a number from 0 to 100, not ${String(percent)} (MSG-4)`);
    }
    const extra = encodeObject(data, "progress data");
    let body = `{"percent":${percent}`;
    if (message !== undefined && message !== null) body += `,"message":${encodeJson(String(message))}`;
    if (extra !== undefined) body += `,"data":${extra}`;
    this.send(Kind.progress, "progress", `${body}}`);
  }

  /** Log `message` at `level` with optional data (MSG-6). */
  log(level: Level, message: string, data?: Data): void {
    if (!LEVELS.includes(level)) {
      throw new RangeError(`level must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(level)} (MSG-6)`);
    }
    const extra = encodeObject(data, "log data");
    const body = `{"level":"${level}","message":${encodeJson(String(message))}${extra === undefined ? "" : `,"data":${extra}`}}`;
    this.send(Kind.log, "log", body);
  }

  debug(message: string, data?: Data): void {
    this.log("debug", message, data);
  }

  info(message: string, data?: Data): void {
    this.log("info", message, data);
  }

  warn(message: string, data?: Data): void {
    this.log("warn", message, data);
  }

  error(message: string, data?: Data): void {
    this.log("error", message, data);
  }

  /**
   * Save `data` (any JSON value) as the job's checkpoint (CKPT-1); a later
   * attempt finds it in {@link lastCheckpoint}. Returns whether the server
   * keeps it: without the checkpoint extension it is only kept here.
   */
  checkpoint(data: unknown): boolean {
    const sent = this.features.includes("checkpoint");
    if (sent) this.send(Kind.checkpoint, "checkpoint", `{"data":${encodeJson(data)}}`);
    this.checkpointValue = data;
    this.checkpointSaved = true;
    return sent;
  }

  /**
   * Finish the job with `result` (MSG-7); resolves once the server has it.
   * A result that cannot be encoded, or is too large for one line, fails
   * the job instead (LIMIT-1).
   */
  complete(result?: unknown): Promise<Outcome> {
    this.assertRunning("completed");
    let body: string;
    try {
      body = `{"result":${encodeJson(result)}}`;
    } catch (error) {
      if (!(error instanceof EncodingError)) throw error;
      return this.fail(`result cannot be encoded as JSON: ${error.message}`, { retryable: false });
    }
    const bytes = Buffer.byteLength(body);
    const size = this.envelopeBytes + bytes;
    if (size > this.payload.maxLineBytes) {
      return this.fail(`result too large: ${size} bytes`, { retryable: false });
    }
    this.terminal = "completed";
    this.ring.put(Kind.completed, body, bytes);
    return this.settled;
  }

  /**
   * Fail the job (MSG-8) with `error`'s text and stack; resolves once the
   * server has it. A {@link PermanentError} (or `retryable: false`) asks the
   * server not to retry (CKPT-4).
   */
  fail(error: unknown, options: FailOptions = {}): Promise<Outcome> {
    this.assertRunning("failed");
    const text = errorText(error);
    const stack = options.stack ?? (error instanceof Error ? inspect(error) : undefined);
    const retryable = options.retryable ?? !(error instanceof PermanentError);
    const limit = this.payload.maxLineBytes;
    const build = (errorText: string, stackText: string | undefined) => {
      let body = `{"error":${encodeJson(errorText)}`;
      if (stackText !== undefined) body += `,"stack":${encodeJson(stackText.slice(-Math.floor(limit / 8)))}`;
      return `${body}${retryable ? "" : ',"retryable":false'}}`;
    };
    let body = build(text, stack);
    let bytes = Buffer.byteLength(body);
    if (this.envelopeBytes + bytes > limit) {
      // LIMIT-1: a failed line that would be too long loses its stack and most of its text
      body = build(`${text.slice(0, Math.floor(limit / 16))}... (${text.length} characters in all)`, undefined);
      bytes = Buffer.byteLength(body);
    }
    this.terminal = "failed";
    this.ring.put(Kind.failed, body, bytes);
    return this.settled;
  }

  private send(kind: KindCode, name: string, body: string): void {
    this.assertRunning(name);
    const bytes = Buffer.byteLength(body);
    const size = this.envelopeBytes + bytes;
    if (size > this.payload.maxLineBytes) throw new MessageTooLargeError(name, size, this.payload.maxLineBytes);
    this.ring.put(kind, body, bytes);
  }

  private assertRunning(what: string): void {
    if (this.terminal !== undefined) {
      throw new JobFinishedError(`cannot send ${what}: the job already sent ${this.terminal} (LIFE-4)`);
    }
  }

  // ---- cancel (CANCEL-3)

  /**
   * Whether a cancel was requested (by the server or SIGTERM). Reads shared
   * memory, so it is up to date even while the job code blocks its thread:
   * poll it in synchronous loops. The job code decides how to stop.
   */
  get cancelled(): boolean {
    this.syncCancel();
    return this.controller.signal.aborted;
  }

  /** Aborted when a cancel is requested; its reason is a {@link CancelledError}. */
  get signal(): AbortSignal {
    this.syncCancel();
    return this.controller.signal;
  }

  /** `requested`, `timeout`, `shutdown`, `SIGTERM`, ... or undefined. */
  get cancelReason(): string | undefined {
    return this.cancelFlag.read()?.reason;
  }

  /** How long the server waits for the terminal message after its cancel (CANCEL-2). */
  get cancelDeadlineMs(): number | undefined {
    return this.cancelFlag.read()?.deadlineMs;
  }

  /** Throw the {@link CancelledError} if a cancel was requested. */
  throwIfCancelled(): void {
    if (this.cancelled) throw this.controller.signal.reason;
  }

  /** Request a cancel from this process (what SIGTERM does). */
  requestCancel(reason: string): void {
    this.cancelFlag.request(reason, undefined);
    this.syncCancel();
  }

  private cancelWith(reason: string, deadlineMs: number | undefined): void {
    if (this.controller.signal.aborted) return;
    const error = new CancelledError(reason, deadlineMs);
    this.controller.abort(error);
    this.resolveCancelled(error);
  }

  private syncCancel(): void {
    if (this.controller.signal.aborted) return;
    const request = this.cancelFlag.read();
    if (request !== undefined) this.cancelWith(request.reason, request.deadlineMs);
  }
}

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name || "Error";
  const text = typeof error === "string" ? error : inspect(error);
  return text || "failed";
}
