// The extjob dashboard: jobs with live progress over the SSE stream.
// The token is read once from the page's #token=... fragment (never sent to
// the server in a URL) or typed in, and kept in sessionStorage.
"use strict";

const FINISHED = ["completed", "failed", "cancelled"];
const jobs = new Map();          // id -> job JSON as the API returns it
let token = sessionStorage.getItem("extjob-token") || "";
let selected = null;
let lastEventId = null;

const $ = (selector) => document.querySelector(selector);

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error ? payload.error.message : response.statusText);
  return payload;
}

function row(job) {
  let tr = document.getElementById(`job-${job.id}`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = `job-${job.id}`;
    tr.innerHTML = `<td class="id"></td><td class="name"></td><td class="state"></td>
      <td><div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div></div></div></td>
      <td class="message"></td><td><button class="cancel">Cancel</button></td>`;
    tr.querySelector(".cancel").addEventListener("click", (event) => {
      event.stopPropagation();
      api("POST", `/api/jobs/${job.id}/cancel`).then(update).catch((e) => alert(e.message));
    });
    tr.addEventListener("click", () => select(job.id));
    $("#jobs tbody").prepend(tr);
  }
  return tr;
}

function render(job) {
  const tr = row(job);
  const percent = job.progress.percent ?? 0;
  tr.className = `state-${job.status}` + (job.id === selected ? " selected" : "");
  tr.querySelector(".id").textContent = job.id;
  tr.querySelector(".name").textContent = job.name;
  tr.querySelector(".state").textContent = job.status;
  const bar = tr.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstElementChild.style.width = `${percent}%`;
  tr.querySelector(".message").textContent = job.progress.message ?? "";
  tr.querySelector(".cancel").hidden = FINISHED.includes(job.status);
  if (job.id === selected) renderOutcome(job);
}

// A busy job sends thousands of events a second: draw each row at most once a frame.
const dirty = new Set();
function update(job) {
  // A reply that left the server before the job finished must not undo it.
  const known = jobs.get(job.id);
  if (known && FINISHED.includes(known.status) && !FINISHED.includes(job.status)
      && known.attempt >= job.attempt) return;
  jobs.set(job.id, job);
  if (dirty.size === 0) requestAnimationFrame(() => {
    dirty.forEach((id) => render(jobs.get(id)));
    dirty.clear();
  });
  dirty.add(job.id);
}

function renderOutcome(job) {
  $("#detail-title").textContent = `${job.name} ${job.id}: ${job.status}`;
  const outcome = job.status === "completed" ? JSON.stringify(job.result, null, 2)
    : job.error ? `${job.error}\n${job.stack ?? ""}` : "";
  $("#detail-outcome").textContent = outcome;
}

function appendLog(entry) {
  const li = document.createElement("li");
  li.className = `log-${entry.level}`;
  li.textContent = `[${entry.level}] ${entry.message}` + (entry.data ? ` ${JSON.stringify(entry.data)}` : "");
  $("#detail-logs").append(li);
}

async function select(id) {
  selected = id;
  document.querySelectorAll("#jobs tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.id === `job-${id}`));
  $("#detail").hidden = false;
  $("#detail-logs").replaceChildren();
  renderOutcome(jobs.get(id));
  let after = 0;
  for (;;) {
    const page = await api("GET", `/api/jobs/${id}/logs${after ? `?cursor=${after}` : ""}`);
    if (selected !== id) return;
    page.logs.forEach(appendLog);
    if (page.nextCursor === null) break;
    after = page.nextCursor;
  }
}

async function reload() {
  const page = await api("GET", "/api/jobs?limit=100");
  page.jobs.reverse().forEach(update);
}

// One event of the all-jobs stream.
async function handle(name, data) {
  if (name === "stream.reset") return reload();
  const id = data.jobId;
  if (!id) return;
  let job = jobs.get(id);
  if (!job || !name.startsWith("job.external.")) {
    // A job we have not seen, or a change of state: ask for the whole record.
    job = await api("GET", `/api/jobs/${id}`);
  } else if (name === "job.external.progress") {
    // A replayed message may arrive after the end: never demote a finished job.
    const status = FINISHED.includes(job.status) ? job.status : "running";
    job = { ...job, status, progress: {
      percent: data.percent, message: data.message ?? job.progress.message, data: data.data } };
  }
  if (name === "job.external.log" && id === selected) appendLog(data);
  update(job);
}

// EventSource cannot send an Authorization header: read the stream with
// fetch and parse it here, resuming with Last-Event-ID after a drop.
async function stream() {
  for (;;) {
    try {
      const headers = { "Authorization": `Bearer ${token}` };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch("/api/events", { headers });
      if (response.status === 401) return showLogin();
      $("#connection").textContent = "live";
      $("#connection").classList.add("live");
      if (!lastEventId) await reload();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message", data = "", id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("id: ")) id = line.slice(4);
          }
          if (id) lastEventId = id;
          if (data) await handle(name, JSON.parse(data)).catch(console.error);
        }
      }
    } catch (error) {
      console.warn("event stream dropped", error);
    }
    $("#connection").textContent = "reconnecting";
    $("#connection").classList.remove("live");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function loadDefinitions() {
  const { definitions } = await api("GET", "/api/definitions");
  $("#job-name").replaceChildren(...definitions.map((d) => new Option(d.name, d.name)));
}

function showLogin() {
  $("#login").hidden = false;
  $("#connection").textContent = "token needed";
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token").value;
  sessionStorage.setItem("extjob-token", token);
  $("#login").hidden = true;
  start();
});

$("#enqueue").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#enqueue-error").textContent = "";
  try {
    const data = JSON.parse($("#job-data").value || "{}");
    update(await api("POST", "/api/jobs", { name: $("#job-name").value, data }));
  } catch (error) {
    $("#enqueue-error").textContent = error.message;
  }
});

function start() {
  loadDefinitions().then(stream).catch(showLogin);
}

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  sessionStorage.setItem("extjob-token", token);
  history.replaceState(null, "", location.pathname);
}
if (token) start(); else showLogin();
