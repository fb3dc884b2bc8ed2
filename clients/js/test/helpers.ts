/* Helpers the tests share: the anonid they run against, a cookie jar for Node, raw calls. */
import { inject } from "vitest";
import type { AuthEvent, TokenStorage, User } from "../src/index.js";

export const ANONID = inject("anonidUrl");
export const ACCESS_TTL_MS = inject("accessTtlSeconds") * 1000;
export const PASSWORD = "plum-harbour-lantern-42";

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function uniqueEmail(tag: string): string {
  return `${tag}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}@example.com`;
}

/**
 * A `fetch` with a cookie jar, as a browser would have for anonid's host (Node's fetch keeps no
 * cookies), counting requests by path.
 */
export function browserFetch(): {
  fetch: typeof fetch;
  jar: Map<string, string>;
  calls: string[];
} {
  const jar = new Map<string, string>();
  const calls: string[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    calls.push(`${init?.method ?? "GET"} ${url.pathname}`);
    const headers = new Headers(init?.headers);
    if (jar.size > 0) headers.set("Cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(input, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair = "", ...attributes] = line.split(";");
      const [name = "", value = ""] = pair.split("=", 2).map((s) => s.trim());
      const cleared = attributes.some((a) => a.trim().toLowerCase() === "max-age=0");
      if (cleared || value === "" || value === '""') jar.delete(name);
      else jar.set(name, value);
    }
    return response;
  };
  return { fetch: fetcher, jar, calls };
}

/** A `fetch` that counts requests by path (bearer mode needs no jar). */
export function countingFetch(): { fetch: typeof fetch; calls: string[] } {
  const calls: string[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    calls.push(`${init?.method ?? "GET"} ${new URL(String(input)).pathname}`);
    return fetch(input, init);
  };
  return { fetch: fetcher, calls };
}

/** A storage with the async methods of React Native's AsyncStorage. */
export function asyncStorage(): TokenStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: async (key) => items.get(key) ?? null,
    setItem: async (key, value) => void items.set(key, value),
    removeItem: async (key) => void items.delete(key),
  };
}

/** Every auth event a client reports, in order. */
export function recorder(): {
  events: Array<[AuthEvent, string | null]>;
  listener: (event: AuthEvent, user: User | null) => void;
} {
  const events: Array<[AuthEvent, string | null]> = [];
  return { events, listener: (event, user) => events.push([event, user?.id ?? null]) };
}

/** A raw call to anonid, as another device or a backend would make it. */
export async function raw(
  method: string,
  path: string,
  options: { body?: unknown; token?: string; bearer?: boolean } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.token !== undefined) headers.Authorization = `Bearer ${options.token}`;
  if (options.bearer) headers["X-Anonid-Token"] = "bearer";
  const response = await fetch(ANONID + path, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** The newest password-setup link anonid emailed to `email` (its local catcher, /dev/mail). */
export async function setupTokenFor(email: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const page = await (await fetch(`${ANONID}/dev/mail`)).text();
    for (const article of page.split("<article").slice(1)) {
      if (!article.includes(email)) continue;
      const link = /account\/setup\?token=([A-Za-z0-9_-]+)/.exec(article);
      if (link?.[1]) return link[1];
    }
    await sleep(200);
  }
  throw new Error(`no setup link for ${email}`);
}

/** A registered account (a guest converted by its link on "another device"), with `data`. */
export async function registeredAccount(email: string, data: object): Promise<string> {
  const guest = await raw("POST", "/v1/anonymous", { bearer: true });
  const token = guest.body.access_token as string;
  await raw("PUT", "/v1/me/data", { token, body: data });
  const asked = await raw("POST", "/v1/me/conversion", { token, body: { email } });
  if (asked.status !== 202) throw new Error(`conversion refused: ${JSON.stringify(asked.body)}`);
  const setup = await raw("POST", "/v1/password-setup", {
    body: { token: await setupTokenFor(email), password: PASSWORD },
  });
  if (setup.status !== 200) throw new Error(`setup refused: ${JSON.stringify(setup.body)}`);
  return guest.body.user.id as string;
}

/** The claims of a JWT (read, not verified). */
export function claims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1] ?? "";
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}
