import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Starts `anonid serve` once for every file (test/anonid.setup.ts).
    globalSetup: ["test/anonid.setup.ts"],
    include: ["test/**/*.test.ts"],
    // One anonid, a machine of two cores: files one after another.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
