// The web mail page: plain JavaScript over the REST API at /api/v1 (no build step).
//
// Rules: the session is an HttpOnly cookie this script never sees; every request sends the
// session's CSRF token in X-CSRF-Token. Text from messages only ever goes into the page as
// textContent (never innerHTML); a message's HTML (sanitised by the server) is shown only
// in the sandboxed frame (no scripts, no same-origin), loaded from the API's /frame route
// with its own Content-Security-Policy. Remote images stay blocked until "Show images".
"use strict";

const API = "/api/v1";
const PAGE = 50;
const state = {
  csrf: "", user: "", folders: [], folder: "INBOX", next: null, search: null,
  message: null, images: false, compose: null,
};

function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body) {
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
    if (response.status === 401 && path !== "/auth/session" && state.user) showSignIn();
    throw new ApiError(response.status, data);
  }
  return data;
}

function folderPath(name) { return "/folders/" + encodeURIComponent(name); }
function messagePath(folder, uid) { return folderPath(folder) + "/messages/" + uid; }

function status(text) { $("status").textContent = text; }

function failed(error, where) {
  const text = error instanceof ApiError ? error.message : String(error);
  if (where) $(where).textContent = text;
  else status(text);
}

// -- sign in and out -------------------------------------------------------------------

function showSignIn() {
  state.user = "";
  state.csrf = "";
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  $("username").focus();
}

async function showApp(session) {
  state.user = session.user;
  state.csrf = session.csrf_token;
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  $("whoami").textContent = session.user;
  $("password").value = "";
  $("totp").value = "";
  await loadFolders();
  await openFolder("INBOX");
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  const body = { username: $("username").value.trim(), password: $("password").value };
  const code = $("totp").value.trim();
  if (code) body.totp = code;
  try {
    await showApp(await api("POST", "/auth/session", body));
  } catch (error) {
    if (error instanceof ApiError && error.problem.totp_required) {
      $("totp-row").hidden = false;
      $("totp").focus();
    }
    failed(error, "signin-error");
  }
}

async function signOut() {
  try { await api("DELETE", "/auth/session"); } catch (error) { /* gone already */ }
  showSignIn();
}

// -- folders and lists -----------------------------------------------------------------

const ORDER = { "\\Inbox": 0, "\\Drafts": 1, "\\Sent": 2, "\\Junk": 3, "\\Trash": 4, "\\Archive": 5 };

function folderRank(folder) {
  if (folder.name.toUpperCase() === "INBOX") return 0;
  const rank = ORDER[folder.special_use];
  return rank === undefined ? 10 : rank;
}

async function loadFolders() {
  const data = await api("GET", "/folders");
  state.folders = data.folders.slice().sort(
    (a, b) => folderRank(a) - folderRank(b) || a.name.localeCompare(b.name));
  const list = $("folders");
  list.replaceChildren();
  for (const folder of state.folders) {
    const item = el("li", { dataset: { folder: folder.name } },
      el("span", { className: "name" }, folder.name),
      el("span", { className: "count" }, folder.unseen ? String(folder.unseen) : ""));
    if (folder.name === state.folder) item.classList.add("current");
    item.addEventListener("click", () => openFolder(folder.name));
    list.append(item);
  }
}

function junkFolder() {
  return state.folders.find((f) => f.special_use === "\\Junk");
}

async function openFolder(name) {
  state.folder = name;
  state.search = null;
  state.next = null;
  for (const item of $("folders").children) {
    item.classList.toggle("current", item.dataset.folder === name);
  }
  $("messages").replaceChildren();
  $("list-title").textContent = name;
  clearReader();
  await loadPage();
}

async function loadPage() {
  let path = folderPath(state.folder) + "/messages?limit=" + PAGE;
  if (state.next && state.next.before_uid) path += "&before_uid=" + state.next.before_uid;
  try {
    const page = await api("GET", path);
    state.next = page.next;
    for (const summary of page.messages) $("messages").append(listItem(summary));
    $("more-button").hidden = !page.next;
    status(`${page.total} messages in ${page.folder}`);
  } catch (error) { failed(error); }
}

function names(addresses) {
  return (addresses || []).map((a) => a.name ? `${a.name} <${a.address}>` : a.address).join(", ");
}

function shortDate(text) {
  const date = new Date(text || "");
  return isNaN(date) ? "" : date.toLocaleDateString();
}

function listItem(summary) {
  const from = (summary.from || [])[0];
  const item = el("li", { dataset: { uid: String(summary.uid) } },
    el("span", { className: "date" }, shortDate(summary.date || summary.internaldate * 1000)),
    el("span", { className: "from" }, from ? (from.name || from.address) : ""),
    el("span", { className: "subject" }, summary.subject || "(no subject)"));
  if (!summary.flags.includes("\\Seen")) item.classList.add("unseen");
  item.addEventListener("click", () => openMessage(summary.uid));
  return item;
}

async function search(event) {
  event.preventDefault();
  const typed = $("search-q").value.trim();
  if (!typed) { await openFolder(state.folder); return; }
  // Typed text becomes an IMAP SEARCH TEXT key (a quoted string: RFC 9051 §4.3).
  const q = 'TEXT "' + typed.replace(/[\\"]/g, (c) => "\\" + c).replace(/[\r\n]/g, " ") + '"';
  try {
    const found = await api("GET", "/search?folder=" + encodeURIComponent(state.folder) +
      "&limit=" + PAGE + "&q=" + encodeURIComponent(q));
    state.search = typed;
    state.next = null;
    $("list-title").textContent = `${found.total} found for “${typed}” in ${found.folder}`;
    $("messages").replaceChildren(...found.messages.map(listItem));
    $("more-button").hidden = true;
    clearReader();
  } catch (error) { failed(error); }
}

// -- reading ---------------------------------------------------------------------------

function clearReader() {
  state.message = null;
  $("reader-message").hidden = true;
  $("reader-empty").hidden = false;
  $("reader-frame").src = "about:blank";
}

async function openMessage(uid, images) {
  const folder = state.folder;
  try {
    const query = images ? "?images=1" : "";
    const message = await api("GET", messagePath(folder, uid) + query);
    state.message = Object.assign(message, { folder, uid });
    state.images = Boolean(images);
    showMessage(message);
    for (const item of $("messages").children) {
      const current = item.dataset.uid === String(uid);
      item.classList.toggle("current", current);
      if (current) item.classList.remove("unseen");
    }
  } catch (error) { failed(error); }
}

function showMessage(message) {
  $("reader-empty").hidden = true;
  $("reader-message").hidden = false;
  $("reader-subject").textContent = message.subject || "(no subject)";
  $("reader-from").textContent = names(message.from);
  $("reader-to").textContent = names(message.to);
  $("reader-cc").textContent = names(message.cc);
  $("reader-date").textContent = message.date || "";
  const frame = $("reader-frame");
  if (message.html) {
    // The server's sanitised HTML, as a document with its own strict policy (no script,
    // remote images only after "Show images"), in a frame sandboxed without allow-scripts.
    frame.src = API + messagePath(message.folder, message.uid) + "/frame" +
      (state.images ? "?images=1" : "");
    frame.hidden = false;
    $("reader-text").textContent = "";
    $("reader-text").hidden = true;
  } else {
    frame.src = "about:blank";
    frame.hidden = true;
    $("reader-text").hidden = false;
    $("reader-text").textContent = message.text || "";
  }
  $("images-button").hidden = !(message.remote_images_blocked > 0) || state.images;
  const list = $("attachments");
  list.replaceChildren();
  for (const part of message.attachments || []) {
    if (part.disposition !== "attachment" && !part.filename) continue;
    const href = API + messagePath(message.folder, message.uid) + "/attachments/" +
      encodeURIComponent(part.part);
    const label = `${part.filename || "part " + part.part} (${Math.ceil(part.size / 1024)} KiB)`;
    list.append(el("li", {}, el("a", { href, download: part.filename || "" }, label)));
  }
  const junk = junkFolder();
  $("junk-button").hidden = !junk || junk.name === message.folder;
}

async function moveToJunk() {
  const message = state.message;
  if (!message) return;
  try {
    const moved = await api("POST", messagePath(message.folder, message.uid) + "/spam",
      { is_spam: true });
    const item = $("messages").querySelector(`li[data-uid="${message.uid}"]`);
    if (item) item.remove();
    clearReader();
    status(`Moved to ${moved.folder}`);
    await loadFolders();
  } catch (error) { failed(error); }
}

// -- compose ---------------------------------------------------------------------------

function quote(message) {
  const body = message.text || "";
  return "\n\n" + `On ${message.date || ""}, ${names(message.from)} wrote:\n` +
    body.split("\n").map((line) => "> " + line).join("\n");
}

function openCompose(kind) {
  const message = state.message;
  const draft = { kind, forwarded: [] };
  let to = "", subject = "", text = "";
  if (message && kind === "reply") {
    to = names(message.reply_to && message.reply_to.length ? message.reply_to : message.from);
    subject = /^re:/i.test(message.subject || "") ? message.subject : "Re: " + (message.subject || "");
    text = quote(message);
    draft.in_reply_to = message.message_id;
    draft.reply_to_message = { folder: message.folder, uid: message.uid };
  } else if (message && kind === "forward") {
    subject = "Fwd: " + (message.subject || "");
    text = "\n\n---------- Forwarded message ----------\n" +
      `From: ${names(message.from)}\nDate: ${message.date || ""}\n` +
      `Subject: ${message.subject || ""}\nTo: ${names(message.to)}\n\n` + (message.text || "");
    draft.forwarded = (message.attachments || []).filter((p) => p.filename)
      .map((p) => ({ folder: message.folder, uid: message.uid, part: p }));
  }
  state.compose = draft;
  $("compose-title").textContent = kind === "reply" ? "Reply" : kind === "forward" ? "Forward" : "New message";
  $("compose-to").value = to;
  $("compose-cc").value = "";
  $("compose-subject").value = subject;
  $("compose-text").value = text;
  $("compose-files").value = "";
  $("compose-error").textContent = "";
  $("compose-forwarded").replaceChildren(
    ...draft.forwarded.map((f) => el("li", {}, "📎 " + f.part.filename)));
  $("settings").hidden = true;
  $("compose").hidden = false;
  (to ? $("compose-text") : $("compose-to")).focus();
}

function addressList(text) {
  return text.split(/[,;]/).map((s) => s.trim()).filter(Boolean);
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function attachmentsOf(draft) {
  const out = [];
  for (const file of $("compose-files").files) {
    out.push({ filename: file.name, content_type: file.type || "application/octet-stream",
               data_base64: toBase64(await file.arrayBuffer()) });
  }
  for (const item of draft.forwarded) {
    const url = API + messagePath(item.folder, item.uid) + "/attachments/" +
      encodeURIComponent(item.part.part);
    const response = await fetch(url, { credentials: "same-origin", headers: { "X-CSRF-Token": state.csrf } });
    if (!response.ok) throw new Error(`could not read ${item.part.filename}`);
    out.push({ filename: item.part.filename, content_type: item.part.content_type,
               data_base64: toBase64(await response.arrayBuffer()) });
  }
  return out;
}

async function send(event) {
  event.preventDefault();
  const draft = state.compose || { forwarded: [] };
  $("compose-error").textContent = "";
  $("compose-send").disabled = true;
  try {
    const body = {
      to: addressList($("compose-to").value),
      cc: addressList($("compose-cc").value),
      subject: $("compose-subject").value,
      text: $("compose-text").value,
      attachments: await attachmentsOf(draft),
    };
    if (draft.in_reply_to) body.in_reply_to = draft.in_reply_to;
    if (draft.reply_to_message) body.reply_to_message = draft.reply_to_message;
    await api("POST", "/send", body);
    $("compose").hidden = true;
    status("Message sent");
    await loadFolders();
  } catch (error) {
    failed(error, "compose-error");
  } finally {
    $("compose-send").disabled = false;
  }
}

// -- settings --------------------------------------------------------------------------

async function openSettings() {
  $("compose").hidden = true;
  $("settings").hidden = false;
  $("settings-error").textContent = "";
  $("app-password-created").hidden = true;
  $("recovery-codes").replaceChildren();
  await loadSettings();
}

async function loadSettings() {
  try {
    const [me, passwords] = await Promise.all([api("GET", "/me"), api("GET", "/me/app-passwords")]);
    $("totp-state").textContent = me.totp_enabled
      ? "On: signing in asks for a code from your authenticator app."
      : "Off.";
    $("totp-enrol").hidden = me.totp_enabled;
    $("app-passwords").replaceChildren(...passwords.map((p) => el("li", { dataset: { id: p.id } },
      `${p.name} (${p.scopes.join(", ")}) `,
      el("button", { type: "button", onclick: () => revokeAppPassword(p.id) }, "Revoke"))));
  } catch (error) { failed(error, "settings-error"); }
}

async function createAppPassword(event) {
  event.preventDefault();
  try {
    const created = await api("POST", "/me/app-passwords", { name: $("app-password-name").value.trim() });
    const shown = $("app-password-created");
    shown.textContent = `Password for ${created.name} (shown only now): ${created.password}`;
    shown.hidden = false;
    $("app-password-name").value = "";
    await loadSettings();
  } catch (error) { failed(error, "settings-error"); }
}

async function revokeAppPassword(id) {
  try {
    await api("DELETE", "/me/app-passwords/" + encodeURIComponent(id));
    await loadSettings();
  } catch (error) { failed(error, "settings-error"); }
}

async function enrolTotp() {
  try {
    const enrolment = await api("POST", "/me/totp");
    $("totp-secret").textContent = enrolment.secret;
    $("totp-uri").textContent = enrolment.uri;
    $("totp-confirm-form").hidden = false;
    $("totp-code").focus();
  } catch (error) { failed(error, "settings-error"); }
}

async function confirmTotp(event) {
  event.preventDefault();
  try {
    const done = await api("POST", "/me/totp/confirm", { code: $("totp-code").value.trim() });
    $("totp-confirm-form").hidden = true;
    $("recovery-codes").replaceChildren(
      el("li", {}, "Recovery codes (each works once; keep them safe):"),
      ...done.recovery_codes.map((c) => el("li", {}, c)));
    await loadSettings();
  } catch (error) { failed(error, "settings-error"); }
}

// -- start -----------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout-button").addEventListener("click", signOut);
  $("more-button").addEventListener("click", loadPage);
  $("search-form").addEventListener("submit", search);
  $("junk-button").addEventListener("click", moveToJunk);
  $("images-button").addEventListener("click", () => {
    if (state.message) openMessage(state.message.uid, true);
  });
  $("compose-button").addEventListener("click", () => openCompose("new"));
  $("reply-button").addEventListener("click", () => openCompose("reply"));
  $("forward-button").addEventListener("click", () => openCompose("forward"));
  $("compose-form").addEventListener("submit", send);
  $("compose-cancel").addEventListener("click", () => { $("compose").hidden = true; });
  $("settings-button").addEventListener("click", openSettings);
  $("settings-close").addEventListener("click", () => { $("settings").hidden = true; });
  $("app-password-form").addEventListener("submit", createAppPassword);
  $("totp-enrol").addEventListener("click", enrolTotp);
  $("totp-confirm-form").addEventListener("submit", confirmTotp);
}

async function start() {
  wire();
  try {
    await showApp(await api("GET", "/auth/session"));
  } catch (error) {
    showSignIn();
  }
}

document.addEventListener("DOMContentLoaded", start);
