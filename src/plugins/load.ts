// Loading backend plugins: modules in plugin_dir whose default export is a
// BackendDefinition, the same contract the built-in backends use. A plugin
// that cannot be used is refused with one line naming it and the reason, and
// everything else starts normally.
import { lstatSync, readdirSync, realpathSync, statSync, type Stats } from "node:fs";
import { dirname, join } from "node:path";
import { BACKEND_API_VERSION, type BackendDefinition, type Logger, type OptionType } from "../backend/contract";
import { errorText } from "../model/error-text";

export const DEFAULT_PLUGIN_DIR = "/usr/lib/imagelet/plugins";
/** Executables of `type = "exec"` backends named without a path live here. */
export const EXEC_SUBDIR = "exec";
/** The SDK as `imagelet sdk` writes it: a plugin's dependency, not a plugin. */
export const SDK_FILE = "imagelet-plugin.ts";
const MODULE_EXTENSIONS = [".ts", ".js", ".mjs"];
const ENTRY_FILES = ["index.ts", "index.js", "index.mjs"];
/** A module whose top level never finishes (a top-level await that hangs) must not hold up the start. */
export const IMPORT_TIMEOUT_MS = 5000;
const NAME = /^[a-z][a-z0-9-]*$/;
const OPTION_TYPES: ReadonlySet<string> = new Set<OptionType>(["string", "number", "boolean", "string[]"]);
/** Keys every `[[backend]]` entry has; a plugin option cannot take them. */
const RESERVED_OPTIONS = new Set(["type", "name", "timeout"]);

/** How the host treats plugins (module and exec alike). */
export interface PluginSettings {
  /** plugin_dir: module plugins, and exec plugins under `exec/`. */
  pluginDir: string;
  /** --allow-insecure-plugins: permission problems are warnings instead of refusals. */
  allowInsecure: boolean;
}

export interface LoadedPlugin {
  /** The entry module. */
  path: string;
  /** The file, or the plugin's folder: what its stack frames and permissions are about. */
  root: string;
  definition: BackendDefinition;
  /** Sizes and mtimes of its files: an unchanged plugin is not imported again on reload. */
  stamp: string;
  files: string[];
}

export interface RefusedPlugin {
  path: string;
  reason: string;
  /** The backend type it would have defined (its name, or its file name when it never got that far). */
  type: string;
}

export interface PluginSet {
  loaded: LoadedPlugin[];
  refused: RefusedPlugin[];
}

function modeOf(st: Stats): string {
  return (st.mode & 0o777).toString(8).padStart(4, "0");
}

/**
 * The rule ssh applies to its keys: owned by root or by us, and not writable
 * by group or others. A plugin runs with imagelet's privileges (often root),
 * so whoever can write it owns the node.
 */
export function unsafePermissions(path: string, st: Stats): string | undefined {
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== uid) return `${path} is owned by uid ${st.uid}, not root or uid ${uid} (mode ${modeOf(st)})`;
  if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others (mode ${modeOf(st)})`;
  return undefined;
}

/**
 * The file or directory `path`, checked by the rule above where it really
 * lives: a symlink's target, and then the target's directory too.
 */
export function pathProblems(path: string): string[] {
  const real = realpathSync(path);
  const problems: string[] = [];
  for (const p of real === path ? [real] : [real, dirname(real)]) {
    const problem = unsafePermissions(p, statSync(p));
    if (problem) problems.push(problem);
  }
  return problems;
}

/** One plugin found in plugin_dir, before it is imported. */
interface Candidate {
  entry: string;
  root: string;
  /** The type it is expected to define, for reporting a refusal before its name is known. */
  guessedType: string;
}

/** The modules of a plugin directory: `*.ts|js|mjs`, or a folder with an index file. */
function candidates(dir: string): Candidate[] {
  const found: Candidate[] = [];
  for (const name of readdirSync(dir).sort()) {
    // Hidden files include editors' lock files (`.#x.ts`); exec/ holds executables, not modules.
    if (name.startsWith(".") || name === EXEC_SUBDIR || name === SDK_FILE) continue;
    const path = join(dir, name);
    let st: Stats;
    try {
      st = statSync(path);
    } catch {
      continue; // a dangling symlink
    }
    if (st.isFile() && MODULE_EXTENSIONS.some((e) => name.endsWith(e)) && !name.endsWith(".d.ts")) {
      found.push({ entry: path, root: path, guessedType: name.replace(/\.(ts|js|mjs)$/, "") });
    } else if (st.isDirectory()) {
      const entry = ENTRY_FILES.map((f) => join(path, f)).find((f) => {
        try {
          return statSync(f).isFile();
        } catch {
          return false;
        }
      });
      if (entry) found.push({ entry, root: path, guessedType: name });
    }
  }
  return found;
}

/** Every file and directory of a plugin: the file, or its folder walked (symlinks inside it are not followed). */
function pluginFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (path: string, st: Stats) => {
    files.push(path);
    if (st.isDirectory()) for (const name of readdirSync(path).sort()) walk(join(path, name), lstatSync(join(path, name)));
  };
  walk(root, statSync(root));
  return files;
}

/** Makes the module cache forget a plugin's files, under their own and their real paths. */
function forget(files: readonly string[]): void {
  for (const f of files) {
    delete require.cache[f];
    try {
      delete require.cache[realpathSync(f)];
    } catch {
      // gone since
    }
  }
}

function stampOf(files: readonly string[]): string {
  return files
    .map((f) => {
      try {
        const st = statSync(f);
        return `${f}:${st.size}:${st.mtimeMs}:${st.ino}`;
      } catch {
        return `${f}:-`;
      }
    })
    .join("\n");
}

/** Why a default export is not a usable backend definition, or undefined when it is one. */
function definitionProblem(v: unknown): string | undefined {
  if (typeof v !== "object" || v === null) return "its default export is not a backend definition (name, apiVersion, options, create)";
  const d = v as Partial<BackendDefinition>;
  if (typeof d.name !== "string" || typeof d.apiVersion !== "number" || typeof d.create !== "function" || typeof d.options !== "object" || d.options === null) {
    return "its default export is not a backend definition (name, apiVersion, options, create)";
  }
  if (d.apiVersion !== BACKEND_API_VERSION) return `apiVersion ${d.apiVersion} is not supported (this imagelet supports ${BACKEND_API_VERSION})`;
  if (!NAME.test(d.name)) return `name ${JSON.stringify(d.name)} is not a backend type name (lowercase letters, digits and -)`;
  for (const [key, spec] of Object.entries(d.options)) {
    if (RESERVED_OPTIONS.has(key)) return `option ${JSON.stringify(key)} is reserved for every [[backend]] entry`;
    const type = (spec as { type?: unknown } | null)?.type;
    if (typeof type !== "string" || !OPTION_TYPES.has(type)) return `option ${JSON.stringify(key)} has no valid type (string, number, boolean or string[])`;
  }
  return undefined;
}

function importWithin(path: string, ms: number): Promise<{ default?: unknown }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`import did not finish within ${ms} ms`)), ms);
    import(path).then(
      (m) => {
        clearTimeout(timer);
        resolve(m);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/**
 * Imports the plugins of `settings.pluginDir` and returns those to add to the
 * built-ins, and those refused. A missing default directory is not an error;
 * a missing configured one is logged. `previous` (on reload) supplies the
 * plugins already imported: one whose files have not changed is reused, a
 * changed one is imported afresh.
 */
export async function loadPlugins(
  settings: PluginSettings,
  builtins: readonly BackendDefinition[],
  log: Logger,
  opts: { required: boolean; previous?: readonly LoadedPlugin[] },
): Promise<PluginSet> {
  const loaded: LoadedPlugin[] = [];
  const refused: RefusedPlugin[] = [];
  const dir = settings.pluginDir;
  const refuse = (path: string, type: string, reason: string) => {
    refused.push({ path, reason, type });
    log.error("plugin refused", { plugin: path, reason });
  };
  if (settings.allowInsecure) log.warn("--allow-insecure-plugins: plugins are loaded whoever can write them", { plugin_dir: dir });
  /** Permission problems refuse, or with --allow-insecure-plugins are logged; true when the path may be used. */
  const permitted = (path: string, type: string, problems: string[]): boolean => {
    if (problems.length === 0) return true;
    if (!settings.allowInsecure) {
      refuse(path, type, problems[0]!);
      return false;
    }
    for (const problem of problems) log.warn("insecure plugin loaded (--allow-insecure-plugins)", { plugin: path, problem });
    return true;
  };

  let found: Candidate[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error("not a directory");
    found = candidates(dir);
  } catch {
    if (opts.required) log.warn("plugin directory does not exist", { path: dir });
    return { loaded, refused };
  }
  const dirProblems = pathProblems(dir);
  if (dirProblems.length > 0 && !settings.allowInsecure) {
    for (const c of found) refuse(c.entry, c.guessedType, dirProblems[0]!);
    return { loaded, refused };
  }
  if (dirProblems.length > 0) permitted(dir, "", dirProblems);

  for (const c of found) {
    let files: string[];
    try {
      files = pluginFiles(c.root);
      if (!permitted(c.entry, c.guessedType, [...new Set(files.flatMap(pathProblems))])) continue;
    } catch (e) {
      refuse(c.entry, c.guessedType, `cannot be read: ${errorText(e)}`);
      continue;
    }
    const stamp = stampOf(files);
    const before = opts.previous?.find((p) => p.path === c.entry);
    let definition: unknown;
    if (before && before.stamp === stamp) {
      definition = before.definition;
    } else {
      // On reload, a new or changed plugin (or one that failed before) is imported
      // afresh: the module cache must forget all of its files, old and new.
      if (opts.previous) forget([...files, ...(before?.files ?? [])]);
      try {
        definition = (await importWithin(c.entry, IMPORT_TIMEOUT_MS)).default;
      } catch (e) {
        refuse(c.entry, c.guessedType, `import failed: ${errorText(e).split("\n")[0]}`);
        continue;
      }
    }
    const problem = definitionProblem(definition);
    const type = typeof (definition as { name?: unknown })?.name === "string" ? (definition as BackendDefinition).name : c.guessedType;
    if (problem) {
      refuse(c.entry, type, problem);
      continue;
    }
    const def = definition as BackendDefinition;
    const taken = builtins.some((b) => b.name === def.name) ? "a built-in backend type" : loaded.find((p) => p.definition.name === def.name)?.path;
    if (taken) {
      // The type stays with its first owner: no refused entry may stand for it.
      refuse(c.entry, "", `backend type ${JSON.stringify(def.name)} is already defined by ${taken}`);
      continue;
    }
    loaded.push({ path: c.entry, root: c.root, definition: def, stamp, files });
    log.info("plugin loaded", { plugin: c.entry, type: def.name });
  }
  return { loaded, refused };
}

/** The plugin a stack trace runs through, for attributing an uncaught error. */
export function pluginInStack(plugins: readonly LoadedPlugin[], stack: string | undefined): LoadedPlugin | undefined {
  if (!stack) return undefined;
  return plugins.find((p) => stack.includes(p.root));
}
