// A test worker that prints a lot to stdout and stderr, which may be broken
// (WRAP-5): the job must complete all the same.

import { runJob } from "../../src/index.js";

void runJob(async (job) => {
  const line = "x".repeat(1000);
  for (let i = 0; i < 200; i++) {
    console.log(line);
    console.error(line);
    process.stdout.write(`${line}\n`);
    if (i % 50 === 0) {
      job.progress(i / 2, `printed ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  return { printed: 200 };
});
