// Assembling worker lines and splitting server lines (FRAME-1).

const COMMA = 0x2c;
const CLOSE = 0x7d;
const NEWLINE = 0x0a;

/**
 * Lays out message lines: the envelope (`type`, `jobId`, `timestamp`, and
 * `seq` when it is not 0), then the fields of `body`, a JSON object's bytes
 * such as `{"percent":50}`, then the newline. The start of the envelope is
 * the same for every line of a kind, so it is encoded once per kind.
 */
export class Envelope {
  private readonly prefixes = new Map<string, Buffer>();

  constructor(private readonly jobIdJson: string) {}

  /** The bytes of one line. */
  size(kind: string, timestamp: number, seq: number, body: Uint8Array): number {
    const stamp = String(timestamp).length;
    const sequence = seq ? ',"seq":'.length + String(seq).length : 0;
    return this.prefix(kind).length + stamp + sequence + (body.length <= 2 ? 2 : body.length + 1);
  }

  /** Write one line into `target` at `at`; returns where it ends. */
  write(target: Buffer, at: number, kind: string, timestamp: number, seq: number, body: Uint8Array): number {
    const prefix = this.prefix(kind);
    at += prefix.copy(target, at);
    at += target.write(seq ? `${timestamp},"seq":${seq}` : String(timestamp), at, "latin1");
    if (body.length <= 2) {
      target[at++] = CLOSE; // "{}": no fields
    } else {
      target[at++] = COMMA;
      target.set(body.subarray(1), at); // the fields and their closing brace
      at += body.length - 1;
    }
    target[at++] = NEWLINE;
    return at;
  }

  line(kind: string, timestamp: number, seq: number, body: Uint8Array): Buffer {
    const line = Buffer.allocUnsafe(this.size(kind, timestamp, seq, body));
    this.write(line, 0, kind, timestamp, seq, body);
    return line;
  }

  private prefix(kind: string): Buffer {
    let prefix = this.prefixes.get(kind);
    if (prefix === undefined) {
      prefix = Buffer.from(`{"type":"${kind}","jobId":${this.jobIdJson},"timestamp":`);
      this.prefixes.set(kind, prefix);
    }
    return prefix;
  }
}

/**
 * Splits a byte stream into lines. A line longer than `maxBytes` is skipped
 * to its end in constant memory (FRAME-4); `\r` before `\n` stays on the line
 * (JSON.parse ignores it as whitespace).
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: Buffer) => boolean,
  ) {}

  /** Feed a chunk; stops early when onLine returns false (the connection is gone). */
  feed(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const end = chunk.indexOf(NEWLINE, start);
      if (end < 0) {
        this.keep(chunk.subarray(start));
        return;
      }
      const piece = chunk.subarray(start, end);
      start = end + 1;
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      this.size = 0;
      if (!this.onLine(line)) return;
    }
  }

  private keep(rest: Buffer): void {
    if (this.skipping || rest.length === 0) return;
    this.size += rest.length;
    if (this.size > this.maxBytes) {
      this.parts = [];
      this.size = 0;
      this.skipping = true;
      return;
    }
    this.parts.push(Buffer.from(rest)); // the chunk's memory may be reused
  }
}
