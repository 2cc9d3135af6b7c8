// Exec plugins: a backend written in any language (shell, Python, C, Go on
// the device), run as a child process per call and spoken to in a small
// versioned JSON protocol on stdin/stdout:
//
//   stdin:  {"protocol": 1, "method": "list"}
//   stdout: {"protocol": 1, "images": [ImageRecord, …]}
//   stdin:  {"protocol": 1, "method": "status", "id": "sha256:…"}
//   stdout: {"protocol": 1, "image": ImageRecord | null}
//   stdin:  {"protocol": 1, "method": "content", "id": "sha256:…", "digest": "sha256:…"}
//   stdout: {"protocol": 1, "content": {"mediaType", "size", "path", "offset"}   (a file region)
//                                   | {"mediaType", "size", "bytes": "<base64>"} (small content)
//                                   | null}
//
// (`content` is the registry mirror's hook, docs/mirror.md: the bytes of a
// digest reachable from the image's `target`. A file region is sent by the
// OS; a plugin answers it only for files it has checked are its store's.)
//
// One process per call keeps the contract simple and a crash contained: the
// call fails, the registry keeps the last good snapshot, the next call starts
// afresh. A call that outlives the registry's timeout is killed (the hook's
// AbortSignal), stdout beyond a bound is a flood and is killed, and stderr
// goes to imagelet's log under the plugin's name.
import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  defineBackend,
  type Backend,
  type BackendContext,
  type CallContext,
  type ContentBody,
  type ImageRecord,
} from "../../backend/contract";
import { EXEC_SUBDIR, pathProblems, type PluginSettings } from "../../plugins/load";

export const EXEC_PROTOCOL = 1;
/** A list of many thousands of images fits easily; more is a runaway plugin. */
export const MAX_STDOUT_BYTES = 64 * 1024 * 1024;
/** stderr kept per call for the log and error messages. */
const MAX_STDERR_BYTES = 16 * 1024;

export class ExecPluginError extends Error {
  constructor(plugin: string, message: string) {
    super(`exec plugin ${plugin}: ${message}`);
    this.name = "ExecPluginError";
  }
}

interface Request {
  protocol: number;
  method: "list" | "status" | "content";
  id?: string;
  digest?: string;
}

/** Runs the executable once with `request` on stdin; resolves its parsed stdout. */
export function runExecPlugin(path: string, args: readonly string[], request: Request, ctx: BackendContext, call: CallContext): Promise<unknown> {
  const name = ctx.name;
  return new Promise((resolvePromise, reject) => {
    // Its own process group, so a kill reaches what a script started too (a
    // `sleep` left behind would hold the pipes open and the call would never end).
    const child = spawn(path, [...args], { stdio: ["pipe", "pipe", "pipe"], detached: true });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = "";
    let failure: Error | undefined;
    const kill = (why: Error) => {
      failure ??= why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL"); // the group is gone already, or was never made
      }
    };
    const onAbort = () => kill(new ExecPluginError(name, "killed: the call timed out"));
    if (call.signal.aborted) onAbort();
    call.signal.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_STDOUT_BYTES) kill(new ExecPluginError(name, `killed: more than ${MAX_STDOUT_BYTES} bytes on stdout`));
      else out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (err.length < MAX_STDERR_BYTES) err += chunk.toString("utf8").slice(0, MAX_STDERR_BYTES - err.length);
    });
    child.on("error", (e) => kill(new ExecPluginError(name, `cannot run ${path}: ${e.message}`)));
    // A plugin that exits without reading stdin makes the write fail with EPIPE: not an error by itself.
    child.stdin.on("error", () => {});
    child.stdin.end(`${JSON.stringify(request)}\n`);

    child.on("close", (code, signal) => {
      call.signal.removeEventListener("abort", onAbort);
      for (const line of err.split("\n").filter((l) => l.trim() !== "")) ctx.log.warn(line, { backend: name, stream: "stderr" });
      if (failure) return reject(failure);
      if (code !== 0) {
        const tail = err.trim().split("\n").slice(-1)[0] ?? "";
        return reject(new ExecPluginError(name, `exited with ${signal ?? `status ${code}`}${tail ? `: ${tail}` : ""}`));
      }
      const text = Buffer.concat(out).toString("utf8");
      try {
        resolvePromise(JSON.parse(text));
      } catch {
        reject(new ExecPluginError(name, `stdout is not JSON (${JSON.stringify(text.slice(0, 80))})`));
      }
    });
  });
}

/** Checks the reply envelope; the records themselves are validated by the registry. */
function field(reply: unknown, key: "images" | "image" | "content", name: string): unknown {
  if (typeof reply !== "object" || reply === null || Array.isArray(reply)) throw new ExecPluginError(name, "reply is not a JSON object");
  const r = reply as Record<string, unknown>;
  if (r.protocol !== EXEC_PROTOCOL) throw new ExecPluginError(name, `reply protocol ${JSON.stringify(r.protocol)} is not ${EXEC_PROTOCOL}`);
  if (!(key in r)) throw new ExecPluginError(name, `reply has no "${key}"`);
  return r[key];
}

/**
 * A `content` reply as a ContentBody: a file region or base64 bytes. The
 * registry checks the rest (media type, size, an absolute path) as it does
 * for every backend's answer.
 */
function contentBody(answer: unknown, name: string): ContentBody | undefined {
  if (answer === null) return undefined;
  if (typeof answer !== "object" || Array.isArray(answer)) throw new ExecPluginError(name, `"content" is not an object or null`);
  const a = answer as Record<string, unknown>;
  const base = { mediaType: a.mediaType as string, size: a.size as number };
  if (typeof a.bytes === "string") return { ...base, bytes: new Uint8Array(Buffer.from(a.bytes, "base64")) };
  if (typeof a.path === "string") return { ...base, file: { path: a.path, offset: (a.offset as number | undefined) ?? 0 } };
  throw new ExecPluginError(name, `"content" has neither "path" nor "bytes"`);
}

/**
 * `path` with a `/` is a file (relative to the config's directory); a bare
 * name, or no path at all (the backend's name), is looked up in
 * `plugin_dir/exec/`, where a vendor's package installs its executables.
 */
export function executablePath(path: string | undefined, ctx: BackendContext, pluginDir: string): string {
  const p = path ?? ctx.name;
  return p.includes("/") ? resolve(ctx.baseDir, p) : join(pluginDir, EXEC_SUBDIR, p);
}

/** The module plugins' rule applied to the executable and its directory; a missing file is left to spawn to report. */
function permissionProblems(path: string): string[] {
  try {
    return [...pathProblems(path), ...pathProblems(dirname(path))];
  } catch {
    return [];
  }
}

export const execBackend = (settings: PluginSettings) =>
  defineBackend({
    name: "exec",
    apiVersion: BACKEND_API_VERSION,
    description: "An executable speaking imagelet's JSON protocol on stdin/stdout (any language)",
    options: {
      path: { type: "string", description: "The executable: a path, or a name in plugin_dir/exec/ (default: the backend's name)" },
      args: { type: "string[]", description: "Arguments given to it" },
    },
    create(options, ctx): Backend {
      const path = executablePath(options.path, ctx, settings.pluginDir);
      const args = options.args ?? [];
      if (settings.allowInsecure) {
        for (const problem of permissionProblems(path)) ctx.log.warn("insecure exec plugin used (--allow-insecure-plugins)", { plugin: path, problem });
      }
      // Checked on every call, not once: the file can be replaced while imagelet runs.
      const run = (request: Request, call: CallContext) => {
        const problems = settings.allowInsecure ? [] : permissionProblems(path);
        if (problems.length > 0) throw new ExecPluginError(ctx.name, `refused: ${problems[0]}`);
        return runExecPlugin(path, args, request, ctx, call);
      };
      return {
        async list(call) {
          const images = field(await run({ protocol: EXEC_PROTOCOL, method: "list" }, call), "images", ctx.name);
          if (!Array.isArray(images)) throw new ExecPluginError(ctx.name, `"images" is not a list`);
          return images as ImageRecord[];
        },
        async status(id, call) {
          const image = field(await run({ protocol: EXEC_PROTOCOL, method: "status", id }, call), "image", ctx.name);
          return (image ?? undefined) as ImageRecord | undefined;
        },
        async content(id, digest, call) {
          return contentBody(field(await run({ protocol: EXEC_PROTOCOL, method: "content", id, digest }, call), "content", ctx.name), ctx.name);
        },
      };
    },
  });
