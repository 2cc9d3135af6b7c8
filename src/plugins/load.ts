// Loading backend plugins: modules in plugin_dir whose default export is a
// BackendDefinition, the same contract the built-in backends use. A plugin
// that cannot be used is refused with one line naming it and the reason, and
// everything else starts normally.
import { lstatSync, readdirSync, statSync, type Stats } from "node:fs";
import { join } from "node:path";
import { BACKEND_API_VERSION, type BackendDefinition, type Logger } from "../backend/contract";

export const DEFAULT_PLUGIN_DIR = "/usr/lib/imagelet/plugins";
const MODULE_EXTENSIONS = [".ts", ".js", ".mjs"];
const ENTRY_FILES = ["index.ts", "index.js", "index.mjs"];

export interface RefusedPlugin {
  path: string;
  reason: string;
}

/**
 * The rule ssh applies to its keys: owned by root or by us, and not writable
 * by group or others. A plugin runs with imagelet's privileges (often root),
 * so whoever can write it owns the node.
 */
export function unsafePermissions(path: string, st: Stats): string | undefined {
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== uid) return `${path} is owned by uid ${st.uid}, not root or uid ${uid}`;
  if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")})`;
  return undefined;
}

function isBackendDefinition(v: unknown): v is BackendDefinition {
  if (typeof v !== "object" || v === null) return false;
  const d = v as Partial<BackendDefinition>;
  return typeof d.name === "string" && d.name !== "" && typeof d.apiVersion === "number" &&
    typeof d.create === "function" && typeof d.options === "object" && d.options !== null;
}

/** Finds the module files of a plugin directory: `*.ts|js|mjs`, or a folder with an index file. */
function pluginEntries(dir: string): string[] {
  const entries: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isFile() && MODULE_EXTENSIONS.some((e) => name.endsWith(e)) && !name.endsWith(".d.ts")) entries.push(path);
    else if (st.isDirectory()) {
      const entry = ENTRY_FILES.map((f) => join(path, f)).find((f) => {
        try {
          return statSync(f).isFile();
        } catch {
          return false;
        }
      });
      if (entry) entries.push(entry);
    }
  }
  return entries;
}

/**
 * Imports the plugins of `dir` and returns the definitions to add to the
 * built-ins. A missing default directory is not an error; a missing
 * configured one is logged.
 */
export async function loadPlugins(
  dir: string,
  builtins: readonly BackendDefinition[],
  log: Logger,
  opts: { required: boolean },
): Promise<{ loaded: BackendDefinition[]; refused: RefusedPlugin[] }> {
  const loaded: BackendDefinition[] = [];
  const refused: RefusedPlugin[] = [];
  const refuse = (path: string, reason: string) => {
    refused.push({ path, reason });
    log.error("plugin refused", { plugin: path, reason });
  };
  let dirStat: Stats;
  try {
    dirStat = statSync(dir);
  } catch {
    if (opts.required) log.warn("plugin directory does not exist", { path: dir });
    return { loaded, refused };
  }
  const dirProblem = unsafePermissions(dir, dirStat);
  if (dirProblem) {
    refuse(dir, dirProblem);
    return { loaded, refused };
  }
  for (const path of pluginEntries(dir)) {
    const problem = unsafePermissions(path, statSync(path));
    if (problem) {
      refuse(path, problem);
      continue;
    }
    let mod: { default?: unknown };
    try {
      mod = await import(path);
    } catch (e) {
      refuse(path, `import failed: ${(e as Error).message.split("\n")[0]}`);
      continue;
    }
    const def = mod.default;
    if (!isBackendDefinition(def)) {
      refuse(path, "its default export is not a backend definition (name, apiVersion, options, create)");
      continue;
    }
    if (def.apiVersion !== BACKEND_API_VERSION) {
      refuse(path, `apiVersion ${def.apiVersion} is not supported (this imagelet supports ${BACKEND_API_VERSION})`);
      continue;
    }
    if (builtins.some((b) => b.name === def.name) || loaded.some((b) => b.name === def.name)) {
      refuse(path, `backend type ${JSON.stringify(def.name)} is already defined`);
      continue;
    }
    loaded.push(def);
    log.info("plugin loaded", { plugin: path, type: def.name });
  }
  return { loaded, refused };
}
