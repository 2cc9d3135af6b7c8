"""Module plugins (TypeScript/JavaScript in plugin_dir) through the compiled
binary: loading, option validation, refusals, permissions, and containment of
a misbehaving plugin next to a healthy backend that keeps serving."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, EXAMPLES, oci_backend, run_cli

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")
SAMPLE_TAGS = ["docker.io/library/edge-tools:2.0", "example.com/edge/hello:1.0", "example.com/edge/hello:latest"]
NOBODY = 65534

# A plugin that needs nothing from imagelet: a plain object default export.
PLAIN = """
export default {
  name: "plain",
  apiVersion: 1,
  options: { tag: { type: "string", required: true }, size: { type: "number" } },
  create(options) {
    return { list: () => [{ id: "sha256:" + "a1".repeat(32), repoTags: [options.tag], repoDigests: [], size: options.size ?? 7, kind: "oci" }] };
  },
};
"""

# A folder plugin that vendors the SDK the binary prints (`imagelet sdk`).
WITH_SDK = """
import { defineBackend, OptionError } from "./imagelet-plugin.ts";

export default defineBackend({
  name: "with-sdk",
  options: { tags: { type: "string[]", required: true } },
  create(options) {
    if (options.tags.length === 0) throw new OptionError("tags", "needs at least one tag");
    return { list: () => [{ id: "sha256:" + "b2".repeat(32), repoTags: options.tags, repoDigests: [], size: 11, kind: "oci" }] };
  },
});
"""


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def vendor_sdk(folder):
    out = subprocess.run([BIN, "sdk"], capture_output=True, text=True, check=True)
    write(os.path.join(folder, "imagelet-plugin.ts"), out.stdout)


def plugin_dir(workdir, plugins):
    """plugins: {relative path: source}; returns the directory."""
    d = os.path.join(workdir, "plugins")
    os.makedirs(d, mode=0o755, exist_ok=True)
    for rel, text in plugins.items():
        write(os.path.join(d, rel), text)
    return d


def tags(server):
    return sorted(t for i in server.list_images() for t in i.repo_tags)


def refusals(log):
    return [line for line in log.splitlines() if 'msg="plugin refused"' in line]


def test_plain_and_sdk_plugins_load_and_serve(serve, workdir):
    d = plugin_dir(workdir, {"plain.ts": PLAIN, "with-sdk/index.ts": WITH_SDK})
    vendor_sdk(os.path.join(d, "with-sdk"))
    s = serve(
        f'plugin_dir = "{d}"\n'
        '[[backend]]\ntype = "plain"\ntag = "vendor.example/plain:1"\nsize = 1234\n'
        '[[backend]]\ntype = "with-sdk"\ntags = ["vendor.example/sdk:1", "sdk:2"]\n' + SAMPLE
    )
    assert tags(s) == sorted(SAMPLE_TAGS + ["vendor.example/plain:1", "vendor.example/sdk:1", "docker.io/library/sdk:2"])
    assert s.image_status("vendor.example/plain:1").image.size == 1234
    log = s.log()
    assert "type=plain" in log and "type=with-sdk" in log and refusals(log) == []
    # The in-process CLI loads the same plugins.
    out = run_cli("images", "--config", s.config, "-q")
    assert out.returncode == 0, out.stderr
    assert "sha256:" + "b2" * 32 in out.stdout.split()
    rows = run_cli("plugins", "--config", s.config).stdout.splitlines()
    assert any(r.split()[:3] == ["with-sdk", "with-sdk", "ok"] for r in rows), rows


def test_sdk_printed_by_the_binary_is_the_repository_sdk():
    from conftest import ROOT

    with open(os.path.join(ROOT, "sdk", "imagelet-plugin.ts")) as f:
        assert subprocess.run([BIN, "sdk"], capture_output=True, text=True).stdout == f.read()


@pytest.mark.parametrize(
    "entry, message",
    [
        ('[[backend]]\ntype = "plain"\ntag = "x:1"\ncolour = "red"\n', 'backend[0].colour: unknown key for backend type "plain"'),
        ('[[backend]]\ntype = "plain"\ntag = 5\n', "backend[0].tag: expected string, got number"),
        ('[[backend]]\ntype = "plain"\n', "backend[0].tag: missing"),
        ('[[backend]]\ntype = "with-sdk"\ntags = []\n', "backend[0].tags: needs at least one tag"),
    ],
)
def test_plugin_options_are_validated(workdir, entry, message):
    d = plugin_dir(workdir, {"plain.ts": PLAIN, "with-sdk/index.ts": WITH_SDK})
    vendor_sdk(os.path.join(d, "with-sdk"))
    cfg = write(os.path.join(workdir, "c.toml"), f'plugin_dir = "{d}"\n' + entry)
    out = subprocess.run([BIN, "serve", "--config", cfg, "--socket", os.path.join(workdir, "s.sock")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == f"imagelet: config error: {cfg}: {message}"


REFUSED = {
    "version": ({"future.ts": PLAIN.replace('"plain"', '"future"').replace("apiVersion: 1", "apiVersion: 99")}, "future.ts", "apiVersion 99 is not supported (this imagelet supports 1)"),
    "builtin-clash": ({"layout.ts": PLAIN.replace('"plain"', '"oci-layout"')}, "layout.ts", 'backend type \\"oci-layout\\" is already defined by a built-in backend type'),
    "plugin-clash": ({"a.ts": PLAIN, "b.ts": PLAIN}, "b.ts", 'backend type \\"plain\\" is already defined by {dir}/a.ts'),
    "syntax-error": ({"broken.ts": "export default { name: 'broken', apiVersion: 1,, };"}, "broken.ts", "import failed:"),
    "throws-on-import": ({"bomb.ts": "throw new Error('bomb at import');"}, "bomb.ts", "import failed: bomb at import"),
    "not-a-backend": ({"number.ts": "export default 42;"}, "number.ts", "its default export is not a backend definition"),
    "no-default": ({"helpers.ts": "export const x = 1;"}, "helpers.ts", "its default export is not a backend definition"),
    "bad-option-type": ({"odd.ts": PLAIN.replace('"plain"', '"odd"').replace('type: "number"', 'type: "int"')}, "odd.ts", 'option \\"size\\" has no valid type'),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_plugin_does_not_stop_the_rest(serve, workdir, case):
    files, refused_file, reason = REFUSED[case]
    d = plugin_dir(workdir, files)
    # plain.ts (when present and first) still loads; the sample always serves.
    s = serve(f'plugin_dir = "{d}"\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS
    lines = refusals(s.log())
    assert len(lines) == 1, s.log()
    assert f"plugin={d}/{refused_file}" in lines[0] and reason.format(dir=d) in lines[0], lines[0]
    out = run_cli("plugins", "--config", s.config)
    assert out.returncode == 0, out.stderr
    assert f"{d}/{refused_file}" in out.stdout.split("REFUSED PLUGIN")[1]
    refused = json.loads(run_cli("plugins", "--config", s.config, "-o", "json").stdout)["refused"]
    assert [r["path"] for r in refused] == [f"{d}/{refused_file}"]


def test_clash_with_builtin_keeps_the_builtin(serve, workdir):
    d = plugin_dir(workdir, {"layout.ts": PLAIN.replace('"plain"', '"oci-layout"')})
    s = serve(f'plugin_dir = "{d}"\n' + SAMPLE)  # SAMPLE is an oci-layout backend
    assert tags(s) == SAMPLE_TAGS


def test_hanging_import_is_refused_after_its_timeout(serve, workdir):
    d = plugin_dir(workdir, {"stuck.ts": "await new Promise(() => {});\nexport default {};\n"})
    started = time.time()
    s = serve(f'plugin_dir = "{d}"\n' + SAMPLE)
    assert time.time() - started < 15
    assert tags(s) == SAMPLE_TAGS
    assert "import did not finish within 5000 ms" in refusals(s.log())[0]


def test_backend_of_a_refused_plugin_is_failing_and_the_rest_serves(serve, workdir):
    d = plugin_dir(workdir, {"broken.ts": "export default {,};"})
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "broken"\nname = "vendor"\nwhatever = 1\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS
    backends = {b["name"]: b for b in json.loads(run_cli("plugins", "--config", s.config, "-o", "json").stdout)["backends"]}
    assert backends["vendor"]["state"] == "failing"
    assert backends["vendor"]["lastError"].startswith('list(): plugin for type "broken" refused: import failed')
    assert backends["sample"]["state"] == "ok"


# --- permissions ------------------------------------------------------------------


def insecure(kind, d):
    """Makes plugin_dir `d` insecure in one way; returns the path the refusal names and the text it says."""
    if kind == "file-0666":
        path = os.path.join(d, "plain.ts")
        os.chmod(path, 0o666)
        return path, "is writable by group or others (mode 0666)"
    if kind == "dir-0777":
        os.chmod(d, 0o777)
        return d, "is writable by group or others (mode 0777)"
    if kind == "folder-file-0664":
        path = os.path.join(d, "with-sdk", "imagelet-plugin.ts")
        os.chmod(path, 0o664)
        return path, "is writable by group or others (mode 0664)"
    if kind == "symlink-target-0666":
        target = write(os.path.join(os.path.dirname(d), "elsewhere", "plain.ts"), PLAIN, 0o666)
        os.remove(os.path.join(d, "plain.ts"))
        os.symlink(target, os.path.join(d, "plain.ts"))
        return target, "is writable by group or others (mode 0666)"
    if kind == "owned-by-nobody":
        path = os.path.join(d, "plain.ts")
        os.chown(path, NOBODY, NOBODY)
        return path, f"is owned by uid {NOBODY}, not root or uid {os.getuid()}"
    raise AssertionError(kind)


PERMISSION_CASES = ["file-0666", "dir-0777", "folder-file-0664", "symlink-target-0666", "owned-by-nobody"]


@pytest.mark.parametrize("kind", PERMISSION_CASES)
def test_insecure_plugin_is_refused_naming_path_and_mode(serve, workdir, kind):
    if kind == "owned-by-nobody" and os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    d = plugin_dir(workdir, {"plain.ts": PLAIN, "with-sdk/index.ts": WITH_SDK})
    vendor_sdk(os.path.join(d, "with-sdk"))
    path, problem = insecure(kind, d)
    s = serve(f'plugin_dir = "{d}"\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS
    lines = refusals(s.log())
    assert lines and all(f"{path} {problem}" in line for line in lines), s.log()
    if kind != "dir-0777":
        # Only the insecure plugin is refused.
        assert len(lines) == 1 and ("type=with-sdk" in s.log()) != (kind == "folder-file-0664")
    # --allow-insecure-plugins loads it, with a warning at every start.
    s2 = serve(f'plugin_dir = "{d}"\n' + SAMPLE, args=("--allow-insecure-plugins",), subdir="insecure")
    log = s2.log()
    assert refusals(log) == []
    assert "level=warn" in log and "--allow-insecure-plugins" in log and problem in log
    assert "type=plain" in log and "type=with-sdk" in log


def test_insecure_exec_plugin_is_refused(serve, workdir):
    exec_dir = os.path.join(workdir, "plugins", "exec")
    os.makedirs(exec_dir)
    script = write(os.path.join(exec_dir, "lister"), '#!/bin/sh\necho \'{"protocol":1,"images":[]}\'\n', 0o757)
    cfg = f'plugin_dir = "{os.path.dirname(exec_dir)}"\npoll_interval = "1s"\n[[backend]]\ntype = "exec"\nname = "lister"\n' + SAMPLE
    s = serve(cfg)
    assert tags(s) == SAMPLE_TAGS
    backends = {b["name"]: b for b in json.loads(run_cli("plugins", "--config", s.config, "-o", "json").stdout)["backends"]}
    assert backends["lister"]["state"] == "failing"
    assert f"refused: {script} is writable by group or others (mode 0757)" in backends["lister"]["lastError"]
    # --allow-insecure-plugins runs it, with a warning.
    s2 = serve(cfg, args=("--allow-insecure-plugins",), subdir="insecure")
    assert "insecure exec plugin used" in s2.log() and f"{script} is writable by group or others" in s2.log()
    out = run_cli("plugins", "--config", s.config, "--allow-insecure-plugins", "-o", "json")
    assert {b["name"]: b["state"] for b in json.loads(out.stdout)["backends"]}["lister"] == "ok"
    # Checked at every call: the running server uses a file made safe at its next poll.
    os.chmod(script, 0o755)
    deadline = time.time() + 10
    while 'msg="backend recovered" backend=lister' not in s.log() and time.time() < deadline:
        time.sleep(0.1)
    assert 'msg="backend recovered" backend=lister' in s.log()


def test_exec_plugin_found_by_name_in_plugin_dir_exec(serve, workdir):
    image = {"id": "sha256:" + "c3" * 32, "repoTags": ["vendor.example/found:1"], "repoDigests": [], "size": 5, "kind": "oci"}
    body = f"#!/bin/sh\necho '{json.dumps({'protocol': 1, 'images': [image]})}'\n"
    d = os.path.join(workdir, "plugins")
    write(os.path.join(d, "exec", "found"), body, 0o755)
    write(os.path.join(d, "exec", "other-name"), body, 0o755)
    s = serve(
        f'plugin_dir = "{d}"\n'
        '[[backend]]\ntype = "exec"\nname = "found"\n'  # no path: plugin_dir/exec/<name>
        '[[backend]]\ntype = "exec"\nname = "by-path"\npath = "other-name"\n'  # a bare name: plugin_dir/exec/<path>
    )
    assert tags(s) == ["vendor.example/found:1"]
    health = {b["name"]: b["state"] for b in json.loads(run_cli("plugins", "--config", s.config, "-o", "json").stdout)["backends"]}
    assert health == {"found": "ok", "by-path": "ok"}


# --- containment of module plugins beyond list() (list() faults: test_isolation_lifecycle.py) ---

MISBEHAVING = """
const ID = "sha256:" + "d4".repeat(32);
export default {
  name: "misbehaving",
  apiVersion: 1,
  options: { mode: { type: "string", required: true } },
  create(options) {
    const m = options.mode;
    if (m === "create-throws") throw new Error("create exploded");
    if (m === "create-rejects") return Promise.reject(new Error("create rejected"));
    if (m === "create-hangs") return new Promise(() => {});
    if (m === "create-garbage") return 42;
    return {
      list() {
        // Errors nobody awaits: outside the call the registry guards.
        if (m === "stray-throw") setTimeout(() => { throw new Error("stray bomb"); }, 1);
        if (m === "stray-rejection") Promise.reject(new Error("stray rejection"));
        return [{ id: ID, repoTags: ["misbehaving:1"], repoDigests: [], size: 3, kind: "oci" }];
      },
      status() {
        if (m === "status-throws") throw new Error("status exploded");
        if (m === "status-hangs") return new Promise(() => {});
        return { id: ID, repoTags: [], repoDigests: [], size: 3, kind: "oci", config: "garbage, not an object" };
      },
    };
  },
};
"""

CREATE_FAULTS = {"create-throws": "create exploded", "create-rejects": "create rejected", "create-hangs": "create() timed out after 500 ms", "create-garbage": "did not return a backend"}


@pytest.mark.parametrize("mode", list(CREATE_FAULTS))
def test_plugin_whose_create_fails_next_to_a_healthy_backend(serve, workdir, mode):
    d = plugin_dir(workdir, {"misbehaving.ts": MISBEHAVING})
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "misbehaving"\nname = "bad"\nmode = "{mode}"\ntimeout = "500ms"\n' + SAMPLE)
    assert tags(s) == SAMPLE_TAGS
    bad = next(b for b in json.loads(run_cli("plugins", "--config", s.config, "-o", "json").stdout)["backends"] if b["name"] == "bad")
    assert bad["state"] == "failing" and CREATE_FAULTS[mode] in bad["lastError"]


@pytest.mark.parametrize("mode", ["stray-throw", "stray-rejection"])
def test_stray_plugin_errors_are_logged_and_serving_goes_on(serve, workdir, mode):
    d = plugin_dir(workdir, {"misbehaving.ts": MISBEHAVING})
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "misbehaving"\nmode = "{mode}"\n' + SAMPLE)
    deadline = time.time() + 10
    while "keeps serving" not in s.log() and time.time() < deadline:
        time.sleep(0.05)
    line = next(line for line in s.log().splitlines() if "keeps serving" in line)
    assert "stray" in line and f"plugin={d}/misbehaving.ts" in line
    assert s.proc.poll() is None
    assert tags(s) == sorted(SAMPLE_TAGS + ["docker.io/library/misbehaving:1"])


@pytest.mark.parametrize("mode", ["status-throws", "status-hangs", "status-garbage"])
def test_failing_status_hook_still_answers_verbose_image_status(serve, workdir, mode):
    d = plugin_dir(workdir, {"misbehaving.ts": MISBEHAVING})
    s = serve(f'plugin_dir = "{d}"\n[[backend]]\ntype = "misbehaving"\nmode = "{mode}"\ntimeout = "300ms"\n' + SAMPLE)
    r = s.image_status("misbehaving:1", verbose=True)
    assert r.image.id == "sha256:" + "d4" * 32
    assert s.image_status("edge-tools:2.0", verbose=True).HasField("image")
