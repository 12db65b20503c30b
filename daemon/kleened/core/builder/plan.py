"""Planning a build before anything exists: which stages run, and what each one starts FROM.

- The *target* is the last stage, or the one `ImageBuildConfig.target` (`--target`) names. Only the stages it needs
  run (BuildKit's rule): itself and, transitively, the stages its FROM, `COPY --from` and `RUN --mount from=` name;
  the others are skipped, their FROM lines never resolved. `Step n/N` counts what runs.
- Every FROM that runs is resolved with the meta ARGs only (and the automatic platform ARGs). `resolve_parent` is
  the one place an image reference becomes an image (a pull-on-FROM hook belongs there).
- `FROM --platform=` (and the request's `platform`) must name the host's platform: kleened runs what it builds and
  does not emulate another architecture.

Failures are `SetupFailed(shown, line)`: the build log shows the steps up to the failing one, then the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kleene_protocol.models import ImageBuildConfig
from kleene_protocol.refs import InvalidReference, split_snapshot

from ..errors import KleeneError
from ..images import parse_nametag
from ..records import ImageRecord
from .dockerfile import Dockerfile, From
from .expand import ExpansionError
from .scope import BuildScope


class ImageFinder(Protocol):
    def find(self, ident: str) -> ImageRecord | None: ...


@dataclass(frozen=True)
class Base:
    """What a stage starts from: an image (at a snapshot) or an earlier stage; `root` is the image at the bottom."""

    root: ImageRecord
    snapshot: str = ""
    stage: int | None = None


class SetupFailed(Exception):
    """`shown`: the `Step` lines up to the failing one; `line`: why."""

    def __init__(self, shown: list[str], line: str) -> None:
        super().__init__(line)
        self.shown, self.line = shown, line


class MissingImage(SetupFailed):
    """A FROM names an image that is not here (a build that asks for it pulls it, see `PulledFirst`)."""

    def __init__(self, shown: list[str], ref: str) -> None:
        super().__init__(shown, f"error: could not find image {ref}")
        self.ref = ref


class PulledFirst:
    """An `ImageFinder` that knows the images a build pulled for its FROM references."""

    def __init__(self, images: ImageFinder) -> None:
        self.images = images
        self.pulled: dict[str, ImageRecord] = {}  # FROM reference (without a snapshot) -> the image pulled for it

    def find(self, ident: str) -> ImageRecord | None:
        return self.pulled.get(ident) or self.images.find(ident)


@dataclass(frozen=True)
class Plan:
    """`steps`: indexes of the instructions that run, in order; `bases`: stage index -> base, for the stages
    that run; `last`: the index of the stage that becomes the image."""

    steps: list[int]
    bases: dict[int, Base]
    last: int

    def status(self, dockerfile: Dockerfile, n: int) -> str:
        """`Step n/N : <line>` for the n-th (0-based) instruction that runs."""
        return f"Step {n + 1}/{len(self.steps)} : {dockerfile[self.steps[n]].line}"


def platform_mismatch(wanted: str, host: str) -> str | None:
    """Why `wanted` (os/arch[/variant]) is not the host's platform `host`, or None when it is."""
    want = [p.lower() for p in wanted.split("/")]
    have = [p.lower() for p in host.split("/")]
    if want[:2] == have[:2] and (len(want) < 3 or len(have) < 3 or want[2] == have[2] or want[1] == "amd64"):
        return None
    return f"kleened builds for the host platform ({host}) only, not {wanted}"


def make_plan(dockerfile: Dockerfile, config: ImageBuildConfig, scope: BuildScope, images: ImageFinder,
              host_platform: str) -> Plan:
    """Resolve what runs, without side effects. Raises `SetupFailed`."""
    try:
        parse_nametag(config.tag)
    except KleeneError as exc:
        raise SetupFailed([], f"error: {exc.message}") from None
    target = dockerfile.target_stage(config.target)
    needed = dockerfile.needed_stages(target)
    starts = [i for i, instr in enumerate(dockerfile) if isinstance(instr, From)]
    stages = dockerfile.stages
    steps = list(range(starts[0]))
    steps += [i for k, start in enumerate(starts) if k in needed
              for i in range(start, starts[k + 1] if k + 1 < len(starts) else len(dockerfile))]
    plan = Plan(steps=steps, bases={}, last=target.index)

    def shown(upto: int) -> list[str]:
        return [plan.status(dockerfile, n) for n in range(steps.index(upto) + 1)]

    for i in range(starts[0]):
        try:
            dockerfile[i].resolve(scope)
        except ExpansionError as exc:
            raise SetupFailed(shown(i), exc.message) from None
    bases = plan.bases
    for k in sorted(needed):
        if config.container_config.image and k == target.index:
            ref = config.container_config.image  # `--from` replaces the FROM, --platform included
        else:
            ref = _stage_ref(stages[k].from_, scope, shown(starts[k]), host_platform)
            earlier = dockerfile.stage(ref)
            if earlier is not None and earlier.index < k:
                bases[k] = Base(root=bases[earlier.index].root, stage=earlier.index)
                continue
        image, snapshot = resolve_parent(images, ref, shown(starts[k]))
        bases[k] = Base(root=image, snapshot=snapshot)
    return plan


def _stage_ref(instr: From, scope: BuildScope, shown: list[str], host_platform: str) -> str:
    try:
        ref = scope.expand_from(instr.image, line=instr.line)
        platform = None if instr.platform is None else scope.expand_from(instr.platform, line=instr.line)
    except ExpansionError as exc:
        raise SetupFailed(shown, exc.message) from None
    if platform and (reason := platform_mismatch(platform, host_platform)):
        raise SetupFailed(shown, f"error: FROM --platform={platform}: {reason}")
    return ref


def resolve_parent(images: ImageFinder, ref: str, steps: list[str]) -> tuple[ImageRecord, str]:
    """The image (and snapshot) a FROM names: the one place an image reference becomes an image."""
    try:
        base, snapshot = split_snapshot(ref)
        image = images.find(base)
    except InvalidReference as exc:
        raise SetupFailed(steps, f"error: {exc}") from None
    except KleeneError as exc:
        raise SetupFailed(steps, f"error: {exc.message}") from None
    if image is None and ref == "scratch":
        raise SetupFailed(steps, "error: FROM scratch (an empty image) is not supported yet: start from an image "
                                 "made with `klee image create`")
    if image is None:
        raise MissingImage(steps, ref)
    if snapshot and snapshot not in image.snapshots:
        raise SetupFailed(steps, f"error: invalid snapshot {snapshot}")
    return image, snapshot
