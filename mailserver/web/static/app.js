// The web mail page: plain JavaScript modules over the REST API at /api/v1 (no build step).
//
// This module signs in and out and wires the page's controls; core.js holds the state and
// the API client, folders.js the folder and message lists, reader.js the reading pane,
// compose.js compose/reply/forward/drafts, settings.js the settings, live.js the live
// update stream.
//
// Rules: the session is an HttpOnly cookie no script sees; every request sends the
// session's CSRF token in X-CSRF-Token. Text from messages only ever goes into the page as
// textContent (never innerHTML); a message's HTML (sanitised by the server) is shown only
// in the sandboxed frame (no scripts, no same-origin), loaded from the API's /frame route
// with its own Content-Security-Policy. Remote images stay blocked until "Show images".
import { $, api, state, ApiError, failed, onSignedOut } from "./core.js";
import { loadFolders, loadPage, openFolder, search } from "./folders.js";
import { openMessage, report } from "./reader.js";
import { openCompose, openDraft, saveDraft, send } from "./compose.js";
import { confirmTotp, createAppPassword, disableTotp, enrolTotp, openSettings } from "./settings.js";
import { startLive, stopLive } from "./live.js";

function showSignIn() {
  stopLive();
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
  $("totp-row").hidden = true;
  await loadFolders();
  await openFolder("INBOX");
  startLive();
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
  stopLive();
  try { await api("DELETE", "/auth/session"); } catch (error) { /* gone already */ }
  showSignIn();
}

function wire() {
  const on = (id, kind, handler) => $(id).addEventListener(kind, handler);
  on("signin-form", "submit", signIn);
  on("signout-button", "click", signOut);
  on("more-button", "click", loadPage);
  on("search-form", "submit", search);
  on("junk-button", "click", () => report(true));
  on("not-spam-button", "click", () => report(false));
  on("images-button", "click", () => { if (state.message) openMessage(state.message.uid, true); });
  on("compose-button", "click", () => openCompose("new"));
  on("reply-button", "click", () => openCompose("reply"));
  on("forward-button", "click", () => openCompose("forward"));
  on("edit-draft-button", "click", openDraft);
  on("compose-form", "submit", send);
  on("compose-save", "click", saveDraft);
  on("compose-cancel", "click", () => { $("compose").hidden = true; });
  on("settings-button", "click", openSettings);
  on("settings-close", "click", () => { $("settings").hidden = true; });
  on("app-password-form", "submit", createAppPassword);
  on("totp-enrol", "click", enrolTotp);
  on("totp-confirm-form", "submit", confirmTotp);
  on("totp-disable-form", "submit", disableTotp);
  onSignedOut(showSignIn);
}

async function start() {
  wire();
  try {
    await showApp(await api("GET", "/auth/session"));
  } catch (error) {
    showSignIn();
  }
}

start();
