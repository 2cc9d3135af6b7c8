"""The embedded CLI on the compiled binary: output, formats and exit codes,
in-process and as a CRI client (--endpoint) of a running server."""
import json
import os

import pytest
import yaml

from conftest import EXAMPLES, SAMPLE_IMAGES_TABLE, oci_backend, run_cli

SAMPLE_CONFIG = os.path.join(EXAMPLES, "imagelet.toml")
HELLO_ID = "sha256:1dd76ae2e114a42c9432c3e8d712b19a773ff7555570e3d1efaeb74fbd66b271"
TOOLS_ID = "sha256:6470921982b6a2c48b1d039d6fd7d57b8e4545b596472e2c425a842650605806"


def cli(*args, **kw):
    return run_cli(*args, "--config", SAMPLE_CONFIG, **kw)


def test_sample_ids_are_the_config_digests():
    # The IDs used below are the sha256 of the config blobs umoci wrote.
    import hashlib

    for image_id in (HELLO_ID, TOOLS_ID):
        with open(os.path.join(EXAMPLES, "sample-oci", "blobs", "sha256", image_id[7:]), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == image_id


def test_version():
    out = run_cli("version")
    assert out.returncode == 0
    assert out.stdout == "Version:  0.1.0\nRuntimeApiVersion:  v1\nServes:  runtime.v1.ImageService\n"


def test_images_table():
    out = cli("images")
    assert out.returncode == 0, out.stderr
    assert out.stdout == SAMPLE_IMAGES_TABLE


def test_images_digests_no_trunc_quiet_and_filter():
    out = cli("images", "--digests", "--no-trunc")
    assert "DIGEST" in out.stdout.splitlines()[0]
    assert HELLO_ID in out.stdout
    assert "sha256:59651d9e08d8d0b1652dc162be7422fc56163ef7fc2c0cb44459474780b5f2b2" in out.stdout
    assert cli("images", "-q").stdout.split() == [TOOLS_ID, HELLO_ID]
    assert cli("images", "-q", "example.com/edge/hello").stdout.split() == [HELLO_ID]
    assert cli("images", "-q", "1dd76").stdout.split() == [HELLO_ID]
    nothing = cli("images", "nothing:here")
    assert nothing.returncode == 0 and nothing.stdout.splitlines() == ["IMAGE   TAG   IMAGE ID   SIZE"]


def test_images_json_and_yaml_are_protojson_with_defaults():
    data = json.loads(cli("images", "-o", "json").stdout)
    hello = next(i for i in data["images"] if i["id"] == HELLO_ID)
    assert hello == {
        "id": HELLO_ID,
        "repoTags": ["example.com/edge/hello:1.0", "example.com/edge/hello:latest"],
        "repoDigests": ["example.com/edge/hello@sha256:59651d9e08d8d0b1652dc162be7422fc56163ef7fc2c0cb44459474780b5f2b2"],
        "size": "953",
        "uid": {"value": "1000"},
        "username": "",
        "spec": None,
        # The sample store is read-only: imagelet cannot remove its images, so they are pinned.
        "pinned": True,
    }
    assert yaml.safe_load(cli("images", "-o", "yaml").stdout) == data


def test_inspecti_json_yaml_verbose():
    out = cli("inspecti", "edge-tools:2.0")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"]["id"] == TOOLS_ID
    assert doc["status"]["username"] == "nobody"
    assert "info" not in doc
    verbose = json.loads(cli("inspecti", "--verbose", "example.com/edge/hello").stdout)
    assert verbose["info"]["imageSpec"]["config"]["User"] == "1000"
    assert yaml.safe_load(cli("inspecti", "-o", "yaml", TOOLS_ID[7:12]).stdout)["status"]["id"] == TOOLS_ID


def test_inspecti_not_found_exits_1_with_one_line():
    out = cli("inspecti", "edge-tools:2.0", "missing:1")
    assert out.returncode == 1
    assert json.loads(out.stdout)["status"]["id"] == TOOLS_ID  # the found one is still printed
    assert out.stderr == 'imagelet: no such image "missing:1" present\n'


def test_inspecti_malformed_exits_1_quoting_input():
    out = cli("inspecti", "Bad Ref")
    assert out.returncode == 1
    assert '"Bad Ref"' in out.stderr and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("bogus",),
        ("images", "--bogus"),
        ("images", "-o", "xml"),
        ("inspecti",),
        ("inspecti", "x", "-o", "table"),
        ("images", "--config", "/nonexistent/imagelet.toml"),
    ],
)
def test_usage_errors_exit_2_on_one_line(args):
    out = run_cli(*args)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert out.stderr.startswith("imagelet: ") and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", [("serve",), ("images",), ("version",)])
def test_a_flag_is_refused_as_its_config_key_is(command, tmp_path):
    """--log-level and log_level pass through one validation: the same value is
    refused both ways, with the same words, before anything starts (issue #21:
    `serve --log-level bogus` used to start without a word)."""
    bad = tmp_path / "bad.toml"
    bad.write_text('log_level = "bogus"\n')
    in_file = run_cli("config", "--check", str(bad))
    as_flag = run_cli(*command, "--config", SAMPLE_CONFIG, "--log-level", "bogus", timeout=10)
    assert (in_file.returncode, as_flag.returncode) == (2, 2), (in_file.stderr, as_flag.stderr)
    reason = in_file.stderr.split("log_level: ", 1)[1].strip()
    assert as_flag.stderr == f"imagelet: --log-level: {reason} (as log_level in the config file)\n"
    assert as_flag.stdout == ""
    if command != ("serve",):  # a good value passes (serve would stay up)
        assert run_cli(*command, "--config", SAMPLE_CONFIG, "--log-level", "warn").returncode == 0


def test_no_command_prints_help_and_exits_2():
    out = run_cli()
    assert out.returncode == 2
    assert "Usage:" in out.stdout


def test_plugins_table():
    out = cli("plugins")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "NAME     TYPE         STATE   IMAGES   MIRROR   LAST ERROR",
        "sample   oci-layout   ok      2        yes      ",
    ]


def test_endpoint_client_matches_in_process(serve):
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    endpoint = f"unix://{s.socket}"
    for args in (("images",), ("images", "--digests", "--no-trunc"), ("images", "-o", "json"), ("inspecti", "--verbose", "edge-tools:2.0")):
        remote = run_cli(*args, "--endpoint", endpoint)
        local = cli(*args)
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout, args
    via_env = run_cli("images", "-q", env={"IMAGELET_ENDPOINT": endpoint})
    assert via_env.stdout.split() == [TOOLS_ID, HELLO_ID]
    missing = run_cli("inspecti", "nope", "--endpoint", endpoint)
    assert missing.returncode == 1 and missing.stderr == 'imagelet: no such image "nope" present\n'
    invalid = run_cli("inspecti", "Bad Ref", "--endpoint", endpoint)
    assert invalid.returncode == 1 and "(gRPC status 3)" in invalid.stderr


def test_endpoint_that_nobody_serves_fails_on_one_line(workdir):
    out = run_cli("images", "--endpoint", f"unix://{workdir}/none.sock", "--timeout", "2")
    assert out.returncode == 1
    assert out.stderr.startswith("imagelet: ") and len(out.stderr.splitlines()) == 1


def test_binary_needs_neither_node_nor_bun(tmp_path):
    # A PATH with nothing on it: the executable carries its runtime.
    out = cli("images", "-q", env={"PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [TOOLS_ID, HELLO_ID]
