"""docs/plugins.md followed as a newcomer would: its example code blocks are
written into a fresh directory, the SDK comes from `imagelet sdk`, and the
plugin's images must appear in `imagelet images` and through the socket. The
guide's shown output is checked too, so the guide cannot rot."""
import os
import re
import subprocess

from conftest import BIN, ROOT, Server, run_cli

GUIDE = os.path.join(ROOT, "docs", "plugins.md")


def guide():
    with open(GUIDE) as f:
        return f.read()


def example_files():
    """{relative path: content} of the blocks marked <!-- guide-example: PATH -->."""
    blocks = re.findall(r"<!-- guide-example: (\S+) -->\n```\w*\n(.*?)```", guide(), re.S)
    return dict(blocks)


def shown_output():
    """(command, expected output) pairs of the <!-- guide-output --> block: `$ cmd` lines and what follows."""
    block = re.search(r"<!-- guide-output -->\n```\w*\n(.*?)```", guide(), re.S).group(1)
    pairs = []
    for line in block.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:].split(), []))
        else:
            pairs[-1][1].append(line)
    return pairs


def newcomer(tmp):
    """Steps 1-4 of the guide in an empty directory."""
    files = example_files()
    assert set(files) == {"plugins/configdir/index.ts", "configs/hello.json", "imagelet.toml"}
    os.makedirs(os.path.join(tmp, "plugins", "configdir"))
    os.makedirs(os.path.join(tmp, "configs"))
    with open(os.path.join(tmp, "plugins", "configdir", "imagelet-plugin.ts"), "w") as f:
        subprocess.run([BIN, "sdk"], stdout=f, check=True)
    for rel, text in files.items():
        with open(os.path.join(tmp, rel), "w") as f:
            f.write(text)
    return os.path.join(tmp, "imagelet.toml")


def test_the_guide_example_lists_its_image_in_the_cli_as_shown(tmp_path):
    config = newcomer(str(tmp_path))
    pairs = shown_output()
    assert [cmd for cmd, _ in pairs] == [["imagelet", "images", "--config", "imagelet.toml"], ["imagelet", "plugins", "--config", "imagelet.toml"]]
    for cmd, expected in pairs:
        out = run_cli(*cmd[1:-1], config)
        assert out.returncode == 0, out.stderr
        assert [line.rstrip() for line in out.stdout.splitlines()] == expected, cmd


def test_the_guide_example_serves_its_image_on_the_socket(tmp_path):
    config = newcomer(str(tmp_path))
    with open(config) as f:
        text = f.read()
    # Server rewrites imagelet.toml with a socket line first; the guide's relative paths stay valid.
    s = Server(str(tmp_path), text)
    try:
        images = s.list_images()
        assert [list(i.repo_tags) for i in images] == [["example.com/demo:hello"]]
        r = s.image_status("example.com/demo:hello", verbose=True)
        assert r.image.uid.value == 1000 and r.image.HasField("uid")
        assert '"architecture":"amd64"' in r.info["info"].replace(" ", "")
    finally:
        s.stop()
