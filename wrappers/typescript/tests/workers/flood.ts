// A test worker with a small buffer (REPLAY-6): data.count logs, data.intervalMs
// apart every 10, then a checkpoint and the result.

import { runJob } from "../../src/index.js";

void runJob<{ count: number; intervalMs: number }>(
  async (job) => {
    for (let i = 1; i <= job.data.count; i++) {
      job.log("info", `line ${i}`, { i });
      job.progress((100 * i) / job.data.count);
      if (i % 10 === 0) await new Promise((resolve) => setTimeout(resolve, job.data.intervalMs));
    }
    job.checkpoint({ done: job.data.count });
    return { count: job.data.count };
  },
  { maxBufferedMessages: 50 },
);
