"""Runs a command in an approximation of a systemd unit's sandbox, built from
the unit file itself, for hosts where systemd is not PID 1 (CI, containers).

Emulated, from the unit's [Service] section: ProtectSystem=strict (/ read-only,
the RuntimeDirectory writable; given paths read-only even when they are on
another mount), PrivateNetwork=, CapabilityBoundingSet=, NoNewPrivileges=,
SystemCallFilter=~ with SystemCallErrorNumber=, and RestrictAddressFamilies=AF_UNIX
(seccomp, as systemd does it). Not emulated: the Protect*/Private* options that
only hide kernel or device interfaces, DevicePolicy=, IPAddressDeny= and
ProtectProc=. Needs root and mount namespaces (unshare -m).
"""
import os
import re
import shlex
import subprocess
import sys

# Runs inside the sandbox, after setpriv: installs the seccomp filter, then execs.
SECCOMP_EXEC = r"""
import errno, os, socket, sys
import seccomp
deny, err, unix_only = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3] == "1"
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
added = 0
for name in filter(None, deny):
    try:
        f.add_rule(seccomp.ERRNO(err), name)
        added += 1
    except Exception:
        pass  # not a system call on this architecture
if deny != [""] and added < 20:
    sys.exit(f"unit_sandbox: only {added} of {len(deny)} system calls could be filtered")
if unix_only:
    f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
f.load()
os.execv(sys.argv[4], sys.argv[4:])
"""


def parse_unit(unit_path):
    """{section: {key: [values]}} of a unit file; a repeated key keeps every value, in order."""
    sections = {}
    section = None
    with open(unit_path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return sections


def _syscalls(groups):
    out = subprocess.run(["systemd-analyze", "syscall-filter", *groups], capture_output=True, text=True, check=True).stdout
    # One system call per line; "@group" headers and "# description" lines are not.
    return sorted({line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[a-z0-9_]+\s*", line)})


def _errno_number(name):
    import errno

    return getattr(errno, name) if not name.isdigit() else int(name)


def unshare_works():
    r = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def skip_without_mount_namespaces(what):
    """Skips the calling test (`what` needs...) unless root may make mount namespaces."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount namespaces)")
    ok, why = unshare_works()
    if not ok:
        pytest.skip(f"{what} needs mount namespaces: unshare -m failed: {why}")


def wrapper(unit_path, program, workdir, runtime_dir, read_only=(), drop_caps=(), read_write=()):
    """Writes an executable script that runs `program "$@"` inside the unit's
    sandbox, and returns its path. drop_caps removes capabilities from the
    unit's set (for negative controls); read_write are the paths a drop-in's
    ReadWritePaths= opens (they stay writable, like the runtime directory)."""
    s = parse_unit(unit_path)["Service"]
    assert s.get("ProtectSystem") == ["strict"], "the sandbox emulates ProtectSystem=strict only"
    caps = [c.lower().removeprefix("cap_") for c in " ".join(s.get("CapabilityBoundingSet", [])).split()]
    caps = [c for c in caps if c not in {d.lower().removeprefix("cap_") for d in drop_caps}]
    bounding = ",".join(["-all", *(f"+{c}" for c in caps)])
    nnp = ["--no-new-privs"] if s.get("NoNewPrivileges") == ["yes"] else []
    deny = []
    for f in s.get("SystemCallFilter", []):
        assert f.startswith("~"), "the sandbox emulates deny lists (SystemCallFilter=~...) only"
        deny += _syscalls(f[1:].split())
    err = _errno_number(s.get("SystemCallErrorNumber", ["1"])[-1])
    unix_only = s.get("RestrictAddressFamilies") == ["AF_UNIX"]
    helper = os.path.join(workdir, "seccomp_exec.py")
    with open(helper, "w") as f:
        f.write(SECCOMP_EXEC)
    # The runtime directory stays writable (a bind mount of its own), everything else read-only.
    mounts = [f"mount --bind {shlex.quote(p)} {shlex.quote(p)}" for p in (runtime_dir, *read_write)]
    for path in read_only:
        q = shlex.quote(path)
        mounts.append(f"mount --bind {q} {q} && mount -o remount,bind,ro {q}")
    mounts.append("mount -o remount,bind,ro /")
    inner = " && ".join(mounts) + " && exec " + shlex.join(
        [
            "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", *nnp, "--",
            sys.executable, helper, ",".join(deny), str(err), "1" if unix_only else "0", program,
        ]
    ) + ' "$@"'
    net = ["-n"] if s.get("PrivateNetwork") == ["yes"] else []
    script = os.path.join(workdir, f"sandboxed-{os.path.basename(program)}")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + shlex.join(["exec", "unshare", "-m", *net, "--propagation", "private", "--", "sh", "-c", inner, "sh"]) + ' "$@"\n')
    os.chmod(script, 0o755)
    return script
