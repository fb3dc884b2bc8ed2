// The browser talks to anonid directly; the anonid cookie is HttpOnly, so this script never sees
// the token: `credentials: "include"` lets the browser attach it and store the one anonid sets.
"use strict";
const anonid = document.body.dataset.anonid;
let session = document.body.dataset.session; // "none" | "guest" | "registered"

async function call(method, path, body, type = "application/json") {
  const init = { method, credentials: "include", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = type;
    init.body = JSON.stringify(body);
  }
  const response = await fetch(anonid + path, init);
  const payload = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const error = new Error((payload && payload.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return payload;
}

function show(favourites) {
  const ids = Object.keys(favourites || {});
  for (const button of document.querySelectorAll("button.fav")) {
    const on = ids.includes(button.dataset.product);
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "♥" : "♡";
  }
  const list = document.getElementById("favourites");
  if (list) {
    for (const card of list.querySelectorAll(".card")) card.hidden = !ids.includes(card.dataset.product);
    document.getElementById("favourites-empty").hidden = ids.length > 0;
  }
  document.getElementById("fav-count").textContent = ids.length ? String(ids.length) : "";
}

function showUser(user) {
  const email = document.getElementById("who-email");
  if (email && user.email) email.textContent = " as " + user.email;
  if (user.state === "pending") askForCode(user.pending_email);
}

// The conversion email carries a link and a six-digit code: the code, typed in this browser,
// saves the guest's favourites here (POST /v1/me/conversion/verify), with no password.
function askForCode(address) {
  signupStatus(`Check ${address}: open the link to choose a password, or type the code from the email here.`);
  const form = document.getElementById("code-form");
  if (form) form.hidden = false;
}

function signupStatus(text) {
  const status = document.getElementById("signup-status");
  if (!status) return;
  status.textContent = text;
  status.hidden = false;
}

async function startGuest() {
  await call("POST", "/v1/anonymous");
  session = "guest";
  document.getElementById("who-label").textContent = "Guest";
}

async function toggle(button) {
  const on = button.getAttribute("aria-pressed") !== "true";
  button.disabled = true;
  try {
    // The first favourite is the first thing worth remembering: start a guest account.
    if (session === "none") await startGuest();
    // A JSON Merge Patch touching one key: concurrent tabs cannot undo each other's favourites.
    const patch = () => call(
      "PATCH", "/v1/me/data", { favourites: { [button.dataset.product]: on ? true : null } },
      "application/merge-patch+json");
    let result;
    try {
      result = await patch();
    } catch (err) {
      if (err.status !== 401) throw err;
      // The session ended elsewhere (logged out in another tab, culled): start afresh.
      await startGuest();
      result = await patch();
    }
    show(result.data.favourites);
  } catch (err) {
    signupStatus("Could not save that favourite: " + err.message);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.fav");
  if (button) toggle(button);
});

document.getElementById("logout")?.addEventListener("click", async () => {
  await call("POST", "/v1/logout");
  window.location.reload();
});

document.getElementById("signup-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = document.getElementById("signup-email").value;
  const byCode = event.submitter && event.submitter.id === "signup-code";
  try {
    if (session === "none") await startGuest();
    const result = await call("POST", "/v1/me/conversion", { email });
    if (byCode) askForCode(result.pending_email);
    else signupStatus(`Check ${result.pending_email} for a link to choose your password.`);
  } catch (err) {
    signupStatus(err.message);
  }
});

document.getElementById("code-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const code = document.getElementById("code-input").value;
  try {
    await call("POST", "/v1/me/conversion/verify", { code });
    // Registered now: the page is drawn again for the account (and without the sign-up box).
    window.location.reload();
  } catch (err) {
    signupStatus(err.message);
  }
});

async function load() {
  if (session === "none") return show({});
  try {
    const user = await call("GET", "/v1/me");
    showUser(user);
    show(user.data.favourites);
  } catch (err) {
    if (err.status === 401) {
      // anonid no longer knows this session (and has cleared the cookie): a new visitor.
      session = "none";
      document.getElementById("who-label").textContent = "Not signed in";
      return show({});
    }
    signupStatus("Could not load your favourites: " + err.message);
  }
}

// Back from "Continue with …" without a session: anonid says why in ?error=.
const PROVIDER_ERRORS = {
  access_denied: "Signing in with the provider was cancelled.",
  identity_taken: "That provider account is already linked to another account.",
  email_taken: "That address already belongs to another account.",
};
const providerError = new URLSearchParams(window.location.search).get("error");
if (providerError) {
  signupStatus(PROVIDER_ERRORS[providerError] || "Signing in with the provider did not work; please try again.");
}

// data-ready tells tests (and anyone curious) that the page has its data.
load().finally(() => { document.body.dataset.ready = "true"; });
