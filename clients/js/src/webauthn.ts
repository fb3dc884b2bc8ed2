import { AnonidError } from "./errors.js";

/*
 * WebAuthn between its JSON forms (what anonid sends and expects: CONTRACT §14) and the browser's
 * ArrayBuffers. Browsers that have PublicKeyCredential.parse*FromJSON and toJSON() use them; the
 * conversions below do the same for the others, so no library is needed.
 */

type Json = Record<string, unknown>;

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Standard base64 (with padding) of `bytes`. */
export function base64FromBytes(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i] as number;
    const b = bytes[i + 1];
    const c = bytes[i + 2];
    out += B64[a >> 2];
    out += B64[((a & 3) << 4) | ((b ?? 0) >> 4)];
    out += b === undefined ? "=" : B64[((b & 15) << 2) | ((c ?? 0) >> 6)];
    out += c === undefined ? "=" : B64[c & 63];
  }
  return out;
}

/** Unpadded base64url of `buffer`. */
export function base64url(buffer: ArrayBuffer | ArrayBufferView): string {
  const bytes =
    buffer instanceof ArrayBuffer
      ? new Uint8Array(buffer)
      : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return base64FromBytes(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The bytes of a base64url (or base64) string. */
export function bytesFromBase64url(text: string): Uint8Array {
  const clean = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (/[^A-Za-z0-9+/]/.test(clean) || clean.length % 4 === 1) {
    throw new AnonidError("invalid_response", "anonid sent WebAuthn options that are not base64url.");
  }
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let index = 0;
  for (const char of clean) {
    value = (value << 6) | B64.indexOf(char);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[index++] = (value >> bits) & 0xff;
    }
  }
  return out;
}

function buffer(text: unknown): ArrayBuffer {
  const bytes = bytesFromBase64url(String(text));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

function descriptors(list: unknown): PublicKeyCredentialDescriptor[] | undefined {
  if (!Array.isArray(list)) return undefined;
  return list.map((item: Json) => ({
    ...(item as object),
    type: "public-key",
    id: buffer(item.id),
  })) as PublicKeyCredentialDescriptor[];
}

/** `PublicKeyCredentialCreationOptionsJSON` → the options `navigator.credentials.create` takes. */
export function creationOptions(json: Json): PublicKeyCredentialCreationOptions {
  const native = nativeParser("parseCreationOptionsFromJSON");
  if (native !== undefined) return native(json) as PublicKeyCredentialCreationOptions;
  const user = (json.user ?? {}) as Json;
  return {
    ...(json as object),
    challenge: buffer(json.challenge),
    user: { ...(user as object), id: buffer(user.id) },
    excludeCredentials: descriptors(json.excludeCredentials),
  } as PublicKeyCredentialCreationOptions;
}

/** `PublicKeyCredentialRequestOptionsJSON` → the options `navigator.credentials.get` takes. */
export function requestOptions(json: Json): PublicKeyCredentialRequestOptions {
  const native = nativeParser("parseRequestOptionsFromJSON");
  if (native !== undefined) return native(json) as PublicKeyCredentialRequestOptions;
  return {
    ...(json as object),
    challenge: buffer(json.challenge),
    allowCredentials: descriptors(json.allowCredentials),
  } as PublicKeyCredentialRequestOptions;
}

function nativeParser(name: string): ((json: Json) => unknown) | undefined {
  const pkc = (globalThis as unknown as { PublicKeyCredential?: Record<string, unknown> })
    .PublicKeyCredential;
  const parse = pkc?.[name];
  return typeof parse === "function" ? (json) => parse.call(pkc, json) : undefined;
}

/** `PublicKeyCredential.toJSON()`, done by hand where the browser lacks it. */
export function credentialJSON(credential: PublicKeyCredential): Json {
  const own = (credential as { toJSON?: () => Json }).toJSON;
  if (typeof own === "function") return own.call(credential);
  const r = credential.response as AuthenticatorResponse & Record<string, unknown>;
  const response: Json = { clientDataJSON: base64url(r.clientDataJSON) };
  if ("attestationObject" in r) {
    const attestation = r as unknown as AuthenticatorAttestationResponse;
    response.attestationObject = base64url(attestation.attestationObject);
    response.transports = attestation.getTransports?.() ?? [];
    const data = attestation.getAuthenticatorData?.();
    if (data !== undefined) response.authenticatorData = base64url(data);
    const key = attestation.getPublicKey?.();
    if (key) response.publicKey = base64url(key);
    const algorithm = attestation.getPublicKeyAlgorithm?.();
    if (algorithm !== undefined) response.publicKeyAlgorithm = algorithm;
  } else {
    const assertion = r as unknown as AuthenticatorAssertionResponse;
    response.authenticatorData = base64url(assertion.authenticatorData);
    response.signature = base64url(assertion.signature);
    if (assertion.userHandle) response.userHandle = base64url(assertion.userHandle);
  }
  return {
    id: credential.id,
    rawId: base64url(credential.rawId),
    type: credential.type,
    response,
    authenticatorAttachment: credential.authenticatorAttachment ?? undefined,
    clientExtensionResults: credential.getClientExtensionResults?.() ?? {},
  };
}

/** Whether this environment can make and use passkeys (a browser with WebAuthn). */
export function passkeysSupported(): boolean {
  const container = (globalThis as { navigator?: Navigator }).navigator?.credentials;
  return container !== undefined && typeof PublicKeyCredential !== "undefined";
}

function credentials(): CredentialsContainer {
  if (!passkeysSupported()) {
    throw new AnonidError("not_supported", "Passkeys need a browser with WebAuthn.");
  }
  return (globalThis as unknown as { navigator: Navigator }).navigator.credentials;
}

/** Throws `not_supported` where there is no WebAuthn (before anonid is asked for anything). */
export function requirePasskeys(): void {
  credentials();
}

function failure(cause: unknown): AnonidError {
  const name = (cause as { name?: string } | null)?.name;
  if (name === "NotAllowedError" || name === "AbortError") {
    return new AnonidError("passkey_cancelled", "The passkey prompt was dismissed or timed out.", 0, { cause });
  }
  return new AnonidError("passkey_failed", "The browser could not use a passkey.", 0, { cause });
}

/** One WebAuthn ceremony for `options` (JSON): the browser's answer, as JSON. */
async function ceremony(kind: "create" | "get", options: Json): Promise<Json> {
  const container = credentials();
  const json = (options.publicKey ?? options) as Json;
  let credential: Credential | null;
  try {
    credential =
      kind === "create"
        ? await container.create({ publicKey: creationOptions(json) })
        : await container.get({ publicKey: requestOptions(json) });
  } catch (cause) {
    throw failure(cause);
  }
  if (credential === null) throw failure(null);
  return credentialJSON(credential as PublicKeyCredential);
}

/** Asks the browser to make a passkey for `options` (creation options JSON). */
export function createPasskey(options: Json): Promise<Json> {
  return ceremony("create", options);
}

/** Asks the browser to sign in with a passkey for `options` (request options JSON). */
export function getPasskey(options: Json): Promise<Json> {
  return ceremony("get", options);
}
