// Compiles src/main.ts into one executable, with its bytecode laid out by use:
//
//   bun scripts/build-binary.ts --outfile dist/imagelet [--target T --compile-executable-path BUN]
//                               [--order FILE]   (reuse a recorded profile instead of recording one)
//
// `--bytecode` stores JavaScriptCore bytecode in the binary so nothing is
// parsed at start; `--bytecode-order` puts the functions a serving process
// uses together at the front, so it reads and decodes less of itself. At 10
// images that took start → first answer from 76–155 ms to about 35 ms, and the
// server's steady RSS down 2.5 MiB, its peak 3 and its anonymous pages 2.4
// (docs/performance.md). The profile is recorded here, by serving
// examples/sample-oci on a temporary socket and asking it what crictl and
// kubelet ask (the binary's own client: `images`, `inspecti`), and is a
// function of the source alone: a cross-compiled target reuses the host's.
import { mkdtempSync, rmSync, existsSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { parseArgs } from "node:util";

const root = resolve(dirname(new URL(import.meta.url).pathname), "..");
const { values: args } = parseArgs({
  options: {
    outfile: { type: "string" },
    target: { type: "string" },
    "compile-executable-path": { type: "string" },
    order: { type: "string" },
    "save-order": { type: "string" },
  },
});
if (!args.outfile) throw new Error("build-binary: --outfile is required");
const outfile = resolve(args.outfile);

function build(out: string, order?: string): void {
  const cmd = [
    process.execPath, "build", "--compile", "--minify", "--bytecode", "--format=esm",
    // A standalone executable loads .env and bunfig.toml from its working
    // directory by default, and a bunfig.toml there can preload a script:
    // whoever may write the directory imagelet is started in would run code
    // as its user. A daemon takes nothing from there.
    "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig",
    ...(args.target ? [`--target=${args.target}`] : []),
    ...(args["compile-executable-path"] ? [`--compile-executable-path=${args["compile-executable-path"]}`] : []),
    ...(order ? [`--bytecode-order=${order}`] : []),
    // The mirror's sender thread is a Worker: its module is a second entry
    // point, stored in the binary beside main (src/mirror/server.ts finds it).
    "src/main.ts", "src/mirror/sender.ts", "--outfile", out,
  ];
  const r = Bun.spawnSync(cmd, { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} exited ${r.exitCode}`);
}

async function waitFor(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`build-binary: ${what} within ${ms} ms`);
    await Bun.sleep(10);
  }
}

/** Serves the sample layout with `binary`, asks it the usual calls and stops it; the profile is written at exit. */
async function recordOrder(binary: string, orderFile: string, work: string): Promise<void> {
  const sock = join(work, "imagelet.sock");
  const config = join(work, "imagelet.toml");
  writeFileSync(config, `socket = "${sock}"\nlog_level = "warn"\n[[backend]]\ntype = "oci-layout"\npath = "${join(root, "examples/sample-oci")}"\n`);
  const server = Bun.spawn([binary, "serve", "--config", config], {
    env: { ...process.env, BUN_BYTECODE_ORDER_OUT: orderFile },
    stdout: "inherit",
    stderr: "inherit",
  });
  try {
    await waitFor(() => existsSync(sock), "the profiling server did not listen");
    const endpoint = `unix://${sock}`;
    for (let i = 0; i < 3; i++) {
      for (const cmd of [["images"], ["images", "--digests"], ["inspecti", "edge-tools:2.0"]]) {
        const r = Bun.spawnSync([binary, ...cmd, "--endpoint", endpoint], { stdout: "ignore", stderr: "inherit" });
        if (r.exitCode !== 0) throw new Error(`build-binary: ${cmd.join(" ")} against the profiling server exited ${r.exitCode}`);
      }
    }
  } finally {
    server.kill("SIGTERM");
    await server.exited;
  }
  if (!existsSync(orderFile)) throw new Error("build-binary: the profiling server wrote no bytecode order");
}

const work = mkdtempSync(join(tmpdir(), "imagelet-build-"));
try {
  let order = args.order ? resolve(args.order) : undefined;
  if (!order) {
    if (args.target) throw new Error("build-binary: a cross-compiled --target needs --order (record one with a host build's --save-order)");
    const first = join(work, "imagelet");
    build(first);
    order = join(work, "serve.order");
    await recordOrder(first, order, work);
  }
  if (args["save-order"]) copyFileSync(order, resolve(args["save-order"]));
  build(outfile, order);
} finally {
  rmSync(work, { recursive: true, force: true });
}
