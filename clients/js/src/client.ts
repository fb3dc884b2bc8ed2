import { solveChallenge, type Challenge } from "./challenge.js";
import { AnonidError } from "./errors.js";
import { type Call, codeOf, expectOk } from "./http.js";
import { Session } from "./session.js";
import type {
  AuthChangeCallback,
  ClientOptions,
  Conversion,
  SignInResult,
  User,
} from "./types.js";
import { createPasskey, getPasskey, requirePasskeys } from "./webauthn.js";

type Data = Record<string, unknown>;

/** Signing in with a provider's own pages: the browser leaves for the provider and comes back. */
export interface ProviderRedirect {
  /** Where the browser comes back to (default: the current page). Must be an allowed origin. */
  returnTo?: string;
  /** `false`: only give the URL, do not navigate. */
  redirect?: boolean;
}

/** Signing in with an ID token a native app obtained from the provider itself. */
export interface ProviderToken {
  idToken: string;
  nonce?: string;
}

/** Creates a client for the anonid at `options.url` (CONTRACT §17). */
export function createClient(options: ClientOptions): AnonidClient {
  return new AnonidClient(options);
}

export class AnonidClient {
  readonly url: string;
  readonly mode: "cookie" | "bearer";
  private readonly session: Session;
  private readonly challengeWorker: boolean;

  constructor(options: ClientOptions) {
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
  async signInAnonymously(): Promise<SignInResult> {
    if (this.session.bearer && (await this.session.accessToken()) !== null) {
      // anonid would start a second session of the same user; the one kept here serves.
      try {
        return { user: await this.getUser() };
      } catch (err) {
        if (!(err instanceof AnonidError && err.code === "invalid_session")) throw err;
      }
    }
    const call: Call = { method: "POST", path: "/v1/anonymous" };
    let answer = await this.session.send(call);
    if (codeOf(answer) === "challenge_required") {
      const proof = await this.solveAnonymousChallenge();
      answer = await this.session.send({ ...call, headers: { "X-Anonid-Challenge": proof } });
    }
    const known = this.session.knownUser;
    const body = expectOk(answer) as { user: User };
    const isNew = answer.status === 201 || known === null || known.id !== body.user.id;
    return this.session.signedIn(body, isNew ? "SIGNED_IN" : null);
  }

  private async solveAnonymousChallenge(): Promise<string> {
    const challenge = (await this.session.call({ method: "GET", path: "/v1/challenge" })) as Challenge;
    return solveChallenge(challenge, { worker: this.challengeWorker });
  }

  /** The signed-in user (`U`). */
  async getUser(): Promise<User> {
    const user = (await this.session.call({ method: "GET", path: "/v1/me" })) as User;
    this.session.saw(user);
    return user;
  }

  /** Applies a JSON Merge Patch (RFC 7396) to the user's `data`, atomically; the new `data`. */
  async updateData(patch: Data): Promise<Data> {
    const body = await this.session.call({
      method: "PATCH",
      path: "/v1/me/data",
      body: patch,
      contentType: "application/merge-patch+json",
    });
    return (body as { data: Data }).data;
  }

  /** Replaces the user's `data`; the new `data`. */
  async replaceData(data: Data): Promise<Data> {
    const body = await this.session.call({ method: "PUT", path: "/v1/me/data", body: data });
    return (body as { data: Data }).data;
  }

  // Converting a guest -----------------------------------------------------------------------

  /** Asks anonid to email `email` a link and a code that make this guest a registered account. */
  async requestConversion(email: string): Promise<Conversion> {
    const body = { email };
    return (await this.session.call({ method: "POST", path: "/v1/me/conversion", body })) as Conversion;
  }

  /** Finishes a conversion with the six-digit code from that email: same account, registered. */
  async verifyConversionCode(code: string): Promise<SignInResult> {
    const body = { code };
    const call: Call = { method: "POST", path: "/v1/me/conversion/verify", body };
    return this.session.signedIn(await this.session.call(call));
  }

  // Signing in (a guest's data is merged into the account) -----------------------------------

  async signInWithPassword(email: string, password: string): Promise<SignInResult> {
    const call: Call = { method: "POST", path: "/v1/login", body: { email, password } };
    return this.session.signedIn(await this.session.call(call));
  }

  /** Emails `email` a sign-in code and link (anonid answers the same whether or not it exists). */
  async signInWithEmail(email: string): Promise<void> {
    await this.session.call({ method: "POST", path: "/v1/login/email", body: { email } });
  }

  /** Signs in with the code `signInWithEmail` sent. */
  async verifyEmailCode(email: string, code: string): Promise<SignInResult> {
    const call: Call = { method: "POST", path: "/v1/login/email/verify", body: { email, code } };
    return this.session.signedIn(await this.session.call(call));
  }

  /**
   * With `{idToken}` (a native app's token from the provider): signs in and resolves to the user.
   * Otherwise (cookie mode): sends the browser to the provider, which brings it back to
   * `returnTo` signed in, or with `?error=<code>` (`readProviderError`).
   */
  signInWithProvider(provider: string, options: ProviderToken): Promise<SignInResult>;
  signInWithProvider(provider: string, options?: ProviderRedirect): Promise<{ url: string }>;
  async signInWithProvider(
    provider: string,
    options: ProviderToken | ProviderRedirect = {},
  ): Promise<SignInResult | { url: string }> {
    const name = encodeURIComponent(provider);
    if ("idToken" in options) {
      const body: Record<string, string> = { id_token: options.idToken };
      if (options.nonce !== undefined) body.nonce = options.nonce;
      const call: Call = { method: "POST", path: `/v1/oauth/${name}/token`, body };
      return this.session.signedIn(await this.session.call(call));
    }
    if (this.session.bearer) {
      throw new AnonidError(
        "not_supported",
        "A provider's pages sign in with cookies: use cookie mode, or pass the provider's idToken.",
      );
    }
    const here = (globalThis as { location?: Location }).location;
    const returnTo = options.returnTo ?? here?.href;
    const query = returnTo === undefined ? "" : `?return_to=${encodeURIComponent(returnTo)}`;
    const url = `${this.url}/v1/oauth/${name}/authorize${query}`;
    if (options.redirect !== false && here !== undefined) here.assign(url);
    return { url };
  }

  // Passkeys ---------------------------------------------------------------------------------

  /** Adds a passkey to this account; a guest becomes registered with it (no address needed). */
  async addPasskey(options: { name?: string } = {}): Promise<SignInResult> {
    requirePasskeys();
    const creation = await this.session.call({ method: "POST", path: "/v1/me/passkeys/options" });
    const credential = await createPasskey(creation as Data);
    const body: Data = { credential };
    if (options.name !== undefined) body.name = options.name;
    return this.session.signedIn(
      await this.session.call({ method: "POST", path: "/v1/me/passkeys", body }),
    );
  }

  /** Signs in with a passkey the browser or device holds (discoverable credentials). */
  async signInWithPasskey(): Promise<SignInResult> {
    requirePasskeys();
    const asked = await this.session.send({ method: "POST", path: "/v1/login/passkey/options" });
    const request = expectOk(asked) as Data;
    // Binds the answer to the challenge where no cookie can (bearer mode, native apps).
    const challengeId = asked.headers.get("x-anonid-challenge-id");
    const credential = await getPasskey(request);
    const call: Call = { method: "POST", path: "/v1/login/passkey", body: { credential } };
    if (challengeId !== null) call.headers = { "X-Anonid-Challenge-Id": challengeId };
    return this.session.signedIn(await this.session.call(call));
  }

  // The session ------------------------------------------------------------------------------

  /** Ends this session at anonid and here. A session anonid had already ended counts as done. */
  async signOut(): Promise<void> {
    const hadSession = this.session.knownUser !== null || (await this.session.accessToken()) !== null;
    if (!this.session.bearer || hadSession) {
      const answer = await this.session.send({ method: "POST", path: "/v1/logout" });
      const code = codeOf(answer);
      if (code !== "invalid_session" && code !== "session_expired") expectOk(answer);
    }
    await this.session.forget();
    this.session.emit("SIGNED_OUT", null);
  }

  /** Renews the session now (a new refresh token and access token); the user. */
  async refresh(): Promise<SignInResult> {
    const renewed = await this.session.renew(null);
    return renewed ?? { user: await this.getUser() };
  }

  /** Bearer mode: a current access token for your own backend (renewed if due); else `null`. */
  async getAccessToken(): Promise<string | null> {
    return this.session.accessToken();
  }

  /** Calls `callback(event, user)` on sign-in, refresh, sign-out and session end; unsubscribes. */
  onAuthStateChange(callback: AuthChangeCallback): () => void {
    return this.session.onChange(callback);
  }

  /** Stops the background renewal and drops the listeners. */
  dispose(): void {
    this.session.dispose();
  }
}

const PROVIDER_ERRORS: Record<string, string> = {
  access_denied: "Signing in with the provider was cancelled.",
  invalid_state: "The sign-in took too long or was already used; please try again.",
  invalid_id_token: "The provider's answer could not be verified.",
  provider_error: "The provider could not sign you in.",
  identity_taken: "That provider account is already linked to another account.",
  email_taken: "That address already belongs to another account.",
};

/** The error a provider sign-in came back with (`?error=<code>` on `returnTo`), or `null`. */
export function readProviderError(url?: string): AnonidError | null {
  const href = url ?? (globalThis as { location?: Location }).location?.href;
  if (href === undefined) return null;
  const code = new URL(href).searchParams.get("error");
  if (code === null || code === "") return null;
  return new AnonidError(code, PROVIDER_ERRORS[code] ?? "Signing in with the provider did not work.");
}
