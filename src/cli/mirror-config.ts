// `imagelet mirror-config RUNTIME`: what a container runtime needs to pull
// through imagelet's mirror, as the file it reads, ready to redirect into
// place. Every runtime names a mirror its own way (see
// docs/runtimes.md and the reference notes on containerd's hosts.toml,
// containers-registries.conf, k3s's registries.yaml and Docker's
// registry-mirrors); the rules of each are written here once.
//
// The file goes to stdout; for TOML and YAML the instructions ride along as
// comments, for daemon.json (JSON has none) they go to stderr.

import type { ImageletConfig } from "../config/config";
import { formatListenAddress, isLoopback, parseListenAddress } from "../config/listen";
import { registryOf } from "../model/reference";

export const RUNTIMES = ["containerd", "crio", "k3s", "docker"] as const;
export type Runtime = (typeof RUNTIMES)[number];

export interface MirrorAddress {
  /** HOST:PORT, IPv6 in brackets: `127.0.0.1:5050`, `[::1]:5050`. */
  listen: string;
  loopback: boolean;
}

export interface RuntimeConfigText {
  /** The file's content. */
  file: string;
  /** Lines for stderr (Docker's notes). */
  notes: string[];
}

/** The config's `[mirror] listen` as HOST:PORT, when a mirror is configured. */
export function configuredListen(config: ImageletConfig): string | undefined {
  return config.mirror ? formatListenAddress(config.mirror.listen) : undefined;
}

/** The registry hosts of every name the view holds (repo tags and repo digests), sorted and unique. */
export function registriesOf(names: Iterable<string>): string[] {
  const hosts = new Set<string>();
  for (const name of names) {
    try {
      hosts.add(registryOf(name));
    } catch {
      // A name the view holds always parses; nothing to mirror for one that does not.
    }
  }
  return [...hosts].sort();
}

/** HOST:PORT as the config reads it (src/config/listen.ts); the error says what is wrong. */
export function mirrorAddress(listen: string): MirrorAddress | { error: string } {
  const address = parseListenAddress(listen);
  if ("error" in address) return address;
  // Port 0 lets the system choose at each start: no runtime can be pointed at it.
  if (address.port === 0) return { error: `port 0 is chosen at start; give --listen with the port imagelet's log names` };
  return { listen: formatListenAddress(address), loopback: isLoopback(address.host) };
}

/** The text for one runtime; `registries` are the registry hosts the stores hold (sorted, unique). */
export function runtimeConfig(runtime: Runtime, mirror: MirrorAddress, registries: readonly string[]): RuntimeConfigText {
  switch (runtime) {
    case "containerd":
      return { file: containerd(mirror, registries), notes: [] };
    case "crio":
      return { file: containersRegistries(mirror, registries), notes: [] };
    case "k3s":
      return { file: k3s(mirror), notes: [] };
    case "docker":
      return docker(mirror, registries);
  }
}

const url = (m: MirrorAddress) => `http://${m.listen}`;
const list = (registries: readonly string[]) => (registries.length > 0 ? registries.join(", ") : "(none yet)");

/** A warning comment for a mirror others can reach: imagelet serves plain HTTP. */
function exposure(m: MirrorAddress, comment: string): string {
  return m.loopback
    ? ""
    : `${comment} ${m.listen} is not a loopback address: the images travel in plain HTTP and anyone who\n` +
        `${comment} can reach it can read them.\n`;
}

function containerd(m: MirrorAddress, registries: readonly string[]): string {
  return `# containerd: pull through imagelet's mirror at ${url(m)}.
${exposure(m, "#")}#
# 1. Name the hosts directory in /etc/containerd/config.toml, then restart containerd
#    (a change of config_path needs a restart; edits of the files under it do not):
#
#    containerd 1.6 and 1.7 (config version = 2):
#      [plugins."io.containerd.grpc.v1.cri".registry]
#        config_path = "/etc/containerd/certs.d"
#    The _default directory used below needs 1.6.17 or later (any 1.7). On an older 1.6,
#    write this file as certs.d/<registry>/hosts.toml for each registry instead; the stores
#    hold: ${list(registries)}.
#    config_path cannot be combined with the legacy registry.mirrors table: remove that.
#
#    containerd 2.x (config version = 3):
#      [plugins."io.containerd.cri.v1.images".registry]
#        config_path = "/etc/containerd/certs.d"
#    From 2.1 the CRI pulls through the transfer service, which reads config_path as ONE
#    directory: a list such as "/etc/containerd/certs.d:/etc/docker/certs.d" (2.2's default
#    when unset) is silently ignored and the mirror sees no request. Set a single directory.
#
# 2. Write what follows to /etc/containerd/certs.d/_default/hosts.toml.
#    _default covers every registry without a directory of its own: a certs.d/<registry>/
#    directory that exists (even one holding only certificates) hides it for that registry.
#    With no \`server\` line containerd asks the mirror first, then the registry itself.
#    An offline node: uncomment the \`server\` line to keep every pull on the mirror
#    (its errors then name the mirror, not an unreachable registry).
#    Check: crictl pull <an image the stores hold>; crictl images shows imagelet's image ID.

# server = "${url(m)}"
[host."${url(m)}"]
  capabilities = ["pull", "resolve"]
`;
}

function containersRegistries(m: MirrorAddress, registries: readonly string[]): string {
  const head = `# CRI-O, podman, skopeo and buildah (containers-registries.conf v2): pull through
# imagelet's mirror at ${url(m)}.
${exposure(m, "#")}#
# Write this to /etc/containers/registries.conf.d/50-imagelet-mirror.conf, then
# \`systemctl reload crio\` (CRI-O re-reads it on SIGHUP); podman reads it at every command.
# There is no catch-all prefix: one [[registry]] per registry the stores hold, the
# registry named in the mirror's path (imagelet serves /v2/<registry>/<repository>).
# Write this file again when the stores gain a registry.
# The mirror is plain HTTP: \`insecure = true\` lets containers/image use it.
`;
  if (registries.length === 0) return `${head}#\n# The stores hold no named images yet: nothing to mirror.\n`;
  const tables = registries.map(
    (r) => `
[[registry]]
prefix = "${r}"
location = "${r}"
[[registry.mirror]]
location = "${m.listen}/${r}"
insecure = true
`,
  );
  return head + tables.join("");
}

function k3s(m: MirrorAddress): string {
  return `# k3s: pull through imagelet's mirror at ${url(m)}.
${exposure(m, "#")}#
# Write this to /etc/rancher/k3s/registries.yaml on every node, then restart k3s
# (or k3s-agent): it is read at start. "*" covers every registry without an entry of
# its own; k3s writes it as containerd's certs.d/_default/hosts.toml.
# k3s still asks each registry itself after the mirror, unless started with
# --disable-default-registry-endpoint (an offline node wants that: its errors then
# name the mirror, not an unreachable registry).
mirrors:
  "*":
    endpoint:
      - "${url(m)}"
`;
}

function docker(m: MirrorAddress, registries: readonly string[]): RuntimeConfigText {
  const config: Record<string, string[]> = { "registry-mirrors": [url(m)] };
  // Docker allows plain HTTP to 127.0.0.0/8 and ::1/128 by default; elsewhere it must be told.
  if (!m.loopback) config["insecure-registries"] = [m.listen];
  const others = registries.filter((r) => r !== "docker.io");
  const notes = [
    "Docker: merge this into /etc/docker/daemon.json, then restart dockerd.",
    "Docker applies registry-mirrors to Docker Hub names only (docker.io/...): images under another registry cannot be pulled through the mirror" +
      (others.length > 0 ? `; the stores hold some under ${others.join(", ")}.` : "."),
  ];
  if (!m.loopback) notes.push(`${m.listen} is not a loopback address: the images travel in plain HTTP and anyone who can reach it can read them.`);
  return { file: `${JSON.stringify(config, null, 2)}\n`, notes };
}
