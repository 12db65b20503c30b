"""Dockerfile parsing: text in, a `Dockerfile` of frozen, typed instructions out. No I/O, no expansion, no shell.

Rules (kleene-features.md §3.1, kleene-behaviours.md §5.2/§5.3; Docker's where upstream is silent or broken):
- parser directives (`# syntax=`, `# escape=`, `# check=`), continuations, comments and heredocs: `syntax`;
- keywords are case-insensitive (Docker; upstream wanted upper case) and end at the first blank;
- `Instruction.line` is the joined logical line, shown as `Step n/N : <line>`;
- arguments stay *raw* until `Instruction.resolve(scope)` (see `instructions`).

Every Dockerfile instruction is known: FROM (with `--platform`), RUN (with `--mount`, `--network`, heredocs), CMD,
ENTRYPOINT, ENV, ARG, COPY and ADD (`files`), USER, WORKDIR, EXPOSE, LABEL, MAINTAINER, VOLUME, STOPSIGNAL, SHELL,
ONBUILD and HEALTHCHECK. What kleened cannot do is refused here, at parse time, with the line and the reason.

Errors at parse time are `DockerfileError`, with upstream's texts where upstream has one:
`error in '<line>': invalid instruction`, `'<line>' not permitted before a FROM instruction`,
`ENV/ARG variable name is invalid on line: <line>`; new checks read `error in '<line>': <reason>`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .decoders import INVALID_INSTRUCTION, INVALID_NAME, decode
from .files import Add, Copy
from .instructions import (
    Arg,
    Cmd,
    Command,
    DockerfileError,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    error,
)
from .syntax import Directives, logical_lines

__all__ = [
    "INVALID_INSTRUCTION", "INVALID_NAME", "NOT_BEFORE_FROM", "NO_FROM", "Add", "Arg", "Cmd", "Command", "Copy",
    "Directives", "Dockerfile", "DockerfileError", "Entrypoint", "Env", "Expose", "From", "Healthcheck", "Heredoc",
    "Instruction", "Label", "Maintainer", "Onbuild", "Run", "Shell", "Stage", "StopSignal", "User", "Volume",
    "Workdir", "join_workdir", "parse", "parse_triggers",
]  # fmt: skip

NOT_BEFORE_FROM = "'{line}' not permitted before a FROM instruction"
NO_FROM = "Dockerfile has no FROM instruction"
_STAGE_INDEX = re.compile(r"[0-9]{1,9}\Z")


@dataclass(frozen=True, slots=True)
class Stage:
    """A FROM and the instructions up to the next FROM. `index` counts stages from 0 (`COPY --from=0`)."""

    index: int
    name: str | None
    instructions: tuple[Instruction, ...]

    @property
    def from_(self) -> From:
        first = self.instructions[0]
        assert isinstance(first, From)
        return first

    def references(self) -> list[str | None]:
        """What this stage reads from other stages or images: its FROM image, `COPY --from` and
        `RUN --mount from=` values (raw; None for a value that needs expansion to be known)."""
        refs: list[str | None] = [self.from_.image]
        for instr in self.instructions[1:]:
            if isinstance(instr, Copy) and instr.from_ is not None:
                refs.append(instr.from_)
            elif isinstance(instr, Run):
                refs += [dict(m.fields).get("from") for m in instr.mounts if "from" in dict(m.fields)]
        return [None if r is None or "$" in r else r.lower() for r in refs]


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """The parsed file: a sequence of instructions, ARGs before the first FROM included, and its directives."""

    instructions: tuple[Instruction, ...]
    directives: Directives = field(default_factory=Directives)

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)

    def __getitem__(self, index: int) -> Instruction:
        return self.instructions[index]

    @property
    def total_steps(self) -> int:
        """N of `Step n/N`: every instruction (upstream counted ARGs before FROM too)."""
        return len(self.instructions)

    def status(self, index: int) -> str:
        """`Step n/N : <line>` for the instruction at 0-based `index`."""
        return f"Step {index + 1}/{self.total_steps} : {self.instructions[index].line}"

    @property
    def meta_args(self) -> tuple[Arg, ...]:
        """The ARGs before the first FROM: the only variables FROM lines see."""
        head = []
        for instr in self.instructions:
            if isinstance(instr, From):
                break
            head.append(instr)
        return tuple(i for i in head if isinstance(i, Arg))

    @property
    def stages(self) -> tuple[Stage, ...]:
        starts = [i for i, instr in enumerate(self.instructions) if isinstance(instr, From)]
        bounds = zip(starts, [*starts[1:], len(self.instructions)], strict=True)
        return tuple(
            Stage(n, _stage_name(self.instructions[a]), self.instructions[a:b]) for n, (a, b) in enumerate(bounds)
        )

    def stage(self, ref: str) -> Stage | None:
        """The stage `ref` names (case-insensitive) or numbers, else None: then `COPY --from=ref` means an image."""
        ref = ref.lower()
        for stage in self.stages:
            if stage.name == ref or (_STAGE_INDEX.match(ref) and int(ref) == stage.index):
                return stage
        return None

    def stage_at(self, index: int) -> int:
        """The number of the stage instruction `index` belongs to."""
        return sum(1 for instr in self.instructions[: index + 1] if isinstance(instr, From)) - 1

    def target_stage(self, target: str) -> Stage:
        """The stage `--target` names (the last one when ""). Raises `DockerfileError`."""
        if not target:
            return self.stages[-1]
        stage = self.stage(target)
        if stage is None or (stage.name != target.lower() and not _STAGE_INDEX.match(target)):
            raise DockerfileError(f"target stage '{target[:64]}' could not be found")
        return stage

    def needed_stages(self, target: Stage) -> set[int]:
        """The stages `target` depends on, itself included, as BuildKit builds them: a stage nothing needs is
        skipped. A reference that needs expansion to be known keeps every earlier stage."""
        stages = self.stages
        needed, pending = set(), [target.index]
        while pending:
            index = pending.pop()
            if index in needed:
                continue
            needed.add(index)
            for ref in stages[index].references():
                if ref is None:
                    pending += range(index)
                elif (dep := self.stage(ref)) is not None and dep.index < index:
                    pending.append(dep.index)
        return needed


def _stage_name(instr: Instruction) -> str | None:
    return instr.name if isinstance(instr, From) else None


def join_workdir(current: str, path: str) -> str:
    """WORKDIR semantics: an absolute `path` replaces, a relative one joins (`/a`, `b`, `c` gives `/a/b/c`)."""
    joined = posixpath.normpath(posixpath.join(current or "/", path))
    return "/" + joined.lstrip("/")


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile. Raises only `DockerfileError`, for the first bad line in file order, then for the
    order of instructions (as upstream checked them)."""
    directives, lines = logical_lines(text)
    dockerfile = Dockerfile(tuple(decode(line) for line in lines), directives)
    _check_order(dockerfile)
    _check_stages(dockerfile)
    return dockerfile


def parse_triggers(triggers: list[str]) -> list[Instruction]:
    """An image's ONBUILD triggers as instructions (their text was checked when that image was built)."""
    instructions: list[Instruction] = []
    for trigger in triggers:
        _directives, lines = logical_lines(trigger)
        instructions += [decode(line) for line in lines]
    return instructions


def _check_order(dockerfile: Dockerfile) -> None:
    for instr in dockerfile:
        if isinstance(instr, From):
            return
        if not isinstance(instr, Arg):
            raise DockerfileError(NOT_BEFORE_FROM.format(line=instr.line))
    raise DockerfileError(NO_FROM)


def _check_stages(dockerfile: Dockerfile) -> None:
    """Stage names are unique, and `COPY --from` never names its own stage or a later one (a cycle)."""
    stages = dockerfile.stages
    names: dict[str, int] = {}
    for stage in stages:
        if stage.name is not None:
            if stage.name in names:
                raise error(stage.from_.line, f"duplicate stage name '{stage.name}'")
            names[stage.name] = stage.index
    for stage in stages:
        for instr in stage.instructions:
            refs = [instr.from_] if isinstance(instr, Copy) and instr.from_ is not None else []
            if isinstance(instr, Run):
                refs = [dict(m.fields)["from"] for m in instr.mounts if "from" in dict(m.fields)]
            for raw in refs:
                ref = raw.lower()
                index = int(ref) if _STAGE_INDEX.match(ref) else names.get(ref)
                if index is not None and index >= stage.index:
                    kind = "COPY --from" if isinstance(instr, Copy) else "RUN --mount from"
                    raise error(instr.line, f"{kind}={raw} must refer to an earlier stage")
