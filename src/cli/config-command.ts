// `imagelet config`: the configuration in force as TOML, as `containerd config
// dump` and `crio config` print theirs, and `--check`, which validates a file
// exactly as a start would (plugins loaded, options checked by each backend's
// create()) without serving, listing or watching anything.
import { resolve } from "node:path";
import type { Logger } from "../backend/contract";
import { nothingToServe } from "../config/config";
import { configToml } from "../config/dump";
import { LOG_LEVELS, type LogLevel } from "../log";
import { checkBackends } from "../registry/build";
import { loadSetup, type SetupOptions } from "../registry/setup";

export interface ConfigCommandOptions extends SetupOptions {
  check?: boolean;
  logLevel?: string;
}

export interface ConfigCommandIo {
  write(text: string): void;
  /** One line on stderr. */
  warn(line: string): void;
  log: Logger;
  usage(message: string): Error;
}

export async function configCommand(file: string | undefined, opts: ConfigCommandOptions, io: ConfigCommandIo): Promise<void> {
  if (file !== undefined && opts.config !== undefined && resolve(file) !== resolve(opts.config)) {
    throw io.usage(`config: FILE (${file}) and --config (${opts.config}) name different files; give one`);
  }
  // A configuration error is thrown as ConfigError and printed as `serve` prints it (exit code 2).
  const { config, definitions } = await loadSetup({ ...opts, config: file ?? opts.config }, io.log);
  if (opts.check) {
    for (const warning of await checkBackends(config, definitions, io.log)) io.warn(warning);
    const nothing = nothingToServe(config);
    if (nothing !== undefined) io.warn(nothing);
    const n = config.backends.length;
    io.write(`${config.file ?? "no config file, well-known stores"}: ok, ${n} backend${n === 1 ? "" : "s"}\n`);
    return;
  }
  // What `serve` would run with these flags: --plugin-dir and --log-level win over the file.
  const logLevel = (LOG_LEVELS as readonly string[]).includes(opts.logLevel ?? "") ? (opts.logLevel as LogLevel) : config.logLevel;
  const pluginDir = opts.pluginDir !== undefined ? resolve(opts.pluginDir) : config.pluginDir;
  io.write(configToml({ ...config, logLevel, pluginDir }, definitions));
}
