// Progressive enhancement of the server-rendered pages. Without this file
// every page still works; what needs a browser API (passkeys) stays hidden.
//
// Passkeys: a form with `data-passkey="create"` or `data-passkey="get"`
// carries the ceremony's options as JSON in `data-options` (binary fields
// base64url-encoded, as the server rendered them). On submit the browser's
// WebAuthn API runs; its answer goes into the form's hidden fields, and the
// form is posted as any other.
"use strict";

(function () {
  function fromB64url(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (let i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(o) {
    o.challenge = fromB64url(o.challenge);
    o.user.id = fromB64url(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = fromB64url(c.id); });
    return o;
  }

  function requestOptions(o) {
    o.challenge = fromB64url(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = fromB64url(c.id); });
    return o;
  }

  function set(form, name, value) {
    const field = form.querySelector('input[name="' + name + '"]');
    if (field) field.value = value;
  }

  async function ceremony(form) {
    const options = JSON.parse(form.dataset.options);
    if (form.dataset.passkey === "create") {
      const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
      set(form, "credential_id", toB64url(credential.rawId));
      set(form, "client_data", toB64url(credential.response.clientDataJSON));
      set(form, "attestation_object", toB64url(credential.response.attestationObject));
    } else {
      const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
      set(form, "credential_id", toB64url(credential.rawId));
      set(form, "client_data", toB64url(credential.response.clientDataJSON));
      set(form, "authenticator_data", toB64url(credential.response.authenticatorData));
      set(form, "signature", toB64url(credential.response.signature));
      if (credential.response.userHandle) {
        set(form, "user_handle", toB64url(credential.response.userHandle));
      }
    }
  }

  function start() {
    if (!window.PublicKeyCredential) return;
    document.querySelectorAll("form[data-passkey]").forEach(function (form) {
      form.hidden = false;
      const error = form.querySelector("[data-passkey-error]");
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (error) error.hidden = true;
        ceremony(form).then(function () { form.submit(); }, function (e) {
          if (error) {
            error.textContent = e && e.name === "NotAllowedError"
              ? "The passkey was not used (cancelled or timed out). Try again."
              : "Your browser could not use a passkey here: " + (e && e.message ? e.message : e);
            error.hidden = false;
          }
        });
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
