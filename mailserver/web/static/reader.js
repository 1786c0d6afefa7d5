// The reading pane: one message's headers, text or sanitised HTML, attachments, and what
// can be done with it (spam / not-spam report, edit a draft).
//
// A message's HTML (sanitised by the server) is shown only in the sandboxed frame (no
// scripts, no same-origin), loaded from the API's /frame route with its own
// Content-Security-Policy. Remote images stay blocked until "Show images".
import { $, el, api, state, API, messagePath, names, status, failed, folderByUse } from "./core.js";
import { loadFolders, removeItem } from "./folders.js";

export function clearReader() {
  state.message = null;
  $("reader-message").hidden = true;
  $("reader-empty").hidden = false;
  $("reader-frame").src = "about:blank";
}

export async function openMessage(uid, images) {
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
  const junk = folderByUse("\\Junk");
  const drafts = folderByUse("\\Drafts");
  const inJunk = Boolean(junk) && junk.name === message.folder;
  const inDrafts = Boolean(drafts) && drafts.name === message.folder;
  $("junk-button").hidden = !junk || inJunk || inDrafts;
  $("not-spam-button").hidden = !inJunk;
  $("edit-draft-button").hidden = !inDrafts;
  $("reply-button").hidden = inDrafts;
  $("forward-button").hidden = inDrafts;
}

/** The user's judgement through POST .../spam: spam goes to Junk, not spam out of Junk
 * back to INBOX; the server's classifiers learn from it either way. */
export async function report(isSpam) {
  const message = state.message;
  if (!message) return;
  try {
    const moved = await api("POST", messagePath(message.folder, message.uid) + "/spam",
      { is_spam: isSpam });
    if (moved.folder !== message.folder) removeItem(message.uid);
    clearReader();
    status(isSpam ? `Moved to ${moved.folder}` : `Not spam: moved to ${moved.folder}`);
    await loadFolders();
  } catch (error) { failed(error); }
}
