import { AnonidError } from "./errors.js";
import { base64FromBytes } from "./webauthn.js";

/** An ALTCHA challenge, as `GET /v1/challenge` gives it. */
export interface Challenge {
  algorithm: string;
  challenge: string;
  maxnumber: number;
  salt: string;
  signature: string;
}

// Self-contained (only globals): its source also runs in a Web Worker, as written here.
async function findNumber(
  algorithm: string,
  challenge: string,
  salt: string,
  max: number,
): Promise<number> {
  const encoder = new TextEncoder();
  for (let n = 0; n <= max; n++) {
    const digest = new Uint8Array(await crypto.subtle.digest(algorithm, encoder.encode(salt + n)));
    let hex = "";
    for (let i = 0; i < digest.length; i++) hex += (digest[i] as number).toString(16).padStart(2, "0");
    if (hex === challenge) return n;
  }
  return -1;
}

const WORKER_SOURCE =
  `const findNumber = ${findNumber.toString()};\n` +
  "onmessage = async (event) => postMessage(await findNumber(...event.data));\n";

/** The number in a Web Worker, off the page's main thread; `null` where no worker can run. */
function inWorker(args: [string, string, string, number]): Promise<number> | null {
  if (typeof Worker === "undefined" || typeof Blob === "undefined") return null;
  if (typeof URL === "undefined" || typeof URL.createObjectURL !== "function") return null;
  let url: string;
  let worker: Worker;
  try {
    url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    worker = new Worker(url);
  } catch {
    return null; // a Content-Security-Policy without worker-src blob:, say
  }
  return new Promise<number>((resolve, reject) => {
    const done = () => {
      worker.terminate();
      URL.revokeObjectURL(url);
    };
    worker.onmessage = (event: MessageEvent<number>) => {
      done();
      resolve(event.data);
    };
    worker.onerror = (event) => {
      done();
      event.preventDefault();
      reject(new Error(event.message || "the challenge worker failed"));
    };
    worker.postMessage(args);
  });
}

/**
 * Solves an ALTCHA proof of work: the number `n` with `hash(salt + n) == challenge`. Resolves to
 * the `X-Anonid-Challenge` header's value (the base64 of the solution's JSON). Runs in a Web Worker
 * where one can run (`worker: false` to stay on the calling thread).
 */
export async function solveChallenge(
  challenge: Challenge,
  options: { worker?: boolean } = {},
): Promise<string> {
  const algorithm = String(challenge.algorithm).toUpperCase();
  if (!["SHA-1", "SHA-256", "SHA-512"].includes(algorithm)) {
    throw new AnonidError("challenge_unsolvable", `Unknown challenge algorithm ${algorithm}.`);
  }
  if (typeof crypto === "undefined" || crypto.subtle === undefined) {
    throw new AnonidError("not_supported", "Web Crypto is needed to solve the challenge.");
  }
  const args: [string, string, string, number] = [
    algorithm,
    challenge.challenge,
    challenge.salt,
    Math.max(0, Math.floor(Number(challenge.maxnumber) || 0)),
  ];
  let number: number | undefined;
  const background = options.worker === false ? null : inWorker(args);
  if (background !== null) {
    number = await background.catch(() => undefined);
  }
  if (number === undefined) number = await findNumber(...args);
  if (number < 0) {
    throw new AnonidError("challenge_unsolvable", "No number up to maxnumber solves the challenge.");
  }
  const solution = {
    algorithm: challenge.algorithm,
    challenge: challenge.challenge,
    number,
    salt: challenge.salt,
    signature: challenge.signature,
  };
  return base64FromBytes(new TextEncoder().encode(JSON.stringify(solution)));
}
