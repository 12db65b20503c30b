"""The instructions of a Dockerfile as frozen, typed values: what `dockerfile.parse` makes and the builder runs.

Arguments stay *raw* (quotes and `$` included) until `Instruction.resolve(scope)` expands them, when the build
reaches the instruction, so a bad quote or `${` fails at build time with upstream's `failed environment substition
of:` (behaviours item 56) and `$(...)` is never run. RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and MAINTAINER are
never expanded by the builder (Docker's list of instructions with variable replacement leaves them out).

The file instructions (COPY, ADD) are in `files`; `RUN --mount` specifications in `mountspec`.
"""

from __future__ import annotations

import posixpath
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Self

from kleened.core.errors import InvalidArgument

from .expand import SUBSTITUTION_FAILED, ExpansionError

if TYPE_CHECKING:
    from .mountspec import MountSpec
    from .scope import BuildScope

DEFAULT_SHELL = ("/bin/sh", "-c")
_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/(tcp|udp|sctp))?\Z", re.IGNORECASE)
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


class DockerfileError(InvalidArgument):
    """The Dockerfile cannot be built. `message` is the text the build log shows."""


def error(line: str, reason: str) -> DockerfileError:
    return DockerfileError(f"error in '{line}': {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heredoc:
    """A here-document: `body` is the lines between the instruction and the delimiter, each with its newline.
    `expand`: the delimiter was unquoted, so `$` expands in COPY/ADD bodies; `chomp`: `<<-` strips leading tabs."""

    name: str
    body: str
    expand: bool = True
    chomp: bool = False

    @property
    def content(self) -> str:
        return _LEADING_TABS.sub("", self.body) if self.chomp else self.body

    def resolve(self, scope: BuildScope, line: str) -> Heredoc:
        """The file this heredoc makes in COPY/ADD: tabs chomped, variables expanded unless quoted."""
        text = scope.expand(self.content, line=line, heredoc=True) if self.expand else self.content
        return Heredoc(name=self.name, body=text, expand=False, chomp=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """One logical line. `keyword` is upper case; `line` is the text shown in `Step n/N : <line>`."""

    keyword: ClassVar[str] = ""
    line: str

    def resolve(self, scope: BuildScope) -> Self:
        """This instruction with its arguments expanded against `scope`, which FROM, ARG and ENV also update.
        Call it once per instruction, in order. Raises only `ExpansionError`."""
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class From(Instruction):
    keyword: ClassVar[str] = "FROM"
    image: str
    name: str | None = None  # stage name, lower case
    platform: str | None = None  # `--platform=`, raw

    def resolve(self, scope: BuildScope) -> Self:
        image = scope.expand_from(self.image, line=self.line)
        platform = None if self.platform is None else scope.expand_from(self.platform, line=self.line)
        scope.begin_stage()
        return replace(self, image=image, platform=platform)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Instruction):
    """RUN, CMD or ENTRYPOINT. Shell form: `argv == ("/bin/sh", "-c", text)` and `shell` is true; the stage's
    SHELL replaces `/bin/sh -c` when the command runs (`command`)."""

    argv: tuple[str, ...]
    shell: bool

    def command(self, shell: Sequence[str] = ()) -> list[str]:
        """The argv to run: exec form as is, shell form with `shell` (the stage's SHELL; default `/bin/sh -c`)."""
        if not self.shell:
            return list(self.argv)
        return [*(shell or DEFAULT_SHELL), self.argv[-1]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run(Command):
    """`mounts` are `--mount` specifications; `network` is `--network` ("default", "none" or "host"); `script` is
    a single heredoc starting with `#!`, run as an executable file (BuildKit mounts it at /dev/pipes/<name>)."""

    keyword: ClassVar[str] = "RUN"
    mounts: tuple[MountSpec, ...] = ()
    network: str = "default"
    script: Heredoc | None = None

    def resolve(self, scope: BuildScope) -> Self:
        if not self.mounts:
            return self
        return replace(self, mounts=tuple(m.resolve(scope, self.line) for m in self.mounts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Cmd(Command):
    keyword: ClassVar[str] = "CMD"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entrypoint(Command):
    keyword: ClassVar[str] = "ENTRYPOINT"


@dataclass(frozen=True, slots=True, kw_only=True)
class Env(Instruction):
    """`pairs` are `(name, raw value)`; after `resolve`, `(name, value)`. `invalid` is why the arguments are not
    all name=value: upstream let such lines through and failed when the build reached them (item 56), so do we."""

    keyword: ClassVar[str] = "ENV"
    pairs: tuple[tuple[str, str], ...]
    invalid: str = ""

    def resolve(self, scope: BuildScope) -> Self:
        if self.invalid:
            raise ExpansionError(SUBSTITUTION_FAILED.format(line=self.line), self.invalid)
        return replace(self, pairs=tuple(scope.set_env(self.pairs, line=self.line)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Arg(Instruction):
    """`pairs` are `(name, raw default or None)`; after `resolve`, `(name, value)`."""

    keyword: ClassVar[str] = "ARG"
    pairs: tuple[tuple[str, str | None], ...]

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, pairs=tuple((n, scope.declare_arg(n, d, line=self.line)) for n, d in self.pairs))


@dataclass(frozen=True, slots=True, kw_only=True)
class User(Instruction):
    keyword: ClassVar[str] = "USER"
    user: str  # `user[:group]` or `uid[:gid]`, trimmed (behaviours §5.3 item 5)

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, user=scope.expand(self.user, line=self.line))


@dataclass(frozen=True, slots=True, kw_only=True)
class Workdir(Instruction):
    """Expanded, unlike upstream (§9.2 item 5). A relative path joins onto the previous one: `join_workdir`."""

    keyword: ClassVar[str] = "WORKDIR"
    path: str

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, path=scope.expand(self.path, line=self.line))


@dataclass(frozen=True, slots=True, kw_only=True)
class Expose(Instruction):
    """`ports` are raw words; after `resolve`, normalised `port[-port]/proto` (`80` becomes `80/tcp`)."""

    keyword: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]

    def resolve(self, scope: BuildScope) -> Self:
        ports = []
        for word in self.ports:
            value = scope.expand(word, line=self.line)
            port = normal_port(value)
            if port is None:
                raise ExpansionError(f"invalid port '{value[:64]}' in: {self.line}", "invalid port")
            ports.append(port)
        return replace(self, ports=tuple(ports))


@dataclass(frozen=True, slots=True, kw_only=True)
class Label(Instruction):
    """`pairs` are `(raw key, raw value)`; after `resolve`, both expanded. MAINTAINER is the label `maintainer`,
    not expanded (Docker does not expand MAINTAINER)."""

    keyword: ClassVar[str] = "LABEL"
    pairs: tuple[tuple[str, str], ...]
    expand: bool = True

    def resolve(self, scope: BuildScope) -> Self:
        if not self.expand:
            return self
        pairs = tuple((scope.expand(k, line=self.line), scope.expand(v, line=self.line)) for k, v in self.pairs)
        return replace(self, pairs=pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Maintainer(Label):
    keyword: ClassVar[str] = "MAINTAINER"


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume(Instruction):
    """`paths` raw (JSON form: `json`); after `resolve`, expanded absolute paths (relative ones join the root)."""

    keyword: ClassVar[str] = "VOLUME"
    paths: tuple[str, ...]
    json: bool = False

    def resolve(self, scope: BuildScope) -> Self:
        paths = []
        for raw in self.paths:
            value = scope.expand(raw, line=self.line, quotes=not self.json)
            if not value:
                raise ExpansionError(f"VOLUME specified can not be an empty string in: {self.line}", "empty volume")
            paths.append(posixpath.normpath(posixpath.join("/", value)))
        return replace(self, paths=tuple(paths))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSignal(Instruction):
    """`signal` raw; after `resolve`, a name like `SIGQUIT` (or a number as written), checked against the host."""

    keyword: ClassVar[str] = "STOPSIGNAL"
    signal: str

    def resolve(self, scope: BuildScope) -> Self:
        value = scope.expand(self.signal, line=self.line)
        if signal_number(value) is None:
            raise ExpansionError(f"invalid STOPSIGNAL '{value[:64]}' in: {self.line}", "invalid signal")
        return replace(self, signal=normal_signal(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Shell(Instruction):
    """The shell for the shell forms of later RUN, CMD and ENTRYPOINT (JSON form only)."""

    keyword: ClassVar[str] = "SHELL"
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Onbuild(Instruction):
    """A trigger stored in the image and run by builds FROM it; `trigger` is its text (heredoc bodies included)."""

    keyword: ClassVar[str] = "ONBUILD"
    trigger: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Healthcheck(Instruction):
    """`test` is `("CMD", argv...)`, `("CMD-SHELL", command)` or `("NONE",)`; durations in seconds."""

    keyword: ClassVar[str] = "HEALTHCHECK"
    test: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    start_interval: float = 5.0
    retries: int = 3


def normal_port(word: str) -> str | None:
    """`port[-port][/proto]` normalised to `port[-port]/proto`, or None."""
    m = _PORT.match(word)
    if not m:
        return None
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 0 < low <= high <= 65535:
        return None
    ports = m.group(1) if m.group(2) is None else f"{m.group(1)}-{m.group(2)}"
    return f"{ports}/{(m.group(3) or 'tcp').lower()}"


def signal_number(value: str) -> int | None:
    """The number of signal `value` (`SIGQUIT`, `QUIT`, `3`, `SIGRTMIN+3`), or None when there is no such signal."""
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
        return number if 0 < number < signal.NSIG else None
    name = text if text.startswith("SIG") else "SIG" + text
    base, plus, offset = name.partition("+")
    if base in ("SIGRTMIN", "SIGRTMAX") and (not plus or offset.isdigit()):
        number = getattr(signal, base) + (int(offset) if plus else 0)
        return number if number <= signal.SIGRTMAX else None
    member = getattr(signal.Signals, name, None) if "+" not in name else None
    return int(member) if member is not None else None


def normal_signal(value: str) -> str:
    """`quit` -> `SIGQUIT`; numbers stay numbers."""
    text = value.strip().upper()
    return text if text.isdigit() or text.startswith("SIG") else "SIG" + text
