// The admin page's one script: on a workflow's page, follow the workflow live over the gateway's SSE feed
// (/workflows/{id}/events, from the last event the page shows). Each event appends a history row and updates
// the status, progress, result and error; the feed ends with the workflow. Without JavaScript the page reads
// the same, as of when it was loaded.
"use strict";
(() => {
  const root = document.getElementById("workflow");
  if (!root || root.dataset.terminal === "true" || typeof EventSource === "undefined") return;
  const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out", "dead_lettered"]);
  const $ = (id) => document.getElementById(id);
  const rows = $("history-rows");
  let last = Number(root.dataset.after) || 0;

  const note = (text) => {
    $("live").textContent = text;
    $("live").hidden = false;
  };
  const badge = (status) => {
    const span = document.createElement("span");
    span.className = "status status-" + status;
    span.textContent = status;
    return span;
  };
  const moment = (iso) => {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? String(iso) : at.toISOString().slice(0, 19).replace("T", " ");
  };
  const shorten = (text) => (text.length > 240 ? text.slice(0, 239) + "\u2026" : text);
  // One line of JSON, keys sorted, spaced as the page's own rows are (Python's json.dumps).
  const line = (value) => {
    if (Array.isArray(value)) return "[" + value.map(line).join(", ") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ": " + line(value[k])).join(", ") + "}";
    }
    return JSON.stringify(value);
  };
  const sorted = (value) =>
    Array.isArray(value)
      ? value.map(sorted)
      : value && typeof value === "object"
        ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]))
        : value;

  function append(id, event) {
    const row = rows.insertRow();
    row.className = "arrived";
    row.insertCell().textContent = String(id);
    row.cells[0].className = "num";
    row.insertCell().textContent = moment(event.at);
    row.cells[1].className = "when";
    row.insertCell().textContent = event.kind;
    const status = row.insertCell();
    if (event.status) status.append(badge(event.status));
    const detail = row.insertCell();
    detail.className = "detail";
    if (event.note) {
      const span = document.createElement("span");
      span.className = "note";
      span.textContent = event.note;
      detail.append(span, " ");
    }
    const data = event.data && Object.keys(event.data).length ? line(event.data) : "";
    const code = document.createElement("code");
    code.textContent = shorten(data);
    detail.append(code);
  }

  function progress(data) {
    if (typeof data.progress !== "number") return;
    const bar = $("progress-bar");
    const figures = typeof data.total === "number" ? `${data.progress} / ${data.total}` : `${data.progress}`;
    $("progress-text").textContent = data.message ? `${figures} \u00b7 ${data.message}` : figures;
    if (typeof data.total === "number" && data.total > 0) {
      bar.max = data.total;
      bar.value = data.progress;
      bar.hidden = false;
    }
  }

  function show(box, pre, value) {
    $(pre).textContent = JSON.stringify(sorted(value), null, 2);
    $(box).hidden = false;
  }

  function ended(status) {
    source.close();
    $("following").hidden = true;
    for (const form of document.querySelectorAll("form.while-open")) form.hidden = true;
    note(`The workflow has ended: ${status}. Reload the page to see what may be done with it now.`);
  }

  function receive(message) {
    const id = Number(message.lastEventId);
    if (!(id > last)) return; // replayed after a reconnection: shown already
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    last = id;
    append(id, event);
    const data = event.data || {};
    if (event.status) {
      $("status").className = "status status-" + event.status;
      $("status").textContent = event.status;
      $("updated").textContent = moment(event.at) + " UTC";
    }
    if (event.kind === "progress") progress(data);
    if (event.kind === "input_required") note("The workflow asks a question: reload the page to see it.");
    if (event.kind === "completed" && data.result !== undefined) show("result-box", "result", data.result);
    if (TERMINAL.has(event.status) && event.status !== "completed") {
      show("error-box", "error", data.error || { code: data.code, message: data.message });
    }
    if (TERMINAL.has(event.status)) ended(event.status);
  }

  const source = new EventSource(`${root.dataset.feed}?after=${encodeURIComponent(String(last))}`);
  for (const kind of (root.dataset.kinds || "").split(" ")) if (kind) source.addEventListener(kind, receive);
  source.addEventListener("message", receive);
  source.addEventListener("open", () => {
    $("following").hidden = false;
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      $("following").hidden = true;
      note("Live updates stopped: reload the page to see the latest.");
    }
  });
})();
