"""The default seccomp profile and the renderer: what each architecture, capability set and
kernel gets, and how custom profiles are checked."""

from __future__ import annotations

import json

import pytest

from kleened.platform.linux import seccomp
from kleened.platform.linux.bundle import CAPABILITIES

# Docker's default profile blocks these (among others) for a container with the default
# capabilities; so must ours.
DOCKER_BLOCKED = [
    "acct", "add_key", "bpf", "clock_settime", "create_module", "delete_module", "finit_module",
    "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "init_module", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mbind", "mount", "mount_setattr", "move_mount", "move_pages", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "quotactl", "reboot", "request_key", "set_mempolicy", "setns",
    "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old", "sethostname", "setdomainname", "syslog", "vhangup",
]  # fmt: skip
EVERYDAY = ["read", "write", "openat", "execve", "mmap", "futex", "epoll_wait", "socketpair", "chroot", "fork",
            "getdents64", "statx", "rseq", "clock_gettime", "prlimit64", "setuid", "chown", "mknod"]  # fmt: skip


def render(machine: str = "x86_64", caps: list[str] | None = None, kernel: tuple[int, int] = (6, 1)) -> dict:
    return seccomp.render(seccomp.DEFAULT_PROFILE, machine=machine, capabilities=CAPABILITIES if caps is None else caps,
                          kernel=kernel)  # fmt: skip


def rules_for(rendered: dict, name: str) -> list[dict]:
    return [s for s in rendered["syscalls"] if name in s["names"]]


def test_default_action_is_eperm_and_everyday_calls_are_allowed() -> None:
    p = render()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert set(EVERYDAY) <= seccomp.allowed_names(p)
    assert seccomp.blocked(p, DOCKER_BLOCKED) == DOCKER_BLOCKED


@pytest.mark.parametrize(
    ("machine", "arches", "native_only", "foreign"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], {"arch_prctl", "modify_ldt"}, "set_tls"),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], {"set_tls", "cacheflush"}, "arch_prctl"),
    ],
)
def test_architectures(machine: str, arches: list[str], native_only: set[str], foreign: str) -> None:
    """x86_64 filters its i386 and x32 entry points too, arm64 its 32-bit arm one; each gets its
    own architecture-specific calls only."""
    p = render(machine)
    assert p["architectures"] == arches
    assert native_only <= seccomp.allowed_names(p)
    assert foreign not in seccomp.allowed_names(p)


def test_clone_without_namespace_flags_and_clone3_not_implemented() -> None:
    p = render()
    (clone,) = rules_for(p, "clone")
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for(p, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_cap_sys_admin_unlocks_namespaces_and_mounts() -> None:
    p = render(caps=[*CAPABILITIES, "CAP_SYS_ADMIN"])
    allowed = seccomp.allowed_names(p)
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= allowed
    assert rules_for(p, "clone") == [s for s in p["syscalls"] if "clone" in s["names"] and "args" not in s]


def test_personality_only_safe_values() -> None:
    values = sorted(s["args"][0]["value"] for s in rules_for(render(), "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    assert all(s["args"][0]["op"] == "SCMP_CMP_EQ" for s in rules_for(render(), "personality"))


def test_ptrace_needs_a_kernel_without_the_seccomp_bypass() -> None:
    assert "ptrace" in seccomp.allowed_names(render(kernel=(4, 8)))
    assert "ptrace" not in seccomp.allowed_names(render(kernel=(4, 4)))
    assert "ptrace" in seccomp.allowed_names(render(kernel=(4, 4), caps=["CAP_SYS_PTRACE"]))


def test_vsock_sockets_are_refused() -> None:
    (socket,) = rules_for(render(), "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]


def test_kernel_version() -> None:
    assert seccomp.kernel_version("6.18.44-fc-v1300") == (6, 18)
    assert seccomp.kernel_version("4.8") == (4, 8)
    assert seccomp.kernel_version("weird") == (0, 0)


def test_custom_profile_in_docker_format_is_rendered_with_its_conditions() -> None:
    text = json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_BOOT"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_KILL", "includes": {"arches": ["arm64"]}, "comment": "x"},
        ],
    })
    p = seccomp.render(seccomp.parse(text), machine="x86_64", capabilities=CAPABILITIES, kernel=(6, 1))
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert p["syscalls"] == [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                             {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"}]


def test_oci_profile_passes_through() -> None:
    text = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                       "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]})
    p = seccomp.render(seccomp.parse(text), machine="aarch64", capabilities=[], kernel=(6, 1))
    assert p == {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                 "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("{", "truncated"),
        ("[]", "Expected `object`"),
        ('{"syscalls": []}', "missing required field `defaultAction`"),
        ('{"defaultAction": "SCMP_ACT_NOTIFY"}', "defaultAction"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["rm -rf"], "action": "SCMP_ACT_ERRNO"}]}',
         "bad syscall name"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}',
         "bad syscall name"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", '
         '"args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index must be 0 to 5"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}', "'flags'"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}', "unknown field"),
    ],
)
def test_bad_profiles_are_refused_with_one_line(profile: str, message: str) -> None:
    with pytest.raises(seccomp.ProfileError, match=message) as info:
        seccomp.parse(profile)
    assert "\n" not in str(info.value) and str(info.value).startswith("invalid seccomp profile")
