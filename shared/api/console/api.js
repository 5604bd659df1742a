// The console's only way to the server: the REST API, with the credential the user signed
// in with. The credential (the whole Authorization header value) lives in sessionStorage:
// it is gone when the tab closes, and no server-side session exists.

const KEY = "sluice.authorization";

export function credential() {
  return sessionStorage.getItem(KEY);
}

export function signIn({ token, user, password }) {
  const value = token
    ? `Bearer ${token.trim()}`
    : `Basic ${btoa(unescape(encodeURIComponent(`${user}:${password}`)))}`;
  sessionStorage.setItem(KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An API answer that is not 2xx: its status and the API's error message. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? error.message : `HTTP ${status}`);
    this.status = status;
    this.code = error ? error.code : "http";
  }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const auth = credential();
  if (auth) h.Authorization = auth;
  return h;
}

/** Calls the API (`path` below /api/v1); the parsed JSON answer. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(`/api/v1${path}`, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("sluice:unauthorized"));
    throw new ApiError(response.status, json);
  }
  return json;
}

/** Milliseconds between task reads when the event stream is not available (AWS). */
export const POLL_MS = 2000;
/** A stream that sent nothing for this long is taken as unavailable. */
const FIRST_EVENT_MS = 3000;

/**
 * Follows a run: `onTask(doc)` with its task document now and on each change, until the
 * run ends or `stop()` is called. Uses the server's event stream
 * (`GET /tasks/{id}/events`, read with fetch so the Authorization header goes along);
 * where it is unavailable or ends before the run does (the AWS api function answers one
 * document), it polls the task document every POLL_MS instead.
 * `onMode("stream" | "polling")` tells which is in use.
 */
export function followTask(id, onTask, onMode = () => {}) {
  let stopped = false;
  let ended = false;
  const controller = new AbortController();
  const deliver = (doc) => {
    if (stopped) return;
    onTask(doc);
    if (["success", "failure", "revoked"].includes(doc.state)) ended = true;
  };
  const poll = async () => {
    onMode("polling");
    while (!stopped && !ended) {
      try { deliver(await api(`/tasks/${encodeURIComponent(id)}`)); } catch (e) { if (e.status === 401 || e.status === 404) return; }
      if (ended) return;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  };
  const stream = async () => {
    let got = false;
    const silence = setTimeout(() => { if (!got) controller.abort(); }, FIRST_EVENT_MS);
    try {
      const response = await fetch(`/api/v1/tasks/${encodeURIComponent(id)}/events`, {
        headers: headers({ Accept: "text/event-stream" }), signal: controller.signal,
      });
      if (!response.ok || !response.body) return false;
      onMode("stream");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let streamed = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (!data) continue; // a keep-alive comment
          got = true;
          streamed += 1;
          deliver(JSON.parse(data));
        }
      }
      // One document only, the run still going: this server does not stream.
      return streamed > 1 || ended;
    } catch {
      return false;
    } finally {
      clearTimeout(silence);
    }
  };
  (async () => {
    // A stream that ends after some changes (its ten-minute limit) is reopened.
    while (!stopped && !ended) {
      if (!(await stream())) { if (!stopped && !ended) await poll(); return; }
    }
  })();
  return () => { stopped = true; controller.abort(); };
}
