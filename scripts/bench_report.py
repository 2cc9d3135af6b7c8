"""The benchmark's report: the side-by-side table and the targets as Markdown,
and the plot of latency against N as a self-drawn SVG (no plotting library)."""
import math

# (key, label, format, better): better says which way is good, for the ratio column's reading.
METRICS = [
    ("list_p50", "ListImages p50 (ms)", "{:.2f}", "lower"),
    ("list_p99", "ListImages p99 (ms)", "{:.2f}", "lower"),
    ("list_mb", "ListImages answer (MB)", "{:.2f}", None),
    ("status_p50", "ImageStatus p50, c=1 (ms)", "{:.3f}", "lower"),
    ("status_p99", "ImageStatus p99, c=1 (ms)", "{:.3f}", "lower"),
    ("status_rps_c32", "ImageStatus calls/s, 32 connections", "{:,.0f}", "higher"),
    ("status_rps_s32", "ImageStatus calls/s, 1 connection × 32 streams", "{:,.0f}", "higher"),
    ("client_cpu_c32", "h2load's own CPU in that run (cores)", "{:.2f}", None),
    ("stream_p50", "StreamImages to last batch, p50 (ms)", "{:.2f}", "lower"),
    ("seq_rss_mib", "RSS after the call sequence (MiB)", "{:.1f}", "lower"),
    ("seq_peak_mib", "RSS peak by then, VmHWM (MiB)", "{:.1f}", "lower"),
    ("seq_anon_mib", "anonymous RSS after the call sequence (MiB)", "{:.1f}", "lower"),
    ("seq_file_mib", "file-backed RSS after the call sequence (MiB)", "{:.1f}", "lower"),
    ("rss_peak_mib", "RSS peak after the load (MiB)", "{:.0f}", "lower"),
    ("rss_steady_mib", "RSS steady, after the load and the idle minute (MiB)", "{:.0f}", "lower"),
    ("cold_ms", "start → first ListImages with every image (ms)", "{:,.0f}", "lower"),
    ("change_ms", "store change → visible to ImageStatus (ms)", "{:,.0f}", "lower"),
    ("settle_cpu_ms", "CPU in the {settle} s after the last call (ms)", "{:.0f}", "lower"),
    ("idle_cpu_ms", "CPU used while idle, the {idle} s after those (ms)", "{:.0f}", "lower"),
]


def fmt(value, pattern):
    if value is None:
        return "–"
    return pattern.format(value)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def results_table(n, run, idle_s, settle_s):
    ours, peer = run["imagelet"], run.get("containerd")
    lines = [f"| N = {n:,} | imagelet | containerd | imagelet ÷ containerd |", "|---|---:|---:|---:|"]
    for key, label, pattern, _ in METRICS:
        a = ours.get(key)
        b = peer.get(key) if peer else None
        r = ratio(a, b)
        lines.append(f"| {label.format(idle=idle_s, settle=settle_s)} | {fmt(a, pattern)} | {fmt(b, pattern)} | {'–' if r is None else f'{r:.2f}'} |")
    return "\n".join(lines)


def targets(results):
    """Each target of the issue with what this run measured and whether it is met (None: not measured)."""
    runs = results["runs"]
    sizes = sorted(runs)
    ten = runs.get(10_000)
    rows = []

    def peer(run, key):
        return run["containerd"].get(key) if run and run.get("containerd") else None

    def ratio_row(label, key, limit, higher_is_better=False):
        a = ten["imagelet"].get(key) if ten else None
        b = peer(ten, key)
        r = ratio(a, b)
        met = None if r is None else (r >= limit if higher_is_better else r <= limit)
        rows.append((label, "–" if r is None else f"{r:.2f} × containerd", met))

    ratio_row("ListImages p50 at 10,000 ≤ 0.1 × containerd", "list_p50", 0.1)
    ratio_row("ImageStatus p50 at c=1 ≤ 1.0 × containerd (10,000)", "status_p50", 1.0)
    ratio_row("ImageStatus throughput at c=32 ≥ 1.0 × containerd: 32 connections (10,000)", "status_rps_c32", 1.0, True)
    ratio_row("ImageStatus throughput at c=32 ≥ 1.0 × containerd: 1 connection × 32 streams (10,000)", "status_rps_s32", 1.0, True)
    ratio_row("RSS peak with 10,000 ≤ 0.5 × containerd", "rss_peak_mib", 0.5)
    ratio_row("RSS steady with 10,000 ≤ 0.5 × containerd", "rss_steady_mib", 0.5)
    for key, label, limit in (("cold_ms", "first answer with 10,000 images ≤ 1 s after start", 1000),
                              ("change_ms", "a store change visible ≤ 1 s", 1000)):
        v = ten["imagelet"].get(key) if ten else None
        rows.append((label, "–" if v is None else f"{v:,.0f} ms", None if v is None else v <= limit))
    # Issue 17: memory after the same short call sequence, as a device's user sees it.
    for n in sizes:
        run = runs[n]
        limits = (("seq_rss_mib", "steady RSS", 1.0), ("seq_peak_mib", "peak RSS", 1.0), ("seq_anon_mib", "anonymous RSS", 1.0)) if n <= 100 \
            else (("seq_peak_mib", "peak RSS", 1.0), ("seq_rss_mib", "steady RSS", 0.5))
        for key, what, limit in limits:
            r = ratio(run["imagelet"].get(key), peer(run, key))
            rows.append((f"{what} after the call sequence with {n:,} images ≤ {limit} × containerd", "–" if r is None else f"{r:.2f} × containerd",
                         None if r is None else r <= limit))
    for n in sizes:
        backends = runs[n].get("backends")
        if backends and backends.get("oci-layout"):
            base = backends["oci-layout"]["rss_mib"]
            worst = max(backends, key=lambda k: backends[k]["rss_mib"])
            r = backends[worst]["rss_mib"] / base
            rows.append((f"every backend's steady RSS ≤ 1.2 × oci-layout's ({n:,} images)", f"{r:.2f} × ({worst})", r <= 1.2))
    ten_small = runs.get(10)
    if ten_small:
        for server in ("imagelet", "containerd"):
            v = ten_small.get(server, {}).get("cold_ms")
            if v is not None:
                rows.append((f"start → first answered ListImages with 10 images: {server}", f"{v:,.0f} ms", None))
    idle = [runs[n]["imagelet"].get("idle_cpu_ms") for n in sizes]
    idle = [v for v in idle if v is not None]
    if idle:
        worst = max(idle)
        # "≈ 0": under 0.1 % of one core over the idle window.
        rows.append((f"idle CPU ≈ 0 (under 0.1 % of a core over {results['idle_s']} s, from {results.get('settle_s', 2)} s after the last call)", f"at most {worst:.0f} ms",
                     worst <= results["idle_s"] * 1000 * 0.001))
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        growth = ratio(runs[hi]["imagelet"].get("list_p50"), runs[lo]["imagelet"].get("list_p50"))
        if growth is not None:
            rows.append((f"ListImages no worse than linear in N ({lo:,} → {hi:,}: N × {hi / lo:.0f})",
                         f"p50 × {growth:.1f}", growth <= hi / lo))
        flat = ratio(runs[hi]["imagelet"].get("status_p50"), runs[lo]["imagelet"].get("status_p50"))
        if flat is not None:
            # Flat: within 50 % (and 50 µs) across the sizes; the p50 is tens of microseconds.
            a, b = runs[hi]["imagelet"]["status_p50"], runs[lo]["imagelet"]["status_p50"]
            rows.append((f"ImageStatus flat in N ({lo:,} → {hi:,})", f"p50 × {flat:.2f}", a <= b * 1.5 or a - b <= 0.05))
    lines = ["| target | measured | met |", "|---|---|---|"]
    for label, value, met in rows:
        lines.append(f"| {label} | {value} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(lines)


MARKER = "<!-- Everything below is written by scripts/bench; edit above this line. -->"


def write_section(doc, text, begin, end, heading):
    """Replaces the text between `begin` and `end` in `doc` (a section a bench script writes by itself), or,
    the first time, puts `heading` and `text` before the part scripts/bench.py generates (MARKER)."""
    with open(doc) as f:
        current = f.read()
    if begin in current and end in current:
        new = current[: current.index(begin)] + text + current[current.index(end) + len(end):]
    else:
        at = current.index(MARKER) if MARKER in current else len(current)
        new = current[:at] + heading + text + "\n\n" + current[at:]
    with open(doc, "w") as f:
        f.write(new)


def markdown(results, plot_name):
    """The generated part of docs/performance.md (below MARKER)."""
    meta = results["meta"]
    parts = [
        MARKER,
        "",
        "## Run",
        "",
        f"- date: {meta['date']}",
        f"- machine: `nproc` {meta['nproc']}, {meta['mem_gib']:.1f} GiB memory, {meta['cpu']}, Linux {meta['kernel']}",
        f"- command: `{meta['command']}`",
        f"- imagelet {meta['imagelet']} ({meta['git']}), containerd {meta['containerd']}, {meta['h2load']}",
        f"- each latency and throughput figure is the median of {results['rounds']} rounds that alternate between the servers",
        f"- stores and containerd's root on {meta['fs']}; `ctr images import --no-unpack` of the same images took "
        + (", ".join(f"{s:.0f} s for {n:,}" for n, s in meta["import_s"].items()) or "–"),
        "",
        "## Targets",
        "",
        targets(results),
        "",
        "## Results",
        "",
        f"![ListImages and ImageStatus p50 against N, both servers]({plot_name})",
        "",
        f"![RSS against N, both servers: after the call sequence and after the load]({plot_name[:-4]}-rss.svg)",
        "",
    ]
    for n in sorted(results["runs"]):
        parts += [results_table(n, results["runs"][n], results["idle_s"], results.get("settle_s", 2)), ""]
    backends = [(n, results["runs"][n].get("backends")) for n in sorted(results["runs"])]
    backends = [(n, b) for n, b in backends if b]
    if backends:
        parts += ["### imagelet's memory per backend kind (same images, same calls)", "",
                  "Each backend serves the same N synthetic images (`scripts/bench_stores.py`); RSS read 10 s after the call sequence (2 s with `--quick`).", "",
                  "| backend | images | RSS (MiB) | peak (MiB) | anonymous (MiB) | file-backed (MiB) | ÷ oci-layout's RSS | start → every image listed (ms) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n, b in backends:
            base = b.get("oci-layout", {}).get("rss_mib")
            for kind, r in b.items():
                rel = "–" if not base else f"{r['rss_mib'] / base:.2f}"
                parts.append(f"| {kind} | {n:,} | {r['rss_mib']:.1f} | {r['peak_mib']:.1f} | {r['anon_mib']:.1f} | {r['file_mib']:.1f} | {rel} | {r['first_ms']:,.0f} |")
        parts.append("")
    scans = [(n, results["runs"][n].get("scans")) for n in sorted(results["runs"])]
    scans = [(n, s) for n, s in scans if s]
    if scans:
        parts += ["### Store scans (imagelet only)", "",
                  "| store | images | start → every image listed (ms) | change → visible (ms) | RSS (MiB) |",
                  "|---|---:|---:|---:|---:|"]
        for n, s in scans:
            for name, r in s.items():
                parts.append(f"| {name} | {r['images']:,} | {r['all_ms']:,.0f} | {r['change_ms']:,.0f} | {fmt(r.get('rss_mib'), '{:.0f}')} |")
        parts.append("")
    return "\n".join(parts)


def svg_rss_plot(results):
    """RSS against N for both servers: after the call sequence, and after the load."""
    return svg_plot(results, "RSS against N (log–log)", (("seq_rss_mib", "RSS, calls", ""), ("rss_steady_mib", "RSS, load", "6,4")), "MiB")


def svg_plot(results, title="p50 latency against N (log–log)", keys=(("list_p50", "ListImages", ""), ("status_p50", "ImageStatus c=1", "6,4")), unit="ms"):
    """Lines of ListImages and ImageStatus p50 (or `keys`) against N for both servers."""
    sizes = sorted(results["runs"])
    series = []
    for server, colour in (("imagelet", "#1f6fb4"), ("containerd", "#d9661c")):
        for key, label, dash in keys:
            pts = [(n, results["runs"][n][server].get(key)) for n in sizes if results["runs"][n].get(server)]
            pts = [(n, v) for n, v in pts if v]
            if pts:
                series.append((f"{server} {label}", colour, dash, pts))
    values = [v for *_, pts in series for _, v in pts] or [1]
    w, h, left, right, top, bottom = 720, 440, 70, 200, 40, 50
    x0, x1 = math.log10(min(sizes)) - 0.1, math.log10(max(sizes)) + 0.1
    y0, y1 = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    if y0 == y1:
        y1 += 1

    def x(n):
        return left + (math.log10(n) - x0) / (x1 - x0) * (w - left - right)

    def y(v):
        return top + (y1 - math.log10(v)) / (y1 - y0) * (h - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{title}</text>']
    for e in range(y0, y1 + 1):
        v = 10 ** e
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} {unit}</text>')
    for n in sizes:
        out.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{top}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x(n):.1f}" y="{h - bottom + 18}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 10}" text-anchor="middle">images (N)</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#888"/>')
    for i, (label, colour, dash, pts) in enumerate(series):
        d = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for n, v in pts:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + i * 20
        out.append(f'<line x1="{w - right + 12}" x2="{w - right + 40}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{w - right + 46}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
