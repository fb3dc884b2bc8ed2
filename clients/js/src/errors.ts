/**
 * Every failure of a call is an `AnonidError`. `code` is the API's own error code
 * (`invalid_credentials`, `session_expired`, `rate_limited`, …) or, for failures that never reached
 * an answer from anonid, one of the client's: `network_error`, `invalid_response`,
 * `not_supported`, `passkey_cancelled`, `passkey_failed`, `challenge_unsolvable`.
 */
export class AnonidError extends Error {
  /** The API's error code, or one of the client's (see above). */
  readonly code: string;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** Seconds to wait, from `Retry-After` (rate limits, outages). */
  readonly retryAfter: number | undefined;

  constructor(
    code: string,
    message: string,
    status = 0,
    options: { retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message);
    this.name = "AnonidError";
    this.code = code;
    this.status = status;
    this.retryAfter = options.retryAfter;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** The error an anonid answer carries (`{"error", "message"}`), whatever its shape. */
export function errorFromAnswer(status: number, body: unknown, retryAfter: string | null): AnonidError {
  const seconds = retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) : undefined;
  const document = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  const code = typeof document.error === "string" ? document.error : "invalid_response";
  const message =
    typeof document.message === "string" ? document.message : `anonid answered ${status}.`;
  return new AnonidError(code, message, status, { retryAfter: seconds });
}
