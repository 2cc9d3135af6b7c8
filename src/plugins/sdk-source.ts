// A Bun macro: imported `with { type: "macro" }`, it runs when the binary is
// built and its result is embedded, so `imagelet sdk` prints exactly the
// contract this binary implements. (A text import of the SDK cannot be used:
// the same file is also imported as code, and Bun's bundler refuses that.)
import { readFileSync } from "node:fs";
import { join } from "node:path";

export function sdkSource(): string {
  return readFileSync(join(import.meta.dir, "..", "..", "sdk", "imagelet-plugin.ts"), "utf8");
}
