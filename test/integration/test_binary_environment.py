"""The compiled binary takes nothing from the directory it is started in.

Bun's standalone executables load `.env` and `bunfig.toml` from the working
directory by default; a `bunfig.toml` there can `preload` a script, so anyone
who can write the directory an operator runs imagelet from could run code as
that operator (root, for the service). scripts/build-binary.ts turns both off.
"""
import os
import subprocess

from conftest import BIN, EXAMPLES, SAMPLE_IMAGES_TABLE

SAMPLE_CONFIG = os.path.join(EXAMPLES, "imagelet.toml")


def test_bunfig_and_dotenv_in_the_working_directory_are_ignored(tmp_path):
    marker = tmp_path / "preload-ran"
    (tmp_path / "evil.js").write_text(f"require('fs').writeFileSync({str(marker)!r}, 'ran')\n")
    (tmp_path / "bunfig.toml").write_text('preload = ["./evil.js"]\n')
    # Were .env read, the CLI would become a client of this socket and fail.
    (tmp_path / ".env").write_text(f"IMAGELET_ENDPOINT=unix://{tmp_path}/nothing-listens.sock\n")
    env = dict(os.environ)
    env.pop("IMAGELET_ENDPOINT", None)
    r = subprocess.run([BIN, "images", "--config", SAMPLE_CONFIG], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=30)
    assert not marker.exists(), "a bunfig.toml preload in the working directory ran inside imagelet"
    assert r.returncode == 0, r.stderr
    assert r.stdout == SAMPLE_IMAGES_TABLE
