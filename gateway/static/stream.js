// Notifications as they happen: GET /api/notifications/stream, read with fetch so the token
// goes in a header. When the stream drops, it reconnects with Last-Event-ID, so the shop first
// sends what was missed meanwhile, then live ones.

import { session } from "./api.js";

const FIRST_RETRY_MS = 500;
const LONGEST_RETRY_MS = 10000;

export class NotificationStream {
  constructor({ onNotification, onState, onSessionEnded }) {
    this.onNotification = onNotification;
    this.onState = onState;
    this.onSessionEnded = onSessionEnded;
    this.lastEventId = null;
    this.running = null;
  }

  // Starts following `token`'s notifications after `lastEventId` (null: from now on).
  start(token, lastEventId) {
    this.stop();
    this.lastEventId = lastEventId;
    const run = { token, abort: new AbortController() };
    this.running = run;
    this.loop(run);
  }

  stop() {
    if (this.running) this.running.abort.abort();
    this.running = null;
  }

  async loop(run) {
    let retry = FIRST_RETRY_MS;
    while (this.running === run) {
      let wait = retry;
      try {
        const response = await fetch("/api/notifications/stream", {
          headers: this.headers(run.token), signal: run.abort.signal, cache: "no-store",
        });
        if (response.status === 401) {
          if (session.current?.token === run.token) this.onSessionEnded();
          return;
        }
        if (response.ok) {
          this.onState("live");
          retry = FIRST_RETRY_MS;
          await this.read(response.body, run);
          wait = FIRST_RETRY_MS;
        } else {
          const after = Number(response.headers.get("Retry-After"));
          if (after > 0) wait = after * 1000;
        }
      } catch {
        if (run.abort.signal.aborted) return;
      }
      if (this.running !== run) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, wait + Math.random() * 250));
      retry = Math.min(retry * 2, LONGEST_RETRY_MS);
    }
  }

  headers(token) {
    const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    return headers;
  }

  async read(body, run) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let carriedReturn = false; // a chunk that ended in "\r": its "\n" may start the next
    while (this.running === run) {
      const { value, done } = await reader.read();
      if (done) return;
      let text = (carriedReturn ? "\r" : "") + value;
      carriedReturn = text.endsWith("\r");
      if (carriedReturn) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  dispatch(block) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      const colon = line.indexOf(":");
      if (colon === 0) continue; // a comment: the server's keep-alive
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (type !== "notification" || !data.length) return;
    if (id) this.lastEventId = id;
    this.onNotification(JSON.parse(data.join("\n")));
  }
}
