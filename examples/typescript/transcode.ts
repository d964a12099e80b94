// An example job in TypeScript: "transcodes" a video in segments, one step at
// a time, with @extjob/worker. data: {"steps": 20, "delayMs": 500}.
//
// It checkpoints after every segment, so a retried attempt resumes where the
// last one stopped (CKPT-2), and it stops promptly on a cancel (CANCEL-3).
// Build and run: see README.md beside this file.

import { setTimeout as sleep } from "node:timers/promises";
import { type Job, PermanentError, runJob } from "@extjob/worker";

interface Input {
  steps?: number;
  delayMs?: number;
}

interface Done {
  segment: number;
  frames: number;
}

async function transcode(job: Job<Input>): Promise<Done> {
  const { steps = 20, delayMs = 500 } = job.data ?? {};
  if (!Number.isInteger(steps) || steps < 1) throw new PermanentError(`steps must be a positive integer, not ${steps}`);
  const done = (job.lastCheckpoint as Done | undefined) ?? { segment: 0, frames: 0 };
  if (done.segment > 0) job.info(`resuming after segment ${done.segment}`, { ...done });
  while (done.segment < steps) {
    // The real work would go here (heartbeats go on meanwhile, even if it
    // blocks the thread); sleeping on the job's signal makes a cancel prompt.
    try {
      await sleep(delayMs, undefined, { signal: job.signal });
    } catch {
      throw new Error(`cancelled (${job.cancelReason}) after ${done.segment} of ${steps} segments`);
    }
    done.segment += 1;
    done.frames += 240;
    job.checkpoint(done);
    job.progress((100 * done.segment) / steps, `segment ${done.segment} of ${steps}`);
    if (done.segment % 5 === 0) job.info(`${done.segment} segments written`, { frames: done.frames });
  }
  return done;
}

void runJob(transcode);
