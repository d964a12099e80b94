// The page of one job: data, outcome, checkpoint, timings, attempts with the
// features each negotiated, the wire view of an attempt, and the live log tail.
"use strict";

import {
  $, api, applyEvent, el, featureBadges, FINISHED, formatDuration, formatTime, isOlder,
  perFrame, progressBar, query, setProgress, STATE_EVENTS, stateCell, statusPill, throttled,
} from "./shared.js";

const LOG_TAIL = 200;      // entries read when the page opens
const LOG_SHOWN = 1000;    // entries kept on the page; older ones leave the DOM

function json(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

function exitText(attempt) {
  const status = attempt.exitStatus;
  if (attempt.exitedAt === null) return attempt.outcome === null ? "running" : "exiting";
  if (status === null) return "unknown";
  return status < 0 ? `signal ${-status}` : `exit ${status}`;
}

function wireText(message) {
  if (typeof message === "string") return message; // the start of a long message
  // The type and seq have columns; t says when (the worker's own timestamp is noise here).
  const { type, jobId, seq, timestamp, ...rest } = message;
  return Object.keys(rest).length ? JSON.stringify(rest) : "";
}

export class JobPage {
  constructor(id, report) {
    this.id = id;
    this.report = report;
    this.closed = false;
    this.job = null;
    this.attempts = [];
    this.wireAttempt = null; // the attempt whose wire is shown; null: the newest
    this.wireLive = false;
    this.lastLog = 0;
    this.render = perFrame(() => this.renderJob());
    this.reloadSoon = throttled(() => this.reload(), 500);
    this.logsSoon = throttled(() => this.loadLogs(), 250);
    this.wireSoon = throttled(() => this.loadWire(), 1000);
    this.ticker = setInterval(() => this.job && !FINISHED.has(this.job.status) && this.renderSummary(), 1000);
    $("#job-title").textContent = id;
    for (const selector of ["#job-summary", "#job-progress", "#job-data-view", "#job-result",
      "#job-checkpoint", "#attempts tbody", "#wire tbody", "#job-logs", "#job-features",
      "#job-status", "#job-action-error", "#log-note"]) {
      $(selector).replaceChildren();
    }
    $("#wire-pane").hidden = true;
    $("#job-cancel").onclick = () => this.act("cancel");
    $("#job-retry").onclick = () => this.act("retry");
    this.tailRead = false;
    this.reload();
    this.logsSoon();
  }

  close() {
    this.closed = true;
    clearInterval(this.ticker);
  }

  async reload() {
    try {
      const job = await api("GET", `/api/jobs/${encodeURIComponent(this.id)}`);
      if (this.closed) return;
      if (!this.job || !isOlder(job, this.job)) this.job = job;
      this.renderJob();
      await this.loadAttempts();
      await this.loadWire();
    } catch (error) {
      if (this.closed) return;
      if (error.status === 404) $("#job-title").textContent = `no job with id ${this.id}`;
      this.report(error);
    }
  }

  onEvent(name, data) {
    if (data.jobId !== this.id || !this.job) return;
    this.job = applyEvent(this.job, name, data);
    this.render();
    if (STATE_EVENTS.has(name)) this.reloadSoon();
    if (name === "job.external.log") this.logsSoon();
    if (this.wireLive) this.wireSoon();
  }

  async act(action) {
    $("#job-action-error").textContent = "";
    try {
      const job = await api("POST", `/api/jobs/${encodeURIComponent(this.id)}/${action}`);
      if (action === "retry") location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      else this.reloadSoon();
    } catch (error) {
      $("#job-action-error").textContent = error.message;
    }
  }

  renderJob() {
    const job = this.job;
    if (!job || this.closed) return;
    $("#job-title").textContent = `${job.name} ${job.id}`;
    const status = $("#job-status");
    const shown = `${job.status}${job.stale ? " stale" : ""}`;
    if (status.dataset.shown !== shown) {
      status.dataset.shown = shown;
      status.replaceChildren(...stateCell(job).filter(Boolean));
    }
    $("#job-cancel").hidden = FINISHED.has(job.status);
    $("#job-retry").hidden = !(job.status === "failed" || job.status === "cancelled");
    const progress = $("#job-progress");
    if (!progress.firstElementChild) {
      progress.append(progressBar(0), el("span", { class: "progress-message" }));
    }
    progress.dataset.status = job.status;
    setProgress(progress.firstElementChild, job.progress.percent);
    progress.lastElementChild.textContent = job.progress.message ?? "";
    this.renderSummary();
    $("#job-data-view").textContent = json(job.data);
    const failed = job.error !== null && job.status !== "completed";
    $("#job-result-title").textContent = failed ? "Error" : "Result";
    $("#job-result").textContent = failed
      ? job.error + (job.stack ? `\n\n${job.stack}` : "")
      : job.status === "completed" ? json(job.result) : "—";
    $("#job-result").classList.toggle("error", failed);
    $("#job-checkpoint").textContent = job.checkpoint === null ? "—" : json(job.checkpoint);
  }

  renderSummary() {
    const job = this.job;
    const last = this.attempts[this.attempts.length - 1];
    const end = job.finishedAt ?? (FINISHED.has(job.status) ? null : Date.now());
    const rows = [
      ["attempt", `${job.attempt} of ${job.maxAttempts}`],
      ["priority", job.priority],
      ["queued", formatTime(job.createdAt)],
      ["run at", job.runAt > job.createdAt + 1000 ? formatTime(job.runAt) : null],
      ["started", formatTime(job.startedAt)],
      ["finished", formatTime(job.finishedAt)],
      ["waited", formatDuration(job.startedAt !== null ? job.startedAt - job.createdAt : null)],
      ["duration", formatDuration(job.startedAt !== null && end !== null ? end - job.startedAt : null)],
      ["server", last ? last.serverId : null],
      ["pid", job.pid],
    ];
    $("#job-summary").replaceChildren(...rows.filter(([, v]) => v !== null && v !== undefined)
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-key": k }, String(v))]));
  }

  async loadAttempts() {
    const attempts = [];
    let cursor = null;
    do {
      const page = await api("GET", `/api/jobs/${encodeURIComponent(this.id)}/attempts` + query({ cursor }));
      attempts.push(...page.attempts);
      cursor = page.nextCursor;
    } while (cursor);
    if (this.closed) return;
    this.attempts = attempts;
    const newest = attempts[attempts.length - 1];
    $("#job-features").replaceChildren(...(newest ? featureBadges(newest.features) : []));
    $("#attempts tbody").replaceChildren(...attempts.map((a) => el("tr", { "data-attempt": a.attempt },
      el("td", {}, String(a.attempt)),
      el("td", { class: "server" }, a.serverId),
      el("td", {}, a.pid ?? "—"),
      el("td", {}, formatTime(a.startedAt)),
      el("td", {}, formatTime(a.endedAt)),
      el("td", {}, formatDuration((a.endedAt ?? Date.now()) - a.startedAt)),
      el("td", { class: "exit" }, exitText(a)),
      el("td", { class: "outcome" }, a.outcome ? statusPill(a.outcome) : "running",
        a.error ? el("span", { class: "error" }, ` ${a.error}`) : null),
      el("td", { class: "features" }, ...featureBadges(a.features)),
      el("td", {}, el("button", { type: "button", class: "show-wire",
        "aria-label": `wire view of attempt ${a.attempt}`,
        onclick: () => { this.wireAttempt = a.attempt; this.loadWire(); } }, "Wire")))));
    this.renderSummary();
    // The worker's exit sends no event: look again until it has exited (EXIT-3 bounds it).
    if (newest && newest.outcome !== null && newest.exitedAt === null) {
      setTimeout(() => !this.closed && this.reloadSoon(), 1000);
    }
  }

  async loadWire() {
    const attempt = this.wireAttempt ?? this.attempts[this.attempts.length - 1]?.attempt;
    if (!attempt) return;
    const messages = [];
    let cursor = null, view;
    do {
      view = await api("GET", `/api/jobs/${encodeURIComponent(this.id)}/attempts/${attempt}/wire` + query({ cursor }));
      messages.push(...view.messages);
      cursor = view.nextCursor;
    } while (cursor);
    if (this.closed) return;
    this.wireLive = view.live;
    $("#wire-pane").hidden = false;
    $("#wire-title").textContent = `Wire: attempt ${attempt}` + (view.live ? " (live)" : "");
    const notes = [];
    if (!view.kept) notes.push("another server runs this attempt: its wire view is stored when the worker exits");
    if (view.omitted) notes.push(`${view.omitted} messages between the first and the newest are not kept`);
    $("#wire-note").textContent = notes.join("; ");
    const rows = [];
    messages.forEach((m, i) => {
      if (view.omitted && i === 8) rows.push(el("tr", { class: "omitted" }, el("td", { colspan: 5 }, `… ${view.omitted} more …`)));
      const body = m.message;
      const type = typeof body === "string" ? "(long)" : body.type;
      rows.push(el("tr", { class: `dir-${m.dir}` },
        el("td", { class: "t" }, `+${(m.t / 1000).toFixed(3)} s`),
        el("td", { class: "dir", "aria-label": m.dir === "in" ? "from the worker" : "to the worker" },
          m.dir === "in" ? "worker →" : "← server"),
        el("td", { class: "type" }, type),
        el("td", {}, typeof body === "string" || body.seq === undefined ? "" : String(body.seq)),
        el("td", { class: "body" }, wireText(body))));
    });
    $("#wire tbody").replaceChildren(...rows);
  }

  // Only ever one at a time (throttled): first the tail, then what follows it.
  async loadLogs() {
    let tail = !this.tailRead;
    this.tailRead = true;
    try {
      const list = $("#job-logs");
      let page;
      do {
        page = await api("GET", `/api/jobs/${encodeURIComponent(this.id)}/logs` + (tail
          ? query({ tail: "true", limit: LOG_TAIL })
          : query({ cursor: this.lastLog || null, limit: 500 })));
        if (this.closed) return;
        const fresh = page.logs.filter((entry) => entry.index > this.lastLog);
        if (fresh.length) this.lastLog = fresh[fresh.length - 1].index;
        list.append(...fresh.map((entry) => el("li", { class: `log-${entry.level}` },
          el("time", {}, formatTime(entry.timestamp)),
          el("span", { class: "level" }, entry.level),
          el("span", { class: `source source-${entry.source}` }, entry.source),
          el("span", { class: "text" }, entry.message + (entry.data === null ? "" : ` ${JSON.stringify(entry.data)}`)))));
        tail = false;
      } while (page.nextCursor);
      while (list.childElementCount > LOG_SHOWN) list.firstElementChild.remove();
      $("#log-note").textContent = this.lastLog > list.childElementCount
        ? `(the newest ${list.childElementCount} of ${this.lastLog})` : "";
    } catch (error) {
      this.report(error);
    }
  }
}
