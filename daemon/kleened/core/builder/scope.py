"""The ARG and ENV variables of one build (`BuildScope`), with Docker's scoping rules and its automatic ARGs.

Automatic ARGs, set without a declaration (Docker's):
- the platform ARGs `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT` and the `BUILD*` set are meta args
  holding the host's platform (kleened builds for the host only): FROM lines see them, a stage gets one by
  declaring `ARG TARGETARCH` without a value;
- the proxy ARGs (`HTTP_PROXY`, `https_proxy`, ...): a build arg of one of these names reaches every RUN without a
  declaration, and, undeclared, stays out of the cache key (a proxy with a password in it must not invalidate or
  identify anything).

`$PATH` in a stage whose image sets no PATH is the default path every process gets, so `ENV PATH=$PATH:/opt/bin`
means what it means on an image that has one (Docker gives such images a PATH; kleened's base images set none).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping

from ..environment import DEFAULT_PATH
from .expand import (
    DEFAULT_LIMITS,
    PLAIN,
    ExpansionError,
    Limits,
    Syntax,
    _size,
    expand_word,
    expand_words,
)

PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
    "ALL_PROXY", "all_proxy",
})  # fmt: skip


_DEFAULTS = {"PATH": DEFAULT_PATH}


def platform_args(os: str, arch: str, variant: str = "") -> dict[str, str]:
    """The automatic platform ARGs of a build on and for `os/arch[/variant]`."""
    platform = "/".join(p for p in (os, arch, variant) if p)
    values = {"PLATFORM": platform, "OS": os, "ARCH": arch, "VARIANT": variant}
    return {f"{side}{key}": value for side in ("BUILD", "TARGET") for key, value in values.items()}


class BuildScope:
    """The ARG and ENV variables of one build, updated instruction by instruction (behaviours §5.2 items 27-38).

    - ARGs declared before the first FROM are *meta* args: only FROM lines see them (Docker's rule; upstream leaked
      them into every stage). Inside a stage, `ARG name` without a default imports the meta value once.
    - A build arg applies only from its `ARG` declaration on (item 31); undeclared build args are ignored.
    - An ARG is the build arg if given, else its default (expanded), else "" (item 29); declaring it again without
      a default resets it (item 37).
    - `$name` looks in ENV first, then in the stage's ARGs: ENV wins (items 32, 38), and ARG values flow into ENV
      expressions (item 33). RUN gets both, ENV winning; the image keeps only ENV.
    - FROM starts a stage with no ENV and no ARGs; the builder then calls `inherit_env` with the parent image's env
      and the build's `--env`.
    """

    def __init__(self, buildargs: Mapping[str, str] | None = None, *, limits: Limits = DEFAULT_LIMITS,
                 automatic: Mapping[str, str] | None = None) -> None:
        self.limits = limits
        self.syntax: Syntax = PLAIN  # the Dockerfile's escape character, set once parsed
        self._automatic = dict(automatic or {})
        self._buildargs = dict(buildargs or {})
        total = 0
        for name, value in self._buildargs.items():
            total += _size(name) + _size(value)
            if _size(value) > limits.value_bytes:
                raise ExpansionError(f"build-arg '{name[:64]}' is larger than {limits.value_bytes} bytes", "too large")
        if total > limits.total_bytes:
            raise ExpansionError(f"build-args are larger than {limits.total_bytes} bytes in total", "too large")
        self._meta: dict[str, str] = dict(self._automatic)
        self._args: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._in_stage = False
        self._used: set[str] = set()

    @property
    def variables(self) -> Mapping[str, str]:
        """What `$name` sees now."""
        return ChainMap(self._env, self._args, _DEFAULTS) if self._in_stage else self._meta

    @property
    def env(self) -> list[str]:
        """`NAME=value` list of the stage's ENV: what the image keeps."""
        return [f"{k}={v}" for k, v in self._env.items()]

    @property
    def args(self) -> dict[str, str]:
        """The stage's declared ARGs: a stage built FROM this one inherits them (Docker's rule)."""
        return dict(self._args)

    def run_env(self) -> list[str]:
        """`NAME=value` list for a RUN: the stage's ARGs and ENV, ENV winning. Part of every cache key."""
        return [f"{k}={v}" for k, v in {**self._args, **self._env}.items()]

    def proxy_env(self) -> list[str]:
        """`NAME=value` of the proxy build args no ARG declared: a RUN gets them, the cache key does not."""
        return [f"{k}={v}" for k, v in self._buildargs.items()
                if k in PROXY_ARGS and k not in self._args and k not in self._env]

    def unused_buildargs(self) -> list[str]:
        """Build args no ARG declared, for a warning (Docker prints one; upstream ignored them silently)."""
        return sorted(set(self._buildargs) - self._used)

    def begin_stage(self) -> None:
        self._in_stage = True
        self._args, self._env = {}, {}

    def inherit_args(self, args: Mapping[str, str]) -> None:
        """The ARGs of the stage this one starts FROM."""
        self._args.update(args)

    def inherit_env(self, env: Iterable[str]) -> None:
        """Add `NAME=value` items (parent image env, then `--env`); later items override earlier ones."""
        for item in env:
            name, _, value = item.partition("=")
            self._env[name] = value

    def expand(self, text: str, *, line: str, quotes: bool = True, heredoc: bool = False) -> str:
        syntax = Syntax(quotes=self.syntax.quotes, heredoc=heredoc, escape=self.syntax.escape)
        return expand_word(text, self.variables, quotes=quotes, line=line, limits=self.limits, syntax=syntax)

    def expand_words(self, text: str, *, line: str) -> list[str]:
        return expand_words(text, self.variables, line=line, limits=self.limits, syntax=self.syntax)

    def expand_from(self, text: str, *, line: str) -> str:
        """A FROM argument: only meta args are visible, whatever stage came before."""
        return expand_word(text, self._meta, line=line, limits=self.limits, syntax=self.syntax)

    def declare_arg(self, name: str, default: str | None, *, line: str) -> str:
        """Declare `ARG name[=default]` (default is raw text) and return its value."""
        if name in self._buildargs:
            self._used.add(name)
            value = self._buildargs[name]
        elif default is not None:
            value = self.expand(default, line=line)
        elif self._in_stage and name in self._meta and name not in self._args:
            value = self._meta[name]
        elif name in self._automatic:
            value = self._automatic[name]
        else:
            value = ""
        (self._args if self._in_stage else self._meta)[name] = value
        self._check_total(line)
        return value

    def set_env(self, pairs: Iterable[tuple[str, str]], *, line: str) -> list[tuple[str, str]]:
        """Apply one ENV instruction's `(name, raw value)` pairs; all values see the variables as they were before
        the instruction (`ENV A=1 B=$A` gives B the old A, as in Docker). Returns the expanded pairs."""
        scope = self.variables
        resolved = [(name, expand_word(raw, scope, line=line, limits=self.limits, syntax=self.syntax))
                    for name, raw in pairs]
        self._env.update(resolved)
        self._check_total(line)
        return resolved

    def _check_total(self, line: str) -> None:
        total = sum(len(v) for d in (self._meta, self._args, self._env) for v in d.values())
        if total > self.limits.total_bytes:
            raise ExpansionError(f"build variables exceed {self.limits.total_bytes} bytes in total at: {line}")
