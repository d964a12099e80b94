// A test worker whose error escapes the handler: thrown from a timer while
// the handler waits (WRAP-2 must still fail the job with it).

import { runJob } from "../../src/index.js";

void runJob(async () => {
  setTimeout(() => {
    throw new Error("stray boom");
  }, 10);
  await new Promise(() => {}); // never settles
});
