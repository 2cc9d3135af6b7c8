"""scripts/soak: runs the reliability scenarios (test/integration/soak_scenarios.py)
with real durations and counts, prints their figures and writes them between
the markers of docs/reliability.md. Exits 1 when a scenario broke a promise
or the load's RSS grew more than 10 %."""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
import soak_scenarios as s  # noqa: E402
import h2_abuse  # noqa: E402
import mirror_soak  # noqa: E402

DOC = os.path.join(ROOT, "docs", "reliability.md")
BEGIN, END = "<!-- soak figures: begin (written by scripts/soak) -->", "<!-- soak figures: end -->"
RSS_GROWTH_LIMIT = 10.0

# name → (title, how it runs, scenario call)
SCENARIOS = {
    "load": ("1. Load", "10,000 images, 60 s, concurrency 64 over 8 connections; 90 % ImageStatus (tag, ID, prefix, absent), 5 % ListImages, 5 % StreamImages; RSS sampled every 0.5 s",
             lambda d: s.scenario_load(d, images=10_000, duration=60.0, concurrency=64, warmup=10.0)),
    "churn": ("2. Store churn under load", "60 s; a change every 100 ms in rotation (OCI layout add/remove/retag with index.json replaced atomically, once rewritten in place; a tarball renamed in or removed, once copied in place; containers/storage images.json replaced); 16 clients checking every answer",
              lambda d: s.scenario_churn(d, duration=60.0, interval=0.1, concurrency=16, base=200)),
    "faults": ("3. Faults", "each fault injected at run time, held 2 s, then mended; 8 clients on the healthy backend throughout; poll_interval 1 s, backend_timeout 1 s; served as nobody (mode 000 means nothing to root)",
               lambda d: s.scenario_faults(d, load_concurrency=8, hold=2.0)),
    "references": ("4a. Hostile references", "10,000 generated references, each through ImageStatus and the ListImages filter, 8 clients; 20 requests over 4 MiB; one client asking good questions throughout",
                   lambda d: s.scenario_hostile_references(d, count=10_000, concurrency=8, oversize=20)),
    "payloads": ("4b. Random and truncated protobuf payloads", "5,000 payloads to every unary method (and StreamImages), random, truncated, bit-flipped, unknown fields, huge declared lengths",
                 lambda d: s.scenario_hostile_payloads(d, count=5_000)),
    "frames": ("4c. Broken HTTP/2 and gRPC", "one raw connection per case, 3 s each; one client asking good questions throughout",
               lambda d: s.scenario_garbage_frames(d, wait=3.0)),
    "connections": ("4d. Idle and stalled connections", "default timeouts; 1,000 idle connections (handshake done, pings answered, no call), no preface, half a preface, three clients that never read a StreamImages answer of 3,000 images (socket full; flow control; socket full on the path-:authority path); one client listing throughout",
                    lambda d: s.scenario_connections(d, images=3000, idle=1000, timeouts=None, close_within=330.0)),
    "lifecycle": ("5. Lifecycle", "10,001 images, concurrency 64: a second instance on the same socket during load; SIGTERM with 8 StreamImages half read and unary load; kill -9 under load, then a restart",
                  lambda d: s.scenario_lifecycle(d, images=10_001, load_seconds=10.0, concurrency=64, streams=8)),
    "h2": ("6. HTTP/2 abuse", "each attack of test/integration/h2_abuse.py at full size, on both paths (:authority localhost; the socket path, through the rewriter), one after another on one server with default timeouts; a normal client calling ImageStatus and ListImages throughout; RSS sampled every 50 ms",
           lambda d: h2_abuse.scenario_h2_abuse(d, h2_abuse.FULL_SIZES, close_within=100.0, rss_return_within=30.0)),
    "mirror": ("7. The mirror port", "an OCI layout with one 256 MiB layer served on loopback; one after another: 50 clients reading 16 KiB every 50 ms and 50 that never read, for 30 s; 1,000 clients that vanish after up to 16 MiB (every other one with a reset); 1,000 connections (half idle, half with unfinished headers) held 15 s; a 1 MiB header, 10,000 headers, a 1 MiB path, 64 MiB of headers that never end; the store changed while a download reads it, 3 times each: the OCI layout's blob removed with its image, replaced by rename, rewritten in place, truncated, and the same to the file of a 64 MiB layer re-created from containers-storage (vfs) (sha256 of what arrived checked); a CRI client calling ImageStatus every 20 ms throughout",
               lambda d: mirror_soak.scenario_mirror(d, mirror_soak.FULL)),
}


def fmt(v):
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v).replace("|", "\\|").replace("\n", " ")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} MiB, Linux {platform.release()}"


def commit():
    out = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


ROW_COLUMNS = ["attack", "path", "size", "server", "normal ok", "normal failed", "longest gap ms", "fresh client ms",
               "RSS before MiB", "RSS peak MiB", "RSS after MiB", "server CPU s"]


def render_rows(rows):
    """A scenario with one row per case (the HTTP/2 abuse: attack and path): one table of columns,
    then the figures only some cases have."""
    lines = ["| " + " | ".join(ROW_COLUMNS) + " |", "|" + " --- |" * len(ROW_COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in ROW_COLUMNS) + " |" for r in rows]
    extra = [(f"{r['attack']} ({r['path']})", k, v) for r in rows for k, v in r.items() if k not in ROW_COLUMNS and k != "seconds"]
    if extra:
        lines += ["", "| attack (path) | figure | value |", "| --- | --- | --- |"]
        lines += [f"| {fmt(a)} | {fmt(k)} | {fmt(v)} |" for a, k, v in extra]
    return lines


def render(results, started, seconds):
    lines = [BEGIN, "",
             f"One run of `scripts/soak` on {time.strftime('%Y-%m-%d', time.gmtime(started))}, commit `{commit()}`, {machine()}; "
             f"{seconds / 60:.1f} minutes. The machine was shared with other work, so latencies are upper bounds.", ""]
    for name, (title, how, _), report, took in results:
        verdict = "**passed**" if not report.problems else f"**{len(report.problems)} problem(s)**"
        lines += [f"### {title}: {verdict}", "", f"How: {how}. Took {took:.0f} s.", ""]
        rows = getattr(report, "rows", None)
        if rows:
            lines += render_rows(rows)
        else:
            lines += ["| figure | value |", "| --- | --- |"]
            lines += [f"| {fmt(k)} | {fmt(v)} |" for k, v in report.figures.items()]
        if report.problems:
            lines += ["", "Problems:", ""] + [f"- {fmt(p)}" for p in report.problems]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}")
    ap.add_argument("--no-write", action="store_true", help="print the figures only")
    ap.add_argument("--markdown", action="store_true", help="also print the figures as docs/reliability.md would have them")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n}")
    started = time.time()
    results, failed = [], False
    for name in names:
        title, how, run = SCENARIOS[name]
        print(f"== {title} ({how})", flush=True)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"imagelet-soak-{name}-") as d:
            report = run(d)
        took = time.monotonic() - t0
        if name == "load" and report.rss_growth > RSS_GROWTH_LIMIT:
            report.problem(f"RSS grew {report.rss_growth:.1f} % between {10} s and the end (limit {RSS_GROWTH_LIMIT:g} %)")
        for k, v in report.figures.items():
            print(f"   {k}: {fmt(v)}")
        for p in report.problems:
            print(f"   PROBLEM: {p}")
        print(f"   {'passed' if not report.problems else 'FAILED'} in {took:.0f} s", flush=True)
        failed |= bool(report.problems)
        results.append((name, SCENARIOS[name], report, took))
    text = render(results, started, time.time() - started)
    if args.markdown:
        print(text)
    if not args.no_write and not args.only:
        with open(DOC) as f:
            doc = f.read()
        if BEGIN not in doc or END not in doc:
            sys.exit(f"{DOC} has no soak figure markers")
        with open(DOC, "w") as f:
            f.write(doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):])
        print(f"figures written to {os.path.relpath(DOC, ROOT)}")
    elif args.only and not args.no_write:
        print("(--only: docs/reliability.md is written only by a full run)")
    print("soak: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
