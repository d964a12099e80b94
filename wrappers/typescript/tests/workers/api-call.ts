// A test worker: makes the public API call that should send data.message
// (a worker message of the shared vectors), then ends the job.

import { runJob } from "../../src/index.js";

type Message = Record<string, unknown>;

void runJob<{ message: Message }>(async (job) => {
  const m = job.data.message;
  const data = m.data === null ? undefined : (m.data as Record<string, unknown> | undefined);
  const message = m.message === null ? undefined : (m.message as string | undefined);
  switch (m.type) {
    case "progress":
      job.progress(m.percent as number, message, data);
      return null;
    case "log":
      job.log(m.level as "info", message as string, data);
      return null;
    case "checkpoint":
      job.checkpoint(m.data);
      return null;
    case "completed":
      await job.complete(m.result);
      return undefined;
    default:
      await job.fail(m.error, m.retryable === false ? { retryable: false } : {});
      return undefined;
  }
});
