"""`imagelet mirror-config RUNTIME`: the compiled binary prints, for each
runtime, a file its own parser reads (tomllib, PyYAML, json) with the values
that runtime needs to pull through the mirror."""
import json
import os
import tomllib

import yaml

from conftest import FIXTURES, oci_backend, run_cli


def config_file(workdir, text):
    path = os.path.join(workdir, "imagelet.toml")
    with open(path, "w") as f:
        f.write(f'socket = "{workdir}/imagelet.sock"\n' + text)
    return path


def mirror_config(workdir, runtime, *args, backends=None):
    # oci-umoci holds example.com/edge/hello and bare tags of docker.io names (the layout's rule).
    path = config_file(workdir, backends if backends is not None else oci_backend(os.path.join(FIXTURES, "oci-umoci")))
    return run_cli("mirror-config", runtime, "--config", path, *args)


def registries_held(workdir):
    out = run_cli("images", "-o", "json", "--config", os.path.join(workdir, "imagelet.toml"))
    names = [n for i in json.loads(out.stdout)["images"] for n in i["repoTags"] + i["repoDigests"]]
    return sorted({n.split("/", 1)[0] for n in names})


def test_containerd_prints_a_default_hosts_toml_with_the_version_notes(workdir):
    out = mirror_config(workdir, "containerd", "--listen", "127.0.0.1:5050")
    assert out.returncode == 0, out.stderr
    hosts = tomllib.loads(out.stdout)
    assert hosts == {"host": {"http://127.0.0.1:5050": {"capabilities": ["pull", "resolve"]}}}
    # What config.toml needs, per version, rides along as comments.
    for needed in (
        '[plugins."io.containerd.grpc.v1.cri".registry]',
        '[plugins."io.containerd.cri.v1.images".registry]',
        'config_path = "/etc/containerd/certs.d"',
        "certs.d/_default/hosts.toml",
        "1.6.17",
        "version = 2",
        "version = 3",
        "transfer service",
        "ONE\n#    directory",
    ):
        assert needed in out.stdout, needed
    # The registries a pre-1.6.17 containerd needs one directory each for.
    for registry in registries_held(workdir):
        assert registry in out.stdout


def test_crio_prints_one_registry_per_registry_the_stores_hold(workdir):
    out = mirror_config(workdir, "crio", "--listen", "127.0.0.1:5050")
    assert out.returncode == 0, out.stderr
    conf = tomllib.loads(out.stdout)
    held = registries_held(workdir)
    assert len(held) >= 2, held  # docker.io and example.com: the test would prove little with one
    assert [r["prefix"] for r in conf["registry"]] == held
    for r in conf["registry"]:
        assert r["location"] == r["prefix"]
        assert r["mirror"] == [{"location": f"127.0.0.1:5050/{r['prefix']}", "insecure": True}]
    assert "registries.conf.d" in out.stdout


def test_crio_with_empty_stores_is_a_valid_file_with_no_registry(workdir):
    empty = os.path.join(workdir, "empty")
    os.makedirs(os.path.join(empty, "blobs"))
    with open(os.path.join(empty, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(empty, "index.json"), "w") as f:
        f.write('{"schemaVersion":2,"manifests":[]}')
    out = mirror_config(workdir, "crio", "--listen", "127.0.0.1:5050", backends=oci_backend(empty))
    assert out.returncode == 0, out.stderr
    assert tomllib.loads(out.stdout) == {}
    assert "no named images" in out.stdout


def test_k3s_prints_registries_yaml_with_a_catch_all(workdir):
    out = mirror_config(workdir, "k3s", "--listen", "[::1]:5050")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {"mirrors": {"*": {"endpoint": ["http://[::1]:5050"]}}}


def test_docker_prints_daemon_json_and_says_it_covers_docker_hub_only(workdir):
    out = mirror_config(workdir, "docker", "--listen", "127.0.0.1:5050")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"registry-mirrors": ["http://127.0.0.1:5050"]}
    assert "Docker Hub names only" in out.stderr and "example.com" in out.stderr


def test_a_mirror_others_can_reach_is_said_to_be_plain_http(workdir):
    out = mirror_config(workdir, "docker", "--listen", "192.0.2.7:5050")
    assert out.returncode == 0, out.stderr
    # Docker allows plain HTTP only to loopback by default.
    assert json.loads(out.stdout) == {"registry-mirrors": ["http://192.0.2.7:5050"], "insecure-registries": ["192.0.2.7:5050"]}
    assert "not a loopback address" in out.stderr
    for runtime in ("containerd", "crio", "k3s"):
        out = mirror_config(workdir, runtime, "--listen", "192.0.2.7:5050")
        assert out.returncode == 0 and "not a loopback address" in out.stdout, runtime


def test_the_configured_mirror_is_used_and_listen_overrides_it(workdir):
    backends = oci_backend(os.path.join(FIXTURES, "oci-umoci")) + '[mirror]\nlisten = "[::1]:6060"\n'
    out = mirror_config(workdir, "k3s", backends=backends)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["mirrors"]["*"]["endpoint"] == ["http://[::1]:6060"]
    out = mirror_config(workdir, "k3s", "--listen", "127.0.0.2:7070", backends=backends)
    assert yaml.safe_load(out.stdout)["mirrors"]["*"]["endpoint"] == ["http://127.0.0.2:7070"]
    # Port 0 is chosen at each start: nothing a runtime can be pointed at.
    out = mirror_config(workdir, "k3s", backends=oci_backend(os.path.join(FIXTURES, "oci-umoci")) + '[mirror]\nlisten = "127.0.0.1:0"\n')
    assert out.returncode == 2 and "port 0" in out.stderr and out.stdout == ""


def test_no_mirror_and_no_listen_is_a_usage_error_on_one_line(workdir):
    out = mirror_config(workdir, "containerd")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no mirror is configured" in out.stderr and "--listen" in out.stderr


def test_bad_runtime_or_address_is_a_usage_error(workdir):
    out = mirror_config(workdir, "rkt", "--listen", "127.0.0.1:5050")
    assert out.returncode == 2 and "containerd, crio, k3s, docker" in out.stderr
    for bad in ("127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:5050", "::1:5050"):
        out = mirror_config(workdir, "k3s", "--listen", bad)
        assert out.returncode == 2 and "HOST:PORT" in out.stderr, bad
