// The folder list and the message list: paging, search, and the live refresh that brings
// the open folder's list up to date after a change (new mail, flags, moves, expunges).
import { $, el, api, state, PAGE, MAX_PAGE, folderPath, status, failed } from "./core.js";
import { clearReader, openMessage } from "./reader.js";

const ORDER = { "\\Inbox": 0, "\\Drafts": 1, "\\Sent": 2, "\\Junk": 3, "\\Trash": 4, "\\Archive": 5 };

function folderRank(folder) {
  if (folder.name.toUpperCase() === "INBOX") return 0;
  const rank = ORDER[folder.special_use];
  return rank === undefined ? 10 : rank;
}

function folderItem(name) {
  for (const item of $("folders").children) if (item.dataset.folder === name) return item;
  return null;
}

function showCount(item, unseen) {
  item.querySelector(".count").textContent = unseen ? String(unseen) : "";
}

/** Shows `folders` (as GET /folders or the live stream gives them) as the folder list;
 * when the folders are the ones shown, only their counts change. When the open folder is
 * no longer among them, INBOX is opened instead. */
export function showFolders(folders) {
  state.folders = folders.slice().sort(
    (a, b) => folderRank(a) - folderRank(b) || a.name.localeCompare(b.name));
  const items = [...$("folders").children];
  if (items.length === state.folders.length &&
      items.every((item, n) => item.dataset.folder === state.folders[n].name)) {
    items.forEach((item, n) => showCount(item, state.folders[n].unseen));
    return;
  }
  $("folders").replaceChildren(...state.folders.map((folder) => {
    const item = el("li", { dataset: { folder: folder.name } },
      el("span", { className: "name" }, folder.name),
      el("span", { className: "count" }, folder.unseen ? String(folder.unseen) : ""));
    if (folder.name === state.folder) item.classList.add("current");
    item.addEventListener("click", () => openFolder(folder.name));
    return item;
  }));
  if (!state.folders.some((f) => f.name === state.folder)) { // renamed or deleted elsewhere
    openFolder("INBOX");
  }
}

export async function loadFolders() {
  showFolders((await api("GET", "/folders")).folders);
}

/** One folder's new counters (a live `folder` event): its unseen count in the list. */
export function updateFolder(counters) {
  const folder = state.folders.find((f) => f.name === counters.folder);
  if (folder) Object.assign(folder, { exists: counters.exists, unseen: counters.unseen });
  const item = folderItem(counters.folder);
  if (item) showCount(item, counters.unseen);
}

export async function openFolder(name) {
  state.folder = name;
  state.search = null;
  state.next = null;
  state.listVersion = (state.listVersion || 0) + 1;
  for (const item of $("folders").children) {
    item.classList.toggle("current", item.dataset.folder === name);
  }
  $("messages").replaceChildren();
  $("list-title").textContent = name;
  $("search-q").value = "";
  clearReader();
  await loadPage();
}

export async function loadPage() {
  let path = folderPath(state.folder) + "/messages?limit=" + PAGE;
  if (state.next && state.next.before_uid) path += "&before_uid=" + state.next.before_uid;
  const version = state.listVersion;
  try {
    const page = await api("GET", path);
    if (version !== state.listVersion) return;
    state.next = page.next;
    for (const summary of page.messages) $("messages").append(listItem(summary));
    $("more-button").hidden = !page.next;
    status(`${page.total} messages in ${page.folder}`);
  } catch (error) { failed(error); }
}

function shortDate(text) {
  const date = new Date(text || "");
  return isNaN(date) ? "" : date.toLocaleDateString();
}

function markFlags(item, flags) {
  item.classList.toggle("unseen", !flags.includes("\\Seen"));
  item.classList.toggle("flagged", flags.includes("\\Flagged"));
  item.classList.toggle("answered", flags.includes("\\Answered"));
}

function listItem(summary) {
  const from = (summary.from || [])[0];
  const item = el("li", { dataset: { uid: String(summary.uid) } },
    el("span", { className: "date" }, shortDate(summary.date || summary.internaldate * 1000)),
    el("span", { className: "from" }, from ? (from.name || from.address) : ""),
    el("span", { className: "subject" }, summary.subject || "(no subject)"));
  markFlags(item, summary.flags);
  item.addEventListener("click", () => openMessage(summary.uid));
  return item;
}

/** Takes the message `uid` out of the list (it was moved away). */
export function removeItem(uid) {
  const item = $("messages").querySelector(`li[data-uid="${Number(uid)}"]`);
  if (item) item.remove();
}

export async function search(event) {
  event.preventDefault();
  const typed = $("search-q").value.trim();
  if (!typed) { await openFolder(state.folder); return; }
  // Typed text becomes an IMAP SEARCH TEXT key (a quoted string: RFC 9051 §4.3).
  const q = 'TEXT "' + typed.replace(/[\\"]/g, (c) => "\\" + c).replace(/[\r\n]/g, " ") + '"';
  state.listVersion = (state.listVersion || 0) + 1;
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

// -- live refresh ----------------------------------------------------------------------

let refreshing = null;
let again = false;

/** Brings the open folder's list up to date (search results are left alone). Calls made
 * while one runs are folded into one more run after it. */
export function refreshList() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    try {
      do { again = false; await reconcile(); } while (again);
    } catch (error) {
      failed(error);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// The newest messages (as many as are shown, at least a page) read again: new ones are
// inserted in UID order, flags updated in place, those gone from that range removed. Older
// pages already loaded stay, so "Older messages" goes on where it was.
async function reconcile() {
  if (state.search !== null || !state.user) return;
  const folder = state.folder;
  const version = state.listVersion;
  const list = $("messages");
  const limit = Math.min(Math.max(list.children.length, PAGE), MAX_PAGE);
  const page = await api("GET", folderPath(folder) + "/messages?limit=" + limit);
  if (version !== state.listVersion) return;
  const fresh = new Map(page.messages.map((m) => [m.uid, m]));
  const lowest = page.next ? Math.min(...fresh.keys()) : 0;
  for (const item of [...list.children]) {
    const uid = Number(item.dataset.uid);
    if (uid >= lowest && !fresh.has(uid)) {
      item.remove();
      if (state.message && state.message.folder === folder && state.message.uid === uid) {
        clearReader();
      }
    }
  }
  let cursor = list.firstElementChild;
  for (const summary of page.messages) { // newest (highest UID) first, as the list
    while (cursor && Number(cursor.dataset.uid) > summary.uid) cursor = cursor.nextElementSibling;
    if (cursor && Number(cursor.dataset.uid) === summary.uid) {
      markFlags(cursor, summary.flags);
      cursor = cursor.nextElementSibling;
    } else {
      list.insertBefore(listItem(summary), cursor);
    }
  }
  // The count is brought up to date, but a message about something the user did stays.
  if (/^\d+ messages in /.test($("status").textContent)) {
    status(`${page.total} messages in ${page.folder}`);
  }
}
