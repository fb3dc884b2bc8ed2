/* Bearer mode against a real anonid (access tokens live three seconds here): tokens in a pluggable
   storage, renewed before they expire, one renewal at a time, and every change reported. */
import { afterEach, describe, expect, it } from "vitest";
import { createClient, type AnonidClient, type ClientOptions } from "../src/index.js";
import type { StoredSession } from "../src/types.js";
import {
  ACCESS_TTL_MS,
  ANONID,
  asyncStorage,
  claims,
  countingFetch,
  PASSWORD,
  raw,
  recorder,
  registeredAccount,
  sleep,
  uniqueEmail,
} from "./helpers.js";

const clients: AnonidClient[] = [];

function bearerClient(options: Partial<ClientOptions> = {}) {
  const counted = countingFetch();
  const client = createClient({ url: ANONID, mode: "bearer", fetch: counted.fetch, ...options });
  clients.push(client);
  return { client, calls: counted.calls };
}

afterEach(() => {
  for (const client of clients.splice(0)) client.dispose();
});

function stored(storage: { items: Map<string, string> }): StoredSession {
  const raw = storage.items.get("anonid.session");
  if (raw === undefined) throw new Error("nothing stored");
  return JSON.parse(raw) as StoredSession;
}

const refreshes = (calls: string[]) => calls.filter((c) => c === "POST /v1/session/refresh");

describe("bearer mode", () => {
  it("keeps the tokens in the given storage and reuses the session instead of starting another", async () => {
    const storage = asyncStorage();
    const { client } = bearerClient({ storage, autoRefresh: false });
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);
    const { user } = await client.signInAnonymously();
    const session = stored(storage);
    expect(claims(session.access_token)).toMatchObject({ sub: user.id, anon: true });
    expect(session.refresh_token.length).toBeGreaterThanOrEqual(43);
    expect(session.expires_at - Date.now()).toBeLessThanOrEqual(ACCESS_TTL_MS);
    expect(session.refresh_at).toBeLessThan(session.expires_at);
    expect(events).toEqual([["SIGNED_IN", user.id]]);

    expect((await client.signInAnonymously()).user.id).toBe(user.id);
    const sessions = await raw("GET", "/v1/me/sessions", { token: await client.getAccessToken() ?? "" });
    expect(sessions.body.sessions).toHaveLength(1);

    // Another client on the same storage (a reload, a second tab) has the same session.
    const { client: reloaded } = bearerClient({ storage, autoRefresh: false });
    expect((await reloaded.getUser()).id).toBe(user.id);
  });

  it("stores under the storageKey given", async () => {
    const storage = asyncStorage();
    const { client } = bearerClient({ storage, storageKey: "shop.anonid", autoRefresh: false });
    await client.signInAnonymously();
    expect([...storage.items.keys()]).toEqual(["shop.anonid"]);
  });

  it("without storage keeps the tokens in memory, for this client only", async () => {
    const { client } = bearerClient({ autoRefresh: false });
    const { user } = await client.signInAnonymously();
    expect((await client.getUser()).id).toBe(user.id);
    const { client: other } = bearerClient({ autoRefresh: false });
    expect(await other.getAccessToken()).toBeNull();
    await expect(other.getUser()).rejects.toMatchObject({ code: "invalid_session" });
  });

  it("renews in the background before the access token expires", async () => {
    const storage = asyncStorage();
    const { client, calls } = bearerClient({ storage });
    const { user } = await client.signInAnonymously();
    const first = stored(storage);
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);

    await sleep(first.refresh_at - Date.now() + 600);
    expect(refreshes(calls)).toHaveLength(1);
    expect(events).toEqual([["TOKEN_REFRESHED", user.id]]);
    const second = stored(storage);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    // Renewed before the old token expired, so no call ever met an expired one.
    expect(Date.now()).toBeLessThan(first.expires_at + 100);
    expect(claims(second.access_token).sid).toBe(claims(first.access_token).sid);
    expect((await client.getUser()).id).toBe(user.id);
  });

  it("runs one renewal at a time however many calls find the token stale", async () => {
    const { client, calls } = bearerClient({ autoRefresh: false });
    const { user } = await client.signInAnonymously();
    await sleep(ACCESS_TTL_MS + 300);
    const users = await Promise.all(Array.from({ length: 6 }, () => client.getUser()));
    expect(users.every((u) => u.id === user.id)).toBe(true);
    expect(refreshes(calls)).toHaveLength(1);
  });

  it("renews and retries once when anonid says the token has expired", async () => {
    const storage = asyncStorage();
    const { client, calls } = bearerClient({ storage, autoRefresh: false });
    const { user } = await client.signInAnonymously();
    // This device's clock thinks the token is still fresh; anonid knows better.
    const session = stored(storage);
    storage.items.set(
      "anonid.session",
      JSON.stringify({ ...session, refresh_at: Date.now() + 3_600_000, expires_at: Date.now() + 3_600_000 }),
    );
    await sleep(ACCESS_TTL_MS + 300);
    expect((await client.updateData({ seen: true }))).toEqual({ seen: true });
    expect(calls.slice(-3)).toEqual([
      "PATCH /v1/me/data",
      "POST /v1/session/refresh",
      "PATCH /v1/me/data",
    ]);
    expect((await client.getUser()).id).toBe(user.id);
  });

  it("two tabs sharing the storage both keep the session across a renewal", async () => {
    const storage = asyncStorage();
    const { client: one } = bearerClient({ storage, autoRefresh: false });
    const { client: two } = bearerClient({ storage, autoRefresh: false });
    const { user } = await one.signInAnonymously();
    await sleep(ACCESS_TTL_MS + 300);
    const [a, b] = await Promise.all([one.getUser(), two.getUser()]);
    expect([a.id, b.id]).toEqual([user.id, user.id]);
    // Whatever the storage holds now is a live pair.
    const renewed = await raw("POST", "/v1/session/refresh", {
      body: { refresh_token: stored(storage).refresh_token },
    });
    expect(renewed.status).toBe(200);
  });

  it("a session ended elsewhere is reported once, and its tokens are dropped", async () => {
    const storage = asyncStorage();
    const { client } = bearerClient({ storage, autoRefresh: false });
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);
    const { user } = await client.signInAnonymously();
    const token = stored(storage).access_token;
    const sid = claims(token).sid as string;
    expect((await raw("DELETE", `/v1/me/sessions/${sid}`, { token })).status).toBe(204);

    await expect(client.getUser()).rejects.toMatchObject({ code: "invalid_session", status: 401 });
    expect(events).toEqual([
      ["SIGNED_IN", user.id],
      ["SESSION_ENDED", null],
    ]);
    expect(storage.items.size).toBe(0);
    await expect(client.getUser()).rejects.toMatchObject({ code: "invalid_session" });
    expect(events).toHaveLength(2);
  });

  it("a refresh token anonid refuses ends the session", async () => {
    const storage = asyncStorage();
    const { client } = bearerClient({ storage, autoRefresh: false });
    const { events, listener } = recorder();
    await client.signInAnonymously();
    client.onAuthStateChange(listener);
    await raw("POST", "/v1/logout", { token: stored(storage).access_token });
    await expect(client.refresh()).rejects.toMatchObject({ code: "invalid_session" });
    expect(events).toEqual([["SESSION_ENDED", null]]);
    expect(await client.getAccessToken()).toBeNull();
  });

  it("signing in with a guest's token merges the guest and replaces its tokens", async () => {
    const email = uniqueEmail("bearer-merge");
    const accountId = await registeredAccount(email, { favourites: { teapot: true } });
    const storage = asyncStorage();
    const { client } = bearerClient({ storage, autoRefresh: false });
    const { events, listener } = recorder();
    client.onAuthStateChange(listener);
    const guest = (await client.signInAnonymously()).user;
    await client.updateData({ favourites: { plant: true } });
    const guestToken = stored(storage).access_token;

    const { user, mergedFrom } = await client.signInWithPassword(email, PASSWORD);
    expect(user.id).toBe(accountId);
    expect(mergedFrom).toBe(guest.id);
    expect(user.data).toEqual({ favourites: { teapot: true, plant: true } });
    expect(claims(stored(storage).access_token)).toMatchObject({ sub: accountId, anon: false });
    expect(stored(storage).access_token).not.toBe(guestToken);
    expect(events).toEqual([
      ["SIGNED_IN", guest.id],
      ["SIGNED_IN", accountId],
    ]);
  });

  it("signOut ends the session at anonid, forgets the tokens and says so", async () => {
    const storage = asyncStorage();
    const { client } = bearerClient({ storage });
    const { events, listener } = recorder();
    await client.signInAnonymously();
    client.onAuthStateChange(listener);
    const refreshToken = stored(storage).refresh_token;
    await client.signOut();
    expect(storage.items.size).toBe(0);
    expect(events).toEqual([["SIGNED_OUT", null]]);
    const replay = await raw("POST", "/v1/session/refresh", { body: { refresh_token: refreshToken } });
    expect(replay.status).toBe(401);
    // Nothing to end any more: still fine, no call made.
    await client.signOut();
  });

  it("hands out a current access token for the app's own backend", async () => {
    const { client } = bearerClient({ autoRefresh: false });
    expect(await client.getAccessToken()).toBeNull();
    const { user } = await client.signInAnonymously();
    const first = await client.getAccessToken();
    expect(claims(first ?? "").sub).toBe(user.id);
    await sleep(ACCESS_TTL_MS + 300);
    const renewed = await client.getAccessToken();
    expect(renewed).not.toBe(first);
    expect((claims(renewed ?? "").exp as number) * 1000).toBeGreaterThan(Date.now());
  });
});
