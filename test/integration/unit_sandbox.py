"""Runs a command in an approximation of a systemd unit's sandbox, built from
the unit file itself, for hosts where systemd is not PID 1 (CI, containers).

Emulated, from the unit's [Service] section: ProtectSystem=strict (/ read-only,
the RuntimeDirectory writable; given paths read-only even when they are on
another mount), PrivateNetwork=, CapabilityBoundingSet=, NoNewPrivileges=,
SystemCallFilter=~ with SystemCallErrorNumber=, and RestrictAddressFamilies= (seccomp,
as systemd does it). Drop-ins are applied over the unit as systemd does: a later
value replaces an earlier one, except for the keys whose lists merge. Not
emulated: the Protect*/Private* options that only hide kernel or device
interfaces, DevicePolicy=, IPAddressAllow=/IPAddressDeny= (cgroup BPF, which needs
systemd) and ProtectProc=. Needs root and mount namespaces (unshare -m).
"""
import os
import re
import shlex
import socket
import subprocess
import sys

# Runs inside the sandbox, after setpriv: installs the seccomp filter, then execs.
SECCOMP_EXEC = r"""
import errno, os, socket, sys
import seccomp
deny, err = sys.argv[1].split(","), int(sys.argv[2])
families = [int(x) for x in sys.argv[3].split(",") if x]  # allowed address families; none: no rule
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
if families == [socket.AF_UNIX]:
    f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
elif families:
    # Every other family below AF_MAX (46 on Linux 6), and anything above it.
    for family in set(range(46)) - set(families):
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
    f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, 46))
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


# Keys whose values accumulate across the unit and its drop-ins (systemd.exec(5),
# systemd.resource-control(5)); any other key's last value wins.
MERGED_KEYS = {"RestrictAddressFamilies", "IPAddressAllow", "IPAddressDeny", "ReadWritePaths", "SystemCallFilter"}


def service_with_drop_ins(unit_path, drop_ins=()):
    """The unit's [Service] section with the drop-ins' settings applied over it, in order."""
    s = dict(parse_unit(unit_path)["Service"])
    for path in drop_ins:
        for key, values in parse_unit(path).get("Service", {}).items():
            if key not in MERGED_KEYS:
                s[key] = values
                continue
            for v in values:  # an empty assignment resets the list
                s[key] = s.get(key, []) + [v] if v else []
    return s


def address_families(service):
    """The names RestrictAddressFamilies= allows (an allow list only), or None when unrestricted."""
    values = service.get("RestrictAddressFamilies")
    if not values:
        return None
    assert not any(v.startswith("~") for v in values), "the sandbox emulates allow lists of address families only"
    return sorted({f for v in values for f in v.split()})


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


def skip_unless_possible():
    """Skips the calling test where the sandbox cannot be emulated: without root, or without namespaces."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("emulating the unit's sandbox needs root (imagelet.service runs as root)")
    ok, why = unshare_works()
    if not ok:
        pytest.skip(f"emulating the unit's sandbox needs mount and network namespaces: unshare failed: {why}")


def wrapper(unit_path, program, workdir, runtime_dir, read_only=(), drop_caps=(), read_write=(), drop_ins=()):
    """Writes an executable script that runs `program "$@"` inside the unit's
    sandbox, and returns its path. drop_caps removes capabilities from the
    unit's set (for negative controls); read_write are the paths a drop-in's
    ReadWritePaths= opens (they stay writable, like the runtime directory);
    drop_ins are drop-in files applied over the unit."""
    s = service_with_drop_ins(unit_path, drop_ins)
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
    families = address_families(s)
    allowed = ",".join(str(getattr(socket, f)) for f in families) if families else ""
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
            sys.executable, helper, ",".join(deny), str(err), allowed, program,
        ]
    ) + ' "$@"'
    net = ["-n"] if s.get("PrivateNetwork") == ["yes"] else []
    script = os.path.join(workdir, f"sandboxed-{os.path.basename(program)}")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + shlex.join(["exec", "unshare", "-m", *net, "--propagation", "private", "--", "sh", "-c", inner, "sh"]) + ' "$@"\n')
    os.chmod(script, 0o755)
    return script
