// The page talks to anonid through @anonid/client in cookie mode (anonid-client.js, a copy of
// clients/js/dist/index.js): anonid's cookies are HttpOnly, so this script never sees a token;
// the browser attaches them and stores the ones anonid sets, and anonid renews an expired one.
import { createClient, passkeysSupported, readProviderError } from "./anonid-client.js";

const anonid = createClient({ url: document.body.dataset.anonid });
let session = document.body.dataset.session; // "none" | "guest" | "registered"

function setWho(label) {
  document.getElementById("who-label").textContent = label;
}

// anonid no longer knows this session (ended elsewhere, culled): it has cleared the cookies.
anonid.onAuthStateChange((event) => {
  if (event === "SESSION_ENDED") {
    session = "none";
    setWho("Not signed in");
  }
});

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

// When anonid asks for a proof of work before making a guest (ANONID_ANONYMOUS_CHALLENGE=altcha),
// signInAnonymously() fetches the challenge, solves it in a Web Worker and retries.
async function startGuest() {
  await anonid.signInAnonymously();
  session = "guest";
  setWho("Guest");
}

async function toggle(button) {
  const on = button.getAttribute("aria-pressed") !== "true";
  button.disabled = true;
  try {
    // The first favourite is the first thing worth remembering: start a guest account.
    if (session === "none") await startGuest();
    // A JSON Merge Patch touching one key: concurrent tabs cannot undo each other's favourites.
    const patch = () => anonid.updateData({ favourites: { [button.dataset.product]: on ? true : null } });
    let data;
    try {
      data = await patch();
    } catch (err) {
      if (err.code !== "invalid_session") throw err;
      // The session ended elsewhere (logged out in another tab, culled): start afresh.
      await startGuest();
      data = await patch();
    }
    show(data.favourites);
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
  await anonid.signOut();
  window.location.reload();
});

// Converting the guest: a link by email (anonid's hosted page sets the password) ...
document.getElementById("signup-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = document.getElementById("signup-email").value;
  const byCode = event.submitter && event.submitter.id === "signup-code";
  try {
    if (session === "none") await startGuest();
    const pending = await anonid.requestConversion(email);
    if (byCode) askForCode(pending.pending_email);
    else signupStatus(`Check ${pending.pending_email} for a link to choose your password.`);
  } catch (err) {
    signupStatus(err.message);
  }
});

document.getElementById("code-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const code = document.getElementById("code-input").value;
  try {
    await anonid.verifyConversionCode(code);
    // Registered now: the page is drawn again for the account (and without the sign-up box).
    window.location.reload();
  } catch (err) {
    signupStatus(err.message);
  }
});

// "Save with a passkey": the guest becomes a registered account in place, with one touch and
// no address (@anonid/client runs the WebAuthn ceremony against anonid's API).
const passkeySignup = document.getElementById("passkey-signup");
if (passkeySignup && passkeysSupported()) {
  passkeySignup.hidden = false;
  document.getElementById("save-passkey").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      if (session === "none") await startGuest();
      await anonid.addPasskey();
      window.location.reload(); // signed in: the backend reads the new session cookie
    } catch (err) {
      const cancelled = !err.code || err.code === "passkey_cancelled";
      signupStatus(cancelled ? "The passkey was not saved; you can try again." : err.message);
      event.target.disabled = false;
    }
  });
}

// ... or a provider: the guest (if any) comes along and becomes registered in place. The links
// work without this script too; the client builds the same URL, back to this page.
for (const link of document.querySelectorAll("a.provider")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    const back = new URL(window.location.href);
    back.searchParams.delete("error");
    anonid.signInWithProvider(link.dataset.provider, { returnTo: back.href });
  });
}

async function load() {
  if (session === "none") return show({});
  try {
    const user = await anonid.getUser();
    showUser(user);
    show(user.data.favourites);
  } catch (err) {
    if (err.code === "invalid_session") {
      // anonid no longer knows this session (and has cleared the cookies): a new visitor.
      session = "none";
      setWho("Not signed in");
      return show({});
    }
    signupStatus("Could not load your favourites: " + err.message);
  }
}

// Back from "Continue with …" without a session: anonid says why in ?error=.
const providerError = readProviderError();
if (providerError) signupStatus(providerError.message);

// data-ready tells tests (and anyone curious) that the page has its data.
load().finally(() => { document.body.dataset.ready = "true"; });
