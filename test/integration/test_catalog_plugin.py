"""plugins/catalog, the example TypeScript module plugin, loaded into the
compiled binary from a plugin_dir and listed through the socket."""
import hashlib
import json
import os
import shutil
import time

from conftest import ROOT, run_cli

PLUGIN = os.path.join(ROOT, "plugins", "catalog")


def install(workdir):
    """Copies the plugin as a device would hold it (the SDK symlink becomes a file) with its example."""
    plugins = os.path.join(workdir, "plugins")
    os.makedirs(plugins)
    shutil.copytree(PLUGIN, os.path.join(plugins, "catalog"), symlinks=False)
    example = os.path.join(workdir, "vendor")
    shutil.copytree(os.path.join(PLUGIN, "example"), example)
    return plugins, example


def config_id(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def backend(plugins, catalog):
    return f'plugin_dir = "{plugins}"\npoll_interval = "1s"\n[[backend]]\ntype = "catalog"\nname = "vendor"\npath = "{catalog}"\n'


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_catalog_images_through_the_socket_and_the_cli(serve, workdir):
    plugins, example = install(workdir)
    s = serve(backend(plugins, os.path.join(example, "catalog.toml")))
    agent_id = config_id(os.path.join(example, "configs", "agent.json"))
    updater_id = config_id(os.path.join(example, "configs", "updater.json"))
    images = {i.id: i for i in s.list_images()}
    assert set(images) == {agent_id, updater_id}
    agent, updater = images[agent_id], images[updater_id]
    assert list(agent.repo_tags) == ["vendor.example/edge/agent:2.1", "vendor.example/edge/agent:stable"]
    assert agent.size == 1048576 and agent.username == "agent"
    assert list(updater.repo_digests) == ["vendor.example/edge/updater@sha256:9d3c8f1e2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5"]
    assert updater.HasField("uid") and updater.uid.value == 0 and updater.size == 524288
    r = s.image_status("vendor.example/edge/agent:stable", verbose=True)
    with open(os.path.join(example, "configs", "agent.json")) as f:
        assert json.loads(r.info["info"])["imageSpec"] == json.load(f)
    out = run_cli("images", "--config", s.config)
    assert out.returncode == 0, out.stderr
    assert "vendor.example/edge/updater   0.9" in out.stdout


def test_missing_config_skips_one_image_and_is_logged_with_its_path(serve, workdir):
    plugins, example = install(workdir)
    catalog = os.path.join(example, "catalog.toml")
    with open(catalog, "a") as f:
        f.write('\n[[image]]\nconfig = "configs/gone.json"\ntags = ["vendor.example/edge/gone:1"]\n')
    s = serve(backend(plugins, catalog))
    assert len(s.list_images()) == 2
    assert f"path={os.path.join(example, 'configs', 'gone.json')}" in s.log() and "backend=vendor" in s.log()


def test_corrupt_catalog_keeps_the_last_good_list_and_a_fixed_one_is_picked_up(serve, workdir):
    plugins, example = install(workdir)
    catalog = os.path.join(example, "catalog.toml")
    s = serve(backend(plugins, catalog))
    assert len(s.list_images()) == 2
    with open(catalog + ".new", "w") as f:
        f.write("[[image]\nconfig = ")
    os.rename(catalog + ".new", catalog)
    assert wait_for(lambda: "backend failed; serving its last good snapshot" in s.log())
    assert catalog in s.log()
    assert len(s.list_images()) == 2
    with open(catalog + ".new", "w") as f:
        f.write('[[image]]\nconfig = "configs/updater.json"\ntags = ["vendor.example/edge/updater:1.0"]\n')
    os.rename(catalog + ".new", catalog)
    assert wait_for(lambda: [t for i in s.list_images() for t in i.repo_tags] == ["vendor.example/edge/updater:1.0"])
    assert "backend recovered" in s.log()
