"""`Runtime` on runc: detached containers and execs whose stdio the daemon owns.

Vocabulary: a *bundle* is `<state>/bundles/<id>` (config.json, runc's log, pid files); runc's
own state lives in `<state>/runc` (`runc --root`); cgroups go to `<prefix>/<id>` relative to
the daemon's cgroup (see `cgroups.py`).

Why detached (`run -d`, `exec -d`) rather than foreground `runc run`: the same code serves TTY
(`--console-socket` only works detached) and non-TTY, there is no runc client process to
supervise or to forward signals through, and a container can outlive a daemon restart. The
price: the daemon must be a child subreaper (`reaper.become_subreaper`) to get exit codes, and
must reap every init and exec it starts (`Process.wait`).

stdio: non-TTY processes get three fresh pipes (runc passes its fds 0/1/2 straight through when
`terminal` is false), so stdout and stderr stay separate; a TTY process's pty master comes over
a unix socket (SCM_RIGHTS). runc's own errors go to `--log` as JSON, so a failure is reported
with runc's message and never confused with the container's output or exit code.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import trio

from kleened.platform.base import ContainerSpec, HostCommandError, Limits, ProcessInfo, ProcessSpec, Usage
from kleened.platform.linux import bundle, cgroups, mountinfo, reaper, usage
from kleened.platform.linux.process import PtyStream, RuncProcess, receive_fd
from kleened.platform.linux.security import Security
from kleened.platform.posix import hostcmd

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_UNIX_PATH_MAX = 107  # sun_path minus the NUL
START_TIMEOUT = 60.0  # seconds for runc run/exec to return; milliseconds when healthy
DELETE_TIMEOUT = 20.0  # `runc delete -f` polls a killed init for up to 10 s
CLEANUP_CONCURRENCY = 16  # runc commands at once when start-up removes a previous daemon's containers


def _check_id(container_id: str) -> str:
    if not _NAME.fullmatch(container_id):
        raise ValueError(f"invalid container id '{container_id}'")
    return container_id


class RuncRuntime:
    """`Runtime` on runc; see the module docstring."""

    name = "runc"

    def __init__(self, state_dir: Path, prefix: str, init_path: str = "/usr/bin/tini-static", runc: str = "runc",
                 *, seccomp_profile: str = ""):
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"invalid host prefix '{prefix}'")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir.resolve()
        self.runc_root = self.state_dir / "runc"
        self.bundles = self.state_dir / "bundles"
        self.prefix = prefix
        self.init_path = init_path
        self._runc = runc
        self._version: str | None = None
        # Console sockets live apart from bundles so their path length does not depend on ids.
        self.sockets = self.state_dir / "sockets"
        if len(str(self.sockets / f"{'x' * 24}.sock").encode()) > _UNIX_PATH_MAX:
            raise ValueError(f"state dir {state_dir} is too long for console socket paths")
        self.bundles.mkdir(mode=0o700, exist_ok=True)
        self.sockets.mkdir(mode=0o700, exist_ok=True)
        self.security = Security(self.state_dir, seccomp_profile)  # ValueError: a bad host-wide profile
        self._cgroups: dict[str, dict[str, Path]] = {}  # container id -> its cgroup dirs (stats read them often)

    # --- helpers ----------------------------------------------------------------------------

    def _argv(self, *args: str | os.PathLike[str], log_file: Path | None = None) -> list[str]:
        argv = [self._runc, "--root", str(self.runc_root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        return argv + [os.fspath(a) for a in args]

    def _bundle(self, container_id: str) -> Path:
        return self.bundles / _check_id(container_id)

    def cgroup_path(self, container_id: str) -> str:
        return f"{self.prefix}/{container_id}"

    # --- Runtime ----------------------------------------------------------------------------

    def version(self) -> str:
        if self._version is None:
            out = hostcmd.run_sync([self._runc, "--version"])
            first = out.splitlines()[0] if out else ""
            self._version = first.removeprefix("runc version ").strip() or first
        return self._version

    def check_params(self, params: Sequence[str]) -> dict[str, str]:
        return bundle.check_params(params)

    def check_seccomp(self, profile: str) -> str:
        return self.security.check_seccomp(profile)

    def check_userns(self) -> None:
        self.security.check_userns()

    async def run(self, spec: ContainerSpec) -> RuncProcess:
        """Create and start the container detached (`runc run -d`, no monitor: its stdio is the
        daemon's); return its init (tini running `spec.process`). Kept for the driver's tests and
        the benchmarks' floor; the daemon runs containers under a monitor (`monitored.py`).

        Cancellation waits for runc to finish (tens of ms; killing it mid-create would orphan
        its `runc init` children), then undoes the start. On failure or cancellation the
        container is killed and reaped, and its bundle and cgroups are removed.
        """
        if not reaper.is_subreaper():
            raise RuntimeError("the daemon must call reaper.become_subreaper() before starting containers")
        bdir = self.make_bundle_dir(spec.id)  # FileExistsError: a stale bundle; delete() the container first
        proc: RuncProcess | None = None
        try:
            self.write_bundle(spec, bdir)
            argv_tail = ["run", "-d", "--pid-file", bdir / "init.pid", "--bundle", bdir]
            with trio.CancelScope(shield=True):
                proc = await self._launch(argv_tail, spec.id, bdir, "init", spec.process.tty)
            await trio.lowlevel.checkpoint()  # a cancel that came meanwhile lands here, undoable
            return proc
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(DELETE_TIMEOUT + 5):
                await self._undo_start(spec.id, proc)
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.security.unmount_views(bdir)  # the container holds its own copies now

    def make_bundle_dir(self, container_id: str) -> Path:
        """The container's empty bundle dir; FileExistsError for a stale one (not ours to undo)."""
        bdir = self._bundle(container_id)
        bdir.mkdir(mode=0o700)
        return bdir

    def write_bundle(self, spec: ContainerSpec, bdir: Path) -> None:
        """Fill `bdir` (from `make_bundle_dir`): config.json with its seccomp profile, /dev for
        `mount.nodevfs`, and idmapped views of volumes for a user namespace.

        The views stay mounted until `security.unmount_views(bdir)`, which the caller runs once
        runc created the container (it holds its own copies then). On failure the caller
        `delete()`s the container, which removes everything here.
        """
        spec = dataclasses.replace(spec, rootfs=spec.rootfs.resolve())  # runc refuses symlinked roots
        seccomp = self.security.render_seccomp(spec.seccomp, bundle.capabilities(spec.params))
        spec = self.security.remap_mounts(spec, bdir)
        config = bundle.build_config(spec, bundle_dir=bdir, init_path=self.init_path,
                                     cgroups_path=self.cgroup_path(spec.id), seccomp=seccomp)  # fmt: skip
        if not bundle.devfs_enabled(spec.params):
            owner = (spec.userns.uid_base, spec.userns.gid_base) if spec.userns else (0, 0)
            _make_nodev(bdir / bundle.NODEV_DIR, owner)
        (bdir / "config.json").write_text(json.dumps(config, indent=1))

    async def _undo_start(self, container_id: str, proc: RuncProcess | None) -> None:
        """Kill, reap and delete a half-started container; log (never raise) what fails, so the
        caller sees the original error."""
        try:
            if proc is not None:
                await self.kill(container_id, signal.SIGKILL)
                await proc.wait()
                await proc.aclose()
            await self.delete(container_id)
        except (HostCommandError, OSError) as e:
            log.warning("could not undo a failed start", extra={"container": container_id, "error": str(e)})

    async def exec(self, container_id: str, process: ProcessSpec) -> RuncProcess:
        """Start `process` detached in the running container (no tini: it is not PID 1).

        Cancellation waits for runc, then kills and reaps the new process.
        """
        if not reaper.is_subreaper():
            raise RuntimeError("the daemon must call reaper.become_subreaper() before exec")
        bdir = self._bundle(container_id)
        try:
            config = json.loads((bdir / "config.json").read_text())
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"container {container_id} has no bundle; is it running?") from None
        bounding = config["process"]["capabilities"]["bounding"]
        name = f"exec-{secrets.token_hex(6)}"
        process_file = bdir / f"{name}.json"
        spec = bundle.build_process(process, bounding, init=False, limits=config["process"].get("rlimits"))
        process_file.write_text(json.dumps(spec))
        try:
            argv_tail = ["exec", "-d", "--pid-file", bdir / f"{name}.pid", "--process", process_file]
            with trio.CancelScope(shield=True):
                proc = await self._launch(argv_tail, container_id, bdir, name, process.tty)
        finally:
            process_file.unlink(missing_ok=True)
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            with trio.CancelScope(shield=True):
                proc.signal(signal.SIGKILL)
                await proc.wait()
                await proc.aclose()
            raise
        return proc

    async def _launch(self, argv_tail: list, container_id: str, bdir: Path, name: str, tty: bool) -> RuncProcess:
        """Run `runc <argv_tail> <id>` with fresh stdio; return the started process.

        The pid file, console socket and our copies of the child's pipe ends are gone when this
        returns, whatever happens.
        """
        pid_file = bdir / f"{name}.pid"
        log_file = bdir / "runc.log"
        if tty:
            writer, master = await self._run_with_console(argv_tail, container_id, log_file)
            try:
                child = reaper.Child(_read_pid(pid_file))
            except BaseException:
                os.close(writer)
                os.close(master)
                raise
            finally:
                pid_file.unlink(missing_ok=True)
            pty = PtyStream(trio.lowlevel.FdStream(master))
            return RuncProcess(child, trio.lowlevel.FdStream(writer), pty, None, tty=pty)

        fds: list[int] = []
        try:
            in_r, in_w = _pipe(fds)
            out_r, out_w = _pipe(fds)
            err_r, err_w = _pipe(fds)
            argv = self._argv(*argv_tail, container_id, log_file=log_file)
            offset = _size(log_file)
            try:
                await hostcmd.run(argv, timeout=START_TIMEOUT, stdin=in_r, stdout=out_w, stderr=err_w)
            except HostCommandError as e:
                raise _runc_error(e, log_file, offset) from None
            finally:
                for fd in (in_r, out_w, err_w):  # only the container holds these now
                    fds.remove(fd)
                    os.close(fd)
            child = reaper.Child(_read_pid(pid_file))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        finally:
            pid_file.unlink(missing_ok=True)
        streams = [trio.lowlevel.FdStream(fd) for fd in (in_w, out_r, err_r)]
        return RuncProcess(child, streams[0], streams[1], streams[2])

    async def _run_with_console(self, argv_tail: list, container_id: str, log_file: Path) -> tuple[int, int]:
        """Run runc with `--console-socket`; return (a dup of the master for writing, the master)."""
        sock_path = self.sockets / f"{secrets.token_hex(12)}.sock"
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        received: list[int] = []
        error: HostCommandError | None = None
        try:
            await sock.bind(str(sock_path))
            sock.listen(1)
            argv = self._argv(*argv_tail, "--console-socket", sock_path, container_id, log_file=log_file)
            offset = _size(log_file)
            # Raise only outside the nursery, so callers see the error itself, not a group.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_fd, sock, received)
                try:
                    await hostcmd.run(argv, timeout=START_TIMEOUT)
                except HostCommandError as e:
                    error = _runc_error(e, log_file, offset)
                    nursery.cancel_scope.cancel()
                else:  # runc sent the fd before it returned; the deadline is a safety net
                    nursery.cancel_scope.deadline = trio.current_time() + 5
            if error is not None:
                raise error
            if not received:
                raise RuntimeError("runc sent no pty master on the console socket")
            master = received.pop(0)
            for extra in received:
                os.close(extra)
            received.clear()
            return os.dup(master), master
        except BaseException:
            for fd in received:
                os.close(fd)
            raise
        finally:
            sock.close()
            sock_path.unlink(missing_ok=True)

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        """Send `signum` to the init (or every process); a stopped container is not an error."""
        argv = self._argv("kill", *(["--all"] if all_processes else []), _check_id(container_id), str(int(signum)))
        try:
            await _run(argv)
        except HostCommandError as e:
            if "not running" not in e.stderr:
                raise

    async def delete(self, container_id: str) -> None:
        """Idempotent: `runc delete -f`, then the bundle and the cgroup dirs.

        A running container is killed first; its init must be reaped by whoever waits on it
        (runc waits up to 10 s for the init to die, and an exec's unreaped zombie keeps it alive).
        """
        bdir = self._bundle(container_id)
        if not bdir.exists() and not (self.runc_root / container_id).exists():
            return  # already deleted: skip the runc call (about 5 ms) on the common removal path
        try:
            await _run(self._argv("delete", "-f", container_id), timeout=DELETE_TIMEOUT)
        except HostCommandError as e:
            if "does not exist" not in e.stderr:
                raise
        if bdir.exists():
            await self.security.unmount_views(bdir)  # left by a crash between mount and start
            if mountinfo.mounts_under(bdir):  # never delete through a mount
                raise OSError(errno.EBUSY, f"bundle {bdir} has mounts below it")
            await trio.to_thread.run_sync(shutil.rmtree, bdir)
        self._cgroups.pop(container_id, None)
        # Only the container's own cgroup: the `<prefix>` parent is shared, and removing it here
        # would race another container's `runc create` (mkdir <prefix>/<id> after our rmdir).
        left = cgroups.remove_dirs([self.cgroup_path(container_id)])
        if left:
            log.warning("container cgroups left behind", extra={"container": container_id,
                                                                "paths": [str(p) for p in left]})

    async def cleanup(self, keep: Collection[str] = ()) -> None:
        """At start-up: kill and delete every runtime container under our root but those in
        `keep` (adopted, running on), then remove the others' bundles, console sockets and
        cgroups under the prefix. Logs (never raises for) what cannot go."""
        # runc's state dirs name its containers: listing them costs nothing, where `runc list`
        # reads and checks every one (half a second per hundred on a loaded host).
        try:
            found = sorted(c for c in os.listdir(self.runc_root) if c not in keep and _NAME.fullmatch(c))
        except FileNotFoundError:
            found = []
        if found:
            log.warning("removing %d containers left by a previous daemon", len(found))
        # Concurrently and in two passes: every container is killed first, so the deletes (which
        # wait for each init to die) overlap instead of adding up.
        limiter = trio.CapacityLimiter(CLEANUP_CONCURRENCY)
        for step in (self._kill_quietly, self._delete_quietly):
            async with trio.open_nursery() as nursery:
                for container_id in found:
                    nursery.start_soon(step, container_id, limiter)
        for directory in (self.bundles, self.sockets):
            for entry in directory.iterdir():
                if directory == self.bundles and entry.name in keep:
                    continue
                if directory == self.bundles and entry.is_dir():
                    await self.security.unmount_views(entry)  # left by a crash during a start
                if mountinfo.mounts_under(entry):
                    log.warning("leaving %s: it has mounts below it", entry)
                elif entry.is_dir() and not entry.is_symlink():
                    await trio.to_thread.run_sync(shutil.rmtree, entry)
                else:
                    entry.unlink()
        left = cgroups.remove_tree(self.prefix, spare=keep)  # the kept containers' cgroups stay
        if left:
            log.warning("cgroups still busy at start", extra={"paths": [str(p) for p in left]})

    async def close(self) -> None:
        """At shutdown, once no container runs: remove the shared `<prefix>` cgroup parents."""
        cgroups.remove_dirs([self.prefix])

    async def _kill_quietly(self, container_id: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                await self.kill(container_id, signal.SIGKILL, all_processes=True)
            except (HostCommandError, ValueError) as e:
                log.warning("could not kill a container left by a previous daemon: %s", e,
                            extra={"container": container_id})

    async def _delete_quietly(self, container_id: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                await self.delete(container_id)
            except (HostCommandError, OSError, ValueError) as e:
                log.warning("could not remove a container left by a previous daemon: %s", e,
                            extra={"container": container_id})

    async def list_containers(self) -> dict[str, str]:
        out = await _run(self._argv("list", "--format", "json"))
        entries: list[dict[str, Any]] | None = json.loads(out or "null")
        return {e["id"]: e["status"] for e in entries or []}

    def process_count(self, container_id: str) -> int:
        return cgroups.count_procs(self.cgroup_path(_check_id(container_id)))

    # --- resource control -----------------------------------------------------------------------

    async def update_limits(self, container_id: str, limits: Limits) -> None:
        """`runc update -r -`: memory, swap, CPU and pids change at once (ulimits do not)."""
        resources = bundle.limit_resources(limits, lift=True)
        await _run(self._argv("update", "-r", "-", _check_id(container_id)), input=json.dumps(resources).encode())

    def _cgroup_dirs(self, container_id: str) -> dict[str, Path]:
        """Where the container's cgroups are; the paths only depend on the id, so they are kept
        once found (until `delete`)."""
        found = self._cgroups.get(container_id)
        if found is None:
            found = cgroups.controller_dirs(self.cgroup_path(_check_id(container_id)))
            if found:
                self._cgroups[container_id] = found
        return found

    def oom_kills(self, container_id: str) -> int:
        return usage.oom_kills(self._cgroup_dirs(container_id))

    def usage(self, container_id: str, pid: int) -> Usage | None:
        return usage.read_usage(self._cgroup_dirs(container_id), pid)

    def processes(self, container_id: str) -> list[ProcessInfo]:
        base, size = self.security.uid_range(self._bundle(container_id))
        return usage.processes(self._cgroup_dirs(container_id), base, size)


# --- module helpers -------------------------------------------------------------------------------


def _pipe(track: list[int]) -> tuple[int, int]:
    r, w = os.pipe()  # O_CLOEXEC: never inherited by anything but the runc we hand them to
    track += [r, w]
    return r, w


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


_LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


async def _run(argv: list[str], timeout: float = hostcmd.DEFAULT_TIMEOUT, input: bytes | None = None) -> str:
    """A runc command whose failure carries runc's message, not logrus' `time=... level=...` line."""
    try:
        return await hostcmd.run(argv, timeout=timeout, input=input)
    except HostCommandError as e:
        found = _LOGRUS_MSG.findall(e.stderr)
        if not found:
            raise
        message = re.sub(r"\\(.)", r"\1", found[-1])  # logrus quotes with backslashes
        raise HostCommandError(e.argv, e.returncode, message) from None


def _runc_error(e: HostCommandError, log_file: Path, offset: int) -> HostCommandError:
    """The failure with runc's own message from its JSON log (stderr may be the container's pipe)."""
    message = e.stderr
    try:
        with open(log_file, "rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    message = entry["msg"]
    except FileNotFoundError:
        pass  # runc failed before opening its log: its stderr is all we have
    return HostCommandError(e.argv, e.returncode, message)


def _make_nodev(path: Path, owner: tuple[int, int]) -> None:
    """/dev for mount.devfs=false: only the null device runc insists on, and ptmx for terminals.

    `owner`: the container's root on the host, which must be able to make /dev/pts in it.
    """
    path.mkdir(mode=0o755)
    os.mknod(path / "null", 0o666 | 0o020000, os.makedev(1, 3))  # S_IFCHR
    os.chmod(path / "null", 0o666)
    (path / "ptmx").symlink_to("pts/ptmx")
    for entry in (path, path / "null", path / "ptmx"):
        os.chown(entry, *owner, follow_symlinks=False)
