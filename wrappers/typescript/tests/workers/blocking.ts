// A test worker whose job code never yields its thread: it blocks in
// Atomics.wait slices and polls job.cancelled, which must see a cancel that
// arrives meanwhile (CANCEL-3), while heartbeats go on (HB-2).

import { runJob } from "../../src/index.js";

const slice = new Int32Array(new SharedArrayBuffer(4));

void runJob<{ ms: number }>((job) => {
  const until = Date.now() + job.data.ms;
  while (Date.now() < until) {
    if (job.cancelled) {
      return { cancelled: job.cancelReason, aborted: job.signal.aborted, deadlineMs: job.cancelDeadlineMs ?? null };
    }
    Atomics.wait(slice, 0, 0, 20);
  }
  return { cancelled: false };
});
