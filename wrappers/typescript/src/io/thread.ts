// The I/O thread: owns the connection for the whole attempt, so heartbeats,
// acknowledgements, reconnects and the cancel flag keep working whatever the
// job code does on its own thread (HB-2: busy, blocked, sleeping).

import { parentPort, workerData } from "node:worker_threads";
import { note } from "../errors.js";
import { CancelFlag, KIND_NAMES, RingReader, type SharedBuffers, setConnected, setDead } from "../shared.js";
import { Clock } from "./clock.js";
import { Outbox } from "./outbox.js";
import { Session, type SessionConfig } from "./session.js";

/** What the job's thread gives the I/O thread (as workerData). */
export interface ThreadData {
  buffers: SharedBuffers;
  config: SessionConfig;
  maxMessages: number;
  maxBytes: number;
}

/** What the I/O thread tells the job's thread. */
export type ThreadMessage =
  | { type: "started" }
  | { type: "cancel"; reason: string; deadlineMs: number }
  | { type: "settled"; outcome: import("./session.js").Outcome };

function main(port: NonNullable<typeof parentPort>, data: ThreadData): void {
  const control = new Int32Array(data.buffers.control);
  const cancel = new CancelFlag(data.buffers);
  const ring = new RingReader(data.buffers);
  const clock = new Clock();
  const outbox = new Outbox({
    jobIdJson: data.config.jobIdJson,
    replay: data.config.features.includes("replay"),
    clock,
    maxMessages: data.maxMessages,
    maxBytes: data.maxBytes,
  });
  const post = (message: ThreadMessage) => port.postMessage(message);
  let settled = false;

  const session: Session = new Session(data.config, outbox, clock, {
    started: () => post({ type: "started" }),
    connected: (up) => setConnected(control, up),
    cancel: (reason, deadlineMs) => {
      if (cancel.request(reason, deadlineMs)) post({ type: "cancel", reason, deadlineMs });
    },
    space: () => drain(),
    settled: (outcome) => {
      settled = true;
      setConnected(control, false);
      post({ type: "settled", outcome });
    },
  });

  // Take messages out of the ring until it is empty, or the outbox is full
  // while connected: then the ring fills and the job code waits (REPLAY-6).
  let draining = false;
  function drain(): void {
    if (draining || settled) return; // drain -> submit -> space -> drain: once is enough
    draining = true;
    try {
      while (!session.backPressure) {
        const message = ring.next();
        if (message === undefined) {
          if (ring.idle()) break;
          continue;
        }
        session.submit(KIND_NAMES[message.kind], message.body);
      }
    } finally {
      draining = false;
    }
    session.pump();
  }

  port.on("message", () => drain()); // the only message is "the ring has news"
  session.start();
  drain(); // says idle, so that the first message posts a wake
}

if (parentPort === null) {
  note("the I/O thread was started as a program; it is part of @extjob/worker");
} else {
  const data = workerData as ThreadData;
  // A bug here must not leave the job code waiting for room in the ring forever.
  process.on("uncaughtException", (error) => {
    setDead(new Int32Array(data.buffers.control));
    note(`the I/O thread failed: ${error.stack ?? String(error)}`);
    process.exit(1); // ends this thread; the job's thread hears of it as the Worker's exit
  });
  main(parentPort, data);
}
