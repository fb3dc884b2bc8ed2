// Solves an ALTCHA challenge from anonid's GET /v1/challenge: the number n <= maxnumber whose
// SHA-256(salt + n), in hex, is the challenge. Posts back {number} (null if there is none).
"use strict";

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

self.onmessage = async (event) => {
  const { algorithm, challenge, maxnumber, salt } = event.data;
  const encoder = new TextEncoder();
  for (let n = 0; n <= maxnumber; n++) {
    const digest = await crypto.subtle.digest(algorithm, encoder.encode(salt + n));
    if (hex(digest) === challenge) {
      self.postMessage({ number: n });
      return;
    }
  }
  self.postMessage({ number: null });
};
