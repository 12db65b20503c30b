"""Side by side with podman and docker: `run --rm ... echo hi` and `exec CONTAINER echo hi`,
whole-process wall time of each CLI, alternating the contenders run by run, with raw runc as the
floor, on the same busybox rootfs in the same run. Also klee's own start-up: the fast path
against the click path (`KLEE_FASTPATH=0`) and an empty interpreter.

podman (when installed) keeps its images and containers under this run's directory
(`--root/--runroot`), and needs on this kind of host `--runtime runc` (crun fails on a hybrid
cgroup hierarchy) and `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` (its default rlimits
exceed the sandbox's hard limits). docker: `$DOCKER_HOST` if it answers, else (when `dockerd`
is installed) a dockerd of our own (`tests/dockerd.py`: its own data and exec roots and socket, no
bridge and no iptables rules): the runs use `--network none`, and what it would leave on the host
is removed and reported after it stops.

`python -m bench.peers [--runs N]` prints JSON: medians in ms and the ratios ours/peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common import RawRunc, bench_daemon, env_without_klee, summary
from tests import dockerd
from tests.daemon import ROOT, Daemon
from tests.rootfs import session_tarball
from tests.wsapi import create_image, exec_stream

KLEE = str(ROOT / ".venv/bin/klee") if (ROOT / ".venv/bin/klee").exists() else None
PODMAN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def quiet(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env=env)


def alternate(contenders: dict[str, Callable[[], object]], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Wall ms of each contender, run by run in rotating order, so that load drifts hit all alike."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for run in range(runs):
        for name in names[run % len(names):] + names[: run % len(names)]:
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


class Podman:
    def __init__(self, workdir: Path, tarball: Path) -> None:
        self.base = ["podman", "--root", str(workdir / "podman-root"), "--runroot", str(workdir / "podman-run"),
                     "--storage-driver", "overlay"]
        quiet([*self.base, "import", str(tarball), "localhost/bb:latest"])
        quiet([*self.base, "run", "-d", "--name", "pb1", "--network", "none", *PODMAN_FLAGS, "localhost/bb",
               "sleep", "100000"])

    def run_rm(self) -> None:
        quiet([*self.base, "run", "--rm", "--network", "none", *PODMAN_FLAGS, "localhost/bb", "echo", "hi"])

    def exec(self) -> None:
        quiet([*self.base, "exec", "pb1", "echo", "hi"])

    def close(self) -> None:
        subprocess.run([*self.base, "rm", "-f", "-a"], capture_output=True)
        subprocess.run([*self.base, "system", "reset", "-f"], capture_output=True)


class Docker:
    def __init__(self, host: str, tarball: Path) -> None:
        self.env = {**os.environ, "DOCKER_HOST": host}
        quiet(["docker", "import", str(tarball), "kbench-bb:latest"], self.env)
        quiet(["docker", "run", "-d", "--name", "kbench-db1", "--network", "none", "kbench-bb", "sleep", "100000"],
              self.env)

    def run_rm(self) -> None:
        quiet(["docker", "run", "--rm", "--network", "none", "kbench-bb", "echo", "hi"], self.env)

    def exec(self) -> None:
        quiet(["docker", "exec", "kbench-db1", "echo", "hi"], self.env)

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", "kbench-db1"], capture_output=True, env=self.env)
        subprocess.run(["docker", "rmi", "-f", "kbench-bb"], capture_output=True, env=self.env)


@contextlib.contextmanager
def docker_host(workdir: Path) -> Iterator[str | None]:
    """`$DOCKER_HOST` if it answers, else a dockerd of our own while the block runs (None without dockerd)."""
    host = os.environ.get("DOCKER_HOST")
    if host and dockerd.answers(host):
        yield host
        return
    if not dockerd.available():
        yield None
        return
    leftovers: list[dockerd.Leftovers] = []
    with dockerd.own_dockerd(workdir, leftovers) as docker:
        yield docker.host
    if leftovers and leftovers[0]:
        print(f"warning: dockerd left this on the host: {leftovers[0]}", file=sys.stderr)


def klee_contenders(daemon: Daemon) -> tuple[Callable[[], None], ...]:
    env = {**env_without_klee(), "KLEE_HOST": daemon.host}
    slow = {**env, "KLEE_FASTPATH": "0"}
    klee = [KLEE] if KLEE else [sys.executable, "-m", "klee"]
    return (
        lambda: quiet([*klee, "run", "--rm", "-l", "disabled", "bb", "echo", "hi"], env),
        lambda: quiet([*klee, "exec", "kb1", "echo", "hi"], env),
        lambda: quiet([*klee, "exec", "kb1", "echo", "hi"], slow),
        lambda: quiet([*klee, "run", "--rm", "-l", "disabled", "bb", "echo", "hi"], slow),
    )


def in_process_exec(daemon: Daemon) -> Callable[[], None]:
    """klee's requests of `exec kb1 echo hi` from this process: the daemon's share and the wire's,
    without a Python start or imports (the breakdown of `klee exec`)."""
    import io

    from klee.config import Settings
    from klee.connection import Client
    from klee.printing import Output
    from klee.streams import start_exec

    client = Client(Settings(host=daemon.host))
    body = {"container_id": "kb1", "cmd": ["echo", "hi"], "env": [], "user": "", "tty": False}

    def exec_once() -> None:
        exec_id = client.post("/exec/create", body=body, ok=(201,))["id"]
        sink = io.TextIOWrapper(io.BytesIO())  # with a .buffer, as klee writes output bytes
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            start_exec(client, Output(False, io.StringIO()), exec_id, attach=True, start_container=False)

    return exec_once


def run(runs: int = 10) -> dict[str, object]:
    results: dict[str, object] = {}
    with bench_daemon() as daemon, daemon.client() as api, contextlib.ExitStack() as stack:
        create_image(daemon, tag="bb")
        tarball = session_tarball(daemon.workdir)
        cid = api.post("/containers/create", json={"name": "kb1", "image": "bb", "cmd": ["/bin/sleep", "100000"],
                                                   "network_driver": "disabled"}).json()["id"]
        exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)
        stack.callback(lambda: (api.post(f"/containers/{cid}/stop"), api.delete(f"/containers/{cid}")))
        raw = RawRunc(daemon.workdir)
        stack.callback(raw.close)
        klee_run, klee_exec, klee_exec_click, klee_run_click = klee_contenders(daemon)
        run_contenders: dict[str, Callable[[], object]] = {"klee": klee_run, "klee_click_path": klee_run_click}
        exec_contenders: dict[str, Callable[[], object]] = {"klee": klee_exec, "klee_click_path": klee_exec_click,
                                                             "klee_wire_in_process": in_process_exec(daemon)}
        if shutil.which("podman"):
            podman = Podman(daemon.workdir, tarball)
            stack.callback(podman.close)
            run_contenders["podman"], exec_contenders["podman"] = podman.run_rm, podman.exec
        host = stack.enter_context(docker_host(daemon.workdir))
        if host:
            docker = Docker(host, tarball)
            stack.callback(docker.close)
            run_contenders["docker"], exec_contenders["docker"] = docker.run_rm, docker.exec
        raw.write(["/bin/echo", "hi"])
        run_contenders["runc"] = lambda: raw.runc("run", "-b", str(raw.bundle), raw.name, stdin=subprocess.DEVNULL)
        results["run_rm"] = _report(alternate(run_contenders, runs))
        raw.write(["/bin/sleep", "100000"])
        subprocess.run(["runc", "--root", str(raw.root), "run", "-d", "-b", str(raw.bundle), raw.name],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        exec_contenders["runc"] = lambda: raw.runc("exec", raw.name, "/bin/echo", "hi")
        results["exec"] = _report(alternate(exec_contenders, runs))
        results["client_start"] = client_start(runs)
        results["load_average"] = os.getloadavg()
    return results


def client_start(runs: int) -> dict[str, object]:
    """What klee costs before it talks to kleened: the imports of each path, against `python -c pass`."""
    python = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
    imports = {
        "python_empty": [python, "-c", "pass"],
        "fast_path_imports": [python, "-c", "import klee.__main__, klee.fastpath, klee.actions, klee.streams, "
                              "klee.connection, klee.wire.http, klee.wire.websocket"],
        "click_path_imports": [python, "-c", "import klee.cli, klee.commands.container, klee.streams, "
                               "klee.connection, klee.wire.http, klee.wire.websocket"],
    }
    times = alternate({name: (lambda argv=argv: quiet(argv)) for name, argv in imports.items()}, runs * 2)
    return {name: summary(values)["median_ms"] for name, values in times.items()}


def _report(times: dict[str, list[float]]) -> dict[str, object]:
    medians = {name: summary(values)["median_ms"] for name, values in times.items()}
    ratios = {f"klee/{name}": round(medians["klee"] / medians[name], 2) for name in medians if name != "klee"}
    return {"median_ms": medians, "ratios": ratios}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    print(json.dumps(run(parser.parse_args().runs), indent=2))
