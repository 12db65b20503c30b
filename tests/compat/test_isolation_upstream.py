"""Upstream klee and kleened's isolation: the default seccomp profile and pids limit apply to its
containers too (deliberate hardening), `-J` turns seccomp off, and the new response fields do not
disturb its listings and inspect."""

from __future__ import annotations

import json
import secrets

from tests.compat.test_containers_upstream import busybox  # noqa: F401  (module fixture)


def test_default_hardening_and_the_jail_parameter(klee, busybox):  # noqa: F811
    probe = ["/bin/sh", "-c", "grep Seccomp: /proc/self/status; unshare -U -r true 2>/dev/null; echo unshare=$?"]
    r = klee("run", busybox, *probe)
    assert r.returncode == 0 and "Seccomp:\t2" in r.stdout and "unshare=1" in r.stdout, r
    r = klee("run", "-J", "linux.seccomp=unconfined", busybox, *probe)
    assert r.returncode == 0 and "Seccomp:\t0" in r.stdout and "unshare=0" in r.stdout, r


def test_limits_by_jail_parameter_and_listings(klee, busybox, api):  # noqa: F811
    name = f"lim{secrets.token_hex(3)}"
    r = klee("create", "--name", name, "-J", "linux.pids=42", "-J", "linux.memory=64m", busybox, "/bin/sleep", "60")
    assert r.returncode == 0, r
    cid = r.lines[0]
    shown = api.get(f"/containers/{cid}/inspect").json()["container"]["resources"]
    assert (shown["pids_limit"], shown["memory"]) == (42, 64 << 20)
    assert any(line.split()[:2] == [cid, name] for line in klee("lsc", "-a").lines)
    inspect = klee("container", "inspect", name)
    assert inspect.returncode == 0 and json.loads(inspect.stdout)["container"]["id"] == cid
    assert klee("rmc", name).lines == [cid]
