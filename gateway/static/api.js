// The public API, as the page calls it: one place for the token, the envelope and errors.

const SESSION_KEY = "shop.session";

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.error || ApiError.fallback(status));
    this.status = status;
    this.code = body?.code || null;
    this.details = Array.isArray(body?.details) ? body.details : [];
    this.requestId = body?.requestId || null;
    this.retryAfter = retryAfter ? Number(retryAfter) : null;
  }

  static fallback(status) {
    if (status === 0) return "The shop cannot be reached. Check your connection and try again.";
    if (status === 413) return "That is too large to send.";
    if (status >= 500) return "The shop could not do that just now.";
    return "That did not work.";
  }

  // What to tell the person, in words: the message, and when to try again if the shop said.
  get sentence() {
    const wait = this.retryAfter ? ` Try again in ${plural(this.retryAfter, "second")}.` : "";
    const late = [429, 503, 504].includes(this.status) && !wait ? " Try again shortly." : "";
    return this.message + wait + late;
  }
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// The signed-in session, kept across reloads in this browser (one per browser profile).
export const session = {
  current: load(),
  listeners: new Set(),
  set(value) {
    this.current = value;
    if (value) localStorage.setItem(SESSION_KEY, JSON.stringify(value));
    else localStorage.removeItem(SESSION_KEY);
    for (const listener of this.listeners) listener(value);
  },
};

function load() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

// Called when the shop says the token is no longer good (revoked, expired, signed out elsewhere).
let onSessionEnded = () => {};
export function whenSessionEnds(handler) {
  onSessionEnded = handler;
}

export async function api(method, path, { body, headers = {}, anonymous = false } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const used = anonymous ? null : session.current;
  if (used) sent.Authorization = `Bearer ${used.token}`;
  let response;
  try {
    response = await fetch(path, {
      method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, null, null);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // a body that is not JSON: the status says enough
  }
  if (response.ok) return payload?.data;
  if (response.status === 401 && used && session.current === used) onSessionEnded();
  throw new ApiError(response.status, payload, response.headers.get("Retry-After"));
}

// Every page of a list, for the few lists a page shows whole (addresses, sessions).
export async function everything(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

export const money = (cents) => (cents / 100).toFixed(2);
