/**
 * The worker side of the external job protocol (protocol/SPEC.md of extjob),
 * for Node.js 20+ and Bun, with no runtime dependencies.
 *
 * ```ts
 * import { runJob } from "@extjob/worker";
 *
 * runJob<{ images: string[] }>(async (job) => {
 *   for (const [i, image] of job.data.images.entries()) {
 *     job.throwIfCancelled();
 *     job.progress((100 * i) / job.data.images.length, `resizing ${image}`);
 *   }
 *   return { resized: job.data.images.length };
 * });
 * ```
 *
 * @module
 */

export { encodeJson, EncodingError } from "./encode.js";
export { CancelledError, JobFinishedError, MessageTooLargeError, PayloadError, PermanentError } from "./errors.js";
export { type Feature, IMPLEMENTED_FEATURES, negotiate } from "./features.js";
export { type Data, type FailOptions, Job, type JobOptions, type Level, LEVELS, type Outcome } from "./job.js";
export { parsePayload, type Payload, readPayload } from "./payload.js";
export { type Handler, type RunOptions, runJob } from "./run.js";
