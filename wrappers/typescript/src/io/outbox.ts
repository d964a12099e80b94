// The messages of one attempt on their way to the server, over as many
// connections as it takes (REPLAY-1..REPLAY-6).
//
// Entries stay here until they are delivered: acknowledged (with replay) or
// written (without). A sequenced entry is numbered, stamped and encoded once,
// when it arrives, because a replay resends it unchanged (REPLAY-4); an
// unsequenced one is stamped when it is written (TIME-1: so that what waited
// out an outage is not older than the started that precedes it).

import type { Clock } from "./clock.js";
import { Envelope } from "./line.js";

const SEQUENCED = new Set(["started", "progress", "log", "checkpoint", "completed", "failed"]);

export interface Entry {
  readonly kind: string;
  readonly body: Buffer;
  readonly seq: number; // 0 when not sequenced
  line: Buffer | undefined; // a sequenced entry's line, built once
  everWritten: boolean; // written on some connection (so the server may have it)
  dropped: boolean; // given way to a later one while disconnected (REPLAY-6)
  removed: boolean; // delivered, or dropped
  readonly counted: boolean; // counts against the buffer's limits
}

export interface Batch {
  readonly chunk: Buffer;
  readonly entries: readonly Entry[];
}

export interface OutboxOptions {
  jobIdJson: string;
  replay: boolean;
  clock: Clock;
  maxMessages: number;
  maxBytes: number;
}

export class Outbox {
  private entries: Entry[] = [];
  private head = 0; // entries[head] is the oldest one not removed yet (or dropped)
  private sent = 0; // entries[sent] is the first not yet taken on this connection
  private count = 0;
  private bytes = 0;
  private seq = 0;
  private preface: Entry | undefined; // a started to send first on this connection (LIFE-3)
  private lastProgress: Entry | undefined;
  private dropNotice: Entry | undefined;
  private droppedLogs = 0;
  /** The terminal message, once the job code has sent it. */
  terminal: Entry | undefined;

  private readonly envelope: Envelope;

  constructor(private readonly options: OutboxOptions) {
    this.envelope = new Envelope(options.jobIdJson);
  }

  /** REPLAY-6: the buffer is full (the job code waits while connected). */
  full(): boolean {
    return this.count >= this.options.maxMessages || this.bytes >= this.options.maxBytes;
  }

  /**
   * Add one message. `down`: a connection has failed and none is back yet;
   * then a progress replaces the latest unsent one, and a full buffer drops
   * its oldest logs (REPLAY-6). Started, checkpoints and the terminal
   * message are never dropped.
   */
  add(kind: string, body: Buffer, down: boolean): void {
    if (down && kind === "progress") body = this.coalesce(body);
    if (down && (kind === "log" || kind === "progress") && this.full()) this.dropOldestLogs();
    const entry = this.make(kind, body);
    this.push(entry);
    if (kind === "progress") this.lastProgress = entry;
    if (kind === "completed" || kind === "failed") this.terminal = entry;
  }

  /** A started sent before everything else on this connection (v1 reconnects, LIFE-3). */
  prefaceStarted(): void {
    this.preface = { ...this.make("started", Buffer.from("{}")), counted: false };
  }

  /**
   * Take what is not yet written on this connection, up to about
   * `maxBytes`, as one chunk. An unsequenced line is stamped now (TIME-1)
   * and laid out straight into the chunk.
   */
  take(maxBytes: number): Batch | undefined {
    const entries: Entry[] = [];
    const stamps: number[] = [];
    let size = 0;
    const add = (entry: Entry) => {
      const stamp = entry.line === undefined ? this.options.clock.stamp() : 0;
      entries.push(entry);
      stamps.push(stamp);
      size += entry.line?.length ?? this.envelope.size(entry.kind, stamp, 0, entry.body);
    };
    if (this.preface) add(this.preface);
    this.preface = undefined;
    while (this.sent < this.entries.length && size < maxBytes) {
      const entry = this.entries[this.sent++]!;
      if (!entry.removed) add(entry);
    }
    if (entries.length === 0) return undefined;
    const chunk = Buffer.allocUnsafe(size);
    let at = 0;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (entry.line !== undefined) at += entry.line.copy(chunk, at);
      else at = this.envelope.write(chunk, at, entry.kind, stamps[i]!, 0, entry.body);
    }
    return { chunk, entries };
  }

  /** These entries reached the kernel; without acknowledgements that is delivery. */
  written(entries: readonly Entry[], acks: boolean): void {
    for (const entry of entries) {
      entry.everWritten = true;
      if (!acks) this.remove(entry);
    }
    this.compact();
  }

  /** REPLAY-2: everything up to `seq` is recorded (acknowledgements are cumulative). */
  ack(seq: number): void {
    for (let i = this.head; i < this.sent; i++) {
      const entry = this.entries[i]!;
      if (entry.seq > seq) break;
      this.remove(entry);
    }
    this.compact();
  }

  /** REPLAY-4: the server has everything up to `lastSeq`; resend the rest from the start. */
  resume(lastSeq: number): void {
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      if (entry.seq === 0 || entry.seq > lastSeq) break;
      this.remove(entry);
    }
    this.rewind();
  }

  /** The connection failed: everything not delivered goes out again on the next one. */
  rewind(): void {
    this.compact();
    this.sent = this.head;
    this.preface = undefined;
  }

  get delivered(): boolean {
    return this.terminal !== undefined && this.terminal.removed;
  }

  /** SPOOL-2: every undelivered message's line, in order. */
  undelivered(): Buffer[] {
    return this.entries.slice(this.head).filter((e) => !e.removed).map((e) => this.lineOf(e));
  }

  private make(kind: string, body: Buffer): Entry {
    const sequenced = this.options.replay && SEQUENCED.has(kind);
    const seq = sequenced ? ++this.seq : 0;
    const line = sequenced ? this.envelope.line(kind, this.options.clock.stamp(), seq, body) : undefined;
    return { kind, body, seq, line, everWritten: false, dropped: false, removed: false, counted: true };
  }

  private lineOf(entry: Entry): Buffer {
    return entry.line ?? this.envelope.line(entry.kind, this.options.clock.stamp(), 0, entry.body);
  }

  private push(entry: Entry): void {
    this.entries.push(entry);
    this.count += 1;
    this.bytes += entry.body.length + (entry.line?.length ?? 0);
  }

  private remove(entry: Entry): void {
    if (entry.removed) return;
    entry.removed = true;
    if (entry.counted) {
      this.count -= 1;
      this.bytes -= entry.body.length + (entry.line?.length ?? 0);
    }
  }

  private unsent(entry: Entry | undefined): entry is Entry {
    return entry !== undefined && !entry.removed && !entry.everWritten;
  }

  /**
   * REPLAY-6: while disconnected keep only the latest unsent progress. A
   * progress without message means the previous message still stands
   * (MSG-4), so the message of the one dropped is carried over.
   */
  private coalesce(body: Buffer): Buffer {
    const previous = this.lastProgress;
    if (!this.unsent(previous)) return body;
    previous.dropped = true;
    this.remove(previous);
    const fields = JSON.parse(body.toString()) as Record<string, unknown>;
    if (fields.message !== undefined) return body;
    const before = JSON.parse(previous.body.toString()) as Record<string, unknown>;
    if (typeof before.message !== "string") return body;
    // JSON.parse then stringify keeps the text as it was: it was encoded by encodeJson already.
    return Buffer.from(JSON.stringify({ ...fields, message: before.message }));
  }

  /**
   * REPLAY-6: make room by dropping the oldest tenth of the buffered logs,
   * and say so in one warn log that replaces the previous notice while that
   * one is unsent.
   */
  private dropOldestLogs(): void {
    const logs = this.entries.slice(this.head).filter((e) => e.kind === "log" && !e.removed && e !== this.dropNotice);
    if (logs.length === 0) return;
    for (const entry of logs.slice(0, Math.max(1, Math.floor(logs.length / 10)))) {
      entry.dropped = true;
      this.remove(entry);
      this.droppedLogs += 1;
    }
    if (this.unsent(this.dropNotice)) this.remove(this.dropNotice);
    const dropped = this.droppedLogs;
    const notice = JSON.stringify({
      level: "warn",
      message: `dropped ${dropped} log messages while disconnected (REPLAY-6)`,
      data: { dropped },
    });
    this.dropNotice = this.make("log", Buffer.from(notice));
    this.push(this.dropNotice);
  }

  /** Forget the removed entries at the front, now and then, in one move. */
  private compact(): void {
    while (this.head < this.entries.length && this.entries[this.head]!.removed) this.head++;
    if (this.sent < this.head) this.sent = this.head;
    if (this.head > 4096 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.sent -= this.head;
      this.head = 0;
    }
  }
}
