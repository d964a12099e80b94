// The extjob dashboard: counts, a paged and filtered list of jobs, a job page.
// Live over the SSE stream; no framework, no build step.
//
// The list holds one page (PAGE_SIZE jobs, fetched with the API's cursors),
// never all jobs. Rows are keyed by job id: an event changes the cells of its
// row, batched per animation frame; a change of state re-reads the page (at
// most once a second) and the rows are reconciled in place, never rebuilt.
"use strict";

import {
  $, api, applyEvent, auth, el, featureBadges, FINISHED, formatTime, isOlder, perFrame,
  progressBar, query, setProgress, setToken, STATE_EVENTS, STATES, stateCell, stats, throttled,
} from "./shared.js";
import { connect } from "./stream.js";
import { JobPage } from "./job.js";

const PAGE_SIZE = 50;

// -- the list ------------------------------------------------------------------

const list = {
  filter: { status: "", name: "" },
  cursors: [null], // the cursor of each page seen, to go back
  index: 0,
  next: null,
  jobs: new Map(), // id -> job, for the jobs on the page
  rows: new Map(), // id -> {tr, cells}
  touched: new Map(), // id -> time of the last event applied locally
};

function cell(tr, name) { return tr.querySelector(`.${name}`); }

function makeRow(job) {
  stats.rowsCreated += 1;
  const tr = el("tr", { id: `job-${job.id}` },
    el("td", { class: "id" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    el("td", { class: "name" }, job.name),
    el("td", { class: "state" }),
    el("td", { class: "progress" }, progressBar(0)),
    el("td", { class: "message" }),
    el("td", { class: "features" }),
    el("td", { class: "created" }, formatTime(job.createdAt)),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "cancel", "aria-label": `cancel ${job.id}`,
        onclick: () => act("cancel", job.id) }, "Cancel"),
      el("button", { type: "button", class: "retry", "aria-label": `retry ${job.id}`,
        onclick: () => act("retry", job.id) }, "Retry")));
  list.rows.set(job.id, tr);
  return tr;
}

function renderRow(job) {
  const tr = list.rows.get(job.id);
  if (!tr) return;
  tr.dataset.status = job.status;
  const state = cell(tr, "state");
  const shown = `${job.status}${job.stale ? " stale" : ""}`;
  if (state.dataset.shown !== shown) {
    state.dataset.shown = shown;
    state.replaceChildren(...stateCell(job).filter(Boolean));
  }
  setProgress(tr.querySelector("[role=progressbar]"), job.progress.percent);
  const message = job.status === "failed" || (job.status === "pending" && job.error)
    ? job.error ?? "" : job.progress.message ?? "";
  const messageCell = cell(tr, "message");
  if (messageCell.textContent !== message) messageCell.textContent = message;
  const features = JSON.stringify(job.features ?? null);
  const featureCell = cell(tr, "features");
  if (featureCell.dataset.features !== features) {
    featureCell.dataset.features = features;
    featureCell.replaceChildren(...(job.attempt ? featureBadges(job.features) : []));
  }
  tr.querySelector(".cancel").hidden = FINISHED.has(job.status);
  tr.querySelector(".retry").hidden = !(job.status === "failed" || job.status === "cancelled");
}

const renderRows = perFrame((ids) => {
  stats.frames += 1;
  for (const id of ids) {
    const job = list.jobs.get(id);
    if (job) renderRow(job);
  }
});

// Put the page's jobs in place, reusing each job's row.
function reconcile(jobs, fetchStarted) {
  const tbody = $("#jobs tbody");
  const keep = new Set(jobs.map((job) => job.id));
  for (const [id, tr] of list.rows) {
    if (keep.has(id)) continue;
    tr.remove();
    list.rows.delete(id);
    list.jobs.delete(id);
    list.touched.delete(id);
  }
  let before = tbody.firstElementChild;
  for (let job of jobs) {
    const local = list.jobs.get(job.id);
    // An event applied after this page was asked for is newer than the page.
    if (local && ((list.touched.get(job.id) ?? 0) > fetchStarted || isOlder(job, local))) {
      job = { ...job, ...local, features: job.features ?? local.features };
    }
    list.jobs.set(job.id, job);
    const tr = list.rows.get(job.id) || makeRow(job);
    if (tr !== before) tbody.insertBefore(tr, before);
    else before = before.nextElementSibling;
    renderRow(job);
  }
  $("#empty").hidden = jobs.length > 0;
}

async function loadPage() {
  stats.pageLoads += 1;
  const started = performance.now();
  const { status, name } = list.filter;
  const page = await api("GET", "/api/jobs" + query({
    status, name, limit: PAGE_SIZE, cursor: list.cursors[list.index] }));
  reconcile(page.jobs, started);
  list.next = page.nextCursor;
  $("#page-next").disabled = list.next === null;
  $("#page-prev").disabled = $("#page-first").disabled = list.index === 0;
  $("#page-number").textContent = `page ${list.index + 1}`;
}

async function loadCounts() {
  const { counts, total } = await api("GET", "/api/counts" + query({ name: list.filter.name }));
  const nav = $("#counts");
  if (!nav.firstElementChild) {
    const all = el("button", { type: "button", "data-state": "", onclick: () => filterBy("") },
      "all ", el("span", { class: "count" }));
    nav.append(all, ...STATES.map((state) => el("button", {
      type: "button", class: `state-${state}`, "data-state": state, onclick: () => filterBy(state),
    }, `${state} `, el("span", { class: "count" }))));
  }
  for (const button of nav.children) {
    const state = button.dataset.state;
    button.querySelector(".count").textContent = String(state ? counts[state] : total);
    button.setAttribute("aria-pressed", String(state === list.filter.status));
  }
}

const refreshPage = throttled(loadPage, 1000);
const refreshCounts = throttled(loadCounts, 500);

function filterBy(status) {
  $("#filter-status").value = status;
  list.filter.status = status;
  firstPage();
  location.hash = "#/";
}

function firstPage() {
  list.cursors = [null];
  list.index = 0;
  loadPage().catch(report);
  loadCounts().catch(report);
}

async function act(action, id) {
  try {
    const job = await api("POST", `/api/jobs/${encodeURIComponent(id)}/${action}`);
    if (action === "retry") {
      $("#notice").replaceChildren(`${id} retried as `, el("a", { href: `#/jobs/${job.id}` }, job.id));
    }
    refreshPage();
    refreshCounts();
  } catch (error) {
    $("#notice").textContent = `${action} ${id}: ${error.message}`;
    report(error);
  }
}

function report(error) {
  console.warn(error);
  if (error.status === 401) showLogin();
}

// -- events ----------------------------------------------------------------------

let jobPage = null;

function onEvent(name, data) {
  stats.events += 1;
  const id = data.jobId;
  if (!id) return;
  const job = list.jobs.get(id);
  if (job) {
    list.jobs.set(id, applyEvent(job, name, data));
    list.touched.set(id, performance.now());
    renderRows(id);
  }
  if (STATE_EVENTS.has(name)) {
    refreshCounts();
    // A new job enters the first page; a change of state may move a job out of a filter.
    if (job || list.index === 0) refreshPage();
  }
  if (jobPage) jobPage.onEvent(name, data);
}

function onReset() {
  loadPage().catch(report);
  loadCounts().catch(report);
  if (jobPage) jobPage.reload();
}

function setConnection(state) {
  const badge = $("#connection");
  badge.textContent = state;
  badge.classList.toggle("live", state === "live");
}

// -- the enqueue form: JSON checked before it is sent ----------------------------------

function checkData() {
  const area = $("#job-data");
  try {
    JSON.parse(area.value || "null");
    area.removeAttribute("aria-invalid");
    $("#enqueue-error").textContent = "";
    $("#enqueue-submit").disabled = false;
    return true;
  } catch (error) {
    area.setAttribute("aria-invalid", "true");
    $("#enqueue-error").textContent = `data is not JSON: ${error.message}`;
    $("#enqueue-submit").disabled = true;
    return false;
  }
}

async function enqueue(event) {
  event.preventDefault();
  $("#enqueue-done").textContent = "";
  if (!checkData()) return;
  const body = { name: $("#job-name").value, data: JSON.parse($("#job-data").value || "null") };
  const priority = $("#job-priority").value, attempts = $("#job-attempts").value;
  if (priority !== "") body.priority = Number(priority);
  if (attempts !== "") body.maxAttempts = Number(attempts);
  try {
    const job = await api("POST", "/api/jobs", body);
    $("#enqueue-done").replaceChildren("queued ", el("a", { href: `#/jobs/${job.id}` }, job.id));
  } catch (error) {
    const field = error.field ? ` (${error.field})` : "";
    $("#enqueue-error").textContent = `${error.message}${field}`;
    report(error);
  }
}

async function search(event) {
  event.preventDefault();
  const id = $("#search-id").value.trim();
  $("#search-error").textContent = "";
  try {
    const job = await api("GET", `/api/jobs/${encodeURIComponent(id)}`);
    location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
  } catch (error) {
    $("#search-error").textContent = error.status === 404 ? `no job with id ${id}` : error.message;
  }
}

async function loadDefinitions() {
  const names = [];
  let cursor = null;
  do {
    const page = await api("GET", "/api/definitions" + query({ cursor }));
    names.push(...page.definitions.map((d) => d.name));
    cursor = page.nextCursor;
  } while (cursor);
  $("#job-name").replaceChildren(...names.map((n) => new Option(n, n)));
  $("#filter-name").replaceChildren(new Option("any", ""), ...names.map((n) => new Option(n, n)));
  $("#filter-name").value = list.filter.name;
}

// -- views -------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  $("#list-view").hidden = Boolean(match);
  $("#job-view").hidden = !match;
  if (jobPage) { jobPage.close(); jobPage = null; }
  if (match) {
    jobPage = new JobPage(decodeURIComponent(match[1]), report);
    document.title = `extjob: ${jobPage.id}`;
  } else {
    document.title = "extjob";
  }
}

function showLogin() {
  $("#login").hidden = false;
  setConnection("token needed");
  $("#token").focus();
}

let started = false;
function start() {
  if (started) return;
  loadDefinitions().then(() => {
    started = true;
    connect({ onEvent, onReset, onStatus: setConnection, onUnauthorized: () => { started = false; showLogin(); } });
  }).catch((error) => (error.status === 401 ? showLogin() : report(error)));
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("#token").value);
  $("#login").hidden = true;
  start();
});
$("#enqueue").addEventListener("submit", enqueue);
$("#job-data").addEventListener("input", checkData);
$("#search").addEventListener("submit", search);
$("#filter-status").addEventListener("change", (e) => filterBy(e.target.value));
$("#filter-name").addEventListener("change", (e) => { list.filter.name = e.target.value; firstPage(); });
$("#page-next").addEventListener("click", () => {
  if (list.next === null) return;
  list.cursors[list.index + 1] = list.next;
  list.index += 1;
  loadPage().catch(report);
});
$("#page-prev").addEventListener("click", () => {
  if (list.index === 0) return;
  list.index -= 1;
  loadPage().catch(report);
});
$("#page-first").addEventListener("click", firstPage);
window.addEventListener("hashchange", route);

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  setToken(fragment.get("token"));
  history.replaceState(null, "", location.pathname + "#/"); // out of the address bar and history
}
route();
if (auth.token) start(); else showLogin();
