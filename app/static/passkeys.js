// anonid's passkey helper (CONTRACT §14): no dependencies, no inline script, served by anonid at
// /account/assets/passkeys.js. It turns anonid's WebAuthn JSON options into what navigator.credentials
// takes, and the browser's answer back into PublicKeyCredential JSON.
//
// - Hosted pages: every <form data-passkey="create|get" data-options="…"> stays hidden without
//   WebAuthn; with it, submitting the form runs the ceremony, puts the answer in the form's
//   "passkey" field and posts the form (its CSRF token comes along). data-failed is the
//   sentence shown when the browser refuses or the person cancels.
// - Apps (the demo storefront): anonidPasskeys.add(anonidUrl, name?) and
//   anonidPasskeys.signIn(anonidUrl) call anonid's API with the browser's cookies;
//   createCredential(options) and getCredential(options) run a ceremony for options an app
//   fetched itself (with X-Anonid-Challenge-Id, for clients without cookies).
"use strict";
(function () {
  function bytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  function text(buffer) {
    let binary = "";
    for (const b of new Uint8Array(buffer)) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: bytes(c.id) }));
  }

  function creationOptions(o) {
    return Object.assign({}, o, {
      challenge: bytes(o.challenge),
      user: Object.assign({}, o.user, { id: bytes(o.user.id) }),
      excludeCredentials: descriptors(o.excludeCredentials),
    });
  }

  function requestOptions(o) {
    return Object.assign({}, o, {
      challenge: bytes(o.challenge),
      allowCredentials: descriptors(o.allowCredentials),
    });
  }

  // PublicKeyCredential.toJSON(), written out for browsers without it, and with only what
  // anonid reads (so the answer fits in a form field).
  function credentialJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: text(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = text(r.attestationObject);
      if (typeof r.getTransports === "function") response.transports = r.getTransports();
    } else {
      response.authenticatorData = text(r.authenticatorData);
      response.signature = text(r.signature);
      if (r.userHandle) response.userHandle = text(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: text(credential.rawId),
      type: credential.type,
      response,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  async function post(url, body, extraHeaders) {
    const init = { method: "POST", credentials: "include", headers: Object.assign({}, extraHeaders) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const payload = await response.json();
    if (!response.ok) {
      const error = new Error(payload.message || response.statusText);
      error.code = payload.error;
      error.status = response.status;
      throw error;
    }
    return { payload, headers: response.headers };
  }

  // The ceremonies: anonid's options (JSON) in, the browser's answer (JSON) out.
  async function createCredential(options) {
    return credentialJSON(await navigator.credentials.create({ publicKey: creationOptions(options) }));
  }

  async function getCredential(options) {
    return credentialJSON(await navigator.credentials.get({ publicKey: requestOptions(options) }));
  }

  function supported() {
    return typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
  }

  window.anonidPasskeys = {
    supported,
    createCredential,
    getCredential,
    // Adds a passkey to the signed-in account (a guest becomes registered): anonid's S body.
    async add(base, name) {
      const { payload } = await post(base + "/v1/me/passkeys/options");
      const credential = await createCredential(payload);
      return (await post(base + "/v1/me/passkeys", name ? { credential, name } : { credential })).payload;
    },
    // Signs in (merging a guest session): anonid's S body.
    async signIn(base) {
      const { payload, headers } = await post(base + "/v1/login/passkey/options");
      const credential = await getCredential(payload);
      const challenge = { "X-Anonid-Challenge-Id": headers.get("X-Anonid-Challenge-Id") };
      return (await post(base + "/v1/login/passkey", { credential }, challenge)).payload;
    },
  };

  function wire(form) {
    const status = form.querySelector("[data-passkey-status]");
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      if (status) status.hidden = true;
      try {
        const { payload } = await post(form.dataset.options);
        const ceremony = form.dataset.passkey === "create" ? createCredential : getCredential;
        form.elements.passkey.value = JSON.stringify(await ceremony(payload));
        form.submit();
      } catch (err) {
        if (status) {
          status.textContent = form.dataset.failed;
          status.hidden = false;
        }
        button.disabled = false;
      }
    });
  }

  function start() {
    if (!supported()) return;
    for (const form of document.querySelectorAll("form[data-passkey]")) wire(form);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
