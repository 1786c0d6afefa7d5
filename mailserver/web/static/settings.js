// Settings: app passwords (for mail programs) and two-factor sign-in (TOTP: switch it on
// with a first code, which shows the recovery codes once; switch it off with a current
// code or a recovery code).
import { $, el, api, failed } from "./core.js";

export async function openSettings() {
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
    $("totp-disable-form").hidden = !me.totp_enabled;
    $("app-passwords").replaceChildren(...passwords.map((p) => el("li", { dataset: { id: p.id } },
      `${p.name} (${p.scopes.join(", ")}) `,
      el("button", { type: "button", onclick: () => revokeAppPassword(p.id) }, "Revoke"))));
  } catch (error) { failed(error, "settings-error"); }
}

export async function createAppPassword(event) {
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

export async function enrolTotp() {
  $("settings-error").textContent = "";
  try {
    const enrolment = await api("POST", "/me/totp");
    $("totp-secret").textContent = enrolment.secret;
    $("totp-uri").textContent = enrolment.uri;
    $("totp-confirm-form").hidden = false;
    $("totp-code").focus();
  } catch (error) { failed(error, "settings-error"); }
}

export async function confirmTotp(event) {
  event.preventDefault();
  $("settings-error").textContent = "";
  try {
    const done = await api("POST", "/me/totp/confirm", { code: $("totp-code").value.trim() });
    $("totp-confirm-form").hidden = true;
    $("totp-code").value = "";
    $("recovery-codes").replaceChildren(
      el("li", {}, "Recovery codes (each works once; keep them safe):"),
      ...done.recovery_codes.map((c) => el("li", {}, c)));
    await loadSettings();
  } catch (error) { failed(error, "settings-error"); }
}

export async function disableTotp(event) {
  event.preventDefault();
  $("settings-error").textContent = "";
  try {
    await api("DELETE", "/me/totp", { code: $("totp-disable-code").value.trim() });
    $("totp-disable-code").value = "";
    $("recovery-codes").replaceChildren();
    await loadSettings();
  } catch (error) { failed(error, "settings-error"); }
}
