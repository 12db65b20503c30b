"""Dockerfiles as people write them:

- `parse_500_lines`: parsing a 500-line Dockerfile (stages, continuations, heredocs, RUN --mount, COPY flags),
  against a floor measured in the same run: Python's `shlex` tokenizing the same lines (any parser reads them at
  least that carefully);
- `apt_cache_mount`: a package install on a Debian image (made with `fetch-auto`, i.e. debootstrap from the host's
  apt mirror) using `RUN --mount=type=cache` for apt's archives and lists, built once, then again with only the
  later lines of the package list changed: the second build must re-run the step but downloads only what is new.
  The floor is the first build; the same pair without cache mounts is reported beside it. Target: the second build
  at least 3x faster than the first. Needs debootstrap and the mirror; without them the figure says why it is
  missing.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_daemon, measure, summary
from kleened.core.builder.dockerfile import parse
from tests.daemon import Daemon
from tests.wsapi import collect, connect, run_stream

FIRST_PACKAGES = ["ca-certificates", "curl", "git", "openssh-client", "xz-utils", "less"]
SECOND_PACKAGES = ["ca-certificates", "curl", "git", "openssh-client", "xz-utils", "jq"]  # the last line changed
# The RUN times its phases (apt's lists, the downloads, dpkg) so the figure says where the time goes.
APT = """\
FROM {image}
RUN rm -f /etc/apt/apt.conf.d/docker-clean; \\
    echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
RUN {mounts}set -e; PACKAGES="\\
{packages}"; \\
    t0=$(date +%s%N); apt-get update -q >/dev/null; t1=$(date +%s%N); \\
    apt-get install -y -q --no-install-recommends --download-only $PACKAGES | grep '^Need to get' || true; \\
    t2=$(date +%s%N); \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null; \\
    t3=$(date +%s%N); \\
    echo "phases lists=$(( (t1-t0)/1000000 )) downloads=$(( (t2-t1)/1000000 )) install=$(( (t3-t2)/1000000 ))"
"""
CACHE_MOUNTS = ("--mount=type=cache,target=/var/cache/apt,sharing=locked \\\n"
                "    --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n    ")


def dockerfile_500() -> str:
    """A 500-line Dockerfile in the shapes real ones have."""
    stage = """\
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS build{n}
ARG TARGETARCH VERSION{n}=1.{n}.0
ENV APP_HOME=/srv/app{n} \\
    PATH=/srv/app{n}/bin:$PATH
WORKDIR $APP_HOME
# dependencies first, for the cache
COPY --chown=1000:1000 --chmod=644 package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \\
    --mount=type=secret,id=npmrc,target=/root/.npmrc \\
    set -eux; \\
    apt-get update && apt-get install -y --no-install-recommends ca-certificates curl; \\
    rm -rf /var/lib/apt/lists/*
RUN <<EOF
set -e
echo "building {n} for $TARGETARCH"
mkdir -p out && touch out/app
EOF
COPY <<-EOT /etc/app{n}.conf
	listen 80{n}
	EOT
COPY --exclude=*.md --parents src/**/*.js ./
LABEL org.opencontainers.image.version="${{VERSION{n}}}" \\
      org.opencontainers.image.title="app{n}"
EXPOSE 80{n}/tcp
HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost:80{n}/ || exit 1
"""
    lines: list[str] = ["# syntax=docker/dockerfile:1", "ARG BASE=debian"]
    n = 0
    while len(lines) < 480:
        lines += stage.format(n=n).splitlines()
        n += 1
    lines += ["FROM debian:bookworm-slim", "COPY --from=build0 /srv/app0/out /app", "VOLUME /data",
              "STOPSIGNAL SIGQUIT", 'ENTRYPOINT ["/app/app"]']
    while len(lines) < 500:
        lines.append("# padding comment")
    return "\n".join(lines[:500]) + "\n"


def _tokenize_floor(text: str) -> int:
    count = 0
    for line in text.splitlines():
        try:
            count += len(shlex.split(line, comments=True))
        except ValueError:
            count += 1
    return count


def parse_500_lines(runs: int) -> dict[str, Any]:
    text = dockerfile_500()
    assert len(text.splitlines()) == 500 and len(parse(text)) > 200
    ours = measure(lambda: parse(text), runs)
    floor = measure(lambda: _tokenize_floor(text), runs)
    return {"lines": 500, "instructions": len(parse(text)), "parse": summary(ours), "floor_shlex": summary(floor),
            "ratio": round(summary(ours)["median_ms"] / summary(floor)["median_ms"], 2)}


def _build(daemon: Daemon, ctx: Path, dockerfile: str) -> tuple[float, dict[str, Any]]:
    """Wall milliseconds of the build, and the RUN's phases in milliseconds."""
    (ctx / "Dockerfile").write_text(dockerfile)
    config = {"context": str(ctx), "container_config": {"network_driver": "host"}, "quiet": False, "cache": True}
    t0 = time.perf_counter()
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps(config))
        stream = collect(ws, timeout=1800)
    assert stream.close_code == 1000, stream
    timings = re.search(r"phases lists=(\d+) downloads=(\d+) install=(\d+)", stream.text)
    assert timings is not None, stream.text[-2000:]
    phases: dict[str, Any] = dict(zip(("lists", "downloads", "install"), map(int, timings.groups()), strict=True))
    fetched = re.search(r"Need to get [^\n]*", stream.text)  # apt's own count of what it downloads
    phases["apt_says"] = fetched.group() if fetched else "nothing to get"
    return (time.perf_counter() - t0) * 1000, phases


def _debian(daemon: Daemon) -> str:
    stream = run_stream(daemon, "/images/create", {"method": "fetch-auto", "tag": "benchdebian"}, timeout=1800)
    if stream.close_code != 1000:
        raise RuntimeError(f"fetch-auto failed: {stream.text[-500:]}")
    return "benchdebian"


def _pair(daemon: Daemon, ctx: Path, image: str, mounts: str) -> dict[str, float]:
    def dockerfile(packages: list[str]) -> str:
        listed = " \\\n".join(f"      {p}" for p in packages)
        return APT.format(image=image, mounts=mounts, packages=listed)

    first, first_phases = _build(daemon, ctx, dockerfile(FIRST_PACKAGES))
    second, second_phases = _build(daemon, ctx, dockerfile(SECOND_PACKAGES))
    fetch_first = first_phases["lists"] + first_phases["downloads"]
    fetch_second = second_phases["lists"] + second_phases["downloads"]
    return {"first_ms": round(first), "second_ms": round(second), "speedup": round(first / second, 2),
            "first_phases_ms": first_phases, "second_phases_ms": second_phases,
            "fetch_speedup": round(fetch_first / max(fetch_second, 1), 2)}


def apt_cache_mount() -> dict[str, Any]:
    if shutil.which("debootstrap") is None:
        return {"skipped": "needs debootstrap (apt-get install debootstrap) to make a Debian image"}
    with bench_daemon() as daemon, tempfile.TemporaryDirectory(prefix="kleened-bench-apt-") as tmp:
        try:
            image = _debian(daemon)
        except RuntimeError as exc:
            return {"skipped": str(exc)}
        with_mounts = _pair(daemon, Path(tmp), image, CACHE_MOUNTS)
        without = _pair(daemon, Path(tmp), image, "")  # the same change, apt downloading everything again
        return {"packages_first": FIRST_PACKAGES, "packages_second": SECOND_PACKAGES,
                "with_cache_mounts": with_mounts, "without_cache_mounts": without}


def run(runs: int = 20) -> dict[str, object]:
    return {"parse_500_lines": parse_500_lines(runs), "apt_cache_mount": apt_cache_mount()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
