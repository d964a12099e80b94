// One attempt's conversation with the server, on the I/O thread: connect
// (and reconnect, RECONNECT-1), present the token (AUTH-2), write the outbox,
// heartbeat on its own clock (HB-2), take in welcome, ack, cancel and error,
// and give up (spooling the result) when the server stays away once the job
// code has ended (RECONNECT-3, SPOOL-2).

import { connect as netConnect, type Socket } from "node:net";
import { note } from "../errors.js";
import type { Feature } from "../features.js";
import { parseTcp } from "../payload.js";
import type { Clock } from "./clock.js";
import { Envelope, LineSplitter } from "./line.js";
import type { Batch, Outbox } from "./outbox.js";
import { parseServerMessage, type ServerMessage } from "./server-message.js";
import { writeSpool } from "./spool.js";

const RECONNECT_FIRST_MS = 100; // RECONNECT-1: 100 ms doubling ...
const RECONNECT_MAX_MS = 2000; // ... capped at 2000 ms
const RECONNECT_JITTER = 0.2; // 0-20 % added to each wait
const CHUNK_BYTES = 256 * 1024; // how much one socket write carries
const EMPTY = Buffer.from("{}");
const MAX_SERVER_LINE_BYTES = 16 * 1024 * 1024; // LIMIT-3 asks for 1 MiB; longer lines are skipped

/** How the attempt ended for the I/O thread. */
export type Outcome =
  | "delivered" // acknowledged, or written to a server that does not acknowledge
  | "spooled" // the server stayed away; the spool file has it (SPOOL-2)
  | "undelivered" // the server stayed away and there was no spool
  | "unreachable"; // the first connection never came up (RECONNECT-6)

export interface SessionConfig {
  jobId: string;
  jobIdJson: string;
  socketPath: string;
  features: readonly Feature[];
  token: string | undefined;
  heartbeatIntervalMs: number;
  reconnectWindowMs: number;
  spoolPath: string | undefined;
  pid: number;
}

export interface SessionEvents {
  /** started is written: the job code may run (MSG-3). */
  started(): void;
  /** The connection came up or went down. */
  connected(up: boolean): void;
  /** The server asked the job to stop (CANCEL-1). */
  cancel(reason: string, deadlineMs: number): void;
  /** The outbox has room again, or the connection failed (then it drops instead of blocking). */
  space(): void;
  /** The terminal message is settled; the process may exit. */
  settled(outcome: Outcome): void;
}

export class Session {
  private readonly envelope: Envelope;
  private readonly extended: boolean;
  private readonly replay: boolean;
  private readonly ackWaitMs: number; // REPLAY-3; also bounds a connect and the wait for welcome
  private intervalMs: number;
  private socket: Socket | undefined;
  private generation = 0; // which connection the callbacks belong to
  private ready = false; // connected, and welcomed when extended
  private awaitingWelcome = false;
  private acks = false; // this connection acknowledges (REPLAY-2)
  private writing = false;
  private attempts = 0; // connection attempts since the connection went down
  private delayMs = 0;
  private downSinceMs = 0;
  private terminalWrittenAtMs = 0;
  private lastHeartbeatMs = 0;
  private startedWritten = false;
  private terminalTaken = false;
  private isSettled = false;
  /** A connection has failed and none is back yet (REPLAY-6). */
  down = false;
  private readonly timers = { reconnect: undefined, welcome: undefined, ack: undefined, heartbeat: undefined } as Record<
    "reconnect" | "welcome" | "ack" | "heartbeat",
    NodeJS.Timeout | undefined
  >;

  constructor(
    private readonly config: SessionConfig,
    private readonly outbox: Outbox,
    private readonly clock: Clock,
    private readonly events: SessionEvents,
  ) {
    this.envelope = new Envelope(config.jobIdJson);
    this.extended = config.features.includes("auth");
    this.replay = config.features.includes("replay");
    this.intervalMs = config.heartbeatIntervalMs;
    this.ackWaitMs = Math.max(2000, this.intervalMs);
  }

  /** Queue started (LIFE-1) and start talking to the server. */
  start(): void {
    if (this.replay) this.outbox.add("started", Buffer.from("{}"), false); // sequenced: replayed like the rest
    this.downSinceMs = performance.now();
    this.connect();
  }

  /** Whether the job code must wait: connected (or never yet) with a full buffer (REPLAY-6). */
  get backPressure(): boolean {
    return !this.down && this.outbox.full();
  }

  submit(kind: string, body: Buffer): void {
    this.outbox.add(kind, body, this.down);
  }

  /** Write what the outbox holds, one chunk at a time. */
  pump(): void {
    const socket = this.socket;
    if (!this.ready || this.writing || socket === undefined || this.isSettled) return;
    const batch = this.outbox.take(CHUNK_BYTES);
    if (batch === undefined) return;
    const terminal = this.outbox.terminal;
    if (terminal !== undefined && batch.entries.includes(terminal)) {
      this.terminalTaken = true; // nothing may follow it on the wire (LIFE-4), heartbeats included
      this.clear("heartbeat");
    }
    this.writing = true;
    const generation = this.generation;
    socket.write(batch.chunk, (error) => {
      if (generation !== this.generation) return; // that connection is gone and rewound
      this.writing = false;
      if (error) return; // RECONNECT-2: the close that follows reconnects
      this.written(batch);
      this.pump();
    });
  }

  private written(batch: Batch): void {
    this.outbox.written(batch.entries, this.acks);
    for (const entry of batch.entries) {
      if (entry.kind === "started" && !this.startedWritten) {
        this.startedWritten = true;
        this.lastHeartbeatMs = performance.now();
        this.scheduleHeartbeat();
        this.events.started();
      }
    }
    const terminal = this.outbox.terminal;
    if (terminal !== undefined && batch.entries.includes(terminal)) {
      this.terminalWrittenAtMs = performance.now();
      if (!this.acks) {
        this.settle("delivered"); // nothing will acknowledge it (NEG-3, EXIT-3)
        return;
      }
      if (!terminal.removed) {
        this.timers.ack = setTimeout(
          () => this.lost("the terminal message was not acknowledged (REPLAY-3)", true),
          this.ackWaitMs,
        );
      }
    }
    if (this.outbox.delivered) this.settle("delivered");
    else this.events.space();
  }

  // ---- connecting

  private connect(): void {
    if (this.isSettled) return;
    const mayGiveUp = this.outbox.terminal !== undefined || !this.startedWritten;
    if (mayGiveUp && this.attempts > 0 && performance.now() - this.downSinceMs >= this.config.reconnectWindowMs) {
      this.giveUp();
      return;
    }
    this.attempts += 1;
    const generation = ++this.generation;
    const path = this.config.socketPath;
    const socket = path.startsWith("tcp://") ? netConnect(parseTcp(path)) : netConnect({ path });
    this.socket = socket;
    const connectTimer = setTimeout(() => socket.destroy(new Error("connect timed out")), this.ackWaitMs);
    const lines = new LineSplitter(MAX_SERVER_LINE_BYTES, (line) => {
      if (generation !== this.generation) return false;
      this.handle(line);
      return generation === this.generation;
    });
    socket.once("connect", () => {
      clearTimeout(connectTimer);
      if (generation !== this.generation) return;
      if (path.startsWith("tcp://")) socket.setNoDelay(true);
      this.onConnect();
    });
    socket.on("data", (chunk: Buffer) => {
      if (generation === this.generation) lines.feed(chunk);
    });
    socket.on("error", () => {}); // RECONNECT-2: the close that follows says what to do
    socket.on("close", () => {
      clearTimeout(connectTimer);
      if (generation === this.generation) this.lost(this.ready ? "the connection closed" : "", false);
    });
  }

  private onConnect(): void {
    if (!this.extended) {
      this.becomeReady(undefined);
      return;
    }
    this.socket!.write(this.hello()); // AUTH-2: first on every connection, then wait for welcome
    this.awaitingWelcome = true;
    this.timers.welcome = setTimeout(() => this.lost("no welcome from the server (AUTH-2)", false), this.ackWaitMs);
  }

  /** AUTH-2: the line that presents the token; first on every connection and in the spool file. */
  private hello(): Buffer {
    const fields = JSON.stringify({
      token: this.config.token,
      protocolVersion: 1,
      features: this.config.features,
      pid: this.config.pid,
    });
    return this.envelope.line("hello", this.clock.stamp(), 0, Buffer.from(fields));
  }

  private becomeReady(welcome: Extract<ServerMessage, { type: "welcome" }> | undefined): void {
    this.clear("welcome");
    this.awaitingWelcome = false;
    if (welcome !== undefined) {
      this.outbox.resume(welcome.lastSeq); // REPLAY-4
      if (this.outbox.delivered) {
        this.settle("delivered"); // the result was recorded; only its ack was lost
        return;
      }
      this.intervalMs = welcome.heartbeatIntervalMs;
      this.acks = this.replay && welcome.features.includes("replay");
    } else {
      this.outbox.rewind();
      this.acks = false;
    }
    if (!this.replay && !(this.extended && this.startedWritten)) {
      this.outbox.prefaceStarted(); // LIFE-3: a v1 worker introduces itself on every connection
    }
    this.ready = true;
    this.down = false;
    this.delayMs = 0;
    this.events.connected(true);
    this.scheduleHeartbeat();
    this.events.space();
    this.pump();
  }

  // ---- what the server says

  private handle(line: Buffer): void {
    let message: ServerMessage;
    try {
      message = parseServerMessage(line);
    } catch {
      return; // CTRL-6: invalid or unknown lines are ignored
    }
    if (message.jobId !== this.config.jobId || !this.extended) return; // NEG-3: a v1 worker reads, ignores
    switch (message.type) {
      case "welcome":
        if (this.awaitingWelcome) this.becomeReady(message);
        break;
      case "ack":
        if (!this.acks) break;
        this.outbox.ack(message.seq);
        if (this.outbox.delivered) this.settle("delivered");
        else this.events.space();
        break;
      case "cancel":
        if (this.config.features.includes("control")) this.events.cancel(message.reason, message.deadlineMs);
        break;
      case "error":
        note(`server error ${message.code}: ${message.message}`);
        if (message.code === "auth") this.lost("the server refused the token (AUTH-4)", false);
        break;
      case "private":
        break;
    }
  }

  // ---- heartbeats (HB-2)

  private scheduleHeartbeat(): void {
    this.clear("heartbeat");
    if (!this.ready || !this.startedWritten || this.terminalTaken || this.isSettled) return;
    const wait = Math.max(0, this.lastHeartbeatMs + this.intervalMs - performance.now());
    this.timers.heartbeat = setTimeout(() => this.beat(), wait);
  }

  private beat(): void {
    this.timers.heartbeat = undefined;
    if (!this.ready || this.terminalTaken || this.isSettled) return;
    // Never buffered: a heartbeat that cannot be sent is dropped (HB-2).
    this.socket!.write(this.envelope.line("heartbeat", this.clock.stamp(), 0, EMPTY));
    this.lastHeartbeatMs = performance.now();
    this.scheduleHeartbeat();
  }

  // ---- losing the connection

  /** RECONNECT-1: keep everything undelivered, in order, and try again. */
  private lost(reason: string, ackTimeout: boolean): void {
    if (this.isSettled) return;
    const wasReady = this.ready;
    this.generation += 1;
    this.socket?.destroy();
    this.socket = undefined;
    this.ready = false;
    this.awaitingWelcome = false;
    this.writing = false;
    this.clear("welcome");
    this.clear("ack");
    this.clear("heartbeat");
    this.outbox.rewind();
    if (wasReady) {
      // REPLAY-3: a terminal message that waited for its ack in vain does not restart the window
      this.downSinceMs = ackTimeout ? this.terminalWrittenAtMs : performance.now();
      this.attempts = 0;
      this.events.connected(false);
      if (reason) note(`connection lost (${reason}); reconnecting`);
    }
    if (wasReady || this.startedWritten) this.down = true;
    this.events.space();
    this.delayMs = wasReady || !this.delayMs ? RECONNECT_FIRST_MS : Math.min(RECONNECT_MAX_MS, this.delayMs * 2);
    const wait = this.delayMs * (1 + Math.random() * RECONNECT_JITTER);
    this.timers.reconnect = setTimeout(() => this.connect(), wait);
  }

  /** RECONNECT-3: the server stayed away; spool the result if we may (SPOOL-2). */
  private giveUp(): void {
    if (!this.startedWritten) {
      this.settle("unreachable");
      return;
    }
    const spoolPath = this.config.spoolPath;
    if (this.outbox.terminal === undefined || spoolPath === undefined || !this.config.features.includes("spool")) {
      this.settle("undelivered");
      return;
    }
    try {
      writeSpool(spoolPath, [this.hello(), ...this.outbox.undelivered()]);
    } catch (error) {
      note(`cannot write the spool file ${spoolPath}: ${(error as Error).message}`);
      this.settle("undelivered");
      return;
    }
    this.settle("spooled");
  }

  private settle(outcome: Outcome): void {
    if (this.isSettled) return;
    this.isSettled = true;
    for (const name of Object.keys(this.timers) as (keyof typeof this.timers)[]) this.clear(name);
    this.events.settled(outcome);
  }

  private clear(name: keyof typeof this.timers): void {
    const timer = this.timers[name];
    if (timer !== undefined) clearTimeout(timer);
    this.timers[name] = undefined;
  }
}
