// The live update stream: GET /api/v1/events (Server-Sent Events, the same change notices
// that wake IMAP IDLE). A `folders` event (sent on every connect) replaces the folder list;
// a `folder` event updates that folder's count. Either one for the open folder brings its
// message list up to date without a reload. EventSource reconnects by itself after a
// dropped connection; a refused one (the session ended) sends the page to the sign-in form.
import { $, api, state, API, status, sessionEnded } from "./core.js";
import { refreshList, showFolders, updateFolder } from "./folders.js";

// Milliseconds before a refused stream is tried again while the session is still good.
const RETRY = 10000;
let source = null;
let timer = null;

function indicate(on) {
  const light = $("live");
  light.classList.toggle("on", on);
  light.textContent = on ? "● live" : "○ offline";
  light.title = on ? "New mail and changes show up as they happen" : "Live updates are off";
}

export function startLive() {
  stopLive();
  source = new EventSource(API + "/events");
  source.addEventListener("open", () => indicate(true));
  source.addEventListener("folders", (event) => {
    showFolders(JSON.parse(event.data).folders);
    refreshList();
  });
  source.addEventListener("folder", (event) => {
    const counters = JSON.parse(event.data);
    updateFolder(counters);
    if (counters.folder === state.folder) refreshList();
  });
  source.addEventListener("error", () => {
    indicate(false);
    if (!source || source.readyState !== EventSource.CLOSED) return; // reconnecting
    source = null;
    // Refused (401: the session ended; 429: too many streams): ask which.
    api("GET", "/auth/session").then(() => {
      timer = setTimeout(() => { if (state.user) startLive(); }, RETRY);
    }, () => {
      sessionEnded();
      status("Your session has ended: sign in again.");
    });
  });
}

export function stopLive() {
  if (timer !== null) { clearTimeout(timer); timer = null; }
  if (source) { source.close(); source = null; }
  indicate(false);
}
