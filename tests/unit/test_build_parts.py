"""The builder's small parts: `--chmod` modes, durations, secret redaction, platforms, and cache-mount sharing on
the real host driver (files under tmp_path; no root needed)."""

from __future__ import annotations

import os
import stat

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from kleene_protocol.durations import parse_duration
from kleened.core.builder.cachemounts import CacheMounts, cache_key
from kleened.core.builder.files import Chmod
from kleened.core.builder.plan import platform_mismatch
from kleened.core.builder.secrets import MASK, Redactor, SecretError, check_secrets
from kleened.core.store import Store
from kleened.platform.linux.buildhost import BuildHost

# --- --chmod -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mode", "is_dir", "expected"), [
    ("755", 0o600, False, 0o755),
    ("0644", 0o755, True, 0o644),  # octal applies to directories too, as in BuildKit
    ("+x", 0o644, False, 0o755),
    ("u=rwX,go=rX", 0o600, False, 0o644),
    ("u=rwX,go=rX", 0o700, True, 0o755),
    ("u=rwX,go=rX", 0o744, False, 0o755),  # X: execute where someone had it already
    ("g=u", 0o740, False, 0o770),
    ("a-w,u+s", 0o777, False, 0o4555),
    ("o=", 0o777, False, 0o770),
])
def test_chmod(text: str, mode: int, is_dir: bool, expected: int) -> None:
    assert oct(Chmod(text).apply(mode, is_dir)) == oct(expected)


@pytest.mark.parametrize("bad", ["", "8", "12345", "u+q", "x=r", "u+x,", "rwx"])
def test_chmod_refuses_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid --chmod"):
        Chmod(bad)


# --- durations ---------------------------------------------------------------------------------------------------


def test_durations() -> None:
    assert [parse_duration(d) for d in ("30s", "1m30s", "500ms", "1.5h", "0", "2h45m10.5s")] == [
        30.0, 90.0, 0.5, 5400.0, 0.0, 9910.5]
    for bad in ("30", "s", "1d", "-1s", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- secrets -----------------------------------------------------------------------------------------------------


def test_secret_ids_and_sizes_are_checked() -> None:
    check_secrets({"npmrc": b"x", "aws.creds_2": b"y" * 1000})
    with pytest.raises(SecretError, match="invalid secret id"):
        check_secrets({"../x": b"x"})
    with pytest.raises(SecretError, match="larger than"):
        check_secrets({"big": b"x" * (500 * 1024 + 1)})


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.text(alphabet="abcdef", min_size=4, max_size=12),
       st.lists(st.integers(min_value=1, max_value=15), max_size=12))
def test_redaction_holds_across_chunks(prefix: str, secret: str, cuts: list[int]) -> None:
    text = f"{prefix}{secret}{prefix}{secret}\n"
    redactor = Redactor([secret.encode() + b"\n"])
    out, pos = [], 0
    for cut in cuts:
        out.append(redactor.feed(text[pos : pos + cut]))
        pos += cut
    out.append(redactor.feed(text[pos:]))
    out.append(redactor.flush())
    joined = "".join(out)
    assert secret not in joined and joined == text.replace(secret, MASK)


def test_short_secrets_are_not_redacted() -> None:
    assert Redactor([b"ab"]).feed("abcab") + Redactor([b"ab"]).flush() == "abcab"


# --- platforms ---------------------------------------------------------------------------------------------------


def test_platform_mismatch() -> None:
    assert platform_mismatch("linux/amd64", "linux/amd64") is None
    assert platform_mismatch("Linux/AMD64/v3", "linux/amd64") is None  # amd64 levels run on the host
    assert platform_mismatch("linux/arm/v7", "linux/arm/v7") is None
    assert platform_mismatch("linux/arm/v6", "linux/arm/v7") == \
        "kleened builds for the host platform (linux/arm/v7) only, not linux/arm/v6"
    assert platform_mismatch("linux/arm64", "linux/amd64") is not None
    assert platform_mismatch("windows/amd64", "linux/amd64") is not None


# --- cache mounts ------------------------------------------------------------------------------------------------


def test_cache_ids_are_never_paths(tmp_path) -> None:
    host = BuildHost(tmp_path / "cache", tmp_path / "tmp")
    key = cache_key("/../../../etc")
    assert key.isalnum() and len(key) == 32
    assert host.ensure_cache(key, 0, mode=0o755, uid=0, gid=0)
    assert host.cache_path(key, 0).resolve().is_relative_to((tmp_path / "cache").resolve())
    with pytest.raises(ValueError):
        host.cache_path("../x", 0)


def test_sharing_modes(tmp_path) -> None:
    trio.run(_sharing_modes, tmp_path)


async def _sharing_modes(tmp_path) -> None:
    store = Store(tmp_path / "meta.sqlite")
    mounts = CacheMounts(store, BuildHost(tmp_path / "cache", tmp_path / "tmp"))
    order: list[str] = []

    async def hold(name: str, sharing: str, ready: trio.Event, release: trio.Event) -> None:
        async with mounts.use("apt", sharing, mode=0o755, uid=0, gid=0) as path:
            order.append(f"{name}:{path.name}")
            ready.set()
            await release.wait()
        order.append(f"{name}:done")

    async with trio.open_nursery() as nursery:
        first_in, release_first = trio.Event(), trio.Event()
        nursery.start_soon(hold, "a", "locked", first_in, release_first)
        await first_in.wait()
        locked_in, private_in, release = trio.Event(), trio.Event(), trio.Event()
        nursery.start_soon(hold, "b", "shared", locked_in, release)
        nursery.start_soon(hold, "c", "private", private_in, release)
        await private_in.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not locked_in.is_set()  # a shared user waits while a locked one holds instance 0
        assert order == ["a:0", "c:1"]  # a private user takes an instance nobody uses
        release_first.set()
        await locked_in.wait()
        release.set()
    assert order[-2:] == ["b:done", "c:done"] or order[-2:] == ["c:done", "b:done"]
    assert [c.id for c in await mounts.prune()] == ["apt"]
    assert not (tmp_path / "cache" / cache_key("apt")).exists()
    store.close()


def test_reconcile_removes_directories_without_records(tmp_path) -> None:
    trio.run(_reconcile, tmp_path)


async def _reconcile(tmp_path) -> None:
    store = Store(tmp_path / "meta.sqlite")
    host = BuildHost(tmp_path / "cache", tmp_path / "tmp")
    host.ensure_cache("0123abcd", 0, mode=0o700, uid=0, gid=0)
    mounts = CacheMounts(store, host)
    async with mounts.use("kept", "shared", mode=0o755, uid=0, gid=0):
        pass
    assert await mounts.reconcile() == ["0123abcd"]
    assert host.list_caches() == [cache_key("kept")]
    store.close()


# --- the build host: stubs, scratch, the leak scan ----------------------------------------------------------------


def test_mount_target_stubs_are_created_and_removed(tmp_path) -> None:
    host = BuildHost(tmp_path / "cache", tmp_path / "tmp")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var").symlink_to("/etc")  # followed inside the root
    created = host.make_targets(root, [("/run/secrets/token", False), ("/var/cache/apt", True), ("/etc", True)])
    assert created == ["run", "run/secrets", "run/secrets/token", "etc/cache", "etc/cache/apt"]
    (root / "etc/cache/apt/kept").write_text("written by the RUN")
    host.remove_stubs(root, created)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "etc", "etc/cache", "etc/cache/apt", "etc/cache/apt/kept", "var"]


def test_find_bytes_and_scratch(tmp_path) -> None:
    host = BuildHost(tmp_path / "cache", tmp_path / "tmp")
    scratch = host.make_scratch("b1")
    assert stat.S_IMODE(os.stat(scratch).st_mode) == 0o700
    host.write_file(scratch / "s", b"top-secret", mode=0o400, uid=0, gid=0)
    assert stat.S_IMODE(os.stat(scratch / "s").st_mode) == 0o400
    layer = tmp_path / "layer"
    (layer / "deep/er").mkdir(parents=True)
    (layer / "deep/er/f").write_bytes(b"x" * (1 << 20) + b"top-sec" + b"ret" + b"y")  # across a read boundary
    (layer / "link").symlink_to("/etc/passwd")
    assert host.find_bytes(layer, [b"top-secret"], lambda: None) == "deep/er/f"
    assert host.find_bytes(layer, [b"nothing"], lambda: None) is None
    assert host.clear_scratch() == ["build-b1"] and not scratch.exists()
