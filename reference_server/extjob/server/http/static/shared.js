// What both views of the dashboard use: the API, the token, element building,
// per-frame batching, and the rule that an older copy of a job never
// replaces a newer one.
"use strict";

export const STATES = ["pending", "running", "completed", "failed", "cancelled"];
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

export const $ = (selector, root = document) => root.querySelector(selector);

export const auth = { token: sessionStorage.getItem("extjob-token") || "" };

export function setToken(token) {
  auth.token = token;
  sessionStorage.setItem("extjob-token", token);
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// Every error of the API has one shape: {error: {code, message, field?}}.
export async function api(method, path, body) {
  const headers = { "Authorization": `Bearer ${auth.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = null;
  try { payload = await response.json(); } catch { /* not JSON: a proxy's error page */ }
  if (!response.ok) {
    const error = (payload && payload.error) || {};
    throw new ApiError(response.status, error.code || "http_error",
      error.message || response.statusText, error.field);
  }
  return payload;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// el("td", {class: "id"}, "text", child): data only ever goes in as text.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// Calls flush(keys) once per animation frame with the keys marked since the
// last one: a thousand events in a frame cost one render of what they touched.
export function perFrame(flush) {
  const keys = new Set();
  let scheduled = false;
  return (key) => {
    keys.add(key);
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const batch = [...keys];
      keys.clear();
      flush(batch);
    });
  };
}

// At most one run of fn per `ms`; a call during a run or a pause is kept for
// the next one, so the last state is always fetched.
export function throttled(fn, ms) {
  let running = false, again = false, last = 0;
  const run = async () => {
    running = true;
    const wait = last + ms - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    again = false;
    last = Date.now();
    try { await fn(); } catch (error) { console.warn(error); }
    running = false;
    if (again) run();
  };
  return () => { if (running) again = true; else run(); };
}

// A job moves forward only: (attempt, pending < running < pending again after
// a failure < finished). A reply that left the server before an event we
// already applied must not undo it.
function rank(job) {
  if (FINISHED.has(job.status)) return [job.attempt, 3];
  if (job.status === "running") return [job.attempt, 1];
  return [job.attempt, job.attempt === 0 ? 0 : 2];
}

export function isOlder(candidate, current) {
  const [a, b] = [rank(candidate), rank(current)];
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

// The state an event implies, applied to our copy of the job.
export function applyEvent(job, name, data) {
  if (name === "job.stale") return FINISHED.has(job.status) ? job : { ...job, stale: true };
  if (job.stale) job = { ...job, stale: false }; // a message came (SRV-1), or it ended
  switch (name) {
    case "job.external.progress":
      if (FINISHED.has(job.status)) return job; // a late replay never demotes a finished job
      return { ...job, status: "running",
        progress: { percent: data.percent, message: data.message ?? job.progress.message, data: data.data } };
    case "job.external.spawned":
      return FINISHED.has(job.status) ? job : { ...job, status: "running", pid: data.pid };
    case "job.completed":
      return { ...job, status: "completed", result: data.result, finishedAt: Date.now() };
    case "job.failed":
      return data.retryAt
        ? { ...job, status: "pending", error: data.error, stack: data.stack, runAt: data.retryAt }
        : { ...job, status: "failed", error: data.error, stack: data.stack, finishedAt: Date.now() };
    case "job.cancelled":
      return { ...job, status: "cancelled" };
    default:
      return job;
  }
}

// Events after which our copy of a job is fetched again.
export const STATE_EVENTS = new Set(["job.enqueued", "job.external.spawned", "job.completed",
  "job.failed", "job.cancelled", "job.lost", "job.reconnected", "job.stale"]);

export function formatTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60), rest = Math.round(s % 60);
  if (m < 60) return `${m} min ${rest} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// What the worker's hello negotiated (NEG-2), as small badges.
export function featureBadges(features) {
  if (features === null || features === undefined) {
    return [el("span", { class: "feature unknown", title: "the worker has not said hello to this server" }, "?")];
  }
  if (features.length === 0) {
    return [el("span", { class: "feature v1", title: "a v1 worker: no hello, no extensions (NEG-3)" }, "v1")];
  }
  return features.map((f) => el("span", { class: "feature", title: `negotiated: ${f}` }, f));
}

export function statusPill(status) {
  return el("span", { class: `pill state-${status}` }, status);
}

// STALE-1: the worker has been silent for longer than its heartbeat timeout.
export function stateCell(job) {
  const stale = job.stale && !FINISHED.has(job.status);
  return [statusPill(job.status), stale ? el("span", { class: "pill stale",
    title: "no message from the worker for longer than its heartbeat timeout (STALE-1)" }, "stale") : null];
}

export function progressBar(percent) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": 100, "aria-valuenow": value, "aria-label": "progress" }, el("div"));
  bar.firstElementChild.style.width = `${value}%`;
  return bar;
}

export function setProgress(bar, percent) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  if (bar.getAttribute("aria-valuenow") === String(value)) return;
  bar.setAttribute("aria-valuenow", String(value));
  bar.firstElementChild.style.width = `${value}%`;
}

// Counters the browser test reads to check that updates stay keyed and batched.
export const stats = { events: 0, frames: 0, rowsCreated: 0, pageLoads: 0 };
window.extjobStats = stats;
