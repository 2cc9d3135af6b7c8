"""scripts/skips.py, scripts/test's skip accounting (issue #21): which tests
skipped, and which of them test/expected-skips does not excuse (in CI each of
those is a failure)."""
import os
import subprocess
import sys

from conftest import ROOT

SKIPS = os.path.join(ROOT, "scripts", "skips.py")
JUNIT = """<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="test_a" name="test_ran"/>
<testcase classname="test_a" name="test_expected"><skipped message="an arm64 host"/></testcase>
<testcase classname="test_b.TestKind" name="test_other[x]"><skipped message="needs root"/></testcase>
</testsuite></testsuites>"""
UNIT = "(pass) describe > runs [1.00ms]\n(skip) files > unreadable (unprivileged)\n(skip) other > skipped\n"
RERUN = "(pass) files > unreadable (unprivileged) [2.00ms]\n"


def run(tmp_path, expected, *extra):
    (tmp_path / "expected").write_text(expected)
    (tmp_path / "it.xml").write_text(JUNIT)
    (tmp_path / "unit").write_text(UNIT)
    (tmp_path / "rerun").write_text(RERUN)
    return subprocess.run([sys.executable, SKIPS, str(tmp_path / "expected"), str(tmp_path / "unit"), *extra,
                           "--junit", str(tmp_path / "it.xml")], capture_output=True, text=True, cwd=tmp_path)


def test_skips_are_named_with_their_reason_and_those_not_expected_are_counted(tmp_path):
    out = run(tmp_path, "# comment\ntest_a.py::test_exp* -- its cases are an amd64 host's\n", "--rerun", str(tmp_path / "rerun"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "  skipped (not in test/expected-skips): unit: other > skipped",
        "  skipped: test_a.py::test_expected (an arm64 host)",
        "  skipped (not in test/expected-skips): test_b.py::TestKind::test_other[x] (needs root)",
        "skipped 3 unexpected 2",
    ]
    # Without the rerun as nobody, the unprivileged unit test did not run: skipped too.
    assert run(tmp_path, "").stdout.splitlines()[-1] == "skipped 4 unexpected 4"


def test_an_expected_skip_needs_its_reason(tmp_path):
    out = run(tmp_path, "test_a.py::test_expected\n")
    assert out.returncode != 0 and "an expected skip needs its reason" in out.stderr


def test_the_expected_skips_file_is_well_formed():
    out = subprocess.run([sys.executable, SKIPS, os.path.join(ROOT, "test", "expected-skips"), os.devnull],
                         capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "skipped 0 unexpected 0\n"), out.stderr
