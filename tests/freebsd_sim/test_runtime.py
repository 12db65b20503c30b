"""JailRuntime against the SIMULATED FreeBSD host: a persistent jail, processes started with
jexec whose output, exit codes, signals and ptys are real (they run chrooted into the clone of
the busybox image), stop with exec.stop, nullfs mounts, rctl, cleanup."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from kleened.platform.base import HostCommandError, Limits
from kleened.platform.freebsd import jail, mounts, params, usage
from kleened.platform.freebsd.jail import Command
from kleened.platform.freebsd.runtime import JailSpec
from tests.freebsd_sim.conftest import ENV, Drivers, collect, run
from tests.freebsd_sim.host import SimHost

ROOT = params.process_user([], "root")


def test_output_and_real_exit_codes(sim: SimHost, drivers: Drivers):
    """B2: through `jail -c ... command=` upstream saw 0 or 1 only."""

    async def body() -> list[tuple[int, bytes, bytes]]:
        cid, root = await drivers.jail(await drivers.image())
        results = []
        for args, stdin in ((["sh", "-c", "echo out; echo err >&2; exit 3"], None),
                            (["sh", "-c", "read line; echo got:$line"], b"hello\n"),
                            (["sh", "-c", "kill -TERM $$"], None)):
            proc = await drivers.runtime.exec(cid, Command(args=args, env=ENV), ROOT)
            results.append(await collect(proc, stdin))
        assert await drivers.runtime.is_running(cid)  # the jail outlives its processes
        await drivers.remove(cid, root)
        return results

    assert run(body) == [(3, b"out\n", b"err\n"), (0, b"got:hello\n", b""), (128 + signal.SIGTERM, b"", b"")]


def test_user_environment_and_working_directory(sim: SimHost, drivers: Drivers):
    async def body() -> list[bytes]:
        cid, root = await drivers.jail(await drivers.image(), params=["exec.jail_user=user1"])
        outs = []
        # B25: `-J exec.jail_user` is the user of every jexec, not only of `jail -c`
        user = params.process_user(["exec.jail_user=user1"], "root")
        proc = await drivers.runtime.exec(cid, Command(args=["sh", "-c", "id -u; echo $HOME; pwd; echo $FOO"],
                                                       env=["FOO=bar baz"]), user)
        outs.append((await collect(proc))[1])
        proc = await drivers.runtime.exec(cid, Command(args=["pwd"], cwd="/var/www"), ROOT)
        outs.append((await collect(proc))[1])
        await drivers.remove(cid, root)
        return outs

    assert run(body) == [b"1000\n/home/user1\n/home/user1\nbar baz\n", b"/var/www\n"]


def test_a_tty_is_a_controlling_terminal(sim: SimHost, drivers: Drivers):
    async def body() -> tuple[int, bytes]:
        cid, root = await drivers.jail(await drivers.image())
        proc = await drivers.runtime.exec(cid, Command(args=["sh"], env=ENV, tty=True), ROOT)
        assert proc.stderr is None and proc.stdin is not None
        proc.resize(40, 100)
        await proc.stdin.send_all(b"tty; stty size; exit 5\n")
        output = bytearray()
        async for chunk in proc.stdout:
            output.extend(chunk)
        code = await proc.wait()
        await proc.aclose()
        await drivers.remove(cid, root)
        return code, bytes(output)

    code, output = run(body)
    assert code == 5
    assert b"/dev/pts/" in output and b"40 100" in output
    assert b"\r\n" in output  # a terminal's line discipline, as upstream's kleened_pty gave


def test_stop_runs_exec_stop_then_removes_the_jail(sim: SimHost, drivers: Drivers):
    """B1: upstream's default exec.stop never ran (pseudo-parameters are not kept for `jail -r`)."""

    async def body() -> tuple[int, bool]:
        given = ["exec.stop=/bin/touch /stopped"]
        cid, root = await drivers.jail(await drivers.image(), params=given)
        main = await drivers.runtime.exec(cid, Command(args=["sh", "-c", "trap 'exit 7' TERM; sleep 100 & wait"],
                                                       env=ENV), ROOT)
        daemon = await drivers.runtime.exec(cid, Command(args=["sleep", "1000"], env=ENV), ROOT)
        while await drivers.runtime.process_count(cid) < 3:  # sh, its sleep, the other sleep (test deadline)
            await trio.sleep(0.05)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, daemon)
            await drivers.runtime.stop(cid, root, given, main, signum=signal.SIGTERM, grace=10)
        code = await main.wait()
        await main.aclose()
        stopped = (root / "stopped").exists()
        assert not await drivers.runtime.is_running(cid)
        await drivers.remove(cid, root)
        return code, stopped

    assert run(body) == (7, True)


def test_devfs_and_nullfs_mounts_are_undone_deepest_first(sim: SimHost, drivers: Drivers, tmp_path: Path):
    """jail -r leaves devfs mounted (as on FreeBSD); delete unmounts it and nested nullfs mounts (B21)."""
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    (inner / "file").write_text("from the host\n")

    async def body() -> tuple[bytes, bytes, list[tuple[str, str]]]:
        image = await drivers.image()
        cid = "c0ffee000001"
        root = await drivers.storage.create_container_fs(cid, image)
        (root / "etc/link").symlink_to("/srv")
        binds = [mounts.Bind(outer, "/etc/link/data"), mounts.Bind(inner, "/etc/link/data/in", read_only=True)]
        await drivers.runtime.create_jail(JailSpec(name=cid, root=root, network=jail.Network("host"), user="root",
                                              mounts=binds))
        seen = (await collect(await drivers.runtime.exec(cid, Command(args=["cat", "/srv/data/in/file"]), ROOT)))[1]
        write = await collect(await drivers.runtime.exec(cid, Command(args=["touch", "/srv/data/in/x"]), ROOT))
        listed = [(m.node, m.fstype) for m in mounts.under(await drivers.runtime.mounted(), root)]
        await drivers.runtime.stop(cid, root, [])
        assert any(m.fstype == "devfs" for m in await drivers.runtime.mounted())  # jail -r left it
        await drivers.remove(cid, root)
        return seen, write[2], listed

    seen, error, listed = run(body)
    assert seen == b"from the host\n"
    assert b"Read-only file system" in error
    assert [node.rpartition("/container/")[2][13:] for node, _ in listed] == ["srv/data/in", "srv/data", "dev"]


def test_limits_need_racct_change_live_and_leave_nothing(sim: SimHost, drivers: Drivers):
    async def body() -> tuple[list[str], list[str]]:
        image = await drivers.image()
        cid, root = await drivers.jail(image, limits=Limits(memory=64 << 20, pids=50, nofile=(256, 1024)))
        rules = list(sim.rctl())
        await drivers.runtime.update_limits(cid, Limits(pids=20))
        updated = list(sim.rctl())
        await drivers.remove(cid, root)
        assert sim.rctl() == []
        with pytest.raises(ValueError, match="cpu_shares"):  # refused before anything is made
            await drivers.jail(image, limits=Limits(cpu_shares=100))
        sim.set_sysctl("kern.racct.enable", "0")
        with pytest.raises(ValueError, match=r"kern\.racct\.enable=1"):
            await drivers.jail(image, limits=Limits(pids=10))
        assert sim.jails() == {}
        return rules, updated

    rules, updated = run(body)
    assert [r.split(":", 2)[2] for r in rules] == ["memoryuse:deny=67108864", "maxproc:deny=50",
                                                   "openfiles:deny=1024/process"]
    assert [r.split(":", 2)[2] for r in updated] == ["maxproc:deny=20"]


def test_a_failed_create_leaves_no_jail_and_no_mounts(sim: SimHost, drivers: Drivers, tmp_path: Path):
    async def body() -> None:
        image = await drivers.image()
        cid, root = await drivers.jail(image)
        other = await drivers.storage.create_container_fs("b0b0b0b0b0b1", image)
        with pytest.raises(HostCommandError, match="already exists"):  # a jail name in use
            await drivers.runtime.create_jail(JailSpec(name=cid, root=other, network=jail.Network("host"), user="root",
                                                  mounts=[mounts.Bind(tmp_path, "/mnt/x")]))
        assert mounts.under(await drivers.runtime.mounted(), other) == []
        assert await drivers.runtime.is_running(cid)  # the other one is untouched
        await drivers.runtime.update(cid, ["allow.raw_sockets"])  # jail -m
        assert sim.jails()[cid]["params"]["allow.raw_sockets"] == "true"
        await drivers.remove(cid, root)
        await drivers.storage.remove_container_fs("b0b0b0b0b0b1")

    run(body)


def test_a_volume_shared_read_write_and_read_only(sim: SimHost, drivers: Drivers):
    async def body() -> tuple[bytes, tuple[int, bytes, bytes]]:
        image = await drivers.image()
        volume = await drivers.storage.create_volume("shared")
        writer, wroot = await drivers.jail(image, mounts=[mounts.Bind(volume, "/data")])
        reader, rroot = await drivers.jail(image, mounts=[mounts.Bind(volume, "/data", read_only=True)])
        await collect(await drivers.runtime.exec(writer, Command(args=["sh", "-c", "echo hi > /data/f"]), ROOT))
        seen = (await collect(await drivers.runtime.exec(reader, Command(args=["cat", "/data/f"]), ROOT)))[1]
        refused = await collect(await drivers.runtime.exec(reader, Command(args=["rm", "/data/f"]), ROOT))
        assert (volume / "f").read_text() == "hi\n"
        await drivers.remove(writer, wroot)
        await drivers.remove(reader, rroot)
        await drivers.storage.remove_volume("shared")
        return seen, refused

    seen, (code, _, err) = run(body)
    assert seen == b"hi\n"
    assert code != 0 and b"Read-only file system" in err


def test_rctl_u_and_ps_j_read_a_running_jail(sim: SimHost, drivers: Drivers):
    """usage.py's command lines against the stand-ins: a `sleep` as user1 in the jail is listed
    by `ps -J` and counted by `rctl -u`; a jail that is gone is refused by both."""
    async def body() -> None:
        cid, root = await drivers.jail(await drivers.image())
        user = params.process_user(["exec.jail_user=user1"], "root")
        proc = await drivers.runtime.exec(cid, Command(args=["sleep", "1000"], env=ENV), user)
        try:
            # until jexec has entered the jail (its chroot) and exec'd, and the kernel counts the
            # new image's pages (right after the exec `ps` showed `rss` 0)
            with trio.fail_after(10):
                while True:
                    listed = usage.parse_processes(await drivers.runtime.commands.run(usage.processes_argv(cid)),
                                                   now=1e9)
                    if [p.args for p in listed] == [["sleep", "1000"]] and listed[0].rss > 0:
                        break
                    await trio.sleep(0.02)
            assert [(p.pid, p.uid, p.args) for p in listed] == [(proc.pid, 1000, ["sleep", "1000"])]
            assert listed[0].state in "SR" and listed[0].started <= 1e9
            counters = usage.parse_counters(await drivers.runtime.commands.run(usage.usage_argv(cid)))
            sample = usage.to_usage(counters, Limits(pids=8))
            assert (sample.pids, sample.pids_limit, len(counters)) == (1, 8, 25) and sample.memory > 0
        finally:
            proc.signal(signal.SIGKILL)
            await proc.wait()
            await proc.aclose()
        await drivers.remove(cid, root)
        for argv in (usage.processes_argv(cid), usage.usage_argv(cid)):
            with pytest.raises(HostCommandError):
                await drivers.runtime.commands.run(argv)

    run(body)
