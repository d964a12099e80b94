// The TypeScript wrapper's fixture worker: the scenarios of SPEC.md section
// 11 (FIX-2), chosen by the payload's data.scenario, on the public API only.
// The conformance suite runs it: extjob conformance -- node dist/fixture.js

import { type Job, PermanentError, runJob } from "./index.js";

type Params = Record<string, unknown>;

const num = (p: Params, key: string, fallback: number) => (typeof p[key] === "number" ? (p[key] as number) : fallback);
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const scenarios: Record<string, (job: Job<Params>, p: Params) => unknown> = {
  complete(job) {
    job.progress(50, "halfway");
    return { ok: true };
  },
  echo(job, p) {
    const text = typeof p.text === "string" ? p.text : "";
    job.log("info", text);
    job.progress(50, text);
    return p.value ?? null;
  },
  fail(_job, p) {
    throw new Error(typeof p.message === "string" ? p.message : "fixture failure");
  },
  crash(_job, p) {
    process.exit(num(p, "code", 3));
  },
  sleep(_job, p) {
    const ms = num(p, "ms", 1000);
    // A real block of this thread, not a loop that sends: HB-2 must hold anyway.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return { slept: ms };
  },
  progress(job, p) {
    const count = num(p, "count", 100);
    for (let i = 1; i <= count; i++) job.progress((i * 100) / count, `step ${i}`);
    return { count };
  },
  async logs(job, p) {
    const count = num(p, "count", 10);
    const interval = num(p, "intervalMs", 0);
    for (let i = 1; i <= count; i++) {
      if (i > 1 && interval > 0) await delay(interval);
      job.log("info", `line ${i}`, { i });
    }
    return { count };
  },
  levels(job) {
    for (const level of ["debug", "info", "warn", "error"] as const) job.log(level, level, { level });
    return null;
  },
  async cancel(job, p) {
    const timeout = delay(num(p, "ms", 30000)).then(() => "timeout");
    if ((await Promise.race([job.whenCancelled, timeout])) === "timeout") return { cancelled: false };
    job.log("info", "cancel requested");
    throw new Error("cancelled");
  },
  checkpoint(job, p) {
    if (job.hasCheckpoint) return { resumedFrom: job.lastCheckpoint };
    job.checkpoint(p.value ?? { step: 1 });
    throw new Error("checkpoint saved");
  },
  large(_job, p) {
    return "x".repeat(num(p, "bytes", 1048576));
  },
};

void runJob<unknown>((job) => {
  const data = job.data;
  // data may be any JSON value (PAY-2); anything but an object with a scenario is complete (FIX-1).
  const params: Params = typeof data === "object" && data !== null && !Array.isArray(data) ? (data as Params) : {};
  const name = typeof params.scenario === "string" ? params.scenario : "complete";
  const scenario = scenarios[name];
  if (scenario === undefined) throw new PermanentError(`unknown scenario ${JSON.stringify(name)}`);
  return scenario(job as Job<Params>, params);
});
