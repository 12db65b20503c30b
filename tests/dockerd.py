"""A dockerd of our own, for tests and benchmarks that compare with or go through Docker.

It keeps everything under one directory: data root, exec root (containerd's state included),
pidfile, socket, trust key (`deprecated-key-path`, else `/etc/docker/key.json`), and its
containers' cgroups under a parent of its own. No bridge, no iptables or ip6tables rules, no
IP forwarding change: containers run with `--network none`; a docker interface or iptables
rule that appears anyway is reported. After it stops, what it may still
have left on the host is removed: processes and mounts under its directory, its cgroup parent,
and the empty directories containerd and dockerd make in /run (`/run/containerd/s` holds the
shims' sockets, whatever the exec root) when they did not exist before. `Leftovers` says what
was still there after that, for callers that assert the host is as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Made by dockerd 20.10 / containerd 1.6 wherever the roots are; removed if we made them and they are empty.
_RUN_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"), Path("/run/docker/plugins"), Path("/run/docker"))
_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class Dockerd:
    root: Path
    host: str  # for DOCKER_HOST
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker ARGS...` against this daemon; output as text."""
        done = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@dataclass
class Leftovers:
    processes: list[int]
    mounts: list[str]
    cgroups: list[str]
    paths: list[str]
    network: list[str]  # interfaces and iptables rules of docker's that were not there before

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.cgroups or self.paths or self.network)


def available() -> bool:
    return shutil.which("dockerd") is not None and shutil.which("docker") is not None


def answers(host: str) -> bool:
    env = {**os.environ, "DOCKER_HOST": host}
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "version"], capture_output=True, env=env, timeout=30).returncode == 0


@contextlib.contextmanager
def own_dockerd(workdir: Path, leftovers: list[Leftovers] | None = None) -> Iterator[Dockerd]:
    """Start a dockerd under `workdir/docker`; stop it and remove its state when the block ends.

    `workdir` should be short (the containerd socket lives under it: 108 characters at most).
    When `leftovers` is given, what cleaning up could not remove is appended to it."""
    root = workdir / "docker"
    root.mkdir()
    tag = f"kdockerd{os.getpid()}x{time.monotonic_ns() % 100000}"
    config = {"deprecated-key-path": str(root / "key.json"), "cgroup-parent": f"/{tag}"}
    (root / "daemon.json").write_text(json.dumps(config))
    existing = {path for path in _RUN_DIRS if path.exists()}
    network = _docker_network()
    host = f"unix://{root}/docker.sock"
    with (root / "dockerd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["dockerd", "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"), "-H", host,
             "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
             "--userland-proxy=false", "--containerd-namespace", tag, "--containerd-plugins-namespace", f"{tag}p"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    daemon = Dockerd(root, host, proc)
    try:
        deadline = time.monotonic() + 60
        while not answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{daemon.log()}")
            time.sleep(0.2)
        yield daemon
    finally:
        left = _stop(daemon, tag, existing, network)
        if leftovers is not None:
            leftovers.append(left)


def _stop(daemon: Dockerd, tag: str, existing: set[Path], network: set[str]) -> Leftovers:
    """Stop dockerd (its containers with it), then remove whatever it left; return what stayed."""
    proc, root = daemon.proc, daemon.root
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in _processes_under(root):  # shims live in their own sessions; only a crash leaves them
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    for mount in reversed(_mounts_under(root)):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    cgroups = [path for path in _cgroups(tag) if not _remove_cgroup(path)]
    shutil.rmtree(root, ignore_errors=True)
    paths = []
    for path in _RUN_DIRS:  # children first
        if path in existing or not path.exists():
            continue
        try:
            path.rmdir()
        except OSError:
            paths.append(str(path))
    return Leftovers(_processes_under(root), _mounts_under(root), [str(p) for p in cgroups], paths,
                     sorted(_docker_network() - network))


def _docker_network() -> set[str]:
    """docker's interfaces and iptables rules (other daemons' veths come and go: not docker's own mark)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip() for line in links.splitlines() if line.count(":") >= 2}
    found = {f"link {name}" for name in names if name.startswith(("docker", "br-"))}
    iptables = shutil.which("iptables")
    if iptables:
        rules = subprocess.run([iptables, "-S"], capture_output=True, text=True).stdout
        found |= {f"iptables {rule}" for rule in rules.splitlines() if "DOCKER" in rule}
    return found


def _processes_under(root: Path) -> list[int]:
    """Processes whose command line names `root` (dockerd, containerd, shims, their containers' runc)."""
    marker = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    points = [line.split()[4].replace("\\040", " ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [point for point in points if point == prefix or point.startswith(prefix + "/")]


def _cgroups(tag: str) -> list[Path]:
    """The cgroup parent's directory in every hierarchy (v1 controllers, or the v2 root)."""
    candidates = [_CGROUP_ROOT / tag, *(hierarchy / tag for hierarchy in _CGROUP_ROOT.iterdir()
                                         if hierarchy.is_dir() and not hierarchy.is_symlink())]
    return [path for path in candidates if path.is_dir()]


def _remove_cgroup(path: Path) -> bool:
    """rmdir a cgroup and its children, deepest first (cgroup directories are removed with rmdir)."""
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
    return not path.exists()
