#!/usr/bin/env python3
"""Front mode's start-up time (docs/performance.md#front-mode-pullimage-to-a-started-container):
from PullImage to a started container, for a 256 MiB preloaded image.

  front:         kubelet's PullImage goes to imagelet ([runtime] endpoint = containerd);
                 containerd pulls the image through its mirror, then the pod starts.
  distribution:  PullImage goes to containerd itself, which pulls the same image from
                 Debian's docker-registry (distribution 2.8), then the pod starts.

The image is made here and not committed: one layer of 256 MiB of random bytes (gzip
level 1, so it stays 256 MiB) and one of busybox-static, its command `echo`. Each
round starts a fresh containerd (CRI, runc, native snapshotter) on a fresh root,
the sandbox image already pulled; rounds alternate between the two paths, and the
medians are reported. Until imagelet serves the mirror itself (`[mirror]`), the
front path's mirror is the same docker-registry: the figure is then what front
mode adds (imagelet's PullImage, the runtime's ImageStatus, the relist) to the
same pull. Needs root, containerd, runc, docker-registry, skopeo, busybox-static.

  sudo scripts/bench_front.py [--rounds 5] [--size-mib 256] [--no-write]   (scripts/bench runs it last)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from front_node import SANDBOX, DistributionRegistry, Layout, Node, busybox_layer, free_port, pause_image, random_layer, wait_for  # noqa: E402

BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
REF = "docker.io/library/big:256"


def imagelet_serves_mirror(work):
    """Whether this imagelet has `[mirror]` (issue 22): `config --check` of a file with one."""
    path = os.path.join(work, "probe.toml")
    with open(path, "w") as f:
        f.write('[mirror]\nlisten = "127.0.0.1:1"\n')
    return subprocess.run([BIN, "config", "--check", path], capture_output=True).returncode == 0


class Imagelet:
    def __init__(self, work, layout, endpoint, mirror=None):
        import grpc

        import cri_stubs

        os.makedirs(work, exist_ok=True)
        self.socket = os.path.join(work, "imagelet.sock")
        self.log_path = os.path.join(work, "imagelet.log")
        config = os.path.join(work, "imagelet.toml")
        with open(config, "w") as f:
            mirror_table = f'[mirror]\nlisten = "{mirror}"\n' if mirror else ""
            f.write(f'socket = "{self.socket}"\n{mirror_table}[runtime]\nendpoint = "{endpoint}"\n[[backend]]\ntype = "oci-layout"\nname = "preloaded"\npath = "{layout}"\n')
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "serve", "--config", config], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_for(lambda: "serving CRI ImageService" in open(self.log_path).read(), 20):
            raise SystemExit(f"imagelet did not start: {open(self.log_path).read()}")
        self.pb, pbg = cri_stubs.load()
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.images = pbg.ImageServiceStub(self.channel)

    def stop(self):
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)


def disk_use(node):
    """MiB of containerd's content store and snapshots (what the runtime's copy costs beside the preloaded image)."""
    def du(sub):
        out = subprocess.run(["du", "-s", "--block-size=1", os.path.join(node.work, "root", sub)], capture_output=True, text=True).stdout.split()
        return int(out[0]) / 2**20 if out else 0

    return du("io.containerd.content.v1.content"), du("io.containerd.snapshotter.v1.native")


def one_round(work, path, layout, registry, image_id, own_mirror):
    """Seconds from PullImage to StartContainer's answer, on a fresh containerd root."""
    mirror = f"127.0.0.1:{free_port()}" if path == "front" and own_mirror else None
    node = Node(os.path.join(work, f"node-{path}"), mirror=mirror or registry.addr)
    server = None
    try:
        node.start()
        service = node.images
        if path == "front":
            server = Imagelet(os.path.join(work, f"imagelet-{path}"), layout, node.endpoint, mirror)
            service = server.images
        # The sandbox image is not what is measured.
        node.images.PullImage(node.pb.PullImageRequest(image=node.pb.ImageSpec(image=SANDBOX)), timeout=120)
        pb = node.pb
        t0 = time.perf_counter()
        image_ref = service.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=REF)), timeout=600).image_ref
        t_pulled = time.perf_counter()
        assert image_ref == image_id, (image_ref, image_id)
        pulled = disk_use(node)
        _, container, _ = node.run_pod(image_ref, f"bench-{path}", timeout=600)
        t1 = time.perf_counter()
        assert node.wait_exit(container, 60)
        return t1 - t0, t_pulled - t0, (pulled, disk_use(node))
    finally:
        if server is not None:
            server.stop()
        node.stop()
        subprocess.run(["rm", "-rf", os.path.join(work, f"node-{path}")])
        subprocess.run(["rm", "-rf", os.path.join(work, f"imagelet-{path}")])


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
        f"One run of `scripts/bench_front.py --rounds {r['rounds']}` on {r['date']}, commit `{r['git']}`, {os.cpu_count()} CPUs, "
        f"containerd {r['containerd']}; front mode's mirror: {r['mirror']}. Medians; single rounds ranged from "
        f"{min(spread):.2f} s to {max(spread):.2f} s.",
        "",
        "| path | PullImage | PullImage → started container |",
        "| --- | --- | --- |",
        f"| front mode: imagelet → containerd → {'imagelet' if r['own_mirror'] else 'the stand-in'}'s mirror | {med(r['pull']['front']):.2f} s | {f:.2f} s |",
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
    r = {"rounds": args.rounds, "total": {"front": [], "distribution": []}, "pull": {"front": [], "distribution": []}}
    with tempfile.TemporaryDirectory(prefix="imagelet-bench-front-", dir=args.work or "/var/tmp") as work:
        layout_dir = os.path.join(work, "store")
        layout = Layout(layout_dir)
        t = time.perf_counter()
        big = random_layer(os.path.join(work, "random.bin"), args.size_mib << 20)
        os.unlink(os.path.join(work, "random.bin"))
        image_id = layout.add(REF, [big, busybox_layer()], ["/bin/echo", "started"])
        del big
        pause_image(layout, SANDBOX)
        print(f"image made in {time.perf_counter() - t:.1f} s ({args.size_mib} MiB random layer + busybox-static)", flush=True)
        registry = DistributionRegistry(os.path.join(work, "registry"))
        registry.start()
        try:
            registry.push(layout_dir, REF, "library/big:256")
            registry.push(layout_dir, SANDBOX, "library/pause:front")
            r["own_mirror"] = imagelet_serves_mirror(work)
            r["mirror"] = "imagelet's [mirror]" if r["own_mirror"] else "docker-registry standing in (this imagelet has no [mirror])"
            print(f"front mode's mirror: {r['mirror']}", flush=True)
            for n in range(args.rounds):
                for path in ("front", "distribution") if n % 2 == 0 else ("distribution", "front"):
                    total, pull, ((content, snaps), (_, snaps_run)) = one_round(work, path, layout_dir, registry, image_id, r["own_mirror"])
                    r["total"][path].append(total)
                    r["pull"][path].append(pull)
                    r["disk"] = (content, snaps, snaps_run)
                    print(f"round {n + 1} {path}: PullImage {pull:.2f} s, PullImage → started {total:.2f} s; "
                          f"after the pull: content store {content:.0f} MiB, snapshots {snaps:.0f} MiB (with the container: {snaps_run:.0f} MiB)", flush=True)
        finally:
            registry.stop()
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
