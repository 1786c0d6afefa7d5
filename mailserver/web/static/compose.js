// Compose, reply, forward and drafts.
//
// A compose session (state.compose) remembers what the API needs besides the form: the
// attachments carried over from another stored message (a forwarded message's, or the
// reopened draft's), the In-Reply-To/References of a reply, and the UID of the draft it is
// saved as. "Save draft" stores it in Drafts (POST /drafts, then PUT /drafts/{uid}, which
// gives the new version a new UID); sending with draft_uid drops the draft.
import { $, el, api, state, API, messagePath, names, status, failed } from "./core.js";
import { loadFolders } from "./folders.js";

function quote(message) {
  const body = message.text || "";
  return "\n\n" + `On ${message.date || ""}, ${names(message.from)} wrote:\n` +
    body.split("\n").map((line) => "> " + line).join("\n");
}

function carriedFrom(message) {
  return (message.attachments || []).filter((p) => p.filename)
    .map((p) => ({ folder: message.folder, uid: message.uid, part: p }));
}

function header(message, name) {
  const found = (message.headers || []).find((h) => h.name.toLowerCase() === name);
  return found ? found.value.replace(/\s+/g, " ").trim() : "";
}

function showCarried() {
  const draft = state.compose;
  $("compose-forwarded").replaceChildren(...draft.carried.map((item) => el("li", {},
    "📎 " + item.part.filename + " ",
    el("button", { type: "button", className: "remove", "aria-label": "Remove " + item.part.filename,
                   onclick: () => { draft.carried.splice(draft.carried.indexOf(item), 1); showCarried(); } },
      "×"))));
}

function fill(title, fields) {
  $("compose-title").textContent = title;
  for (const name of ["to", "cc", "bcc", "subject", "text"]) {
    $("compose-" + name).value = fields[name] || "";
  }
  $("compose-files").value = "";
  $("compose-error").textContent = "";
  showCarried();
  $("settings").hidden = true;
  $("compose").hidden = false;
  (fields.to ? $("compose-text") : $("compose-to")).focus();
}

export function openCompose(kind) {
  const message = state.message;
  state.compose = { carried: [] };
  const fields = {};
  if (message && kind === "reply") {
    fields.to = names(message.reply_to && message.reply_to.length ? message.reply_to : message.from);
    fields.subject = /^re:/i.test(message.subject || "") ? message.subject : "Re: " + (message.subject || "");
    fields.text = quote(message);
    state.compose.in_reply_to = message.message_id;
    state.compose.references = header(message, "references");
    state.compose.reply_to_message = { folder: message.folder, uid: message.uid };
  } else if (message && kind === "forward") {
    fields.subject = "Fwd: " + (message.subject || "");
    fields.text = "\n\n---------- Forwarded message ----------\n" +
      `From: ${names(message.from)}\nDate: ${message.date || ""}\n` +
      `Subject: ${message.subject || ""}\nTo: ${names(message.to)}\n\n` + (message.text || "");
    state.compose.carried = carriedFrom(message);
  }
  fill(kind === "reply" ? "Reply" : kind === "forward" ? "Forward" : "New message", fields);
}

/** Opens the draft shown in the reader for editing: its recipients, subject, text and
 * attachments; saving or sending replaces it. */
export function openDraft() {
  const message = state.message;
  if (!message) return;
  const inReplyTo = message.in_reply_to || "";
  let references = header(message, "references").trim();
  if (inReplyTo && references.endsWith(inReplyTo)) { // the API appends In-Reply-To again
    references = references.slice(0, -inReplyTo.length).trim();
  }
  state.compose = { carried: carriedFrom(message), draft_uid: message.uid,
                    in_reply_to: inReplyTo || undefined, references };
  fill("Draft", {
    to: names(message.to), cc: names(message.cc), bcc: header(message, "bcc"),
    subject: message.subject || "", text: (message.text || "").replace(/\n$/, ""),
  });
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

async function attachments(draft) {
  const out = [];
  for (const file of $("compose-files").files) {
    out.push({ filename: file.name, content_type: file.type || "application/octet-stream",
               data_base64: toBase64(await file.arrayBuffer()) });
  }
  for (const item of draft.carried) {
    const url = API + messagePath(item.folder, item.uid) + "/attachments/" +
      encodeURIComponent(item.part.part);
    const response = await fetch(url, { credentials: "same-origin", headers: { "X-CSRF-Token": state.csrf } });
    if (!response.ok) throw new Error(`could not read ${item.part.filename}`);
    out.push({ filename: item.part.filename, content_type: item.part.content_type,
               data_base64: toBase64(await response.arrayBuffer()) });
  }
  return out;
}

async function composed(draft) {
  const body = {
    to: addressList($("compose-to").value),
    cc: addressList($("compose-cc").value),
    bcc: addressList($("compose-bcc").value),
    subject: $("compose-subject").value,
    text: $("compose-text").value,
    attachments: await attachments(draft),
  };
  if (draft.in_reply_to) body.in_reply_to = draft.in_reply_to;
  if (draft.in_reply_to && draft.references) body.references = draft.references;
  return body;
}

async function busy(work) {
  $("compose-error").textContent = "";
  $("compose-send").disabled = $("compose-save").disabled = true;
  try {
    await work();
  } catch (error) {
    failed(error, "compose-error");
  } finally {
    $("compose-send").disabled = $("compose-save").disabled = false;
  }
}

export function saveDraft() {
  return busy(async () => {
    const draft = state.compose || { carried: [] };
    const body = await composed(draft);
    const saved = draft.draft_uid
      ? await api("PUT", "/drafts/" + draft.draft_uid, body)
      : await api("POST", "/drafts", body);
    // The saved draft now holds every attachment: carry them from there from now on.
    const stored = await api("GET", messagePath(saved.folder, saved.uid) + "?peek=1");
    draft.draft_uid = saved.uid;
    draft.carried = carriedFrom(Object.assign(stored, { folder: saved.folder, uid: saved.uid }));
    $("compose-files").value = "";
    showCarried();
    status(`Draft saved in ${saved.folder}`);
  });
}

export function send(event) {
  event.preventDefault();
  return busy(async () => {
    const draft = state.compose || { carried: [] };
    const body = await composed(draft);
    if (draft.reply_to_message) body.reply_to_message = draft.reply_to_message;
    if (draft.draft_uid) body.draft_uid = draft.draft_uid;
    await api("POST", "/send", body);
    $("compose").hidden = true;
    state.compose = null;
    status("Message sent");
    await loadFolders();
  });
}
