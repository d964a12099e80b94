// The all-jobs SSE stream, read with fetch (EventSource cannot send an
// Authorization header), resumed with Last-Event-ID after a drop.
//
// onReset() is called whenever what the page shows may have missed events:
// on the first connection, on `stream.reset` (the server no longer has our
// Last-Event-ID: it restarted, or we were away too long), so the views
// re-read over the REST API and no refresh is ever needed.
"use strict";

import { auth } from "./shared.js";

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export function connect({ onEvent, onReset, onStatus, onUnauthorized }) {
  let lastEventId = null;
  let failures = 0;

  async function once() {
    const headers = { "Authorization": `Bearer ${auth.token}`, "Accept": "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    const response = await fetch("/api/events", { headers, cache: "no-store" });
    if (response.status === 401) return "unauthorized";
    if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
    failures = 0;
    onStatus("live");
    // A resumed stream goes on where it was; a new one starts from what the API says now.
    if (!lastEventId) onReset();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "closed";
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(block);
      }
    }
  }

  function dispatch(block) {
    let name = "message", data = "", id = null;
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a comment: the keepalive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
      else if (field === "id") id = value;
    }
    if (id) lastEventId = id;
    if (!data) return;
    let payload;
    try { payload = JSON.parse(data); } catch { return; }
    if (name === "stream.reset") onReset();
    else onEvent(name, payload);
  }

  (async () => {
    for (;;) {
      let outcome;
      try {
        outcome = await once();
      } catch (error) {
        outcome = "dropped";
      }
      if (outcome === "unauthorized") return onUnauthorized();
      onStatus("reconnecting");
      const delay = BACKOFF_MS[Math.min(failures, BACKOFF_MS.length - 1)];
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  })();
}
