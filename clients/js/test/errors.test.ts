/* Errors that never reach an answer from anonid, the provider calls, and the built package. */
import { createServer } from "node:http";
import { describe, expect, it } from "vitest";
import { AnonidError, createClient, readProviderError } from "../src/index.js";
import { ANONID } from "./helpers.js";

describe("errors", () => {
  it("a closed port is network_error, with status 0 and the cause kept", async () => {
    const client = createClient({ url: "http://127.0.0.1:9", mode: "bearer" });
    const refused = await client.signInAnonymously().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AnonidError);
    expect(refused).toMatchObject({ code: "network_error", status: 0 });
    expect((refused as Error).cause).toBeDefined();
  });

  it("an answer that is not JSON is invalid_response", async () => {
    // Something else answering where anonid was expected (a proxy's error page, say).
    const server = createServer((_, res) => {
      res.writeHead(502, { "Content-Type": "text/html" });
      res.end("<h1>Bad gateway</h1>");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    try {
      const client = createClient({ url: `http://127.0.0.1:${port}` });
      await expect(client.getUser()).rejects.toMatchObject({ code: "invalid_response", status: 502 });
    } finally {
      server.close();
    }
  });

  it("an unknown provider is anonid's not_found", async () => {
    const client = createClient({ url: ANONID, mode: "bearer" });
    await expect(client.signInWithProvider("nobody", { idToken: "x.y.z" })).rejects.toMatchObject({
      code: "not_found",
      status: 404,
    });
  });
});

describe("signInWithProvider", () => {
  it("builds the authorize URL with return_to (and navigates only where there is a page)", async () => {
    const client = createClient({ url: `${ANONID}/` });
    const { url } = await client.signInWithProvider("my-idp", {
      returnTo: "https://shop.example/cart?x=1",
      redirect: false,
    });
    expect(url).toBe(
      `${ANONID}/v1/oauth/my-idp/authorize?return_to=${encodeURIComponent("https://shop.example/cart?x=1")}`,
    );
  });

  it("in bearer mode needs the provider's ID token", async () => {
    const client = createClient({ url: ANONID, mode: "bearer" });
    await expect(client.signInWithProvider("google")).rejects.toMatchObject({ code: "not_supported" });
  });

  it("readProviderError reads the code anonid put on return_to", () => {
    const cancelled = readProviderError("https://shop.example/?error=access_denied");
    expect(cancelled).toMatchObject({ code: "access_denied" });
    expect(cancelled?.message).toMatch(/cancelled/);
    expect(readProviderError("https://shop.example/?error=something_new")?.code).toBe("something_new");
    expect(readProviderError("https://shop.example/")).toBeNull();
  });
});

describe("the built package", () => {
  it("dist/index.js exports the same API as the source", async () => {
    const built = await import("../dist/index.js");
    for (const name of ["createClient", "AnonidClient", "AnonidError", "readProviderError", "solveChallenge", "memoryStorage", "passkeysSupported"]) {
      expect(typeof (built as Record<string, unknown>)[name]).toBe("function");
    }
    const client = built.createClient({ url: ANONID, mode: "bearer" });
    const { user } = await client.signInAnonymously();
    expect(user.is_anonymous).toBe(true);
    client.dispose();
  });
});
