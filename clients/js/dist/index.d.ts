/**
 * Every failure of a call is an `AnonidError`. `code` is the API's own error code
 * (`invalid_credentials`, `session_expired`, `rate_limited`, …) or, for failures that never reached
 * an answer from anonid, one of the client's: `network_error`, `invalid_response`,
 * `not_supported`, `passkey_cancelled`, `passkey_failed`, `challenge_unsolvable`.
 */
declare class AnonidError extends Error {
    /** The API's error code, or one of the client's (see above). */
    readonly code: string;
    /** The HTTP status; 0 when no answer came. */
    readonly status: number;
    /** Seconds to wait, from `Retry-After` (rate limits, outages). */
    readonly retryAfter: number | undefined;
    constructor(code: string, message: string, status?: number, options?: {
        retryAfter?: number;
        cause?: unknown;
    });
}

/** The user object (`U`) of anonid's API. */
interface User {
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
interface SignInResult {
    user: User;
    /** The guest whose data was merged into this account, when signing in merged one. */
    mergedFrom?: string;
}
/** A started conversion (`POST /v1/me/conversion`). */
interface Conversion {
    state: "pending";
    pending_email: string;
}
/**
 * Where bearer mode keeps its tokens: `localStorage`, `sessionStorage`, React Native's
 * `AsyncStorage` or anything with the same three methods (sync or async).
 */
interface TokenStorage {
    getItem(key: string): string | null | Promise<string | null>;
    setItem(key: string, value: string): void | Promise<void>;
    removeItem(key: string): void | Promise<void>;
}
type AuthEvent = "SIGNED_IN" | "TOKEN_REFRESHED" | "SIGNED_OUT" | "SESSION_ENDED";
/**
 * `SIGNED_IN`: a sign-in, a new guest or a conversion gave this client a session (with its user).
 * `TOKEN_REFRESHED`: the session was renewed. `SIGNED_OUT`: `signOut()`. `SESSION_ENDED`: anonid
 * no longer accepts the session (ended elsewhere, expired, reused): the user is `null`.
 */
type AuthChangeCallback = (event: AuthEvent, user: User | null) => void;
interface ClientOptions {
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
interface StoredSession {
    access_token: string;
    refresh_token: string;
    expires_at: number;
    refresh_at: number;
}

type Data = Record<string, unknown>;
/** Signing in with a provider's own pages: the browser leaves for the provider and comes back. */
interface ProviderRedirect {
    /** Where the browser comes back to (default: the current page). Must be an allowed origin. */
    returnTo?: string;
    /** `false`: only give the URL, do not navigate. */
    redirect?: boolean;
}
/** Signing in with an ID token a native app obtained from the provider itself. */
interface ProviderToken {
    idToken: string;
    nonce?: string;
}
/** Creates a client for the anonid at `options.url` (CONTRACT §17). */
declare function createClient(options: ClientOptions): AnonidClient;
declare class AnonidClient {
    readonly url: string;
    readonly mode: "cookie" | "bearer";
    private readonly session;
    private readonly challengeWorker;
    constructor(options: ClientOptions);
    /**
     * A guest account for this visitor, or the account of the session it already has (no new
     * account then). Solves anonid's proof-of-work challenge when anonid asks for one.
     */
    signInAnonymously(): Promise<SignInResult>;
    private solveAnonymousChallenge;
    /** The signed-in user (`U`). */
    getUser(): Promise<User>;
    /** Applies a JSON Merge Patch (RFC 7396) to the user's `data`, atomically; the new `data`. */
    updateData(patch: Data): Promise<Data>;
    /** Replaces the user's `data`; the new `data`. */
    replaceData(data: Data): Promise<Data>;
    /** Asks anonid to email `email` a link and a code that make this guest a registered account. */
    requestConversion(email: string): Promise<Conversion>;
    /** Finishes a conversion with the six-digit code from that email: same account, registered. */
    verifyConversionCode(code: string): Promise<SignInResult>;
    signInWithPassword(email: string, password: string): Promise<SignInResult>;
    /** Emails `email` a sign-in code and link (anonid answers the same whether or not it exists). */
    signInWithEmail(email: string): Promise<void>;
    /** Signs in with the code `signInWithEmail` sent. */
    verifyEmailCode(email: string, code: string): Promise<SignInResult>;
    /**
     * With `{idToken}` (a native app's token from the provider): signs in and resolves to the user.
     * Otherwise (cookie mode): sends the browser to the provider, which brings it back to
     * `returnTo` signed in, or with `?error=<code>` (`readProviderError`).
     */
    signInWithProvider(provider: string, options: ProviderToken): Promise<SignInResult>;
    signInWithProvider(provider: string, options?: ProviderRedirect): Promise<{
        url: string;
    }>;
    /** Adds a passkey to this account; a guest becomes registered with it (no address needed). */
    addPasskey(options?: {
        name?: string;
    }): Promise<SignInResult>;
    /** Signs in with a passkey the browser or device holds (discoverable credentials). */
    signInWithPasskey(): Promise<SignInResult>;
    /** Ends this session at anonid and here. A session anonid had already ended counts as done. */
    signOut(): Promise<void>;
    /** Renews the session now (a new refresh token and access token); the user. */
    refresh(): Promise<SignInResult>;
    /** Bearer mode: a current access token for your own backend (renewed if due); else `null`. */
    getAccessToken(): Promise<string | null>;
    /** Calls `callback(event, user)` on sign-in, refresh, sign-out and session end; unsubscribes. */
    onAuthStateChange(callback: AuthChangeCallback): () => void;
    /** Stops the background renewal and drops the listeners. */
    dispose(): void;
}
/** The error a provider sign-in came back with (`?error=<code>` on `returnTo`), or `null`. */
declare function readProviderError(url?: string): AnonidError | null;

/** An ALTCHA challenge, as `GET /v1/challenge` gives it. */
interface Challenge {
    algorithm: string;
    challenge: string;
    maxnumber: number;
    salt: string;
    signature: string;
}
/**
 * Solves an ALTCHA proof of work: the number `n` with `hash(salt + n) == challenge`. Resolves to
 * the `X-Anonid-Challenge` header's value (the base64 of the solution's JSON). Runs in a Web Worker
 * where one can run (`worker: false` to stay on the calling thread).
 */
declare function solveChallenge(challenge: Challenge, options?: {
    worker?: boolean;
}): Promise<string>;

/** A `TokenStorage` in memory: the default, gone with the page or process. */
declare function memoryStorage(): TokenStorage;

/** Whether this environment can make and use passkeys (a browser with WebAuthn). */
declare function passkeysSupported(): boolean;

export { AnonidClient, AnonidError, type AuthChangeCallback, type AuthEvent, type Challenge, type ClientOptions, type Conversion, type ProviderRedirect, type ProviderToken, type SignInResult, type StoredSession, type TokenStorage, type User, createClient, memoryStorage, passkeysSupported, readProviderError, solveChallenge };
