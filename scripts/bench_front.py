#!/usr/bin/env python3
"""Front mode's start-up time (docs/performance.md#front-mode-pullimage-to-a-started-container):
from PullImage to a started container, for a 256 MiB preloaded image.

  front:         kubelet's PullImage goes to imagelet ([runtime] endpoint = containerd);
                 containerd pulls the image through its mirror, then the pod starts.
  distribution:  PullImage goes to containerd itself, which pulls the same image from
                 Debian's docker-registry (distribution 2.8), then the pod starts.

The image is made here and not committed: one layer of 256 MiB of random bytes (gzip
level 1, so it stays 256 MiB) and one of busybox-static, its command `echo`. Each
round starts a fresh containerd (CRI, runc, native snapshotter; the pod tests'
harness, test/integration/node_runtime.py) whose hosts.toml is what `imagelet
mirror-config containerd` prints for the path's registry, and runs the pod's
sandbox first (its image is not what is measured); rounds alternate between the
two paths, and the medians are reported. Needs root, containerd, runc,
docker-registry, skopeo, busybox-static.

  sudo scripts/bench_front.py [--rounds 5] [--size-mib 256] [--no-write]   (scripts/bench runs it last)
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from busybox_images import SANDBOX, Layout, marker_image, pause_image, random_layer  # noqa: E402
from node_runtime import ContainerdNode, stand_in_mirror  # noqa: E402  (the pod tests' harness)

BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
REF = "docker.io/library/big:256"


def imagelet_config(work, layout, endpoint):
    """imagelet's config: the layout, its mirror on a port the system chooses, in front of `endpoint`."""
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "imagelet.toml")
    with open(config, "w") as f:
        f.write(f'socket = "{work}/imagelet.sock"\n[mirror]\nlisten = "127.0.0.1:0"\n[runtime]\nendpoint = "unix://{endpoint}"\n'
                f'[[backend]]\ntype = "oci-layout"\nname = "preloaded"\npath = "{layout}"\n')
    return config


class Imagelet:
    def __init__(self, config):
        import grpc

        import cri_stubs

        work = os.path.dirname(config)
        self.config = config
        self.socket = os.path.join(work, "imagelet.sock")
        self.log_path = os.path.join(work, "imagelet.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([BIN, "serve", "--config", self.config], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not re.search(r'msg="serving the registry mirror \(read-only\)" listen=(\S+)', self.log()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"imagelet did not start: {self.log()}")
            time.sleep(0.05)
        self.mirror = re.search(r'msg="serving the registry mirror \(read-only\)" listen=(\S+)', self.log()).group(1)
        self.pb, pbg = cri_stubs.load()
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.images = pbg.ImageServiceStub(self.channel)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)


def hosts_toml(config, mirror):
    """What `imagelet mirror-config containerd` prints for `mirror` (imagelet's, or distribution's address)."""
    out = subprocess.run([BIN, "mirror-config", "containerd", "--config", config, "--listen", mirror], capture_output=True, text=True, check=True)
    return out.stdout


def one_round(work, path, layout, registry, image_id):
    """Seconds from PullImage to StartContainer's answer (and to PullImage's), and the runtime's disk, on a fresh containerd root."""
    node = ContainerdNode(os.path.join(work, f"node-{path}"), sandbox_image=SANDBOX, start=False)
    server = None
    try:
        config = imagelet_config(os.path.join(work, f"imagelet-{path}"), layout, node.socket)
        if path == "front":
            server = Imagelet(config)
        node.write_hosts_toml(hosts_toml(config, server.mirror if server else registry.host))
        node.start()
        service = server.images if server else node.images
        # The sandbox image is not what is measured.
        pod = node.run_pod(f"bench-{path}")
        pb = node.pb
        t0 = time.perf_counter()
        image_ref = service.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=REF)), timeout=600).image_ref
        t_pulled = time.perf_counter()
        assert image_ref == image_id, (image_ref, image_id)
        pulled = node.disk_usage(node.CONTENT) / 2**20, node.disk_usage(node.SNAPSHOTS) / 2**20
        node.start_container(pod, "big", image_ref, timeout=600)
        t1 = time.perf_counter()
        node.wait_log(pod, "big", "started")
        return t1 - t0, t_pulled - t0, (pulled, (None, node.disk_usage(node.SNAPSHOTS) / 2**20))
    finally:
        if server is not None:
            server.stop()
        node.close()
        subprocess.run(["rm", "-rf", os.path.join(work, f"node-{path}"), os.path.join(work, f"imagelet-{path}")])


BEGIN = "<!-- front mode figures: begin (written by scripts/bench_front.py) -->"
END = "<!-- front mode figures: end -->"
DOC = os.path.join(ROOT, "docs", "performance.md")


def markdown(r):
    """The figures as docs/performance.md shows them, between BEGIN and END."""
    med = statistics.median
    f, d = med(r["total"]["front"]), med(r["total"]["distribution"])
    spread = [*r["total"]["front"], *r["total"]["distribution"]]
    content, snaps, snaps_run = r["disk"]
    return "\n".join([
        BEGIN,
        "",
        f"One run of `scripts/bench_front.py --rounds {r['rounds']}` ({r['size_mib']} MiB image) on {r['date']}, commit `{r['git']}`, {os.cpu_count()} CPUs, "
        f"containerd {r['containerd']}. Medians; single rounds ranged from "
        f"{min(spread):.2f} s to {max(spread):.2f} s.",
        "",
        "| path | PullImage | PullImage → started container |",
        "| --- | --- | --- |",
        f"| front mode: imagelet → containerd → imagelet's mirror | {med(r['pull']['front']):.2f} s | {f:.2f} s |",
        f"| distribution: containerd → docker-registry | {med(r['pull']['distribution']):.2f} s | {d:.2f} s |",
        f"| ratio front / distribution | | **{f / d:.2f}** |",
        "",
        f"After either pull containerd held {content:.0f} MiB in its content store and {snaps:.0f} MiB of snapshots "
        f"({snaps_run:.0f} MiB with the running container's).",
        "",
        END,
    ])


def main(argv=None, doc=None):
    """`doc`: the report to write the figures into (default docs/performance.md; --no-write: none)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--no-write", action="store_true", help="print the figures only")
    ap.add_argument("--work", default=None, help="work directory (default: a temp dir under /var/tmp)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("containerd needs root: run scripts/bench_front.py as root")
    r = {"rounds": args.rounds, "size_mib": args.size_mib, "total": {"front": [], "distribution": []}, "pull": {"front": [], "distribution": []}}
    with tempfile.TemporaryDirectory(prefix="imagelet-bench-front-", dir=args.work or "/var/tmp") as work:
        layout_dir = os.path.join(work, "store")
        layout = Layout(layout_dir)
        t = time.perf_counter()
        big = random_layer(os.path.join(work, "random.bin"), args.size_mib << 20)
        os.unlink(os.path.join(work, "random.bin"))
        image_id = marker_image(layout, REF, "started", layers=[big])
        del big
        pause_image(layout, SANDBOX)
        print(f"image made in {time.perf_counter() - t:.1f} s ({args.size_mib} MiB random layer + busybox-static)", flush=True)
        with stand_in_mirror(os.path.join(work, "registry"), layout_dir, [REF, SANDBOX]) as registry:
            for n in range(args.rounds):
                for path in ("front", "distribution") if n % 2 == 0 else ("distribution", "front"):
                    total, pull, ((content, snaps), (_, snaps_run)) = one_round(work, path, layout_dir, registry, image_id)
                    r["total"][path].append(total)
                    r["pull"][path].append(pull)
                    r["disk"] = (content, snaps, snaps_run)
                    print(f"round {n + 1} {path}: PullImage {pull:.2f} s, PullImage → started {total:.2f} s; "
                          f"after the pull: content store {content:.0f} MiB, snapshots {snaps:.0f} MiB (with the container: {snaps_run:.0f} MiB)", flush=True)
    r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    r["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip() or "?"
    r["containerd"] = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.split()[2]
    text = markdown(r)
    print(text)
    if doc is None and not args.no_write:
        doc = DOC
    if doc is not None:
        from bench_report import write_section

        heading = "## Front mode: PullImage to a started container\n\nWritten by `scripts/bench_front.py` (also run by `scripts/bench`).\n\n"
        write_section(doc, text, BEGIN, END, heading)
        print(f"wrote front mode's figures into {os.path.relpath(doc, ROOT)}")
    return r


if __name__ == "__main__":
    main()
