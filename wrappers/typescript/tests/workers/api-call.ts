// A test worker: makes, in order, the public API calls that should send
// data.messages (worker messages of the shared vectors), then ends the job.

import { type Job, runJob } from "../../src/index.js";

type Message = Record<string, unknown>;

async function call(job: Job, m: Message): Promise<void> {
  const data = m.data === null ? undefined : (m.data as Record<string, unknown> | undefined);
  const message = m.message === null ? undefined : (m.message as string | undefined);
  switch (m.type) {
    case "progress":
      job.progress(m.percent as number, message, data);
      break;
    case "log":
      job.log(m.level as "info", message as string, data);
      break;
    case "checkpoint":
      job.checkpoint(m.data);
      break;
    case "completed":
      await job.complete(m.result);
      break;
    default:
      await job.fail(m.error, m.retryable === false ? { retryable: false } : {});
  }
}

void runJob<{ messages: Message[] }>(async (job) => {
  for (const m of job.data.messages) await call(job, m);
  return null; // completes the job unless a call above ended it
});
