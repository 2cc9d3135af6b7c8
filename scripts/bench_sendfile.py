#!/usr/bin/env python3
"""How fast this machine's loopback carries a file sent by sendfile(2), against
the same file sent by a read/write loop (what Debian's distribution 2.8 does:
32 KiB writes from Go; Python needs bigger buffers to be as quick).

docs/performance.md cites it: the mirror sends an OCI layout's blob with
Bun's sendfile, and on loopback sendfile itself is the slower way. One plain
Python HTTP/1.1 server per way, the same file from the page cache, curl as the
client, rounds alternating; prints each way's median and its ratio to sendfile.

    python3 scripts/bench_sendfile.py [--size-mib 256] [--rounds 7]
"""
import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import threading

WAYS = {"sendfile": None, "read/write 1 MiB": 1 << 20, "read/write 32 KiB": 32 << 10}


def serve(listener, path, chunk):
    size = os.path.getsize(path)
    while True:
        conn, _ = listener.accept()
        with conn, open(path, "rb") as f:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
            if chunk is None:
                sent = 0
                while sent < size:
                    sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
            else:
                buf = bytearray(chunk)
                view = memoryview(buf)
                while n := f.readinto(buf):
                    conn.sendall(view[:n])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile(dir="/var/tmp", prefix="imagelet-sendfile-") as f:
        f.write(os.urandom(args.size_mib << 20))
        f.flush()
        ports = {}
        for way, chunk in WAYS.items():
            listener = socket.create_server(("127.0.0.1", 0))
            ports[way] = listener.getsockname()[1]
            threading.Thread(target=serve, args=(listener, f.name, chunk), daemon=True).start()
        times = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in (list(WAYS) if r % 2 == 0 else list(reversed(WAYS))):
                out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", f"http://127.0.0.1:{ports[way]}/"],
                                     capture_output=True, text=True, check=True).stdout
                times[way].append(float(out))
        base = statistics.median(times["sendfile"])
        print(f"{args.size_mib} MiB, {args.rounds} rounds, curl, medians:")
        for way, t in times.items():
            print(f"  {way:18} {statistics.median(t):.3f} s  {statistics.median(t) / base:.2f}× sendfile")


if __name__ == "__main__":
    main()
