/*
 * Starts a real `anonid serve` for the tests, on a free port, and stops it afterwards.
 *
 * The database is `ANONID_DATABASE_URL` when set (the Python test suite hands over a fresh one it
 * made for this run), else anonid's embedded PostgreSQL in a new temporary directory. The binary
 * is `ANONID_BIN`, else the repository's `.venv/bin/anonid`, else `anonid` on PATH. Access tokens
 * live three seconds, so renewals happen while the tests run.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    anonidUrl: string;
    accessTtlSeconds: number;
  }
}

export const ACCESS_TTL_SECONDS = 3;

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function anonidBinary(): string {
  if (process.env.ANONID_BIN) return process.env.ANONID_BIN;
  const local = fileURLToPath(new URL("../../../.venv/bin/anonid", import.meta.url));
  return existsSync(local) ? local : "anonid";
}

async function waitReady(url: string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`anonid serve exited early:\n${readFileSync(log, "utf8")}`);
    }
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`anonid serve was not ready in time:\n${readFileSync(log, "utf8")}`);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), "anonid-js-"));
  const log = join(dir, "serve.log");
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("ANONID_") && value !== undefined) env[key] = value;
  }
  Object.assign(env, {
    ANONID_DATA_DIR: join(dir, "data"),
    ANONID_PUBLIC_URL: url,
    ANONID_COOKIE_SECURE: "false",
    ANONID_AUTO_MIGRATE: "true",
    ANONID_CULL_INTERVAL_MINUTES: "0",
    ANONID_ANONYMOUS_RATE_LIMIT: "100000/minute",
    ANONID_LOGIN_RATE_LIMIT: "100000/minute",
    ANONID_DATA_RATE_LIMIT: "100000/minute",
    ANONID_ACCESS_TOKEN_TTL_MINUTES: String(ACCESS_TTL_SECONDS / 60),
  });
  if (process.env.ANONID_DATABASE_URL) env.ANONID_DATABASE_URL = process.env.ANONID_DATABASE_URL;
  const out = openSync(log, "w");
  const child = spawn(anonidBinary(), ["serve", "--host", "127.0.0.1", "--port", String(port)], {
    cwd: dir,
    env,
    stdio: ["ignore", out, out],
  });
  closeSync(out); // the child has its own copy
  try {
    await waitReady(url, child, log);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  project.provide("anonidUrl", url);
  project.provide("accessTtlSeconds", ACCESS_TTL_SECONDS);
  return async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 30_000)))]);
      clearTimeout(timer);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
}
