/* The proof-of-work solver against the reference ALTCHA implementation (altcha-lib): its challenges
   are solved, and the header's solution passes its own verification. */
import { createChallenge, verifySolution } from "altcha-lib/v1";
import { describe, expect, it } from "vitest";
import { AnonidError, solveChallenge } from "../src/index.js";

const HMAC_KEY = "a test key that is only a test key";

function decode(header: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(header, "base64").toString("utf8"));
}

describe("solveChallenge", () => {
  for (const algorithm of ["SHA-256", "SHA-1", "SHA-512"] as const) {
    it(`solves an ${algorithm} ALTCHA challenge into a header altcha-lib accepts`, async () => {
      const expires = new Date(Date.now() + 60_000);
      const challenge = await createChallenge({ hmacKey: HMAC_KEY, maxNumber: 20_000, algorithm, expires });
      const header = await solveChallenge({ ...challenge, maxnumber: challenge.maxnumber ?? 20_000 });
      const solution = decode(header);
      expect(solution).toMatchObject({
        algorithm,
        challenge: challenge.challenge,
        salt: challenge.salt,
        signature: challenge.signature,
      });
      expect(typeof solution.number).toBe("number");
      expect(await verifySolution(header, HMAC_KEY)).toBe(true);
      // A number changed by one is a wrong solution: the found number is the one.
      const wrong = Buffer.from(JSON.stringify({ ...solution, number: (solution.number as number) + 1 })).toString("base64");
      expect(await verifySolution(wrong, HMAC_KEY)).toBe(false);
    });
  }

  it("gives up with challenge_unsolvable when maxnumber is too small", async () => {
    const challenge = await createChallenge({ hmacKey: HMAC_KEY, number: 500, maxNumber: 1000 });
    const refused = await solveChallenge({ ...challenge, maxnumber: 100 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AnonidError);
    expect(refused).toMatchObject({ code: "challenge_unsolvable" });
  });

  it("refuses an algorithm it does not know", async () => {
    const refused = await solveChallenge({
      algorithm: "MD5",
      challenge: "00",
      maxnumber: 10,
      salt: "s",
      signature: "x",
    }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "challenge_unsolvable" });
  });
});
