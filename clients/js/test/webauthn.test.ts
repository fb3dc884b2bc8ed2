/* The WebAuthn JSON conversions (anonid speaks the JSON forms, browsers want ArrayBuffers), and
   the passkey calls where there is no WebAuthn (Node). The ceremonies themselves run in Chromium. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createClient } from "../src/index.js";
import {
  base64url,
  bytesFromBase64url,
  creationOptions,
  requestOptions,
} from "../src/webauthn.js";
import { ANONID, countingFetch } from "./helpers.js";

describe("WebAuthn JSON", () => {
  it("base64url matches Node's for every length, both ways", () => {
    for (let n = 0; n < 70; n++) {
      const bytes = randomBytes(n);
      const text = base64url(bytes);
      expect(text).toBe(bytes.toString("base64url"));
      expect(Buffer.from(bytesFromBase64url(text))).toEqual(bytes);
      // Padded standard base64 reads the same.
      expect(Buffer.from(bytesFromBase64url(bytes.toString("base64")))).toEqual(bytes);
    }
  });

  it("refuses text that is not base64url", () => {
    expect(() => bytesFromBase64url("abc$")).toThrow(/base64url/);
    expect(() => bytesFromBase64url("a")).toThrow(/base64url/);
  });

  it("turns creation options' challenge, user id and excluded ids into buffers", () => {
    const challenge = randomBytes(32);
    const userId = randomBytes(16);
    const excluded = randomBytes(20);
    const options = creationOptions({
      rp: { id: "localhost", name: "anonid" },
      user: { id: userId.toString("base64url"), name: "guest", displayName: "Guest" },
      challenge: challenge.toString("base64url"),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      excludeCredentials: [{ type: "public-key", id: excluded.toString("base64url"), transports: ["internal"] }],
      authenticatorSelection: { residentKey: "required", userVerification: "preferred" },
    });
    expect(Buffer.from(options.challenge as ArrayBuffer)).toEqual(challenge);
    expect(Buffer.from(options.user.id as ArrayBuffer)).toEqual(userId);
    const [descriptor] = options.excludeCredentials ?? [];
    expect(Buffer.from(descriptor?.id as ArrayBuffer)).toEqual(excluded);
    expect(descriptor?.transports).toEqual(["internal"]);
    expect(options.authenticatorSelection?.residentKey).toBe("required");
    expect(options.rp.id).toBe("localhost");
  });

  it("turns request options' challenge into a buffer and keeps the rest", () => {
    const challenge = randomBytes(32);
    const options = requestOptions({
      challenge: challenge.toString("base64url"),
      rpId: "localhost",
      userVerification: "preferred",
    });
    expect(Buffer.from(options.challenge as ArrayBuffer)).toEqual(challenge);
    expect(options.allowCredentials).toBeUndefined();
    expect(options.rpId).toBe("localhost");
  });
});

describe("passkeys without WebAuthn", () => {
  it("addPasskey and signInWithPasskey say not_supported before asking anonid anything", async () => {
    const { fetch, calls } = countingFetch();
    const client = createClient({ url: ANONID, fetch });
    await expect(client.addPasskey()).rejects.toMatchObject({ code: "not_supported" });
    await expect(client.signInWithPasskey()).rejects.toMatchObject({ code: "not_supported" });
    expect(calls).toEqual([]);
  });
});
