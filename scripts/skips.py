"""scripts/test's skip accounting: the skipped tests of the unit and integration
runs, checked against test/expected-skips when CI=true.

Usage: skips.py EXPECTED UNIT_LOG [UNIT_LOG...] --junit IT_XML [--rerun UNPRIV_LOG]
Prints the skipped tests, then one line "skipped N unexpected M"; exit status 0.
A unit test skipped in the first run and passed in the --rerun (the tests of
files the service may not read, run again as nobody) ran, so is not skipped."""
import fnmatch
import re
import sys
import xml.etree.ElementTree as ET


def expected_patterns(path):
    patterns = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition(" -- ")
            if not sep or not reason.strip():
                sys.exit(f"{path}:{n}: an expected skip needs its reason: PATTERN -- REASON")
            patterns.append(pattern.strip())
    return patterns


def unit_results(path, kind):
    """Test names bun test printed as (skip) or (pass), as "unit: describe > name"."""
    names = set()
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(rf"^\({kind}\) (.*?)( \[[0-9.]+m?s\])?$", line.rstrip("\n"))
            if m:
                names.add("unit: " + m.group(1))
    return names


def junit_skips(path):
    """Skipped integration tests, as "file.py::test", with pytest's reason."""
    skips = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        module, _, cls = case.get("classname", "").partition(".")
        name = "::".join([module + ".py"] + ([cls] if cls else []) + [case.get("name", "?")])
        skips[name] = skipped.get("message", "")
    return skips


def main(argv):
    expected, rest = argv[0], argv[1:]
    unit_logs, junit, rerun = [], None, None
    while rest:
        arg = rest.pop(0)
        if arg == "--junit":
            junit = rest.pop(0)
        elif arg == "--rerun":
            rerun = rest.pop(0)
        else:
            unit_logs.append(arg)
    skipped = set()
    for log in unit_logs:
        skipped |= unit_results(log, "skip")
    if rerun:
        skipped -= unit_results(rerun, "pass")
    reasons = {name: "" for name in sorted(skipped)} | (junit_skips(junit) if junit else {})
    patterns = expected_patterns(expected)
    unexpected = [name for name in reasons if not any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    for name, reason in reasons.items():
        print(f"  skipped{' (not in test/expected-skips)' if name in unexpected else ''}: {name}{f' ({reason})' if reason else ''}")
    print(f"skipped {len(reasons)} unexpected {len(unexpected)}")


if __name__ == "__main__":
    main(sys.argv[1:])
