"""The supervisor contains failures per container, and the API reports internal errors whole.

A fake runtime stands in for runc here (this is a unit test of the supervisor's task
structure; the integration tests run the real one).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import trio
import trio.testing

from kleened.api.app import create_app
from kleened.core.fanout import Fanout
from kleened.core.supervisor import Run, Supervisor
from kleened.platform.base import ContainerSpec, ProcessSpec


@dataclass
class FakeProcess:
    pid: int
    fail: bool = False
    stdout: trio.testing.MemoryReceiveStream = field(default_factory=trio.testing.MemoryReceiveStream)
    stdin: None = None
    stderr: None = None
    exited: trio.Event = field(default_factory=trio.Event)

    async def wait(self) -> int:
        if self.fail:
            raise RuntimeError("the process table is on fire")
        await self.exited.wait()
        return 0

    def resize(self, rows: int, cols: int) -> None: ...
    def signal(self, signum: int) -> None:
        self.exited.set()

    async def aclose(self) -> None:
        self.stdout.put_eof()


class FakeRuntime:
    name = "fake"

    def __init__(self) -> None:
        self.processes: dict[str, FakeProcess] = {}
        self.kills: list[str] = []
        self.next_stdout: trio.abc.ReceiveStream | None = None  # the output stream of the next start

    async def create(self, spec: ContainerSpec) -> None:
        process = FakeProcess(pid=len(self.processes) + 100, fail=spec.id.startswith("bad"))
        if self.next_stdout is not None:
            process.stdout, self.next_stdout = self.next_stdout, None  # type: ignore[assignment]
        if process.fail:
            process.stdout.put_eof()
        self.processes[spec.id] = process

    async def start(self, container_id: str) -> FakeProcess:
        return self.processes[container_id]

    async def adopt(self, container_id: str) -> FakeProcess:
        process = self.processes[container_id] = FakeProcess(pid=len(self.processes) + 100)
        return process

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        self.kills.append(container_id)
        self.processes[container_id].exited.set()


def _spec(container_id: str) -> ContainerSpec:
    from pathlib import Path

    return ContainerSpec(id=container_id, rootfs=Path("/nonexisting"), hostname=container_id,
                         process=ProcessSpec(args=["x"], env=[]))


def test_a_failing_container_task_is_contained():
    async def main() -> None:
        runtime = FakeRuntime()
        supervisor = Supervisor(runtime, grace=1)  # type: ignore[arg-type]
        exits: list[str] = []

        async def on_exit(run: Run) -> None:
            exits.append(run.container_id)

        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            good = await supervisor.start_container(_spec("good"), "e1", on_exit, fanout=Fanout())
            bad = await supervisor.start_container(_spec("bad"), "e2", on_exit, fanout=Fanout())
            with trio.fail_after(5):
                await bad.done.wait()  # its failure ran its cleanup...
            assert exits == ["bad"]
            assert supervisor.is_running("good") and not good.done.is_set()  # ...and touched nobody else
            await supervisor.signal_container("good", signal.SIGTERM)
            with trio.fail_after(5):
                assert await supervisor.finish_stop(good)
            assert exits == ["bad", "good"] and good.exit_code == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


class _Broken:
    """A services object whose every use fails the way a bug would."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"the {name} service is on fire")


def test_internal_errors_keep_their_message_and_name_the_request():
    app = create_app(_Broken(), max_request_body=1024)  # type: ignore[arg-type]

    async def main() -> None:
        client = app.test_client()
        r = await client.get("/containers/list")
        body = await r.get_json()
        request_id = r.headers["X-Request-Id"]
        assert r.status_code == 500 and len(request_id) == 12
        assert body == {"message": f"internal error: the containers service is on fire (request {request_id})"}

    trio.run(main)


def test_leave_running_ends_supervision_without_stopping_containers():
    """A live-restore shutdown: the containers' tasks end with the nursery, nothing is killed
    and no exit cleanup runs (the next daemon adopts them); without it, they are killed."""

    async def main(leave: bool) -> tuple[list[str], list[str]]:
        runtime = FakeRuntime()
        supervisor = Supervisor(runtime, grace=1)  # type: ignore[arg-type]
        exits: list[str] = []

        async def on_exit(run: Run) -> None:
            exits.append(run.container_id)

        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await supervisor.start_container(_spec("started"), "e1", on_exit, fanout=Fanout())
            await supervisor.adopt_container("adopted", "e2", on_exit, fanout=Fanout())
            assert sorted(supervisor.running_containers()) == ["adopted", "started"]
            if leave:
                supervisor.leave_running()
            nursery.cancel_scope.cancel()
        return runtime.kills, exits

    kills, exits = trio.run(main, True)
    assert (kills, exits) == ([], [])
    kills, exits = trio.run(main, False)
    assert sorted(kills) == ["adopted", "started"] and sorted(exits) == ["adopted", "started"]


class _StarvedPipe(trio.abc.ReceiveStream):
    """A real pipe whose reader is never scheduled before the drain window closes (what a
    starved daemon looks like): receive_some waits forever, the bytes stay in the pipe."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def fileno(self) -> int:
        return self.read_end

    def put_eof(self) -> None:
        """FakeProcess.aclose's end of output: the pipe's ends close in `aclose`."""

    async def aclose(self) -> None:
        for fd in (self.read_end, self.write_end):
            os.close(fd)


def test_output_left_in_the_pipe_when_the_drain_window_closes_is_delivered():
    async def on_exit(run: Run) -> None:
        pass

    async def main() -> None:
        runtime = FakeRuntime()
        supervisor = Supervisor(runtime, grace=1)  # type: ignore[arg-type]
        pipe = _StarvedPipe()
        os.write(pipe.write_end, b"hi\n")  # written before the exit; a grandchild keeps the pipe open
        fanout = Fanout()
        output = fanout.subscribe(lossless=True)
        with trio.fail_after(60):  # virtual seconds: a hang fails at once
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                runtime.next_stdout = pipe
                run = await supervisor.start_container(_spec("drained"), "e1", on_exit, fanout=fanout)
                runtime.processes["drained"].exited.set()
                received = [data async for _, data in output]  # ends when the fanout closes
                await run.done.wait()
                nursery.cancel_scope.cancel()
        await pipe.aclose()
        assert b"".join(received) == b"hi\n"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
