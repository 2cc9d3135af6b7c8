// Generates TypeScript for the vendored CRI protos: protobufjs static message
// code (pbjs/pbts) plus nice-grpc service definitions derived from the same
// .proto by reflection, so neither messages nor method tables are hand-written.
//
// Only what the served services use is generated: the messages and enums their
// methods reach, not the whole CRI API (RuntimeService's messages were most of
// 2.8 MB of JavaScript, evaluated at every start; see docs/performance.md). And
// runtime.v1alpha2's ImageService is served with runtime.v1's message code, once
// this script has checked that every message it reaches is wire-compatible.
//
//   bun scripts/gen-proto.ts        (run by `npm run build` and `npm test`)
//
// Output goes to src/gen/ (not committed: it is a pure function of proto/).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const finalDir = join(root, "src/gen");
// Generated aside and swapped in by rename, so a build running meanwhile
// never sees a half-written src/gen.
const outDir = join(root, `src/.gen-${process.pid}`);
const bin = (name: string) => join(root, "node_modules/.bin", name);

type ProtoPackage = {
  proto: string;
  pkg: string;
  out: string;
  services: string[];
  stripGogo?: boolean;
  /** Serve these services with another package's message code (checked wire-compatible) instead of generating its own. */
  codecOf?: string;
};
const packages: ProtoPackage[] = [
  { proto: "proto/runtime/v1/api.proto", pkg: "runtime.v1", out: "runtime-v1", services: ["ImageService"] },
  // kubelet <= 1.25 and iSulad-era clients. Its gogo.proto import carries Go
  // code-generation options only (no wire meaning; see proto/README.md), so
  // a copy without them is compiled.
  { proto: "proto/runtime/v1alpha2/api.proto", pkg: "runtime.v1alpha2", out: "runtime-v1alpha2", services: ["ImageService"], stripGogo: true, codecOf: "runtime.v1" },
  // imagelet's own: the running server's backend health for `imagelet plugins --endpoint`.
  { proto: "proto/imagelet/v1/diagnostics.proto", pkg: "imagelet.v1", out: "imagelet-v1", services: ["Diagnostics"] },
];

/** The .proto to compile: the vendored file, or a copy without gogo options. */
function protoSource(p: ProtoPackage): string {
  if (!p.stripGogo) return join(root, p.proto);
  const text = readFileSync(join(root, p.proto), "utf8")
    .replace(/^import "github.com\/gogo\/protobuf\/gogoproto\/gogo.proto";\n/m, "")
    .replace(/^option \(gogoproto\.[a-z_]+\)\s*=\s*[a-z]+;\n/gm, "")
    .replace(/ \[\(gogoproto\.[^\]]*\]/g, "");
  if (text.includes("gogoproto")) throw new Error(`${p.proto}: gogoproto options left after stripping`);
  const copy = join(outDir, `${p.out}.proto`);
  writeFileSync(copy, text);
  return copy;
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} exited ${r.exitCode}`);
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}


/** The messages and enums the services' methods reach, by full name (no leading dot), parents included. */
function reachedTypes(services: protobuf.Service[]): Set<string> {
  const reached = new Set<string>();
  const visit = (t: protobuf.ReflectionObject | null | undefined): void => {
    if (!t || reached.has(t.fullName.slice(1))) return;
    if (!(t instanceof protobuf.Type) && !(t instanceof protobuf.Enum)) return;
    reached.add(t.fullName.slice(1));
    // A nested type is generated inside its parent's class.
    if (t.parent instanceof protobuf.Type) visit(t.parent);
    if (t instanceof protobuf.Type) for (const f of t.fieldsArray) visit(f.resolve().resolvedType);
  };
  for (const svc of services) {
    for (const m of svc.methodsArray) {
      m.resolve();
      visit(m.resolvedRequestType);
      visit(m.resolvedResponseType);
    }
  }
  return reached;
}

/** A copy of the package's JSON descriptor with only `keep` types and the listed services. */
function prunedJson(root: protobuf.Root, pkg: string, keep: Set<string>, services: string[]): object {
  const json = root.toJSON() as { nested?: Record<string, unknown> };
  const prune = (nested: Record<string, { nested?: Record<string, unknown>; methods?: unknown; fields?: unknown; values?: unknown }>, prefix: string) => {
    for (const [name, node] of Object.entries(nested)) {
      const full = prefix ? `${prefix}.${name}` : name;
      const isService = node.methods !== undefined;
      const isType = node.fields !== undefined || node.values !== undefined;
      if (isService && !(full.startsWith(`${pkg}.`) && services.includes(name))) delete nested[name];
      else if (isType && !keep.has(full)) delete nested[name];
      else if (node.nested) {
        prune(node.nested as never, full);
        if (!isType && !isService && Object.keys(node.nested).length === 0) delete nested[name];
      }
    }
  };
  prune((json.nested ?? {}) as never, "");
  return json;
}

/**
 * Throws unless every type `services` reach in `pkg` reads and writes the same
 * bytes as the type of the same name in `codecPkg`: same field numbers, types,
 * labels and enum values. `codecPkg` may have more (newer fields an older client
 * never sends and ignores in answers: unknown fields are skipped on the wire).
 */
function checkWireCompatible(root: protobuf.Root, pkg: string, services: protobuf.Service[], codecRoot: protobuf.Root, codecPkg: string): void {
  const problems: string[] = [];
  const counterpart = (full: string) => codecRoot.lookup(codecPkg + full.slice(pkg.length));
  const rel = (t: protobuf.ReflectionObject | null, ownPkg: string) => (t ? t.fullName.slice(1 + ownPkg.length) : "");
  for (const full of reachedTypes(services)) {
    const t = root.lookup(full);
    const c = counterpart(full);
    if (t instanceof protobuf.Enum) {
      if (!(c instanceof protobuf.Enum)) { problems.push(`${full}: no enum ${codecPkg}${full.slice(pkg.length)}`); continue; }
      for (const [name, value] of Object.entries(t.values)) if (c.values[name] !== value) problems.push(`${full}.${name}: ${value} against ${c.values[name]}`);
    } else if (t instanceof protobuf.Type) {
      if (!(c instanceof protobuf.Type)) { problems.push(`${full}: no message ${codecPkg}${full.slice(pkg.length)}`); continue; }
      for (const f of t.fieldsArray) {
        const g = c.fieldsById[f.id];
        const mapOf = (x: protobuf.Field) => (x instanceof protobuf.MapField ? `map<${x.keyType},` : "");
        const shape = (x: protobuf.Field, p: string) => `${mapOf(x)}${x.resolve().resolvedType ? rel(x.resolvedType, p) : x.type} ${x.repeated ? "repeated" : ""}`;
        if (!g) problems.push(`${full}.${f.name} (${f.id}): no field ${f.id} in ${codecPkg}`);
        else if (shape(f, pkg) !== shape(g, codecPkg)) problems.push(`${full}.${f.name} (${f.id}): ${shape(f, pkg)} against ${shape(g, codecPkg)}`);
      }
    }
  }
  for (const svc of services) {
    const c = codecRoot.lookup(`${codecPkg}.${svc.name}`);
    for (const m of svc.methodsArray) {
      const cm = c instanceof protobuf.Service ? c.methods[m.name] : undefined;
      if (!cm || cm.requestType !== m.requestType || cm.responseType !== m.responseType || !!cm.responseStream !== !!m.responseStream || !!cm.requestStream !== !!m.requestStream) {
        problems.push(`${pkg}.${svc.name}/${m.name}: no method of the same shape in ${codecPkg}.${svc.name}`);
      }
    }
  }
  if (problems.length > 0) throw new Error(`${pkg} cannot be served with ${codecPkg}'s message code:\n  ${problems.join("\n  ")}`);
}

/**
 * Service definitions in nice-grpc's native shape, with the message code of
 * `codecPkg` (generated in `codecOut`). A response serializer also accepts
 * already-encoded bytes, so handlers can serve answers that were encoded once
 * per store snapshot instead of on every call.
 */
function servicesTs(p: ProtoPackage, services: protobuf.Service[], codecPkg: string, codecOut: string): string {
  const tsName = codecPkg;
  let ts = `// Generated by scripts/gen-proto.ts from ${p.proto}. Do not edit.\n`;
  if (codecPkg !== p.pkg) ts += `// Served with ${codecPkg}'s message code: gen-proto checked every message these methods reach is wire-compatible.\n`;
  ts += `import { ${codecPkg.split(".")[0]} } from "./${codecOut}.js";\n\n`;
  ts += `const m = ${tsName};\n\n`;
  for (const svc of services) {
    ts += `export const ${svc.name}Definition = {\n`;
    for (const method of svc.methodsArray) {
      const req = method.requestType, res = method.responseType;
      ts += `  ${lowerFirst(method.name)}: {\n`;
      ts += `    path: "/${p.pkg}.${svc.name}/${method.name}",\n`;
      ts += `    requestStream: ${!!method.requestStream} as const,\n`;
      ts += `    responseStream: ${!!method.responseStream} as const,\n`;
      ts += `    requestSerialize: (v: ${tsName}.${req}.$Properties): Uint8Array => m.${req}.encode(v).finish(),\n`;
      ts += `    requestDeserialize: (b: Uint8Array): ${tsName}.${req} => m.${req}.decode(b),\n`;
      ts += `    responseSerialize: (v: ${tsName}.${res}.$Properties | Uint8Array): Uint8Array =>\n`;
      ts += `      v instanceof Uint8Array ? v : m.${res}.encode(v).finish(),\n`;
      ts += `    responseDeserialize: (b: Uint8Array): ${tsName}.${res} => m.${res}.decode(b),\n`;
      ts += `    options: {},\n  },\n`;
    }
    ts += `} as const;\n\n`;
  }
  return ts;
}

mkdirSync(outDir, { recursive: true });
process.on("exit", (code) => {
  if (code !== 0) rmSync(outDir, { recursive: true, force: true });
});

// Descriptors of every served package, for gRPC server reflection.
const descriptorFiles: unknown[] = [];

// Each generated package's reflection root, for the packages served with its code.
const roots = new Map<string, { root: protobuf.Root; out: string }>();

for (const p of packages) {
  const js = join(outDir, `${p.out}.js`);
  const source = protoSource(p);
  const reflected = protobuf.loadSync(source);
  descriptorFiles.push(...(reflected as unknown as { toDescriptor(e: string): { file: unknown[] } }).toDescriptor("proto3").file);
  const ns = reflected.lookup(p.pkg) as protobuf.Namespace;
  const services = ns.nestedArray.filter(
    (n): n is protobuf.Service => n instanceof protobuf.Service && p.services.includes(n.name),
  );
  if (p.codecOf !== undefined) {
    const codec = roots.get(p.codecOf);
    if (!codec) throw new Error(`${p.pkg}: ${p.codecOf} must be generated before it`);
    checkWireCompatible(reflected, p.pkg, services, codec.root, p.codecOf);
    if (p.stripGogo) rmSync(source);
    writeFileSync(join(outDir, `${p.out}-services.ts`), servicesTs(p, services, p.codecOf, codec.out));
    console.log(`gen-proto: ${p.proto} -> src/gen/${p.out}-services.ts (${p.codecOf}'s message code; wire-compatible)`);
    continue;
  }
  roots.set(p.pkg, { root: reflected, out: p.out });
  // pbjs compiles a JSON descriptor of the reached types only.
  const pruned = join(outDir, `${p.out}.json`);
  writeFileSync(pruned, JSON.stringify(prunedJson(reflected, p.pkg, reachedTypes(services), p.services)));

  // --force-number: 64-bit fields are typed as JS numbers (exact below 2^53:
  // every byte count; nanosecond timestamps lose only sub-microsecond digits).
  run([
    bin("pbjs"), "-t", "static-module", "-w", "esm", "--es6", "--force-number",
    "--no-verify", "--no-delimited", "--no-service", "--no-typeurl", "--no-convert",
    // Each package gets its own protobufjs root: both would otherwise assign
    // roots.default.runtime, and the later one would replace the object the
    // earlier one's nested decoders look up at run time.
    "--root", p.out, "--dependency", "protobufjs/minimal.js", "-o", js, pruned,
  ]);
  rmSync(pruned);
  run([bin("pbts"), "--no-comments", "-o", join(outDir, `${p.out}.d.ts`), js]);
  // protobufjs decodes 64-bit fields as Long whenever the long package is
  // installed (it is a protobufjs dependency), whatever --force-number says.
  // Switching Long off must happen before the generated module computes its
  // prototype defaults, so the setup module is imported first.
  writeFileSync(
    join(outDir, "protobuf-numbers.js"),
    `// Generated by scripts/gen-proto.ts. Makes protobufjs use JS numbers for 64-bit fields.\n` +
      `import $protobuf from "protobufjs/minimal.js";\n$protobuf.util.Long = undefined;\n$protobuf.configure();\n`,
  );
  writeFileSync(js, `import "./protobuf-numbers.js";\n${readFileSync(js, "utf8")}`);
  if (p.stripGogo) rmSync(source);

  writeFileSync(join(outDir, `${p.out}-services.ts`), servicesTs(p, services, p.pkg, p.out));
  console.log(`gen-proto: ${p.proto} -> src/gen/${p.out}{.js,.d.ts,-services.ts}`);
}

const protoset = descriptor.FileDescriptorSet.encode({ file: descriptorFiles } as never).finish();
writeFileSync(
  join(outDir, "protoset.ts"),
  `// Generated by scripts/gen-proto.ts: a FileDescriptorSet of the served CRI packages, for server reflection.\n` +
    `export const SERVED_PROTOSET: Uint8Array = Buffer.from(${JSON.stringify(Buffer.from(protoset).toString("base64"))}, "base64");\n`,
);
console.log(`gen-proto: server reflection descriptors -> src/gen/protoset.ts (${protoset.length} bytes)`);

const old = join(root, `src/.gen-old-${process.pid}`);
if (existsSync(finalDir)) renameSync(finalDir, old);
renameSync(outDir, finalDir);
rmSync(old, { recursive: true, force: true });
