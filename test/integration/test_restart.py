"""Restarts kubelet meets on a device (issue #21): under socket activation
(imagelet.socket holds the listening socket, `systemctl restart imagelet`
stops one process and starts the next on the same socket) no call is lost."""
import os
import signal
import socket
import subprocess
import threading
import time

import grpc

import cri_stubs
from conftest import BIN, EXAMPLES, oci_backend, stop_process_group


def start_on(listening, config, log):
    """The binary as systemd starts it: the listening socket as fd 3, LISTEN_FDS=1, LISTEN_PID its own pid."""
    fd = listening.fileno()
    return subprocess.Popen(
        ["bash", "-c", f'exec 3<&{fd}; [ {fd} = 3 ] || exec {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', BIN, "serve", "--config", config],
        pass_fds=[fd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


class Caller(threading.Thread):
    """Calls ListImages one after another, as kubelet does: on one channel it keeps
    (`fresh` False), or on a new channel per call (crictl). Never wait_for_ready:
    a call the restart drops fails here instead of being retried."""

    def __init__(self, path, fresh):
        super().__init__(daemon=True)
        self.path, self.fresh = path, fresh
        self.pb, self.pbg = cri_stubs.load()
        self.answered_at, self.failures = [], []
        self.stop = threading.Event()

    def call(self, ch):
        images = self.pbg.ImageServiceStub(ch).ListImages(self.pb.ListImagesRequest(), timeout=20).images
        assert len(images) == 2, images

    def run(self):
        ch = None if self.fresh else grpc.insecure_channel(f"unix:{self.path}")
        try:
            while not self.stop.is_set():
                try:
                    if self.fresh:
                        with grpc.insecure_channel(f"unix:{self.path}") as one:
                            self.call(one)
                    else:
                        self.call(ch)
                    self.answered_at.append(time.monotonic())
                except (grpc.RpcError, AssertionError) as e:
                    self.failures.append(f"{time.monotonic():.2f}: {str(e)[:200]}")
                time.sleep(0.01)
        finally:
            if ch is not None:
                ch.close()


def test_a_restart_under_socket_activation_loses_no_call(workdir):
    path = os.path.join(workdir, "imagelet.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(64)
    config = os.path.join(workdir, "imagelet.toml")
    with open(config, "w") as f:
        f.write(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    log_path = os.path.join(workdir, "imagelet.log")
    procs = []
    callers = [Caller(path, fresh=False), Caller(path, fresh=False), Caller(path, fresh=True)]
    with open(log_path, "w") as log:
        try:
            procs.append(start_on(listening, config, log))
            for c in callers:
                c.start()
            time.sleep(1.0)
            # systemctl restart: SIGTERM, the process ends (finishing its calls), the next one starts.
            procs[0].send_signal(signal.SIGTERM)
            assert procs[0].wait(timeout=15) == 0
            stopped = time.monotonic()
            time.sleep(0.3)  # systemd's stop-to-start gap, and then some: clients queue on the socket meanwhile
            procs.append(start_on(listening, config, log))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(any(t > stopped for t in c.answered_at) for c in callers):
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            for c in callers:
                c.stop.set()
            for c in callers:
                c.join(timeout=25)
            for p in procs:
                stop_process_group(p)
            listening.close()
    with open(log_path) as f:
        logged = f.read()
    assert logged.count("systemd socket activation") == 2, logged
    for c in callers:
        kind = "a new channel per call" if c.fresh else "one kept channel"
        assert c.failures == [], f"{kind}: {c.failures}"
        before = sum(1 for t in c.answered_at if t < stopped)
        after = sum(1 for t in c.answered_at if t > stopped)
        assert before > 0 and after > 0, f"{kind}: {before} calls answered before the restart, {after} after"
