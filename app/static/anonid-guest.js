// Hosted pages that create a guest: solve anonid's proof of work with the vendored ALTCHA widget
// (./altcha/), under a Content-Security-Policy of 'self' only. `solvedChallenge()` resolves to
// the value of the X-Anonid-Challenge header for POST /v1/anonymous.
import "./altcha/altcha.min.js";

globalThis.$altcha.algorithms.set(
  "SHA-256",
  () => new Worker(new URL("./altcha/sha.js", import.meta.url)),
);

export function solvedChallenge(challengeUrl = "/v1/challenge") {
  return new Promise((resolve, reject) => {
    const widget = document.createElement("altcha-widget");
    widget.setAttribute("challenge", challengeUrl);
    widget.hidden = true;
    widget.addEventListener("statechange", (event) => {
      const { state, payload } = event.detail;
      if (state === "verified") {
        widget.remove();
        resolve(payload);
      } else if (state === "error" || state === "expired") {
        widget.remove();
        reject(new Error(`the challenge could not be solved (${state})`));
      }
    });
    document.body.append(widget);
    customElements.whenDefined("altcha-widget").then(() => widget.verify());
  });
}

// Forms marked data-anonid-guest get a guest first: a challenge solved, then POST /v1/anonymous.
export async function startGuest() {
  const headers = {};
  const first = await fetch("/v1/anonymous", { method: "POST", credentials: "same-origin" });
  if (first.status !== 403) return first;
  const { error } = await first.json();
  if (error !== "challenge_required" && error !== "challenge_failed") return first;
  headers["X-Anonid-Challenge"] = await solvedChallenge();
  return fetch("/v1/anonymous", { method: "POST", credentials: "same-origin", headers });
}
