// The memory the job's thread and the I/O thread share, and the ring that
// carries messages from the one to the other.
//
// Why shared memory: JavaScript job code may block its thread for as long as
// it likes (a synchronous loop, Atomics.wait, a native call). Messages posted
// to a blocked thread wait for it, so everything the I/O thread must tell the
// job code while it blocks (a cancel, the state of the connection) is in
// this memory, and every message the job code sends goes through the ring,
// which the I/O thread drains on its own. One postMessage wakes the I/O
// thread per burst, never one per message.

/** Slots of the control array (Int32). */
export const Slot = {
  /** Bytes written into the ring, ever (mod 2^32); only the job's thread stores it. */
  write: 0,
  /** Bytes read from the ring, ever (mod 2^32); only the I/O thread stores it. */
  read: 1,
  /** 1 while the I/O thread has drained the ring and waits for a wake message. */
  idle: 2,
  /** 1 once a cancel was requested (CANCEL-3). */
  cancel: 3,
  /** The cancel's deadlineMs, -1 when unknown. */
  cancelDeadline: 4,
  /** Length in bytes of the cancel's reason in the reason array. */
  reasonLength: 5,
  /** 1 while the connection is up (and welcomed, for an extended worker). */
  connected: 6,
  /** 1 once the I/O thread has failed: nothing will drain the ring any more. */
  dead: 7,
} as const;
const SLOTS = 8;
const REASON_BYTES = 256;

/** Kinds of the messages the job code sends through the ring. */
export const Kind = { progress: 1, log: 2, checkpoint: 3, completed: 4, failed: 5 } as const;
export type KindCode = (typeof Kind)[keyof typeof Kind];
export const KIND_NAMES = ["", "progress", "log", "checkpoint", "completed", "failed"] as const;

const HEADER_BYTES = 5; // u32 body length (little endian), u8 kind

/** What the job's thread hands the I/O thread when it starts it. */
export interface SharedBuffers {
  control: SharedArrayBuffer;
  reason: SharedArrayBuffer;
  ring: SharedArrayBuffer;
}

export function allocateShared(ringBytes: number): SharedBuffers {
  if (ringBytes & (ringBytes - 1)) throw new RangeError("the ring's size must be a power of two");
  return {
    control: new SharedArrayBuffer(SLOTS * 4),
    reason: new SharedArrayBuffer(REASON_BYTES),
    ring: new SharedArrayBuffer(ringBytes),
  };
}

/** The cancel request as both threads see it. */
export class CancelFlag {
  private readonly control: Int32Array;
  private readonly reason: Uint8Array;

  constructor(buffers: SharedBuffers) {
    this.control = new Int32Array(buffers.control);
    this.reason = new Uint8Array(buffers.reason);
  }

  get requested(): boolean {
    return Atomics.load(this.control, Slot.cancel) === 1;
  }

  /** Record a cancel (the first one wins); true when this call recorded it. */
  request(reason: string, deadlineMs: number | undefined): boolean {
    if (Atomics.load(this.control, Slot.cancel) === 1) return false;
    let bytes = Buffer.from(reason);
    if (bytes.length > REASON_BYTES) bytes = Buffer.from(bytes.subarray(0, REASON_BYTES).toString());
    const length = Math.min(bytes.length, REASON_BYTES);
    this.reason.set(bytes.subarray(0, length));
    Atomics.store(this.control, Slot.reasonLength, length);
    Atomics.store(this.control, Slot.cancelDeadline, deadlineMs ?? -1);
    return Atomics.compareExchange(this.control, Slot.cancel, 0, 1) === 0;
  }

  read(): { reason: string; deadlineMs: number | undefined } | undefined {
    if (!this.requested) return undefined;
    const length = Atomics.load(this.control, Slot.reasonLength);
    const deadline = Atomics.load(this.control, Slot.cancelDeadline);
    const reason = Buffer.from(this.reason.subarray(0, length)).toString() || "requested";
    return { reason, deadlineMs: deadline < 0 ? undefined : deadline };
  }
}

/** The job's side of the ring: one writer, on the job's thread. */
export class RingWriter {
  private readonly control: Int32Array;
  private readonly bytes: Buffer;
  private readonly mask: number;
  private readonly header = Buffer.alloc(HEADER_BYTES);

  /** `wake` is called when the I/O thread waits for news; it posts one message. */
  constructor(
    buffers: SharedBuffers,
    private readonly wake: () => void,
  ) {
    this.control = new Int32Array(buffers.control);
    this.bytes = Buffer.from(buffers.ring);
    this.mask = this.bytes.length - 1;
  }

  /**
   * Put one message; `byteLength` is `Buffer.byteLength(body)`, which the
   * caller has already computed. Blocks while the ring is full (the I/O
   * thread applies back-pressure by not draining it, REPLAY-6).
   */
  put(kind: KindCode, body: string, byteLength: number): void {
    const start = Atomics.load(this.control, Slot.write) >>> 0;
    const at = start & this.mask;
    const size = HEADER_BYTES + byteLength;
    if (size <= this.free() && size <= this.bytes.length - at) {
      // The common case: header and body in one piece, encoded in place, published once.
      this.bytes.writeUInt32LE(byteLength, at);
      this.bytes[at + 4] = kind;
      this.bytes.write(body, at + HEADER_BYTES, byteLength, "utf8");
      this.publish(start + size);
      return;
    }
    this.header.writeUInt32LE(byteLength, 0);
    this.header[4] = kind;
    this.copy(this.header);
    this.copy(Buffer.from(body, "utf8"));
  }

  private free(): number {
    const used = ((Atomics.load(this.control, Slot.write) >>> 0) - (Atomics.load(this.control, Slot.read) >>> 0)) >>> 0;
    return this.bytes.length - used;
  }

  /** Copy `source` in as the reader makes room: a message larger than the ring streams through it. */
  private copy(source: Uint8Array): void {
    let done = 0;
    while (done < source.length) {
      let free = this.free();
      while (free === 0) {
        if (Atomics.load(this.control, Slot.dead) === 1) throw new Error("extjob-worker: the I/O thread has failed");
        const read = Atomics.load(this.control, Slot.read);
        if (this.free() === 0) Atomics.wait(this.control, Slot.read, read, 100);
        free = this.free();
      }
      const at = (Atomics.load(this.control, Slot.write) >>> 0) & this.mask;
      const n = Math.min(free, source.length - done, this.bytes.length - at);
      this.bytes.set(source.subarray(done, done + n), at);
      done += n;
      this.publish((Atomics.load(this.control, Slot.write) >>> 0) + n);
    }
  }

  private publish(position: number): void {
    Atomics.store(this.control, Slot.write, position | 0);
    if (Atomics.exchange(this.control, Slot.idle, 0) === 1) this.wake();
  }
}

/** The I/O thread's side of the ring: takes whole messages out, in order. */
export class RingReader {
  private readonly control: Int32Array;
  private readonly bytes: Buffer;
  private readonly mask: number;
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFilled = 0;
  private body: Buffer | undefined;
  private bodyFilled = 0;
  private kind: KindCode = Kind.progress;

  constructor(buffers: SharedBuffers) {
    this.control = new Int32Array(buffers.control);
    this.bytes = Buffer.from(buffers.ring);
    this.mask = this.bytes.length - 1;
  }

  /**
   * The next whole message, or undefined when the ring holds none (yet).
   * `body` is a copy the caller owns.
   */
  next(): { kind: KindCode; body: Buffer } | undefined {
    if (this.headerFilled < HEADER_BYTES) {
      this.headerFilled += this.take(this.header, this.headerFilled);
      if (this.headerFilled < HEADER_BYTES) return undefined;
      this.kind = this.header[4] as KindCode;
      this.body = Buffer.allocUnsafe(this.header.readUInt32LE(0));
      this.bodyFilled = 0;
    }
    const body = this.body as Buffer;
    this.bodyFilled += this.take(body, this.bodyFilled);
    if (this.bodyFilled < body.length) return undefined;
    this.headerFilled = 0;
    this.body = undefined;
    return { kind: this.kind, body };
  }

  /**
   * Say that the reader waits for news: true when the ring is really empty
   * (a writer that comes later will post a wake), false when a message
   * arrived meanwhile and the caller should read on.
   */
  idle(): boolean {
    Atomics.store(this.control, Slot.idle, 1);
    if (this.available() === 0) return true;
    Atomics.store(this.control, Slot.idle, 0);
    return false;
  }

  private available(): number {
    return ((Atomics.load(this.control, Slot.write) >>> 0) - (Atomics.load(this.control, Slot.read) >>> 0)) >>> 0;
  }

  private take(target: Buffer, offset: number): number {
    const want = target.length - offset;
    const n = Math.min(want, this.available());
    if (n === 0) return 0;
    const read = Atomics.load(this.control, Slot.read) >>> 0;
    const at = read & this.mask;
    const first = Math.min(n, this.bytes.length - at);
    this.bytes.copy(target, offset, at, at + first);
    if (first < n) this.bytes.copy(target, offset + first, 0, n - first);
    Atomics.store(this.control, Slot.read, (read + n) | 0);
    Atomics.notify(this.control, Slot.read);
    return n;
  }
}

/** Whether the connection is up, as the job's thread sees it. */
export function isConnected(buffers: SharedBuffers): boolean {
  return Atomics.load(new Int32Array(buffers.control), Slot.connected) === 1;
}

export function setConnected(control: Int32Array, up: boolean): void {
  Atomics.store(control, Slot.connected, up ? 1 : 0);
}

/** The I/O thread failed: wake a writer that waits for room, so that it throws instead of waiting forever. */
export function setDead(control: Int32Array): void {
  Atomics.store(control, Slot.dead, 1);
  Atomics.notify(control, Slot.read);
}
