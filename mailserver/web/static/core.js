// Shared by the page's modules: the page state, DOM helpers and the API client.
//
// The session is an HttpOnly cookie this script never sees; every request sends the
// session's CSRF token in X-CSRF-Token. Text from messages only ever goes into the page as
// textContent (never innerHTML).

export const API = "/api/v1";
export const PAGE = 50;
// The API's largest page (GET .../messages?limit=): a refresh re-reads at most this many.
export const MAX_PAGE = 500;

export const state = {
  csrf: "", user: "", folders: [], folder: "INBOX", next: null, search: null,
  message: null, images: false, compose: null,
};

export function $(id) { return document.getElementById(id); }

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

let signedOut = () => {};

/** `handler()` runs when an API call answers 401 while signed in (the session ended). */
export function onSignedOut(handler) { signedOut = handler; }

/** The session is gone (refused by the server): back to the sign-in form. */
export function sessionEnded() { signedOut(); }

export async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "/auth/session" && state.user) sessionEnded();
    throw new ApiError(response.status, data);
  }
  return data;
}

export function folderPath(name) { return "/folders/" + encodeURIComponent(name); }
export function messagePath(folder, uid) { return folderPath(folder) + "/messages/" + uid; }

export function status(text) { $("status").textContent = text; }

export function failed(error, where) {
  const text = error instanceof ApiError ? error.message : String(error);
  if (where) $(where).textContent = text;
  else status(text);
}

export function names(addresses) {
  return (addresses || []).map((a) => a.name ? `${a.name} <${a.address}>` : a.address).join(", ");
}

/** The account's folder with special use `use` ("\\Junk", "\\Drafts", ...), if any. */
export function folderByUse(use) {
  return state.folders.find((f) => f.special_use === use);
}
