// From the command line's settings to what a registry is built from: read the
// config, load the plugins of its plugin_dir (so their types are known), then
// validate the config. `serve`, the in-process CLI commands and SIGHUP's
// reload all start here.
import { resolve } from "node:path";
import type { BackendDefinition, Logger } from "../backend/contract";
import { builtinBackends } from "../backends/index";
import { configFromSource, pluginDirOf, readConfigSource, type ImageletConfig } from "../config/config";
import { DEFAULT_PLUGIN_DIR, loadPlugins, type LoadedPlugin, type PluginSet } from "../plugins/load";

/** What the command line says about configuration. */
export interface SetupOptions {
  config?: string;
  pluginDir?: string;
  allowInsecurePlugins?: boolean;
}

export interface Setup {
  config: ImageletConfig;
  /** Built-ins first, then the loaded plugins. */
  definitions: BackendDefinition[];
  plugins: PluginSet;
}

/** Throws ConfigError for a config file that cannot be read, parsed or validated. */
export async function loadSetup(opts: SetupOptions, log: Logger, previous?: readonly LoadedPlugin[]): Promise<Setup> {
  const source = readConfigSource(opts.config);
  const configured = opts.pluginDir !== undefined ? resolve(opts.pluginDir) : pluginDirOf(source);
  const settings = { pluginDir: configured ?? DEFAULT_PLUGIN_DIR, allowInsecure: opts.allowInsecurePlugins === true };
  const builtins = builtinBackends(settings);
  const plugins = await loadPlugins(settings, builtins, log, { required: configured !== undefined, previous });
  const definitions = [...builtins, ...plugins.loaded.map((p) => p.definition)];
  // A config naming a refused plugin's type still starts; those backends show the refusal.
  const unavailable = new Map(plugins.refused.filter((r) => r.type !== "" && !definitions.some((d) => d.name === r.type)).map((r) => [r.type, r.reason]));
  return { config: configFromSource(source, definitions, unavailable), definitions, plugins };
}
