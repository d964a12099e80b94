// Test helpers: a real socket peer that plays the server, and worker processes.

import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url)); // build/tests
export const PACKAGE = join(HERE, "..", "..");
export const REPO = join(PACKAGE, "..", "..");
export const FIXTURE = join(PACKAGE, "dist", "fixture.js");
export const TEST_WORKERS = join(HERE, "workers");
export const TOKEN = "t0k3n-0123456789abcdef";
export const ALL_FEATURES = ["auth", "replay", "control", "spool", "checkpoint"];
export const DEADLINE_MS = 20_000; // generous: every wait ends as soon as its condition holds

export interface Vector {
  description: string;
  requirement: string;
  valid: boolean;
  error?: string;
  data?: unknown;
  line?: string;
  lineBase64?: string;
}

export function loadVectors(name: string): Vector[] {
  return (JSON.parse(readFileSync(join(REPO, "schema", "vectors", name), "utf8")) as { tests: Vector[] }).tests;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir().length < 40 ? tmpdir() : "/tmp", "xjts"));
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = DEADLINE_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** One line the peer read: its connection, its receipt time (ms, monotonic), its bytes and object. */
export interface Received {
  conn: number;
  at: number;
  raw: Buffer;
  message: Record<string, unknown>;
}

/**
 * The server side on a real Unix or TCP socket. An extended peer answers
 * hello with welcome and acknowledges sequenced messages, recording each seq
 * once (REPLAY-5); a v1 peer never writes (as the original server).
 */
export class Peer {
  readonly received: Received[] = [];
  readonly recorded: Record<string, unknown>[] = []; // sequenced messages, each seq once
  readonly sockets: Socket[] = [];
  lastSeq = 0;
  acks = true;
  heartbeatIntervalMs = 50;
  private server: Server | undefined;
  port = 0;

  constructor(
    readonly dir: string,
    readonly options: { tcp?: boolean; extended?: boolean } = {},
  ) {}

  get address(): string {
    return this.options.tcp ? `tcp://127.0.0.1:${this.port}` : join(this.dir, "job.sock");
  }

  async start(): Promise<this> {
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve) => {
      if (this.options.tcp) server.listen(this.port, "127.0.0.1", resolve);
      else server.listen(join(this.dir, "job.sock"), resolve);
    });
    const address = server.address();
    if (typeof address === "object" && address !== null) this.port = address.port;
    return this;
  }

  /** Go away: stop listening and close every connection. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.drop();
    if (server) await new Promise((resolve) => server.close(resolve));
    this.sockets.length = 0;
  }

  /** Close the open connections but keep listening. */
  drop(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  send(socket: Socket, message: Record<string, unknown>): void {
    socket.write(`${JSON.stringify({ jobId: "j_1", timestamp: Date.now(), ...message })}\n`);
  }

  messages(type?: string): Record<string, unknown>[] {
    return this.received.map((r) => r.message).filter((m) => type === undefined || m.type === type);
  }

  types(): string[] {
    return this.messages().map((m) => m.type as string);
  }

  waitType(type: string, timeoutMs = DEADLINE_MS): Promise<Record<string, unknown>> {
    return waitFor(`a ${type} message`, () => this.messages(type)[0], timeoutMs);
  }

  private accept(socket: Socket): void {
    const conn = this.sockets.push(socket);
    let buffer = Buffer.alloc(0);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (let end = buffer.indexOf(10); end >= 0; end = buffer.indexOf(10)) {
        const raw = buffer.subarray(0, end);
        buffer = buffer.subarray(end + 1);
        this.take(socket, conn, raw);
      }
    });
  }

  private take(socket: Socket, conn: number, raw: Buffer): void {
    const message = JSON.parse(raw.toString("utf8")) as Record<string, unknown>;
    this.received.push({ conn, at: performance.now(), raw: Buffer.from(raw), message });
    if (!this.options.extended) return;
    if (message.type === "hello") {
      this.send(socket, {
        type: "welcome",
        protocolVersion: 1,
        features: message.features,
        lastSeq: this.lastSeq,
        heartbeatIntervalMs: this.heartbeatIntervalMs,
      });
      return;
    }
    const seq = message.seq;
    if (typeof seq !== "number") return;
    if (seq > this.lastSeq) {
      this.recorded.push(message);
      this.lastSeq = seq;
    }
    if (this.acks) this.send(socket, { type: "ack", seq: this.lastSeq });
  }
}

export function v1Payload(peer: Peer, data: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { jobId: "j_1", name: "fixture", data, socketPath: peer.address, ...extra };
}

export function extendedPayload(peer: Peer, data: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return v1Payload(peer, data, {
    protocolVersion: 1,
    features: ALL_FEATURES,
    token: TOKEN,
    heartbeatIntervalMs: 50,
    heartbeatTimeoutMs: 150,
    reconnectWindowMs: 2000,
    spoolPath: join(peer.dir, "spool.ndjson"),
    attempt: 1,
    maxAttempts: 3,
    ...extra,
  });
}

/** The runtime these tests run on runs the workers too: node under node --test, bun under bun test. */
export const RUNTIME = process.execPath;

/** A worker process with its payload on stdin (a file, as PAY-1 wants), its output captured. */
export class WorkerProcess {
  readonly child: ChildProcess;
  stdout = Buffer.alloc(0);
  stderr = Buffer.alloc(0);
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    payload: unknown,
    options: { script?: string; env?: Record<string, string>; dir?: string; brokenStdio?: boolean; closedStdio?: boolean } = {},
  ) {
    const dir = options.dir ?? tempDir();
    const stdinPath = join(dir, `payload-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(stdinPath, payload === undefined ? "" : typeof payload === "string" ? payload : `${JSON.stringify(payload)}\n`);
    const stdin = openSync(stdinPath, "r");
    const script = options.script ?? FIXTURE;
    // closedStdio: descriptors 1 and 2 closed at the start, so that a socket could land on them (WRAP-5)
    const [command, args] = options.closedStdio
      ? ["bash", ["-c", 'exec 1>&- 2>&-; exec "$0" "$1"', RUNTIME, script]]
      : [RUNTIME, [script]];
    this.child = spawn(command, args, {
      stdio: [stdin, "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "", ...options.env },
    });
    closeSync(stdin);
    if (options.brokenStdio) {
      // WRAP-5: nobody reads stdout or stderr any more; writes to them fail with EPIPE
      this.child.stdout!.destroy();
      this.child.stderr!.destroy();
    }
    this.child.stdout!.on("data", (chunk: Buffer) => (this.stdout = Buffer.concat([this.stdout, chunk])));
    this.child.stderr!.on("data", (chunk: Buffer) => (this.stderr = Buffer.concat([this.stderr, chunk])));
    this.exited = new Promise((resolve) => this.child.on("exit", (code, signal) => resolve({ code, signal })));
  }

  async wait(timeoutMs = DEADLINE_MS): Promise<number | null> {
    const timer = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`the worker did not exit within ${timeoutMs} ms: ${this.stderr}`)), timeoutMs).unref(),
    );
    const { code } = await Promise.race([this.exited, timer]);
    return code;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** The stream rules a worker's lines must follow (section 9), as far as one test can tell. */
export function checkStream(messages: Record<string, unknown>[]): void {
  const terminal = messages.findIndex((m) => m.type === "completed" || m.type === "failed");
  if (terminal >= 0 && messages.slice(terminal + 1).some((m) => m.type !== "hello" && m.seq === undefined)) {
    throw new Error("STREAM-3: a message after the terminal one");
  }
  let last = 0;
  for (const m of messages) {
    if (m.seq !== undefined) continue;
    if ((m.timestamp as number) < last) throw new Error("STREAM-5: timestamps decrease");
    last = m.timestamp as number;
  }
}

/**
 * Peers and workers for one test file; whatever is left of them (a worker
 * still running, a peer still listening, their directories) goes at its end.
 */
export function testbed() {
  const dirs: string[] = [];
  const workers: WorkerProcess[] = [];
  const peers: Peer[] = [];
  after(async () => {
    for (const w of workers) w.kill();
    for (const p of peers) await p.stop();
    for (const dir of dirs) cleanup(dir);
  });
  return {
    dir(): string {
      const dir = tempDir();
      dirs.push(dir);
      return dir;
    },
    peer(options: { tcp?: boolean; extended?: boolean } = {}): Promise<Peer> {
      const p = new Peer(this.dir(), options);
      peers.push(p);
      return p.start();
    },
    worker(payload: unknown, options: ConstructorParameters<typeof WorkerProcess>[1] = {}): WorkerProcess {
      const w = new WorkerProcess(payload, { dir: dirs.at(-1)!, ...options });
      workers.push(w);
      return w;
    },
  };
}
