// src/errors.ts
var AnonidError = class extends Error {
  constructor(code, message, status = 0, options = {}) {
    super(message);
    this.name = "AnonidError";
    this.code = code;
    this.status = status;
    this.retryAfter = options.retryAfter;
    if (options.cause !== void 0) this.cause = options.cause;
  }
};
function errorFromAnswer(status, body, retryAfter) {
  const seconds = retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) : void 0;
  const document = typeof body === "object" && body !== null ? body : {};
  const code = typeof document.error === "string" ? document.error : "invalid_response";
  const message = typeof document.message === "string" ? document.message : `anonid answered ${status}.`;
  return new AnonidError(code, message, status, { retryAfter: seconds });
}

// src/webauthn.ts
var B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
function base64FromBytes(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i];
    const b = bytes[i + 1];
    const c = bytes[i + 2];
    out += B64[a >> 2];
    out += B64[(a & 3) << 4 | (b ?? 0) >> 4];
    out += b === void 0 ? "=" : B64[(b & 15) << 2 | (c ?? 0) >> 6];
    out += c === void 0 ? "=" : B64[c & 63];
  }
  return out;
}
function base64url(buffer2) {
  const bytes = buffer2 instanceof ArrayBuffer ? new Uint8Array(buffer2) : new Uint8Array(buffer2.buffer, buffer2.byteOffset, buffer2.byteLength);
  return base64FromBytes(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function bytesFromBase64url(text) {
  const clean = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (/[^A-Za-z0-9+/]/.test(clean) || clean.length % 4 === 1) {
    throw new AnonidError("invalid_response", "anonid sent WebAuthn options that are not base64url.");
  }
  const out = new Uint8Array(Math.floor(clean.length * 3 / 4));
  let bits = 0;
  let value = 0;
  let index = 0;
  for (const char of clean) {
    value = value << 6 | B64.indexOf(char);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[index++] = value >> bits & 255;
    }
  }
  return out;
}
function buffer(text) {
  const bytes = bytesFromBase64url(String(text));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}
function descriptors(list) {
  if (!Array.isArray(list)) return void 0;
  return list.map((item) => ({
    ...item,
    type: "public-key",
    id: buffer(item.id)
  }));
}
function creationOptions(json) {
  const native = nativeParser("parseCreationOptionsFromJSON");
  if (native !== void 0) return native(json);
  const user = json.user ?? {};
  return {
    ...json,
    challenge: buffer(json.challenge),
    user: { ...user, id: buffer(user.id) },
    excludeCredentials: descriptors(json.excludeCredentials)
  };
}
function requestOptions(json) {
  const native = nativeParser("parseRequestOptionsFromJSON");
  if (native !== void 0) return native(json);
  return {
    ...json,
    challenge: buffer(json.challenge),
    allowCredentials: descriptors(json.allowCredentials)
  };
}
function nativeParser(name) {
  const pkc = globalThis.PublicKeyCredential;
  const parse = pkc?.[name];
  return typeof parse === "function" ? (json) => parse.call(pkc, json) : void 0;
}
function credentialJSON(credential) {
  const own = credential.toJSON;
  if (typeof own === "function") return own.call(credential);
  const r = credential.response;
  const response = { clientDataJSON: base64url(r.clientDataJSON) };
  if ("attestationObject" in r) {
    const attestation = r;
    response.attestationObject = base64url(attestation.attestationObject);
    response.transports = attestation.getTransports?.() ?? [];
    const data = attestation.getAuthenticatorData?.();
    if (data !== void 0) response.authenticatorData = base64url(data);
    const key = attestation.getPublicKey?.();
    if (key) response.publicKey = base64url(key);
    const algorithm = attestation.getPublicKeyAlgorithm?.();
    if (algorithm !== void 0) response.publicKeyAlgorithm = algorithm;
  } else {
    const assertion = r;
    response.authenticatorData = base64url(assertion.authenticatorData);
    response.signature = base64url(assertion.signature);
    if (assertion.userHandle) response.userHandle = base64url(assertion.userHandle);
  }
  return {
    id: credential.id,
    rawId: base64url(credential.rawId),
    type: credential.type,
    response,
    authenticatorAttachment: credential.authenticatorAttachment ?? void 0,
    clientExtensionResults: credential.getClientExtensionResults?.() ?? {}
  };
}
function passkeysSupported() {
  const container = globalThis.navigator?.credentials;
  return container !== void 0 && typeof PublicKeyCredential !== "undefined";
}
function credentials() {
  if (!passkeysSupported()) {
    throw new AnonidError("not_supported", "Passkeys need a browser with WebAuthn.");
  }
  return globalThis.navigator.credentials;
}
function requirePasskeys() {
  credentials();
}
function failure(cause) {
  const name = cause?.name;
  if (name === "NotAllowedError" || name === "AbortError") {
    return new AnonidError("passkey_cancelled", "The passkey prompt was dismissed or timed out.", 0, { cause });
  }
  return new AnonidError("passkey_failed", "The browser could not use a passkey.", 0, { cause });
}
async function ceremony(kind, options) {
  const container = credentials();
  const json = options.publicKey ?? options;
  let credential;
  try {
    credential = kind === "create" ? await container.create({ publicKey: creationOptions(json) }) : await container.get({ publicKey: requestOptions(json) });
  } catch (cause) {
    throw failure(cause);
  }
  if (credential === null) throw failure(null);
  return credentialJSON(credential);
}
function createPasskey(options) {
  return ceremony("create", options);
}
function getPasskey(options) {
  return ceremony("get", options);
}

// src/challenge.ts
async function findNumber(algorithm, challenge, salt, max) {
  const encoder = new TextEncoder();
  for (let n = 0; n <= max; n++) {
    const digest = new Uint8Array(await crypto.subtle.digest(algorithm, encoder.encode(salt + n)));
    let hex = "";
    for (let i = 0; i < digest.length; i++) hex += digest[i].toString(16).padStart(2, "0");
    if (hex === challenge) return n;
  }
  return -1;
}
var WORKER_SOURCE = `const findNumber = ${findNumber.toString()};
onmessage = async (event) => postMessage(await findNumber(...event.data));
`;
function inWorker(args) {
  if (typeof Worker === "undefined" || typeof Blob === "undefined") return null;
  if (typeof URL === "undefined" || typeof URL.createObjectURL !== "function") return null;
  let url;
  let worker;
  try {
    url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    worker = new Worker(url);
  } catch {
    return null;
  }
  return new Promise((resolve, reject) => {
    const done = () => {
      worker.terminate();
      URL.revokeObjectURL(url);
    };
    worker.onmessage = (event) => {
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
async function solveChallenge(challenge, options = {}) {
  const algorithm = String(challenge.algorithm).toUpperCase();
  if (!["SHA-1", "SHA-256", "SHA-512"].includes(algorithm)) {
    throw new AnonidError("challenge_unsolvable", `Unknown challenge algorithm ${algorithm}.`);
  }
  if (typeof crypto === "undefined" || crypto.subtle === void 0) {
    throw new AnonidError("not_supported", "Web Crypto is needed to solve the challenge.");
  }
  const args = [
    algorithm,
    challenge.challenge,
    challenge.salt,
    Math.max(0, Math.floor(Number(challenge.maxnumber) || 0))
  ];
  let number;
  const background = options.worker === false ? null : inWorker(args);
  if (background !== null) {
    number = await background.catch(() => void 0);
  }
  if (number === void 0) number = await findNumber(...args);
  if (number < 0) {
    throw new AnonidError("challenge_unsolvable", "No number up to maxnumber solves the challenge.");
  }
  const solution = {
    algorithm: challenge.algorithm,
    challenge: challenge.challenge,
    number,
    salt: challenge.salt,
    signature: challenge.signature
  };
  return base64FromBytes(new TextEncoder().encode(JSON.stringify(solution)));
}

// src/http.ts
var Http = class {
  constructor(base, fetcher, cookies) {
    this.base = base.replace(/\/+$/, "");
    const found = fetcher ?? globalThis.fetch;
    if (found === void 0) throw new AnonidError("not_supported", "No fetch is available here.");
    this.fetcher = fetcher ?? found.bind(globalThis);
    this.cookies = cookies;
  }
  /** The answer to `call`; `network_error` when none came, `invalid_response` for non-JSON. */
  async send(call, token) {
    const headers = { Accept: "application/json", ...call.headers };
    if (!this.cookies) headers["X-Anonid-Token"] = "bearer";
    if (token !== null) headers.Authorization = `Bearer ${token}`;
    const init = {
      method: call.method,
      headers,
      credentials: this.cookies ? "include" : "omit"
    };
    if (call.body !== void 0) {
      headers["Content-Type"] = call.contentType ?? "application/json";
      init.body = JSON.stringify(call.body);
    }
    let response;
    try {
      response = await this.fetcher(this.base + call.path, init);
    } catch (cause) {
      throw new AnonidError("network_error", "anonid could not be reached.", 0, { cause });
    }
    const text = await response.text().catch(() => "");
    let body = null;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch (cause) {
        throw new AnonidError(
          "invalid_response",
          `anonid answered ${response.status} with a body that is not JSON.`,
          response.status,
          { cause }
        );
      }
    }
    return { status: response.status, body, headers: response.headers };
  }
};
function expectOk(answer) {
  if (answer.status >= 200 && answer.status < 300) return answer.body;
  throw errorFromAnswer(answer.status, answer.body, answer.headers.get("retry-after"));
}
function codeOf(answer) {
  if (answer.status < 400) return void 0;
  const body = answer.body;
  return body !== null && typeof body === "object" && typeof body.error === "string" ? body.error : void 0;
}

// src/tokens.ts
function refreshMarginMs(lifetimeMs) {
  return Math.min(6e4, lifetimeMs / 4);
}
function storedFrom(answer, now) {
  const lifetime = Math.max(0, answer.expires_in) * 1e3;
  return {
    access_token: answer.access_token ?? "",
    refresh_token: answer.refresh_token ?? "",
    expires_at: now + lifetime,
    refresh_at: now + lifetime - refreshMarginMs(lifetime)
  };
}
function memoryStorage() {
  const items = /* @__PURE__ */ new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key)
  };
}
var TokenStore = class {
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
  }
  async load() {
    const raw = await this.storage.getItem(this.key);
    if (raw === null) return null;
    try {
      const value = JSON.parse(raw);
      if (typeof value.access_token === "string" && typeof value.refresh_token === "string" && typeof value.expires_at === "number" && typeof value.refresh_at === "number") {
        return value;
      }
    } catch {
    }
    return null;
  }
  async save(session) {
    await this.storage.setItem(this.key, JSON.stringify(session));
  }
  async clear() {
    await this.storage.removeItem(this.key);
  }
};

// src/session.ts
var RETRY_AFTER_FAILED_REFRESH_MS = 1e4;
var Session = class {
  constructor(options) {
    this.listeners = /* @__PURE__ */ new Set();
    this.renewing = null;
    this.timer = null;
    /** The user this client last saw signed in (so a refusal can be told apart from "never was"). */
    this.user = null;
    this.disposed = false;
    this.bearer = options.mode === "bearer";
    if (options.mode !== void 0 && options.mode !== "cookie" && !this.bearer) {
      throw new AnonidError("not_supported", `Unknown mode ${String(options.mode)}.`);
    }
    this.http = new Http(options.url, options.fetch, !this.bearer);
    this.store = this.bearer ? new TokenStore(options.storage ?? memoryStorage(), options.storageKey ?? "anonid.session") : null;
    this.autoRefresh = this.bearer && options.autoRefresh !== false;
    if (this.autoRefresh) void this.schedule();
  }
  // Calls ------------------------------------------------------------------------------------
  /**
   * Sends `call` with the session (a fresh token in bearer mode). An expired access token is
   * renewed and the call sent once more; a session anonid refuses ends here too.
   */
  async send(call, retry = true) {
    const token = await this.accessToken();
    const answer = await this.http.send(call, token);
    const code = codeOf(answer);
    if (code === "session_expired" && retry) {
      await this.renew(token);
      return this.send(call, false);
    }
    if (code === "invalid_session") await this.ended();
    return answer;
  }
  /** The body of `call`'s successful answer; its `AnonidError` otherwise. */
  async call(call) {
    return expectOk(await this.send(call));
  }
  /** Takes a session answer (`S`): keeps its tokens (bearer mode) and tells the listeners. */
  async signedIn(body, event = "SIGNED_IN") {
    const answer = body;
    if (answer === null || typeof answer !== "object" || typeof answer.user !== "object") {
      throw new AnonidError("invalid_response", "anonid's answer carries no session.");
    }
    if (this.store !== null) {
      if (typeof answer.access_token !== "string" || typeof answer.refresh_token !== "string") {
        throw new AnonidError("invalid_response", "anonid's answer carries no tokens.");
      }
      await this.store.save(storedFrom(answer, Date.now()));
      void this.schedule();
    }
    this.user = answer.user;
    if (event !== null) this.emit(event, answer.user);
    const result = { user: answer.user };
    if (typeof answer.merged_from === "string") result.mergedFrom = answer.merged_from;
    return result;
  }
  /** Records the user a call returned (so a later refusal counts as the session ending). */
  saw(user) {
    this.user = user;
  }
  get knownUser() {
    return this.user;
  }
  // Renewal ----------------------------------------------------------------------------------
  /** Bearer mode: an access token that is not about to expire (renewing first), or `null`. */
  async accessToken() {
    if (this.store === null) return null;
    const stored = await this.store.load();
    if (stored === null) return null;
    if (Date.now() < stored.refresh_at) return stored.access_token;
    try {
      await this.renew(stored.access_token);
    } catch (err) {
      if (err instanceof AnonidError && err.code === "invalid_session") return null;
      if (Date.now() < stored.expires_at) return stored.access_token;
      throw err;
    }
    return (await this.store.load())?.access_token ?? null;
  }
  /**
   * Renews the session, sharing a renewal already under way. `seen` is the access token the
   * caller found stale: when the storage already holds another (a second tab sharing it renewed
   * meanwhile), that one is used and `null` returned.
   */
  renew(seen) {
    if (this.renewing === null) {
      this.renewing = this.renewNow(seen).finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }
  async renewNow(seen) {
    const call = { method: "POST", path: "/v1/session/refresh" };
    if (this.store !== null) {
      const stored = await this.store.load();
      if (stored === null) {
        throw new AnonidError("invalid_session", "There is no session to refresh.", 401);
      }
      if (seen !== null && stored.access_token !== seen && Date.now() < stored.refresh_at) {
        void this.schedule();
        return null;
      }
      call.body = { refresh_token: stored.refresh_token };
    }
    const answer = await this.http.send(call, null);
    if (answer.status === 401) {
      await this.ended();
      throw errorFromAnswer(answer.status, answer.body, null);
    }
    return this.signedIn(expectOk(answer), "TOKEN_REFRESHED");
  }
  async schedule() {
    if (!this.autoRefresh || this.store === null) return;
    this.cancelTimer();
    const stored = await this.store.load();
    if (stored === null) return;
    this.startTimer(Math.max(0, stored.refresh_at - Date.now()), stored.access_token);
  }
  startTimer(delay, seen) {
    this.cancelTimer();
    if (this.disposed) return;
    const timer = setTimeout(() => {
      this.renew(seen).catch((err) => {
        if (!(err instanceof AnonidError && err.code === "invalid_session")) {
          this.startTimer(RETRY_AFTER_FAILED_REFRESH_MS, seen);
        }
      });
    }, delay);
    timer.unref?.();
    this.timer = timer;
  }
  cancelTimer() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
  // Ending -----------------------------------------------------------------------------------
  /** anonid refused the session: forget it, and tell the listeners if there was one. */
  async ended() {
    const had = this.user !== null || this.store !== null && await this.store.load() !== null;
    await this.forget();
    if (had) this.emit("SESSION_ENDED", null);
  }
  /** Forgets the session (the tokens, in bearer mode) without telling anyone. */
  async forget() {
    this.cancelTimer();
    this.user = null;
    await this.store?.clear();
  }
  // Listeners --------------------------------------------------------------------------------
  onChange(callback) {
    this.listeners.add(callback);
    return () => {
      this.listeners.delete(callback);
    };
  }
  emit(event, user) {
    for (const listener of [...this.listeners]) {
      try {
        listener(event, user);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
  dispose() {
    this.disposed = true;
    this.cancelTimer();
    this.listeners.clear();
  }
};

// src/client.ts
function createClient(options) {
  return new AnonidClient(options);
}
var AnonidClient = class {
  constructor(options) {
    this.session = new Session(options);
    this.url = this.session.http.base;
    this.mode = this.session.bearer ? "bearer" : "cookie";
    this.challengeWorker = options.challengeWorker !== false;
  }
  // Guests and their data --------------------------------------------------------------------
  /**
   * A guest account for this visitor, or the account of the session it already has (no new
   * account then). Solves anonid's proof-of-work challenge when anonid asks for one.
   */
  async signInAnonymously() {
    if (this.session.bearer && await this.session.accessToken() !== null) {
      try {
        return { user: await this.getUser() };
      } catch (err) {
        if (!(err instanceof AnonidError && err.code === "invalid_session")) throw err;
      }
    }
    const call = { method: "POST", path: "/v1/anonymous" };
    let answer = await this.session.send(call);
    if (codeOf(answer) === "challenge_required") {
      const proof = await this.solveAnonymousChallenge();
      answer = await this.session.send({ ...call, headers: { "X-Anonid-Challenge": proof } });
    }
    const known = this.session.knownUser;
    const body = expectOk(answer);
    const isNew = answer.status === 201 || known === null || known.id !== body.user.id;
    return this.session.signedIn(body, isNew ? "SIGNED_IN" : null);
  }
  async solveAnonymousChallenge() {
    const challenge = await this.session.call({ method: "GET", path: "/v1/challenge" });
    return solveChallenge(challenge, { worker: this.challengeWorker });
  }
  /** The signed-in user (`U`). */
  async getUser() {
    const user = await this.session.call({ method: "GET", path: "/v1/me" });
    this.session.saw(user);
    return user;
  }
  /** Applies a JSON Merge Patch (RFC 7396) to the user's `data`, atomically; the new `data`. */
  async updateData(patch) {
    const body = await this.session.call({
      method: "PATCH",
      path: "/v1/me/data",
      body: patch,
      contentType: "application/merge-patch+json"
    });
    return body.data;
  }
  /** Replaces the user's `data`; the new `data`. */
  async replaceData(data) {
    const body = await this.session.call({ method: "PUT", path: "/v1/me/data", body: data });
    return body.data;
  }
  // Converting a guest -----------------------------------------------------------------------
  /** Asks anonid to email `email` a link and a code that make this guest a registered account. */
  async requestConversion(email) {
    const body = { email };
    return await this.session.call({ method: "POST", path: "/v1/me/conversion", body });
  }
  /** Finishes a conversion with the six-digit code from that email: same account, registered. */
  async verifyConversionCode(code) {
    const body = { code };
    const call = { method: "POST", path: "/v1/me/conversion/verify", body };
    return this.session.signedIn(await this.session.call(call));
  }
  // Signing in (a guest's data is merged into the account) -----------------------------------
  async signInWithPassword(email, password) {
    const call = { method: "POST", path: "/v1/login", body: { email, password } };
    return this.session.signedIn(await this.session.call(call));
  }
  /** Emails `email` a sign-in code and link (anonid answers the same whether or not it exists). */
  async signInWithEmail(email) {
    await this.session.call({ method: "POST", path: "/v1/login/email", body: { email } });
  }
  /** Signs in with the code `signInWithEmail` sent. */
  async verifyEmailCode(email, code) {
    const call = { method: "POST", path: "/v1/login/email/verify", body: { email, code } };
    return this.session.signedIn(await this.session.call(call));
  }
  async signInWithProvider(provider, options = {}) {
    const name = encodeURIComponent(provider);
    if ("idToken" in options) {
      const body = { id_token: options.idToken };
      if (options.nonce !== void 0) body.nonce = options.nonce;
      const call = { method: "POST", path: `/v1/oauth/${name}/token`, body };
      return this.session.signedIn(await this.session.call(call));
    }
    if (this.session.bearer) {
      throw new AnonidError(
        "not_supported",
        "A provider's pages sign in with cookies: use cookie mode, or pass the provider's idToken."
      );
    }
    const here = globalThis.location;
    const returnTo = options.returnTo ?? here?.href;
    const query = returnTo === void 0 ? "" : `?return_to=${encodeURIComponent(returnTo)}`;
    const url = `${this.url}/v1/oauth/${name}/authorize${query}`;
    if (options.redirect !== false && here !== void 0) here.assign(url);
    return { url };
  }
  // Passkeys ---------------------------------------------------------------------------------
  /** Adds a passkey to this account; a guest becomes registered with it (no address needed). */
  async addPasskey(options = {}) {
    requirePasskeys();
    const creation = await this.session.call({ method: "POST", path: "/v1/me/passkeys/options" });
    const credential = await createPasskey(creation);
    const body = { credential };
    if (options.name !== void 0) body.name = options.name;
    return this.session.signedIn(
      await this.session.call({ method: "POST", path: "/v1/me/passkeys", body })
    );
  }
  /** Signs in with a passkey the browser or device holds (discoverable credentials). */
  async signInWithPasskey() {
    requirePasskeys();
    const asked = await this.session.send({ method: "POST", path: "/v1/login/passkey/options" });
    const request = expectOk(asked);
    const challengeId = asked.headers.get("x-anonid-challenge-id");
    const credential = await getPasskey(request);
    const call = { method: "POST", path: "/v1/login/passkey", body: { credential } };
    if (challengeId !== null) call.headers = { "X-Anonid-Challenge-Id": challengeId };
    return this.session.signedIn(await this.session.call(call));
  }
  // The session ------------------------------------------------------------------------------
  /** Ends this session at anonid and here. A session anonid had already ended counts as done. */
  async signOut() {
    const hadSession = this.session.knownUser !== null || await this.session.accessToken() !== null;
    if (!this.session.bearer || hadSession) {
      const answer = await this.session.send({ method: "POST", path: "/v1/logout" });
      const code = codeOf(answer);
      if (code !== "invalid_session" && code !== "session_expired") expectOk(answer);
    }
    await this.session.forget();
    this.session.emit("SIGNED_OUT", null);
  }
  /** Renews the session now (a new refresh token and access token); the user. */
  async refresh() {
    const renewed = await this.session.renew(null);
    return renewed ?? { user: await this.getUser() };
  }
  /** Bearer mode: a current access token for your own backend (renewed if due); else `null`. */
  async getAccessToken() {
    return this.session.accessToken();
  }
  /** Calls `callback(event, user)` on sign-in, refresh, sign-out and session end; unsubscribes. */
  onAuthStateChange(callback) {
    return this.session.onChange(callback);
  }
  /** Stops the background renewal and drops the listeners. */
  dispose() {
    this.session.dispose();
  }
};
var PROVIDER_ERRORS = {
  access_denied: "Signing in with the provider was cancelled.",
  invalid_state: "The sign-in took too long or was already used; please try again.",
  invalid_id_token: "The provider's answer could not be verified.",
  provider_error: "The provider could not sign you in.",
  identity_taken: "That provider account is already linked to another account.",
  email_taken: "That address already belongs to another account."
};
function readProviderError(url) {
  const href = url ?? globalThis.location?.href;
  if (href === void 0) return null;
  const code = new URL(href).searchParams.get("error");
  if (code === null || code === "") return null;
  return new AnonidError(code, PROVIDER_ERRORS[code] ?? "Signing in with the provider did not work.");
}
export {
  AnonidClient,
  AnonidError,
  createClient,
  memoryStorage,
  passkeysSupported,
  readProviderError,
  solveChallenge
};
