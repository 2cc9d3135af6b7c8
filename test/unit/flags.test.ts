import { expect, test } from "bun:test";
import { SETTINGS } from "../../src/config/config";
import { FLAG_KEYS, FlagError, validateFlags } from "../../src/config/flags";

test("a flag that sets a config key is refused with that key's words, and its path made absolute", () => {
  const options: Record<string, unknown> = { socket: "run/x.sock", logLevel: "warn", pluginDir: "plugins", timeout: "bogus" };
  validateFlags(options, "/work/here");
  // Others (--timeout: no file key) are left to their command.
  expect(options).toEqual({ socket: "/work/here/run/x.sock", logLevel: "warn", pluginDir: "/work/here/plugins", timeout: "bogus" });
  const reason = (SETTINGS.log_level.parse("bogus", "/") as { error: string }).error;
  expect(() => validateFlags({ logLevel: "bogus" })).toThrow(new FlagError(`--log-level: ${reason} (as log_level in the config file)`));
  expect(() => validateFlags({ pluginDir: true })).toThrow("--plugin-dir: expected a string, got");
  // Every flag names a key of the table.
  for (const key of Object.values(FLAG_KEYS)) expect(SETTINGS).toHaveProperty(key);
});
