"""README's first command, as a newcomer runs it (issue #21): a fresh clone,
`npm ci && npm start`, then the `images` command `npm start` prints. npm ci is
offline (--offline: the packages come from npm's cache, which the checkout's
own `npm ci` filled), so the test reaches no network."""
import os
import re
import shutil
import subprocess
import time

from conftest import ROOT, SAMPLE_IMAGES_TABLE, stop_process_group


def test_npm_start_from_a_fresh_clone_answers_images(tmp_path):
    npm = shutil.which("npm")
    assert npm, "npm is needed to run the tests at all"
    clone = tmp_path / "imagelet"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, str(clone)], check=True, timeout=120)
    ci = subprocess.run([npm, "ci", "--offline", "--no-audit", "--no-fund"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert ci.returncode == 0, ci.stdout + ci.stderr
    log_path = tmp_path / "npm-start.log"
    with open(log_path, "w") as log:
        start = subprocess.Popen([npm, "start"], cwd=clone, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and start.poll() is None and "serving CRI ImageService" not in log_path.read_text():
            time.sleep(0.1)
        printed = log_path.read_text()
        assert start.poll() is None and "serving CRI ImageService" in printed, printed
        # The command npm start prints is the one that answers.
        command = re.search(r"^\s*(\./dist/imagelet images --endpoint \S+)$", printed, re.M)
        assert command, printed
        out = subprocess.run(command.group(1).split(), cwd=clone, capture_output=True, text=True, timeout=30)
        assert (out.returncode, out.stdout, out.stderr) == (0, SAMPLE_IMAGES_TABLE, "")
        assert os.path.exists(clone / "run" / "imagelet.sock")
    finally:
        stop_process_group(start)
    assert not os.path.exists(clone / "run" / "imagelet.sock")  # stopped cleanly: the socket is removed
