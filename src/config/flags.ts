// The command-line flags that set a config file's top-level key pass through
// that key's own parse in SETTINGS (config.ts): one validation for both, so a
// value the file refuses is refused as a flag, with the same words.
import { SETTINGS, refusal, type SettingKey } from "./config";

/** Each such flag (as cac names its option) and the key it sets. */
export const FLAG_KEYS = {
  socket: "socket",
  logLevel: "log_level",
  pluginDir: "plugin_dir",
} as const satisfies Record<string, SettingKey>;

/** A flag's value that its key refuses; the message names the flag and the key. */
export class FlagError extends Error {}

const flagName = (option: string) => "--" + option.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());

/** Validates, and normalizes in place (paths made absolute), the flags of FLAG_KEYS present in `options`. */
export function validateFlags(options: Record<string, unknown>, cwd: string = process.cwd()): void {
  for (const [option, key] of Object.entries(FLAG_KEYS)) {
    const value = options[option];
    if (value === undefined) continue;
    const parsed: unknown = SETTINGS[key].parse(value, cwd);
    const refused = refusal(parsed);
    if (refused !== undefined) throw new FlagError(`${flagName(option)}: ${refused} (as ${key} in the config file)`);
    options[option] = parsed;
  }
}
