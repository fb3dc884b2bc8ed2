/* Cookie mode against a real anonid: the session lives in anonid's HttpOnly cookies (a jar here,
   as a browser keeps them); the client never holds a token. */
import { afterEach, describe, expect, it } from "vitest";
import { AnonidError, createClient, type AnonidClient } from "../src/index.js";
import {
  ACCESS_TTL_MS,
  ANONID,
  browserFetch,
  PASSWORD,
  raw,
  recorder,
  registeredAccount,
  setupTokenFor,
  sleep,
  uniqueEmail,
} from "./helpers.js";

const clients: AnonidClient[] = [];

function cookieClient() {
  const browser = browserFetch();
  const client = createClient({ url: ANONID, fetch: browser.fetch });
  clients.push(client);
  return { client, ...browser };
}

afterEach(() => {
  for (const client of clients.splice(0)) client.dispose();
});

describe("cookie mode", () => {
  it("signs in a guest with cookies only, and a second call keeps the same guest", async () => {
    const { client, jar, calls } = cookieClient();
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);

    const { user } = await client.signInAnonymously();
    expect(user.is_anonymous).toBe(true);
    expect(user.state).toBe("anonymous");
    expect([...jar.keys()].sort()).toEqual(["anonid_refresh", "anonid_session"]);
    expect(events).toEqual([["SIGNED_IN", user.id]]);

    const again = await client.signInAnonymously();
    expect(again.user.id).toBe(user.id);
    expect(events).toHaveLength(1);
    expect(calls).toEqual(["POST /v1/anonymous", "POST /v1/anonymous"]);
  });

  it("merges, replaces and reads the profile data", async () => {
    const { client } = cookieClient();
    await client.signInAnonymously();
    expect(await client.updateData({ favourites: { teapot: true, mug: true } })).toEqual({
      favourites: { teapot: true, mug: true },
    });
    expect(await client.updateData({ favourites: { mug: null } })).toEqual({
      favourites: { teapot: true },
    });
    expect(await client.replaceData({ theme: "dark" })).toEqual({ theme: "dark" });
    expect((await client.getUser()).data).toEqual({ theme: "dark" });
  });

  it("maps the API's errors to AnonidError with its code and status", async () => {
    const { client } = cookieClient();
    await client.signInAnonymously();
    const invalid = await client.requestConversion("not an address").catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(AnonidError);
    expect(invalid).toMatchObject({ code: "invalid_email", status: 422 });
    const tooBig = await client.updateData({ blob: "x".repeat(70_000) }).catch((e: unknown) => e);
    expect(tooBig).toMatchObject({ code: "data_too_large", status: 413 });
    const wrong = await client
      .signInWithPassword(uniqueEmail("nobody"), "whatever-password-1")
      .catch((e: unknown) => e);
    expect(wrong).toMatchObject({ code: "invalid_credentials", status: 401 });
    expect((wrong as AnonidError).message).toMatch(/not correct/);
  });

  it("keeps working once the access cookie has expired, and refresh() rotates the pair", async () => {
    const { client, jar } = cookieClient();
    const { events, listener } = recorder();
    const { user } = await client.signInAnonymously();
    client.onAuthStateChange(listener);
    await sleep(ACCESS_TTL_MS + 500);
    // anonid renews an expired access cookie on the spot.
    expect((await client.getUser()).id).toBe(user.id);

    const before = jar.get("anonid_refresh");
    const refreshed = await client.refresh();
    expect(refreshed.user.id).toBe(user.id);
    expect(jar.get("anonid_refresh")).not.toBe(before);
    expect(events).toEqual([["TOKEN_REFRESHED", user.id]]);
  });

  it("a guest's conversion finished on another device ends this session: SESSION_ENDED", async () => {
    const { client } = cookieClient();
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);
    const { user } = await client.signInAnonymously();
    const email = uniqueEmail("convert");
    const pending = await client.requestConversion(email);
    expect(pending).toEqual({ state: "pending", pending_email: email });
    expect((await client.getUser()).state).toBe("pending");

    const token = await setupTokenFor(email);
    const setup = await raw("POST", "/v1/password-setup", { body: { token, password: PASSWORD } });
    expect(setup.status).toBe(200);
    expect(setup.body.user.id).toBe(user.id);

    // The conversion bumped the session version: this browser's session is over.
    const ended = await client.getUser().catch((e: unknown) => e);
    expect(ended).toMatchObject({ code: "invalid_session", status: 401 });
    expect(events).toEqual([
      ["SIGNED_IN", user.id],
      ["SESSION_ENDED", null],
    ]);

    // Signing in with the password gets the same account, registered, data kept.
    const signedIn = await client.signInWithPassword(email, PASSWORD);
    expect(signedIn.user).toMatchObject({ id: user.id, state: "registered", email });
  });

  it("signing in with a guest session merges the guest's data into the account", async () => {
    const email = uniqueEmail("merge");
    const accountId = await registeredAccount(email, { favourites: { teapot: true } });
    const { client } = cookieClient();
    const guest = (await client.signInAnonymously()).user;
    await client.updateData({ favourites: { socks: true } });

    const { user, mergedFrom } = await client.signInWithPassword(email, PASSWORD);
    expect(user.id).toBe(accountId);
    expect(mergedFrom).toBe(guest.id);
    expect(user.data).toEqual({ favourites: { teapot: true, socks: true } });
  });

  it("signOut ends the session at anonid and clears the cookies", async () => {
    const { client, jar } = cookieClient();
    const { events, listener } = recorder();
    const dropped = recorder();
    const { user } = await client.signInAnonymously();
    client.onAuthStateChange(listener);
    const unsubscribe = client.onAuthStateChange(dropped.listener);
    unsubscribe();
    await client.signOut();
    expect(jar.size).toBe(0);
    expect(events).toEqual([["SIGNED_OUT", null]]);
    expect(dropped.events).toEqual([]);
    const after = await client.getUser().catch((e: unknown) => e);
    expect(after).toMatchObject({ code: "invalid_session" });
    expect(user.id).toBeTruthy();
    // A second sign-out (nothing left to end) still succeeds.
    await client.signOut();
  });
});
