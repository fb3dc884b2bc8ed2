import type { SessionAnswer, StoredSession, TokenStorage } from "./types.js";

/** How long before expiry a bearer session is renewed: a minute, or a quarter of a short life. */
export function refreshMarginMs(lifetimeMs: number): number {
  return Math.min(60_000, lifetimeMs / 4);
}

/** The stored form of a session answer received `now`. */
export function storedFrom(answer: SessionAnswer, now: number): StoredSession {
  const lifetime = Math.max(0, answer.expires_in) * 1000;
  return {
    access_token: answer.access_token ?? "",
    refresh_token: answer.refresh_token ?? "",
    expires_at: now + lifetime,
    refresh_at: now + lifetime - refreshMarginMs(lifetime),
  };
}

/** A `TokenStorage` in memory: the default, gone with the page or process. */
export function memoryStorage(): TokenStorage {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

/** Bearer mode's tokens in their storage (JSON under one key); unreadable content counts as none. */
export class TokenStore {
  constructor(
    private readonly storage: TokenStorage,
    private readonly key: string,
  ) {}

  async load(): Promise<StoredSession | null> {
    const raw = await this.storage.getItem(this.key);
    if (raw === null) return null;
    try {
      const value = JSON.parse(raw) as Partial<StoredSession>;
      if (
        typeof value.access_token === "string" &&
        typeof value.refresh_token === "string" &&
        typeof value.expires_at === "number" &&
        typeof value.refresh_at === "number"
      ) {
        return value as StoredSession;
      }
    } catch {
      // Fall through: whatever is there is not ours to use.
    }
    return null;
  }

  async save(session: StoredSession): Promise<void> {
    await this.storage.setItem(this.key, JSON.stringify(session));
  }

  async clear(): Promise<void> {
    await this.storage.removeItem(this.key);
  }
}
