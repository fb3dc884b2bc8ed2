import { AnonidError, errorFromAnswer } from "./errors.js";

/** One request to anonid. */
export interface Call {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  body?: unknown;
  /** Default `application/json` when there is a body. */
  contentType?: string;
  headers?: Record<string, string>;
}

/** anonid's answer: any status (the caller decides), the parsed JSON body (or `null`). */
export interface Answer {
  status: number;
  body: unknown;
  headers: Headers;
}

/** Sends calls to anonid: cookies included in cookie mode, the bearer token in bearer mode. */
export class Http {
  readonly base: string;
  private readonly fetcher: typeof fetch;
  private readonly cookies: boolean;

  constructor(base: string, fetcher: typeof fetch | undefined, cookies: boolean) {
    this.base = base.replace(/\/+$/, "");
    const found = fetcher ?? (globalThis.fetch as typeof fetch | undefined);
    if (found === undefined) throw new AnonidError("not_supported", "No fetch is available here.");
    // Bound: window.fetch called as a method of another object throws "Illegal invocation".
    this.fetcher = fetcher ?? found.bind(globalThis);
    this.cookies = cookies;
  }

  /** The answer to `call`; `network_error` when none came, `invalid_response` for non-JSON. */
  async send(call: Call, token: string | null): Promise<Answer> {
    const headers: Record<string, string> = { Accept: "application/json", ...call.headers };
    if (!this.cookies) headers["X-Anonid-Token"] = "bearer";
    if (token !== null) headers.Authorization = `Bearer ${token}`;
    const init: RequestInit = {
      method: call.method,
      headers,
      credentials: this.cookies ? "include" : "omit",
    };
    if (call.body !== undefined) {
      headers["Content-Type"] = call.contentType ?? "application/json";
      init.body = JSON.stringify(call.body);
    }
    let response: Response;
    try {
      response = await this.fetcher(this.base + call.path, init);
    } catch (cause) {
      throw new AnonidError("network_error", "anonid could not be reached.", 0, { cause });
    }
    const text = await response.text().catch(() => "");
    let body: unknown = null;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch (cause) {
        throw new AnonidError(
          "invalid_response",
          `anonid answered ${response.status} with a body that is not JSON.`,
          response.status,
          { cause },
        );
      }
    }
    return { status: response.status, body, headers: response.headers };
  }
}

/** The body of a successful answer; the answer's `AnonidError` otherwise. */
export function expectOk(answer: Answer): unknown {
  if (answer.status >= 200 && answer.status < 300) return answer.body;
  throw errorFromAnswer(answer.status, answer.body, answer.headers.get("retry-after"));
}

/** The error code of a failed answer (`undefined` for a success). */
export function codeOf(answer: Answer): string | undefined {
  if (answer.status < 400) return undefined;
  const body = answer.body as { error?: unknown } | null;
  return body !== null && typeof body === "object" && typeof body.error === "string"
    ? body.error
    : undefined;
}
