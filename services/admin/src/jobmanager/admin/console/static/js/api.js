// The admin API as the console uses it: the signed-in key, requests, and their errors.
// The key stays in sessionStorage: it lives as long as the tab and is never sent to the
// server except in the Authorization header of API calls.

const BASE = "/api/v1";
const STORE = "jobmanager.session";
export const RANK = { viewer: 1, operator: 2, admin: 3 };

/** An API answer that is not a success: its status, the problem's detail and, for
 *  invalid input (422), the field errors ({loc, msg, message}: `message` in words). Status 0 means no answer at all. */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = Array.isArray(body && body.errors) ? body.errors : [];
  }
}

/** The signed-in key with its name and role, or null. */
export function session() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return stored && stored.key && stored.role in RANK ? stored : null;
  } catch {
    return null;
  }
}

/** Whether the signed-in role may do what `needed` (viewer, operator, admin) allows. */
export function can(needed) {
  const current = session();
  return Boolean(current) && RANK[current.role] >= RANK[needed];
}

/** Check a key with the API and keep it for this tab; returns {name, role}. */
export async function signIn(key) {
  const who = await request("GET", "/whoami", { key });
  sessionStorage.setItem(STORE, JSON.stringify({ key, name: who.name, role: who.role }));
  return who;
}

export function signOut() {
  sessionStorage.removeItem(STORE);
}

/** Send the operator to the sign-in page, coming back here afterwards. */
export function toSignIn(reason = "") {
  const here = location.pathname + location.search;
  const query = new URLSearchParams({ next: here });
  if (reason) query.set("reason", reason);
  location.assign(`/sign-in?${query}`);
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** One API call; resolves to the JSON body (null for 204), rejects with an ApiError.
 *  A 401 with the stored key means it was revoked: back to the sign-in page. */
export async function request(method, path, { query, body, key } = {}) {
  const headers = { Accept: "application/json" };
  const usedKey = key ?? session()?.key;
  if (usedKey) headers.Authorization = `Bearer ${usedKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + path + queryString(query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { detail: "The admin service does not answer; trying again." });
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.ok) return data;
  if (response.status === 401 && key === undefined) {
    signOut();
    toSignIn("expired");
  }
  throw new ApiError(response.status, data);
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  post: (path, body = {}) => request("POST", path, { body }),
  put: (path, body) => request("PUT", path, { body }),
  patch: (path, body) => request("PATCH", path, { body }),
  delete: (path) => request("DELETE", path),
};
