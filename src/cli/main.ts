// The embedded CLI: commands declared in one place, each a thin call into the
// same registry the server uses (or a CRI client with --endpoint).
// Exit codes: 0 success, 1 failure or not found, 2 usage.
import { cac } from "cac";
import { writeSync } from "node:fs";
import { ClientError, Status } from "nice-grpc";
import pkg from "../../package.json";
import type { Logger } from "../backend/contract";
import { ConfigError, nothingToServe, type ImageletConfig } from "../config/config";
import { FlagError, validateFlags } from "../config/flags";
import { createLogger, type LogLevel } from "../log";
import { containStrayErrors } from "../plugins/containment";
import { sdkSource } from "../plugins/sdk-source" with { type: "macro" };
import { Reloader } from "../registry/reload";
import { loadSetup, type SetupOptions } from "../registry/setup";
import { ListenerStartError } from "../server/lifecycle";
import { serve, SocketPathError } from "../server/serve";
import { configCommand } from "./config-command";
import { configuredListen, mirrorAddress, registriesOf, RUNTIMES, runtimeConfig, type Runtime } from "./mirror-config";
import { imageJson, imagesTable, inspectJson, pluginsTable, serialize, sortImages, type OutputFormat } from "./format";
import { inProcessSource, remoteSource, serverBackends, type ImageSource, type ServerBackends } from "./source";

export const VERSION: string = pkg.version;
export const CRI_API_VERSION = "v1";

/** A failure the user must see on one line, with the exit code it maps to. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

const usage = (msg: string) => new CliError(msg, 2);

function outputFormat(value: unknown, allowed: readonly OutputFormat[]): OutputFormat {
  const v = value ?? allowed[0];
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    throw usage(`-o/--output must be one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return v as OutputFormat;
}

interface GlobalOptions extends SetupOptions {
  endpoint?: string;
  timeout?: string;
  logLevel?: string;
}

/** CLI commands log only warnings by default: their stdout is the answer. */
function cliLogger(opts: GlobalOptions, fallback: LogLevel): Logger {
  return createLogger((opts.logLevel as LogLevel | undefined) ?? fallback, (line) => writeSync(2, line));
}

function endpointOf(opts: GlobalOptions): string | undefined {
  return opts.endpoint ?? process.env.IMAGELET_ENDPOINT;
}

function timeoutMs(opts: GlobalOptions): number {
  const seconds = Number(opts.timeout ?? 10);
  if (!(seconds > 0)) throw usage(`--timeout must be a positive number of seconds`);
  return seconds * 1000;
}

async function openSource(opts: GlobalOptions): Promise<ImageSource> {
  const endpoint = endpointOf(opts);
  if (endpoint) {
    const timeout = timeoutMs(opts);
    try {
      return remoteSource(endpoint, timeout);
    } catch (e) {
      throw usage((e as Error).message);
    }
  }
  const log = cliLogger(opts, "error");
  const { config, definitions } = await loadSetup(opts, log);
  sayIfNothingToServe(config);
  return inProcessSource(config, definitions, log);
}

/** Without a config file and without any well-known store, one stderr line says where imagelet looked. */
function sayIfNothingToServe(config: ImageletConfig): void {
  const nothing = nothingToServe(config);
  if (nothing !== undefined) writeSync(2, `imagelet: ${nothing}\n`);
}

/** Written synchronously: the process exits as soon as a command returns (see main.ts). */
function write(text: string): void {
  writeSync(1, text);
}

export function buildCli() {
  const cli = cac("imagelet");
  cli
    .option("--config <file>", "Config file (default /etc/imagelet/config.toml when present)")
    .option("--endpoint <unix:///path>", "Act as a CRI client of this image-service socket (or IMAGELET_ENDPOINT)")
    .option("--timeout <seconds>", "Client call timeout with --endpoint", { default: "10" })
    .option("--plugin-dir <dir>", "Backend plugin directory (default /usr/lib/imagelet/plugins)")
    .option("--allow-insecure-plugins", "Load plugins whatever their owner and mode (warns at every start)")
    .option("--log-level <level>", "debug, info, warn or error");

  cli
    .command("serve", "Serve the CRI ImageService on a unix socket")
    .option("--socket <path>", "Socket path (default /run/imagelet/imagelet.sock or the config's)")
    .action(async (opts: GlobalOptions & { socket?: string }) => {
      const bootLog = createLogger((opts.logLevel as LogLevel | undefined) ?? "info");
      const started = await loadSetup(opts, bootLog);
      const { config, definitions } = started;
      if (opts.socket) config.socket = opts.socket;
      const log = createLogger((opts.logLevel as LogLevel | undefined) ?? config.logLevel);
      const nothing = nothingToServe(config);
      if (nothing !== undefined) log.warn(nothing);
      const reloader = new Reloader(started, opts, log);
      containStrayErrors(log, () => reloader.plugins);
      try {
        await serve(config, definitions, log, {
          onHangup: (served) => void reloader.reload(served),
          refusedPlugins: () => reloader.refusedPlugins,
        });
      } catch (e) {
        if (e instanceof SocketPathError) throw new CliError(e.message, 1);
        // A port in use or forbidden does not fix itself: a configuration error (2), so a unit with
        // RestartPreventExitStatus=2 does not restart it, taking the CRI socket down, every 2 s.
        if (e instanceof ListenerStartError) throw new CliError(e.message, 2);
        throw e;
      }
    });

  cli
    .command("images [ref]", "List images (CRI ListImages); REF filters by reference, ID or ID prefix")
    .alias("image")
    .alias("img")
    .option("--digests", "Show digests")
    .option("--no-trunc", "Show full IDs and digests")
    .option("-q, --quiet", "Only show image IDs")
    .option("--pinned", "Show whether each image is pinned (kept from kubelet's image GC)")
    .option("-o, --output <format>", "table, json or yaml", { default: "table" })
    .action(async (ref: string | undefined, opts: GlobalOptions & { digests?: boolean; trunc?: boolean; quiet?: boolean; pinned?: boolean; output?: string }) => {
      const format = outputFormat(opts.output, ["table", "json", "yaml"]);
      const source = await openSource(opts);
      try {
        // crictl sorts before every output form; so do we.
        const images = sortImages(await source.listImages(ref));
        if (opts.quiet) write(images.map((i) => `${i.id}\n`).join(""));
        else if (format === "table") write(imagesTable(images, { digests: !!opts.digests, noTrunc: opts.trunc === false, pinned: !!opts.pinned }));
        else write(serialize({ images: images.map(imageJson) }, format));
      } finally {
        source.close();
      }
    });

  cli
    .command("inspecti <...refs>", "Show image status (CRI ImageStatus) as JSON")
    .option("-o, --output <format>", "json or yaml", { default: "json" })
    .option("-v, --verbose", "Include the OCI image config (verbose ImageStatus)")
    .action(async (refs: string[], opts: GlobalOptions & { output?: string; verbose?: boolean }) => {
      const format = outputFormat(opts.output, ["json", "yaml"]);
      const source = await openSource(opts);
      const missing: string[] = [];
      try {
        for (const ref of refs) {
          const answer = await source.imageStatus(ref, !!opts.verbose);
          if (!answer.image) {
            const local = source.resolveLocal?.(ref);
            missing.push(
              local?.kind === "embedded"
                ? `image ${JSON.stringify(ref)} is an embedded image: it carries no OCI config and cannot be inspected`
                : `no such image ${JSON.stringify(ref)} present`,
            );
            continue;
          }
          write(serialize(inspectJson(answer), format as "json" | "yaml"));
        }
      } finally {
        source.close();
      }
      if (missing.length > 0) throw new CliError(missing.join("; "), 1);
    });

  cli
    .command("pull <ref>", "CRI PullImage, as crictl pull: prints the ID of an image on the device (imagelet never fetches)")
    .action(async (ref: string, opts: GlobalOptions) => {
      const source = await openSource(opts);
      try {
        write(`Image is up to date for ${await source.pullImage(ref)}\n`);
      } finally {
        source.close();
      }
    });

  cli
    .command("rmi <...refs>", "CRI RemoveImage, as crictl rmi: removes images (all their tags) from writable stores")
    .action(async (refs: string[], opts: GlobalOptions) => {
      const source = await openSource(opts);
      const missing: string[] = [];
      try {
        for (const ref of refs) {
          // crictl rmi: ImageStatus first, then RemoveImage of what it found.
          const answer = await source.imageStatus(ref, false);
          if (!answer.image) {
            missing.push(`no such image ${JSON.stringify(ref)} present`);
            continue;
          }
          await source.removeImage(ref);
          // crictl's lines: one per tag, else one per repo digest.
          const tags = answer.image.repoTags ?? [];
          write((tags.length > 0 ? tags : (answer.image.repoDigests ?? [])).map((name) => `Deleted: ${name}\n`).join(""));
        }
      } finally {
        source.close();
      }
      if (missing.length > 0) throw new CliError(missing.join("; "), 1);
    });

  cli
    .command("plugins", "List configured backends, their image counts and health (with --endpoint: the running server's)")
    .option("-o, --output <format>", "table, json or yaml", { default: "table" })
    .action(async (opts: GlobalOptions & { output?: string }) => {
      const format = outputFormat(opts.output, ["table", "json", "yaml"]);
      const print = (r: ServerBackends) => write(format === "table" ? pluginsTable(r.backends, r.refused) : serialize(r, format));
      const endpoint = endpointOf(opts);
      if (endpoint) {
        // The live state: a backend failing since the server started, its last good list, a hung plugin.
        try {
          print(await serverBackends(endpoint, timeoutMs(opts)));
        } catch (e) {
          if (e instanceof ClientError && e.code === Status.UNIMPLEMENTED) {
            throw new CliError(`${endpoint} is an image service but not imagelet: it has no imagelet.v1.Diagnostics`, 1);
          }
          throw e;
        }
        return;
      }
      const log = cliLogger(opts, "error");
      const { config, definitions, plugins } = await loadSetup(opts, log);
      sayIfNothingToServe(config);
      const source = await inProcessSource(config, definitions, log);
      try {
        print({ backends: source.health!(), refused: plugins.refused });
      } finally {
        source.close();
      }
    });

  cli
    .command("config [file]", "Print the configuration in force as TOML (a starting config file); --check validates it")
    .option("--check", "Validate the config (FILE, --config or the default) without starting anything: exit 0, or the error and exit 2")
    .action((file: string | undefined, opts: GlobalOptions & { check?: boolean }) =>
      configCommand(file, opts, {
        write,
        warn: (line) => writeSync(2, `imagelet: warning: ${line}\n`),
        log: cliLogger(opts, "error"),
        usage,
      }),
    );

  cli
    .command("mirror-config <runtime>", `Print what a runtime (${RUNTIMES.join(", ")}) needs to pull through imagelet's mirror`)
    .option("--listen <host:port>", "The mirror's address (default: the config's [mirror] listen)")
    .action(async (runtime: string, opts: GlobalOptions & { listen?: string }) => {
      if (!(RUNTIMES as readonly string[]).includes(runtime)) {
        throw usage(`mirror-config: RUNTIME must be one of ${RUNTIMES.join(", ")}, got ${JSON.stringify(runtime)}`);
      }
      const log = cliLogger(opts, "error");
      const { config, definitions } = await loadSetup(opts, log);
      const listen = opts.listen ?? configuredListen(config);
      if (listen === undefined) {
        throw usage(`mirror-config: no mirror is configured (no [mirror] listen in ${config.file ?? "the config"}) and no --listen given`);
      }
      const address = mirrorAddress(String(listen));
      if ("error" in address) throw usage(`mirror-config: --listen: ${address.error}`);
      // The registries the stores hold: CRI-O needs one entry per registry, the others name them in notes.
      const endpoint = endpointOf(opts);
      const source = endpoint ? remoteSource(endpoint, timeoutMs(opts)) : await inProcessSource(config, definitions, log);
      let names: string[];
      try {
        names = (await source.listImages()).flatMap((i) => [...(i.repoTags ?? []), ...(i.repoDigests ?? [])]);
      } finally {
        source.close();
      }
      const { file, notes } = runtimeConfig(runtime as Runtime, address, registriesOf(names));
      write(file);
      for (const note of notes) writeSync(2, `imagelet: ${note}\n`);
    });

  cli.command("sdk", "Print the backend plugin SDK (imagelet-plugin.ts) this binary implements").action(() => {
    write(sdkSource());
  });

  cli.command("version", "Print the imagelet and CRI API versions").action(() => {
    write(`Version:  ${VERSION}\nRuntimeApiVersion:  ${CRI_API_VERSION}\nServes:  runtime.${CRI_API_VERSION}.ImageService\n`);
  });

  cli.help();
  return cli;
}

/** Runs the CLI; resolves to the exit code (serve never resolves). */
export async function runCli(argv: string[]): Promise<number> {
  const cli = buildCli();
  try {
    cli.parse(argv, { run: false });
    if (cli.options.help || cli.options.h) return 0;
    if (!cli.matchedCommand) {
      const name = cli.args[0];
      if (name !== undefined) throw usage(`unknown command ${JSON.stringify(name)}; see imagelet --help`);
      cli.outputHelp();
      return 2;
    }
    // The actions read these options: flags that set a config key are that key's values, validated as in the file.
    validateFlags(cli.options);
    await cli.runMatchedCommand();
    return 0;
  } catch (e) {
    const err = e as Error;
    let code: number;
    let message: string;
    if (e instanceof CliError) [code, message] = [e.exitCode, e.message];
    else if (e instanceof FlagError) [code, message] = [2, e.message];
    // Also from building the registry: a backend's create() can refuse an option value.
    else if (e instanceof ConfigError) [code, message] = [2, `config error: ${e.message}`];
    else if (err?.name === "CACError") [code, message] = [2, err.message];
    else [code, message] = [1, grpcMessage(err)];
    writeSync(2, `imagelet: ${message.replace(/\s*\n\s*/g, " ")}\n`);
    return code;
  }
}

/** A client-side gRPC failure as one readable line. */
function grpcMessage(e: Error): string {
  const details = (e as { details?: string }).details;
  const code = (e as { code?: number }).code;
  if (typeof code === "number" && details !== undefined) return `${details} (gRPC status ${code})`;
  return e?.message ?? String(e);
}
