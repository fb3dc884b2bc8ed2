/** The user object (`U`) of anonid's API. */
export interface User {
  id: string;
  state: "anonymous" | "pending" | "registered";
  is_anonymous: boolean;
  username: string | null;
  email: string | null;
  pending_email: string | null;
  email_verified: boolean;
  data: Record<string, unknown>;
  created_at: string;
  updated_at: string;
  /** How a registered account signs in: `password`, `email`, `passkey`, `oidc:<provider>`. */
  methods: string[];
}

/** What a sign-in (or a refresh) resolves to. */
export interface SignInResult {
  user: User;
  /** The guest whose data was merged into this account, when signing in merged one. */
  mergedFrom?: string;
}

/** A started conversion (`POST /v1/me/conversion`). */
export interface Conversion {
  state: "pending";
  pending_email: string;
}

/**
 * Where bearer mode keeps its tokens: `localStorage`, `sessionStorage`, React Native's
 * `AsyncStorage` or anything with the same three methods (sync or async).
 */
export interface TokenStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

export type AuthEvent = "SIGNED_IN" | "TOKEN_REFRESHED" | "SIGNED_OUT" | "SESSION_ENDED";

/**
 * `SIGNED_IN`: a sign-in, a new guest or a conversion gave this client a session (with its user).
 * `TOKEN_REFRESHED`: the session was renewed. `SIGNED_OUT`: `signOut()`. `SESSION_ENDED`: anonid
 * no longer accepts the session (ended elsewhere, expired, reused): the user is `null`.
 */
export type AuthChangeCallback = (event: AuthEvent, user: User | null) => void;

export interface ClientOptions {
  /** anonid's base URL, e.g. `https://id.example.com`. */
  url: string;
  /**
   * `cookie` (default): browsers; anonid keeps the session in HttpOnly cookies and renews it by
   * itself. `bearer`: apps and servers; the tokens come in the body, are kept in `storage` and
   * renewed by this client before they expire.
   */
  mode?: "cookie" | "bearer";
  /** Bearer mode: where the tokens live. Without it, in memory (gone with the page or process). */
  storage?: TokenStorage;
  /** Bearer mode: the key under which the tokens are stored. Default `anonid.session`. */
  storageKey?: string;
  /** Bearer mode: renew in the background before the access token expires. Default `true`. */
  autoRefresh?: boolean;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Solve proof-of-work challenges in a Web Worker where there is one. Default `true`. */
  challengeWorker?: boolean;
}

/**
 * The stored form of a bearer session. Times are milliseconds since the epoch, by this device's
 * clock: `refresh_at` is when to renew (a minute, or a quarter of the lifetime, before expiry).
 */
export interface StoredSession {
  access_token: string;
  refresh_token: string;
  expires_at: number;
  refresh_at: number;
}

/** A session answer (`S`) of the API. */
export interface SessionAnswer {
  user: User;
  expires_in: number;
  access_token?: string;
  refresh_token?: string;
  merged_from?: string;
}
