import { AnonidError, errorFromAnswer } from "./errors.js";
import { type Answer, type Call, codeOf, expectOk, Http } from "./http.js";
import { memoryStorage, storedFrom, TokenStore } from "./tokens.js";
import type {
  AuthChangeCallback,
  AuthEvent,
  ClientOptions,
  SessionAnswer,
  SignInResult,
  User,
} from "./types.js";

const RETRY_AFTER_FAILED_REFRESH_MS = 10_000;

/**
 * The client's session: sends calls with it, renews it, and tells listeners when it changes.
 *
 * Cookie mode holds nothing: anonid keeps the pair in HttpOnly cookies and renews an expired
 * access cookie on any call. Bearer mode keeps the pair in its storage, renews it shortly before
 * the access token expires (in the background, and before any call that would send an expired
 * one), and never runs two renewals at once.
 */
export class Session {
  readonly http: Http;
  readonly bearer: boolean;
  private readonly store: TokenStore | null;
  private readonly autoRefresh: boolean;
  private readonly listeners = new Set<AuthChangeCallback>();
  private renewing: Promise<SignInResult | null> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** The user this client last saw signed in (so a refusal can be told apart from "never was"). */
  private user: User | null = null;
  private disposed = false;

  constructor(options: ClientOptions) {
    this.bearer = options.mode === "bearer";
    if (options.mode !== undefined && options.mode !== "cookie" && !this.bearer) {
      throw new AnonidError("not_supported", `Unknown mode ${String(options.mode)}.`);
    }
    this.http = new Http(options.url, options.fetch, !this.bearer);
    this.store = this.bearer
      ? new TokenStore(options.storage ?? memoryStorage(), options.storageKey ?? "anonid.session")
      : null;
    this.autoRefresh = this.bearer && options.autoRefresh !== false;
    if (this.autoRefresh) void this.schedule();
  }

  // Calls ------------------------------------------------------------------------------------

  /**
   * Sends `call` with the session (a fresh token in bearer mode). An expired access token is
   * renewed and the call sent once more; a session anonid refuses ends here too.
   */
  async send(call: Call, retry = true): Promise<Answer> {
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
  async call(call: Call): Promise<unknown> {
    return expectOk(await this.send(call));
  }

  /** Takes a session answer (`S`): keeps its tokens (bearer mode) and tells the listeners. */
  async signedIn(body: unknown, event: AuthEvent | null = "SIGNED_IN"): Promise<SignInResult> {
    const answer = body as SessionAnswer;
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
    const result: SignInResult = { user: answer.user };
    if (typeof answer.merged_from === "string") result.mergedFrom = answer.merged_from;
    return result;
  }

  /** Records the user a call returned (so a later refusal counts as the session ending). */
  saw(user: User): void {
    this.user = user;
  }

  get knownUser(): User | null {
    return this.user;
  }

  // Renewal ----------------------------------------------------------------------------------

  /** Bearer mode: an access token that is not about to expire (renewing first), or `null`. */
  async accessToken(): Promise<string | null> {
    if (this.store === null) return null;
    const stored = await this.store.load();
    if (stored === null) return null;
    if (Date.now() < stored.refresh_at) return stored.access_token;
    try {
      await this.renew(stored.access_token);
    } catch (err) {
      if (err instanceof AnonidError && err.code === "invalid_session") return null;
      // anonid unreachable: the old token serves while it lasts.
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
  renew(seen: string | null): Promise<SignInResult | null> {
    if (this.renewing === null) {
      this.renewing = this.renewNow(seen).finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  private async renewNow(seen: string | null): Promise<SignInResult | null> {
    const call: Call = { method: "POST", path: "/v1/session/refresh" };
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

  private async schedule(): Promise<void> {
    if (!this.autoRefresh || this.store === null) return;
    this.cancelTimer();
    const stored = await this.store.load();
    if (stored === null) return;
    this.startTimer(Math.max(0, stored.refresh_at - Date.now()), stored.access_token);
  }

  private startTimer(delay: number, seen: string): void {
    this.cancelTimer();
    if (this.disposed) return;
    const timer = setTimeout(() => {
      this.renew(seen).catch((err: unknown) => {
        // Ended: the listeners know. Anything else (offline): try again shortly.
        if (!(err instanceof AnonidError && err.code === "invalid_session")) {
          this.startTimer(RETRY_AFTER_FAILED_REFRESH_MS, seen);
        }
      });
    }, delay);
    // Node: a pending renewal must not keep the process alive.
    (timer as { unref?: () => void }).unref?.();
    this.timer = timer;
  }

  private cancelTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  // Ending -----------------------------------------------------------------------------------

  /** anonid refused the session: forget it, and tell the listeners if there was one. */
  async ended(): Promise<void> {
    const had = this.user !== null || (this.store !== null && (await this.store.load()) !== null);
    await this.forget();
    if (had) this.emit("SESSION_ENDED", null);
  }

  /** Forgets the session (the tokens, in bearer mode) without telling anyone. */
  async forget(): Promise<void> {
    this.cancelTimer();
    this.user = null;
    await this.store?.clear();
  }

  // Listeners --------------------------------------------------------------------------------

  onChange(callback: AuthChangeCallback): () => void {
    this.listeners.add(callback);
    return () => {
      this.listeners.delete(callback);
    };
  }

  emit(event: AuthEvent, user: User | null): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event, user);
      } catch (err) {
        // A listener's bug must not break the call that changed the session.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  dispose(): void {
    this.disposed = true;
    this.cancelTimer();
    this.listeners.clear();
  }
}
