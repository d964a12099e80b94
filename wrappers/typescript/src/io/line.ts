// Assembling worker lines and splitting server lines (FRAME-1).

const COMMA = 0x2c;
const CLOSE = 0x7d;
const NEWLINE = 0x0a;

/**
 * One message line with its newline: the envelope (`type`, `jobId`,
 * `timestamp`, and `seq` when it is not 0), then the fields of `body`, a
 * JSON object's bytes such as `{"percent":50}`.
 */
export function buildLine(kind: string, jobIdJson: string, timestamp: number, seq: number, body: Uint8Array): Buffer {
  const head = `{"type":"${kind}","jobId":${jobIdJson},"timestamp":${timestamp}${seq ? `,"seq":${seq}` : ""}`;
  const headBytes = Buffer.byteLength(head);
  const empty = body.length <= 2; // "{}"
  const line = Buffer.allocUnsafe(headBytes + (empty ? 2 : body.length + 1));
  line.write(head, 0, headBytes, "utf8");
  if (empty) {
    line[headBytes] = CLOSE;
  } else {
    line[headBytes] = COMMA;
    line.set(body.subarray(1), headBytes + 1); // the fields and their closing brace
  }
  line[line.length - 1] = NEWLINE;
  return line;
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
