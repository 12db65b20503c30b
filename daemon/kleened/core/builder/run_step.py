"""RUN: the command as the build container's main process, with its mounts, network and secrets.

The command runs as the stage's USER in its WORKDIR, with the ARGs in scope and ENV (ENV wins), the undeclared proxy
build args, and the secrets given as variables. tini is PID 1, so a background process it leaves
(`sleep 1000 &`) ends with the container. Its output is relayed as text, secrets redacted. A non-zero exit fails
the step. The new layer is scanned for the secrets the RUN could see; a layer holding one is dropped and the step
fails. Mount targets the RUN needed are removed again before the commit when they are still empty stubs.
"""

from __future__ import annotations

import codecs

import trio

from kleene_protocol.ids import new_id

from ...platform.base import NetworkMode
from ..errors import KleeneError
from ..fanout import Fanout
from .instructions import Run
from .runmounts import MountFailed, Prepared, key_parts, prepared, stub_targets
from .secrets import Redactor, needles
from .steps import Stage, StepFailed, StepRunner

MAX_ENV_STRING = 128 * 1024 - 1  # Linux's MAX_ARG_STRLEN: a longer NAME=value cannot reach a process
NETWORKS = {"none": NetworkMode.NONE, "host": NetworkMode.HOST, "default": None}


async def run(runner: StepRunner, stage: Stage, instr: Run) -> str:
    argv, env = instr.command(stage.shell), runner.scope.run_env()
    for item in env:
        if len(item.encode(errors="surrogatepass")) > MAX_ENV_STRING:
            name = item.partition("=")[0][:64]
            raise StepFailed(f"error: build variable {name} is larger than {MAX_ENV_STRING} bytes: "
                             "a process cannot receive it")
    key = runner.key(stage, "RUN", argv, await key_parts(runner, stage, instr), instr.network)
    if await runner.reuse(stage, key):
        return await runner.snapshot(stage)
    try:
        async with prepared(runner, stage, instr) as mounts:
            created = await _make_targets(runner, stage, stub_targets(mounts.targets))
            try:
                code = await _run_process(runner, stage, argv, [*runner.scope.proxy_env(), *env, *mounts.env],
                                          mounts, NETWORKS[instr.network])
            finally:
                if created:
                    with trio.CancelScope(shield=True):
                        await _remove_stubs(runner, stage, created)
            secrets = needles(mounts.secrets)
    except MountFailed as exc:
        raise StepFailed(str(exc)) from None
    if code != 0:
        if secrets:  # the failed state is kept as `:failed` without cleanup: never with a secret in it
            await _reset_writable_layer(runner, stage)
        raise StepFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {code}")
    layer = await runner.commit_layer(stage)
    if secrets:
        await _refuse_leaks(runner, layer, secrets)
    runner.adopt(stage, layer)
    stage.pending_key = key
    return await runner.snapshot(stage)


async def _run_process(runner: StepRunner, stage: Stage, argv: list[str], env: list[str], mounts: Prepared,
                       network: NetworkMode | None) -> int:
    fanout = Fanout()
    output = fanout.subscribe(lossless=True)
    try:
        process = await runner.containers.start(runner.sync(stage), exec_id=new_id(), cmd=argv, user=stage.user,
                                                env=env, tty=False, fanout=fanout, extra_mounts=mounts.mounts,
                                                network=network)
    except KleeneError as exc:
        output.close()
        raise StepFailed(f"error: {exc.message}") from None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    redactor = Redactor(mounts.secrets)
    async with output:
        async for _stream, data in output:
            if text := redactor.feed(decoder.decode(data)):
                await _output(runner, text)
    if text := redactor.feed(decoder.decode(b"", final=True)) + redactor.flush():
        await _output(runner, text)
    await process.done.wait()
    return process.exit_code if process.exit_code is not None else -1


async def _output(runner: StepRunner, text: str) -> None:
    if not runner.quiet:
        await runner.emit(text)


async def _make_targets(runner: StepRunner, stage: Stage, targets: list[tuple[str, bool]]) -> list[str]:
    """Create the mount targets missing in the image; return what was created."""
    if not targets:
        return []
    assert runner.host is not None
    host = runner.host
    async with runner.containers.filesystem(stage.container_id, stage.layers) as rootfs:
        try:
            return await trio.to_thread.run_sync(host.make_targets, rootfs, targets)
        except ValueError as exc:  # PathEscape
            raise StepFailed(f"error: RUN --mount target: {exc}") from None


async def _remove_stubs(runner: StepRunner, stage: Stage, created: list[str]) -> None:
    assert runner.host is not None
    host = runner.host
    if runner.containers.is_running(stage.container_id):
        return  # cancelled mid-run: the build is being discarded with its container
    async with runner.containers.filesystem(stage.container_id, stage.layers) as rootfs:
        await trio.to_thread.run_sync(host.remove_stubs, rootfs, created)


async def _reset_writable_layer(runner: StepRunner, stage: Stage) -> None:
    """Drop what the failed step wrote: committed aside as a layer nothing stacks, then removed."""
    layer = await runner.containers.commit_layer(stage.container_id)
    await runner.storage.remove_layer(layer)


async def _refuse_leaks(runner: StepRunner, layer: str, secrets: list[bytes]) -> None:
    assert runner.host is not None
    host = runner.host
    found = await trio.to_thread.run_sync(lambda: host.find_bytes(
        runner.storage.layer_path(layer), secrets, trio.from_thread.check_cancelled))
    if found is None:
        return
    await runner.storage.remove_layer(layer)
    runner.layers_made.discard(layer)
    raise StepFailed(f"error: the command wrote a build secret into the image (/{found}): secrets must stay out "
                     "of layers, so this step's changes were dropped")
