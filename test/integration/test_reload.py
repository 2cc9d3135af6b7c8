"""SIGHUP: the config file and the plugins are re-read without dropping
connections or failing calls in flight, through the compiled binary."""
import json
import os
import signal
import threading
import time

import grpc

from conftest import EXAMPLES, FIXTURES, oci_backend

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")
SAMPLE_TAGS = {"docker.io/library/edge-tools:2.0", "example.com/edge/hello:1.0", "example.com/edge/hello:latest"}

VERSIONED = """
export default {
  name: "versioned",
  apiVersion: 1,
  options: {},
  create() {
    return { list: () => [{ id: "sha256:" + "e5".repeat(32), repoTags: ["vendor.example/versioned:VERSION"], repoDigests: [], size: 9, kind: "oci" }] };
  },
};
"""


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o644)
    os.rename(path + ".tmp", path)


def plugins(workdir, version="1"):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "versioned.ts"), VERSIONED.replace("VERSION", version))
    return d


def rewrite_config(server, text):
    write(server.config, f'socket = "{server.socket}"\n' + text)


def reload(server, count, timeout=20):
    """Sends SIGHUP and waits for the count-th reload to have finished (either way)."""
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = server.log()
        if log.count('msg="reloaded"') + log.count('msg="reload failed') >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"reload {count} did not finish: {server.log()}")


def tags(server):
    return {t for i in server.list_images() for t in i.repo_tags}


def test_sighup_under_load_fails_no_call_and_serves_the_new_config(serve, workdir):
    d = plugins(workdir)
    s = serve(f'plugin_dir = "{d}"\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS
    stop = threading.Event()
    failures, calls = [], [0]

    def client():
        # Each thread keeps one connection across every reload: a channel that
        # leaves READY would have lost it (and reconnected silently).
        channel = grpc.insecure_channel(f"unix:{s.socket}")
        states = []
        channel.subscribe(states.append, try_to_connect=True)
        stub = type(s.stub)(channel)
        while not stop.is_set():
            try:
                seen = {t for i in stub.ListImages(s.pb.ListImagesRequest(), timeout=10).images for t in i.repo_tags}
                if not SAMPLE_TAGS <= seen:
                    failures.append(f"ListImages lost the sample's images: {sorted(seen)}")
                r = stub.ImageStatus(s.pb.ImageStatusRequest(image=s.pb.ImageSpec(image="edge-tools:2.0"), verbose=True), timeout=10)
                if not r.HasField("image"):
                    failures.append("ImageStatus lost edge-tools:2.0")
                calls[0] += 2
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")
        after_ready = states[states.index(grpc.ChannelConnectivity.READY):] if grpc.ChannelConnectivity.READY in states else states
        if set(after_ready) != {grpc.ChannelConnectivity.READY}:
            failures.append(f"connection state changed: {after_ready}")
        channel.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        umoci = oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="umoci")
        steps = [
            f'plugin_dir = "{d}"\n' + SAMPLE + umoci,  # a backend added
            f'plugin_dir = "{d}"\n' + SAMPLE + '[[backend]]\ntype = "versioned"\n',  # one removed, a plugin's type used
            None,  # the plugin itself changed
            f'plugin_dir = "{d}"\n' + SAMPLE + '[[backend]]\ntype = "versioned"\n' + umoci,
            f'plugin_dir = "{d}"\n' + SAMPLE + '[[backend]]\ntype = "versioned"\n',
        ]
        for n, text in enumerate(steps, start=1):
            if text is None:
                plugins(workdir, version="2")
            else:
                rewrite_config(s, text)
            time.sleep(0.2)  # calls run on the old configuration meanwhile
            reload(s, n)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == [], failures[:5]
    assert calls[0] > 20
    print(f"calls under reload: {calls[0]}")
    assert s.proc.poll() is None
    log = s.log()
    assert log.count('msg="reloaded"') == len(steps) and "reload failed" not in log
    assert tags(s) == SAMPLE_TAGS | {"vendor.example/versioned:2"}


def test_config_that_does_not_parse_keeps_the_running_one(serve, workdir):
    s = serve(SAMPLE)
    rewrite_config(s, SAMPLE + "[[backend]\ntype = \n")
    log = reload(s, 1)
    line = next(line for line in log.splitlines() if "reload failed" in line)
    assert "level=error" in line and "not valid TOML" in line and s.config in line
    assert tags(s) == SAMPLE_TAGS
    rewrite_config(s, SAMPLE + '[[backend]]\ntype = "oci-layout"\npath = "x"\nbogus = 1\n')
    log = reload(s, 2)
    assert 'backend[1].bogus: unknown key for backend type \\"oci-layout\\"' in log
    assert tags(s) == SAMPLE_TAGS
    rewrite_config(s, oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="umoci"))
    reload(s, 3)
    now = tags(s)
    assert "docker.io/library/edge-tools:2.0" not in now and "localhost/oci-umoci:1.0" in now


def test_folder_plugin_changed_in_any_file_is_imported_again(serve, workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(os.path.join(d, "split"))
    write(os.path.join(d, "split", "tag.ts"), 'export const TAG = "split:1";\n')
    write(os.path.join(d, "split", "index.ts"), VERSIONED.replace('"versioned"', '"split"').replace('"vendor.example/versioned:VERSION"', "TAG").replace("export default", 'import { TAG } from "./tag.ts";\nexport default'))
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "split"\n')
    assert tags(s) == {"docker.io/library/split:1"}
    write(os.path.join(d, "split", "tag.ts"), 'export const TAG = "split:2";\n')
    reload(s, 1)
    assert tags(s) == {"docker.io/library/split:2"}


SLOW = """
const ID = "sha256:" + "f6".repeat(32);
export default {
  name: "slow",
  apiVersion: 1,
  options: { label: { type: "string", required: true } },
  create(options) {
    return {
      list: () => [{ id: ID, repoTags: ["slow:1"], repoDigests: [], size: 42, kind: "oci" }],
      status: (id) => new Promise((r) => setTimeout(() => r({ id, repoTags: [], repoDigests: [], size: 42, kind: "oci", config: { label: options.label } }), 1500)),
      close: () => console.error("closed " + options.label),
    };
  },
};
"""


def test_call_in_flight_finishes_on_the_old_backends_which_close_after(serve, workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d)
    write(os.path.join(d, "slow.ts"), SLOW)
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "slow"\nlabel = "old"\ntimeout = "5s"\n')
    future = s.stub.ImageStatus.future(s.pb.ImageStatusRequest(image=s.pb.ImageSpec(image="slow:1"), verbose=True), timeout=20)
    time.sleep(0.3)
    rewrite_config(s, f'plugin_dir = "{d}"\n[[backend]]\ntype = "slow"\nlabel = "new"\ntimeout = "5s"\n')
    s.proc.send_signal(signal.SIGHUP)
    assert json.loads(future.result().info["info"])["imageSpec"] == {"label": "old"}
    deadline = time.time() + 10
    while "closed old" not in s.log() and time.time() < deadline:
        time.sleep(0.05)
    log = s.log()
    assert log.index('msg="reloaded"') < log.index("closed old")
    r = s.image_status("slow:1", verbose=True)
    assert json.loads(r.info["info"])["imageSpec"] == {"label": "new"}


def test_restart_only_settings_are_logged_and_kept(serve, workdir):
    s = serve(SAMPLE)
    write(s.config, f'socket = "{s.socket}.other"\nlog_level = "debug"\n' + SAMPLE)
    log = reload(s, 1)
    assert "changed setting takes effect at the next start" in log and "key=socket" in log and "key=log_level" in log
    assert tags(s) == SAMPLE_TAGS and os.path.exists(s.socket)


FLAKY = """
import { existsSync } from "node:fs";
export default {
  name: "flaky",
  apiVersion: 1,
  options: { offline_flag: { type: "string", required: true } },
  create(options) {
    return {
      list() {
        if (existsSync(options.offline_flag)) throw new Error("store offline");
        return [{ id: "sha256:" + "a7".repeat(32), repoTags: ["flaky:1"], repoDigests: [], size: 5, kind: "oci" }];
      },
    };
  },
};
"""


def test_backend_failing_at_reload_keeps_its_last_good_list(serve, workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d)
    write(os.path.join(d, "flaky.ts"), FLAKY)
    flag = os.path.join(workdir, "offline")
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "flaky"\noffline_flag = "{flag}"\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS | {"docker.io/library/flaky:1"}
    open(flag, "w").close()
    log = reload(s, 1)
    assert "store offline" in log
    assert tags(s) == SAMPLE_TAGS | {"docker.io/library/flaky:1"}


def test_plugin_refused_at_start_and_fixed_loads_on_reload(serve, workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d)
    write(os.path.join(d, "versioned.ts"), "export default {,};\n")
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "versioned"\n' + SAMPLE)
    assert 'msg="plugin refused"' in s.log() and tags(s) == SAMPLE_TAGS
    plugins(workdir, version="3")
    reload(s, 1)
    assert tags(s) == SAMPLE_TAGS | {"vendor.example/versioned:3"}
