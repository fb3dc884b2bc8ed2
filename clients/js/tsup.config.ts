import { defineConfig } from "tsup";

// One ES module and its type declarations: what npm ships and what a page can load as is
// (the demo storefront serves a copy of dist/index.js).
export default defineConfig({
  entry: { index: "src/index.ts" },
  format: ["esm"],
  dts: true,
  clean: true,
  target: "es2020",
  platform: "neutral",
  sourcemap: false,
  minify: false,
  splitting: false,
  treeshake: false,
});
