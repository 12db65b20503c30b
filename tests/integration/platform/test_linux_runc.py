"""RuncRuntime against real runc: stdio, exit codes, signals, exec, TTY, mounts, networks, cleanup."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import trio

from kleened.platform.base import BindMount, HostCommandError, Limits, NetworkMode, ProcessSpec
from kleened.platform.linux import cgroups
from tests.integration.platform.conftest import ENV, Host, collect, run, settled_count


def test_echo_hi(host: Host) -> None:
    async def body() -> tuple[int, bytes, bytes]:
        async with host.container(["echo", "hi"]) as (_, proc):
            return await collect(proc)

    assert run(body) == (0, b"hi\n", b"")


def test_stdout_and_stderr_are_separate(host: Host) -> None:
    script = "for i in 1 2 3; do echo out-$i; echo err-$i >&2; done"

    async def body() -> tuple[int, bytes, bytes]:
        async with host.container(["sh", "-c", script]) as (_, proc):
            return await collect(proc)

    assert run(body) == (0, b"out-1\nout-2\nout-3\n", b"err-1\nerr-2\nerr-3\n")


def test_stdin_reaches_the_container(host: Host) -> None:
    async def body() -> tuple[int, bytes, bytes]:
        async with host.container(["sh", "-c", "read line; echo got:$line"]) as (_, proc):
            assert proc.stdin is not None
            await proc.stdin.send_all(b"hello\n")
            return await collect(proc)

    assert run(body) == (0, b"got:hello\n", b"")


def test_exit_code_is_propagated(host: Host) -> None:
    async def body() -> int:
        async with host.container(["sh", "-c", "exit 7"]) as (_, proc):
            return (await collect(proc))[0]

    assert run(body) == 7


def test_kill_gives_128_plus_signal(host: Host) -> None:
    async def body() -> int:
        async with host.container(["sleep", "1000"]) as (cid, proc):
            await host.runtime.kill(cid, signal.SIGKILL)
            code = (await collect(proc))[0]
            await host.runtime.kill(cid, signal.SIGKILL)  # stopped: not an error
            return code

    assert run(body) == 128 + 9


def test_term_through_tini_stops_sleep_quickly(host: Host) -> None:
    async def body() -> tuple[int, float]:
        async with host.container(["sleep", "1000"]) as (cid, proc):
            t0 = time.monotonic()
            await host.runtime.kill(cid, signal.SIGTERM)
            code = (await collect(proc))[0]
            return code, time.monotonic() - t0

    code, took = run(body)
    assert code == 128 + signal.SIGTERM
    assert took < 1.0


def test_exec_in_running_container(host: Host) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, _):
            spec = ProcessSpec(args=["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; exit 5"],
                               env=[*ENV, "FOO=bar"], cwd="/tmp", uid=1000, gid=1000, additional_gids=[5])  # fmt: skip
            proc = await host.runtime.exec(cid, spec)
            code, out, err = await collect(proc)
            assert (code, err) == (5, b"")
            assert out.decode().split("\n") == ["bar", "/tmp", "1000", "1000", "1000 5", ""]
            assert await settled_count(host.runtime, cid, 2) == 2  # tini + sleep
            await proc.aclose()

    run(body)


def test_exec_processes_die_with_the_container(host: Host) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, init):
            proc = await host.runtime.exec(cid, ProcessSpec(args=["sleep", "500"], env=ENV))
            assert await settled_count(host.runtime, cid, 3) == 3
            await host.runtime.kill(cid, signal.SIGKILL)
            async with trio.open_nursery() as nursery:  # both must be reaped for the init to finish
                nursery.start_soon(init.wait)
                assert await proc.wait() == 128 + 9
            await proc.aclose()
            assert host.runtime.process_count(cid) == 0

    run(body)


async def _read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


def test_tty_exec_and_resize(host: Host) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, _):
            proc = await host.runtime.exec(cid, ProcessSpec(args=["sh"], env=[*ENV, "TERM=dumb"], tty=True))
            assert proc.stderr is None and proc.stdin is not None
            proc.resize(40, 132)
            await proc.stdin.send_all(b"tty; stty size; echo done-$((6*7))\n")
            out = await _read_until(proc.stdout, b"done-42")
            assert b"/dev/pts/" in out and b"40 132" in out
            proc.resize(25, 100)
            await proc.stdin.send_all(b"stty size; exit 3\n")
            rest = b""
            async for chunk in proc.stdout:  # ends (EOF, not an error) when the pty closes
                rest += chunk
            assert b"25 100" in rest
            assert await proc.wait() == 3
            await proc.aclose()

    run(body)


def test_tty_container_init(host: Host) -> None:
    async def body() -> tuple[int, bytes]:
        async with host.container(["sh", "-c", "tty; exit 4"], tty=True) as (_, proc):
            code, out, _ = await collect(proc)
            return code, out

    code, out = run(body)
    assert code == 4 and out.startswith(b"/dev/pts/0")


def test_bind_mounts_read_only_and_read_write(host: Host, tmp_path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "file").write_text("host\n")
    mounts = [BindMount(rw, "/mnt/rw"), BindMount(ro, "/mnt/ro", read_only=True)]
    script = "echo written > /mnt/rw/out; cat /mnt/ro/file; echo nope > /mnt/ro/file || echo refused"

    async def body() -> tuple[int, bytes, bytes]:
        async with host.container(["sh", "-c", script], mounts=mounts) as (_, proc):
            return await collect(proc)

    code, out, err = run(body)
    assert (code, out) == (0, b"host\nrefused\n")
    assert b"Read-only file system" in err
    assert (rw / "out").read_text() == "written\n"
    assert (ro / "file").read_text() == "host\n"


def test_network_none_has_only_loopback_and_host_shares_ours(host: Host) -> None:
    async def interfaces(network: NetworkMode) -> set[str]:
        async with host.container(["ls", "/sys/class/net"], network=network) as (_, proc):
            code, out, _ = await collect(proc)
            assert code == 0
            return set(out.split())

    assert run(interfaces, NetworkMode.NONE) == {b"lo"}
    assert run(interfaces, NetworkMode.HOST) == {name.encode() for name in os.listdir("/sys/class/net")}


def test_cancelled_scope_leaves_no_container(host: Host) -> None:
    async def body() -> None:
        with trio.move_on_after(0.3) as scope:
            async with host.container(["sleep", "1000"]) as (_, proc):
                await proc.wait()
        assert scope.cancelled_caught

    run(body)  # the `host` fixture checks runc, mounts and cgroups afterwards


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("delay", [0, 0.005, 0.01, 0.02, 0.04, 0.08])
def test_cancel_during_start_leaves_nothing(host: Host, delay: float, tty: bool) -> None:
    async def body() -> None:
        cid = host.new_id()
        await host.storage.create_container_fs(cid)
        try:
            root = await host.storage.mount_container_fs(cid, [host.base])
            proc = None
            with trio.move_on_after(delay):
                proc = await host.runtime.run(host.spec(["sleep", "1000"], root, cid, tty=tty))
            if proc is not None:  # start won the race: normal cleanup
                await host.runtime.kill(cid, signal.SIGKILL)
                await proc.wait()
                await proc.aclose()
                await host.runtime.delete(cid)
        finally:
            await host.storage.remove_container_fs(cid)

    run(body)


@pytest.mark.parametrize("tty", [False, True])
def test_cancel_during_exec_leaves_nothing(host: Host, tty: bool) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, _):
            outcomes = set()
            # 0 always cancels (the launch is shielded, then undone); inf never does; the delays
            # between land wherever this machine's speed puts them.
            for delay in (0, 0.005, 0.01, 0.02, 0.04, 0.08, math.inf):
                proc = None
                with trio.move_on_after(delay):
                    proc = await host.runtime.exec(cid, ProcessSpec(args=["sleep", "500"], env=ENV, tty=tty))
                outcomes.add(proc is None)
                if proc is not None:  # exec won the race: the process is the caller's to stop
                    proc.signal(signal.SIGKILL)
                    assert await proc.wait() == 128 + 9
                    await proc.aclose()
                assert await settled_count(host.runtime, cid, 2) == 2  # tini + sleep: no exec survived
            assert outcomes == {True, False}

    run(body)


def test_concurrent_containers_do_not_share_pipes(host: Host) -> None:
    """A container's stdout must reach EOF while others started at the same time still run:
    no pipe end may leak into another container's runc."""

    async def one(args: list[str], results: list) -> None:
        async with host.container(args) as (_, proc):
            if args[0] == "echo":
                results.append(await collect(proc))
            else:
                await trio.sleep(1.5)

    async def body() -> list:
        results: list = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(one, ["echo", str(i)] if i % 2 else ["sleep", "1000"], results)
        return results

    results = run(body)
    assert sorted(results) == [(0, f"{i}\n".encode(), b"") for i in (1, 3, 5, 7, 9)]


def test_runc_failure_is_reported_with_runcs_message(host: Host, tmp_path) -> None:
    missing = tmp_path / "missing"

    async def body() -> None:
        with pytest.raises(HostCommandError) as failure:
            async with host.container(["true"], mounts=[BindMount(missing, "/mnt")]):
                pytest.fail("the container must not start")
        assert failure.value.argv[0] == "runc"
        assert "no such file or directory" in failure.value.stderr
        assert str(missing) in failure.value.stderr

    run(body)


def test_exec_of_missing_binary_is_a_runc_error(host: Host) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, _):
            with pytest.raises(HostCommandError, match="nonexistent"):
                await host.runtime.exec(cid, ProcessSpec(args=["/nonexistent"], env=ENV))

    run(body)


def _cap_sets(status: bytes) -> dict[str, int]:
    fields = dict(line.split(b":\t") for line in status.splitlines() if line.startswith(b"Cap"))
    return {k.decode(): int(v, 16) for k, v in fields.items()}


CAP_NET_RAW = 13


def test_params_raw_sockets_hostname_and_limits(host: Host) -> None:
    async def status(params: list[str], uid: int = 0, limits: Limits | None = None) -> tuple[dict[str, int], bytes,
                                                                                              str]:
        process = ProcessSpec(args=["sh", "-c", "grep Cap /proc/self/status; hostname"], env=ENV, uid=uid, gid=uid)
        async with host.container([], params=params, process=process, limits=limits) as (cid, proc):
            pids = [p for _, p in cgroups.candidate_dirs(host.runtime.cgroup_path(cid)) if (p / "pids.max").exists()]
            limit = pids[0].joinpath("pids.max").read_text().strip()
            code, out, _ = await collect(proc)
            assert code == 0
            lines = out.splitlines()
            return _cap_sets(b"\n".join(lines[:-1])), lines[-1], limit

    caps, hostname, limit = run(status, ["host.hostname=web"], 0, Limits(pids=42))  # core maps linux.pids
    assert not caps["CapEff"] & (1 << CAP_NET_RAW) and not caps["CapBnd"] & (1 << CAP_NET_RAW)
    assert (hostname, limit) == (b"web", "42")
    caps, _, limit = run(status, ["allow.raw_sockets"])
    assert caps["CapEff"] & (1 << CAP_NET_RAW) and limit == "max"
    caps, _, _ = run(status, ["allow.raw_sockets"], 1000)
    assert caps["CapEff"] == 0 and caps["CapBnd"] & (1 << CAP_NET_RAW)


def test_nodevfs_gives_only_null(host: Host) -> None:
    async def devices(params: list[str]) -> set[bytes]:
        async with host.container(["ls", "/dev"], params=params) as (_, proc):
            code, out, _ = await collect(proc)
            assert code == 0
            return set(out.split())

    assert {b"null", b"zero", b"urandom", b"tty", b"ptmx"} <= run(devices, [])
    without = run(devices, ["mount.nodevfs"])
    assert b"null" in without and b"zero" not in without and b"urandom" not in without


def test_list_delete_and_process_count(host: Host) -> None:
    async def body() -> None:
        async with host.container(["sleep", "1000"]) as (cid, _):
            assert (await host.runtime.list_containers()) == {cid: "running"}
            assert await settled_count(host.runtime, cid, 2) == 2
        await host.runtime.delete(cid)  # idempotent after the cleanup deleted it
        assert host.runtime.process_count(cid) == 0

    run(body)


def test_version(host: Host) -> None:
    assert host.runtime.version()[0].isdigit()


def test_no_daemon_fds_leak_into_containers(host: Host) -> None:
    async def body() -> tuple[bytes, bytes]:
        async with host.container(["sleep", "1000"]) as (cid, _):
            init_fds = await host.runtime.exec(cid, ProcessSpec(args=["ls", "/proc/1/fd"], env=ENV))
            exec_fds = await host.runtime.exec(cid, ProcessSpec(args=["ls", "/proc/self/fd"], env=ENV))
            (_, a, _), (_, b, _) = await collect(init_fds), await collect(exec_fds)
            await init_fds.aclose()
            await exec_fds.aclose()
            return a, b

    init_fds, exec_fds = run(body)
    assert set(init_fds.split()) == {b"0", b"1", b"2"}  # tini: just the three pipes
    assert set(exec_fds.split()) == {b"0", b"1", b"2", b"3"}  # 3 is ls's own directory fd


def test_runc_messages_are_clean(host: Host) -> None:
    async def body() -> None:
        with pytest.raises(HostCommandError) as missing:
            await host.runtime.kill("nosuchcontainer", signal.SIGTERM)
        assert missing.value.stderr == "container does not exist"
        await host.runtime.delete("nosuchcontainer")  # idempotent

    run(body)


def test_commit_after_a_run_carries_no_runtime_placeholders(host: Host) -> None:
    async def body() -> list[str]:
        cid = host.new_id()
        await host.storage.create_container_fs(cid)
        layer = None
        try:
            root = await host.storage.mount_container_fs(cid, [host.base])
            spec = host.spec(["sh", "-c", "echo built > /built; /.init --version"], root, cid)
            proc = await host.runtime.run(spec)
            code, out, _ = await collect(proc)
            await proc.aclose()
            await host.runtime.delete(cid)
            assert code == 0 and b"tini" in out
            await host.storage.unmount_container_fs(cid)
            layer = await host.storage.commit_container_fs(cid, host.new_id())
            return sorted(os.listdir(host.storage.layer_path(layer)))
        finally:
            await host.storage.remove_container_fs(cid)
            if layer:
                await host.storage.remove_layer(layer)

    assert run(body) == ["built"]
