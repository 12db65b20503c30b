"""Seccomp profiles for runc: kleened's default profile, custom profiles, and rendering them into
the `linux.seccomp` object of `config.json`.

Vocabulary: a *profile* is a Docker-style description (an allow-list of syscall names whose
rules may depend on the architecture, the container's capabilities and the kernel version); a
*rendered* profile is the OCI object runc takes, decided for one host and one capability set.

The default profile is written here from the kernel's syscall tables (x86_64, i386, x32,
arm64 and arm): everything ordinary programs use is allowed, and the rest fails with EPERM. It
has the effect of Docker's default profile: no new namespaces (`unshare`, `setns`, `clone` with
CLONE_NEW* flags) and no mounts without CAP_SYS_ADMIN (which kleened never grants), no
`keyctl`/`add_key`/`request_key`, `bpf`, `perf_event_open`, `userfaultfd`, `kexec_*`, module
loading, `open_by_handle_at`, `io_uring_*`, `personality` other than the harmless values,
`ptrace` only on kernels from 4.8 (older ones let it bypass seccomp), no AF_VSOCK sockets.
`clone3` fails with ENOSYS rather than EPERM, so C libraries fall back to `clone`, whose flags
a filter can see (clone3 passes them in memory).

Why unknown names are harmless: runc skips names its libseccomp does not know, and answers
ENOSYS for syscalls newer than the newest one the profile names, so a new kernel's calls look
"not implemented" to the program instead of "forbidden".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

Action = Literal[
    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG",
]  # fmt: skip  (SCMP_ACT_NOTIFY needs a listener kleened does not provide)
Operator = Literal[
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"
]  # fmt: skip

EPERM = 1
ENOSYS = 38
MAX_SYSCALL_RULES = 4096  # a profile larger than this is a mistake, not a policy

# Machine (uname -m) -> (Docker's name of the architecture, libseccomp architectures to filter).
# x86_64 also filters the i386 and x32 entry points, arm64 the 32-bit arm one: a process may
# call through any of them, and each has its own syscall numbers.
ARCHITECTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "x86_64": ("amd64", ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    "aarch64": ("arm64", ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")),
}
# Docker's architecture names, as profiles use them in `includes.arches`, per machine.
_ARCH_FAMILIES = {"amd64": {"amd64", "x86", "x32"}, "arm64": {"arm64", "arm"}}

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40
# personality(2): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query only).
SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


# --- the profile format (Docker's, which custom profiles may use) --------------------------------


class Arg(msgspec.Struct, forbid_unknown_fields=True):
    index: int = 0
    value: int = 0
    valueTwo: int = 0
    op: Operator = "SCMP_CMP_EQ"


class Condition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """When a rule applies: `caps` all present (includes) / any present (excludes), the machine
    in `arches`, the kernel at least `minKernel` ("4.8")."""

    caps: list[str] = msgspec.field(default_factory=list)
    arches: list[str] = msgspec.field(default_factory=list)
    minKernel: str = ""


class Syscall(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    names: list[str]
    action: Action
    args: list[Arg] = msgspec.field(default_factory=list)
    errnoRet: int | None = None
    includes: Condition = msgspec.field(default_factory=Condition)
    excludes: Condition = msgspec.field(default_factory=Condition)
    comment: str = ""


class ArchMap(msgspec.Struct, forbid_unknown_fields=True):
    architecture: str
    subArchitectures: list[str] = msgspec.field(default_factory=list)


class Profile(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A Docker-format profile, or an already rendered OCI one (`architectures`, no conditions)."""

    defaultAction: Action
    defaultErrnoRet: int | None = None
    architectures: list[str] = msgspec.field(default_factory=list)
    archMap: list[ArchMap] = msgspec.field(default_factory=list)
    syscalls: list[Syscall] = msgspec.field(default_factory=list)
    flags: list[str] = msgspec.field(default_factory=list)
    comment: str = ""


_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_KERNEL = re.compile(r"^(\d+)\.(\d+)")


def _rules(*names: str) -> list[str]:
    return [n for group in names for n in group.split()]


# --- the default profile ---------------------------------------------------------------------------

# Allowed for every container. Grouped by what they are for; the 32-bit and *_time64 spellings
# are the i386/arm entry points of the same calls.
_ALLOWED = _rules(
    # processes, threads, signals, scheduling
    "exit exit_group fork vfork execve execveat wait4 waitid waitpid kill tkill tgkill pause getpid getppid gettid",
    "getpgid getpgrp setpgid getsid setsid getpriority setpriority getcpu getrusage times",
    "rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait",
    "rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack signalfd signalfd4 sigprocmask sigreturn sigpending",
    "sigsuspend restart_syscall pidfd_open pidfd_send_signal process_mrelease",
    "sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam sched_setparam",
    "sched_get_priority_max sched_get_priority_min sched_getscheduler sched_setscheduler sched_rr_get_interval",
    "sched_rr_get_interval_time64 sched_yield set_tid_address set_robust_list get_robust_list rseq membarrier",
    "futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue prctl seccomp",
    "get_thread_area set_thread_area capget capset",
    # credentials (within the container's capabilities)
    "getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid getresuid32 getresgid",
    "getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32",
    "setresuid setresuid32 setresgid setresgid32 setgroups setgroups32 setfsuid setfsuid32 setfsgid setfsgid32",
    # memory
    "brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock munlockall",
    "remap_file_pages memfd_create memfd_secret pkey_alloc pkey_free pkey_mprotect map_shadow_stack mseal",
    # files and directories
    "open openat openat2 creat close close_range read write readv writev pread64 pwrite64 preadv pwritev",
    "preadv2 pwritev2 lseek _llseek dup dup2 dup3 fcntl fcntl64 ioctl flock fsync fdatasync sync syncfs",
    "sync_file_range fadvise64 fadvise64_64 fallocate readahead truncate truncate64 ftruncate ftruncate64",
    "stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64 fstatfs fstatfs64",
    "access faccessat faccessat2 chdir fchdir getcwd mkdir mkdirat rmdir rename renameat renameat2 link linkat",
    "symlink symlinkat unlink unlinkat readlink readlinkat mknod mknodat chmod fchmod fchmodat fchmodat2",
    "chown chown32 fchown fchown32 lchown lchown32 fchownat umask utime utimes utimensat utimensat_time64",
    "futimesat getdents getdents64 name_to_handle_at copy_file_range sendfile sendfile64 splice tee vmsplice",
    "getxattr lgetxattr fgetxattr getxattrat setxattr lsetxattr fsetxattr setxattrat listxattr llistxattr",
    "flistxattr listxattrat removexattr lremovexattr fremovexattr removexattrat",
    "inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark cachestat",
    "landlock_create_ruleset landlock_add_rule landlock_restrict_self",
    # waiting and multiplexing, pipes, events, timers, clocks
    "select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1 epoll_ctl",
    "epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 pipe pipe2 eventfd eventfd2",
    "timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 timer_create",
    "timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64",
    "alarm getitimer setitimer nanosleep clock_nanosleep clock_nanosleep_time64 clock_gettime clock_gettime64",
    "clock_getres clock_getres_time64 clock_adjtime clock_adjtime64 adjtimex gettimeofday time",
    # asynchronous I/O (io_uring stays out: its own syscall surface, outside seccomp's view)
    "io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64 ioprio_get",
    "ioprio_set",
    # sockets (socket itself: see below)
    "socketpair bind connect listen accept accept4 getsockname getpeername getsockopt setsockopt shutdown",
    "send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64 socketcall",
    # System V and POSIX IPC (the container has its own IPC namespace)
    "ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl shmget shmat shmdt",
    "shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64",
    "mq_notify mq_getsetattr",
    # system information and limits
    "uname sysinfo getrandom getrlimit ugetrlimit setrlimit prlimit64",
)

# Calls a capability unlocks (Docker's table). kleened grants only CAP_SYS_CHROOT of these, but
# profiles are rendered for the capability set a container really has.
_BY_CAPABILITY: dict[str, str] = {
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
                     "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
                     "sethostname setns syslog umount umount2 unshare",
    "CAP_SYS_BOOT": "reboot kexec_load kexec_file_load",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "init_module finit_module delete_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace userfaultfd",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}  # fmt: skip


def _default_syscalls() -> list[Syscall]:
    calls = [Syscall(names=_ALLOWED, action="SCMP_ACT_ALLOW")]
    calls.append(Syscall(names=["socket"], action="SCMP_ACT_ALLOW",
                         args=[Arg(index=0, value=AF_VSOCK, op="SCMP_CMP_NE")]))  # fmt: skip
    calls += [Syscall(names=["personality"], action="SCMP_ACT_ALLOW", args=[Arg(index=0, value=v)])
              for v in SAFE_PERSONALITIES]  # fmt: skip
    # ptrace and friends could bypass seccomp before 4.8; with a newer kernel they only reach
    # the container's own processes (its pid namespace).
    calls.append(Syscall(names=_rules("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
                         action="SCMP_ACT_ALLOW", includes=Condition(minKernel="4.8")))  # fmt: skip
    calls.append(Syscall(names=["arch_prctl"], action="SCMP_ACT_ALLOW", includes=Condition(arches=["amd64", "x32"])))
    calls.append(Syscall(names=["modify_ldt"], action="SCMP_ACT_ALLOW",
                         includes=Condition(arches=["amd64", "x32", "x86"])))  # fmt: skip
    calls.append(Syscall(names=_rules("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush "
                                      "set_tls"), action="SCMP_ACT_ALLOW", includes=Condition(arches=["arm", "arm64"])))
    calls += [Syscall(names=names.split(), action="SCMP_ACT_ALLOW", includes=Condition(caps=[cap]))
              for cap, names in _BY_CAPABILITY.items()]  # fmt: skip
    # Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 "not implemented".
    calls.append(Syscall(names=["clone"], action="SCMP_ACT_ALLOW", excludes=Condition(caps=["CAP_SYS_ADMIN"]),
                         args=[Arg(index=0, value=CLONE_NAMESPACE_FLAGS, valueTwo=0, op="SCMP_CMP_MASKED_EQ")]))
    calls.append(Syscall(names=["clone3"], action="SCMP_ACT_ERRNO", errnoRet=ENOSYS,
                         excludes=Condition(caps=["CAP_SYS_ADMIN"])))  # fmt: skip
    return calls


DEFAULT_PROFILE = Profile(
    defaultAction="SCMP_ACT_ERRNO",
    defaultErrnoRet=EPERM,
    archMap=[ArchMap(architecture=arches[0], subArchitectures=list(arches[1:]))
             for _, arches in ARCHITECTURES.values()],
    syscalls=_default_syscalls(),
)


# --- parsing and rendering ---------------------------------------------------------------------------


class ProfileError(ValueError):
    """A custom profile that cannot be used; the message says why, in one line."""


_decoder = msgspec.json.Decoder(Profile)


def parse(text: str | bytes) -> Profile:
    """Decode and check a custom profile (Docker's format or an OCI `linux.seccomp` object)."""
    try:
        profile = _decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ProfileError(f"invalid seccomp profile: {exc}") from None
    if len(profile.syscalls) > MAX_SYSCALL_RULES:
        raise ProfileError(f"invalid seccomp profile: more than {MAX_SYSCALL_RULES} syscall rules")
    for rule in profile.syscalls:
        bad = next((n for n in rule.names if not _NAME.fullmatch(n)), None)
        if bad is not None or not rule.names:
            raise ProfileError(f"invalid seccomp profile: bad syscall name {bad!r}")
        if any(not 0 <= a.index <= 5 for a in rule.args):
            raise ProfileError("invalid seccomp profile: argument index must be 0 to 5")
    if profile.flags:
        raise ProfileError("invalid seccomp profile: 'flags' are not supported")
    return profile


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` string such as '6.1.0-18-amd64'."""
    m = _KERNEL.match(release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _applies(rule: Syscall, arch: str, caps: set[str], kernel: tuple[int, int]) -> bool:
    inc, exc = rule.includes, rule.excludes
    family = _ARCH_FAMILIES.get(arch, {arch})
    if inc.arches and not family & set(inc.arches):
        return False
    if inc.caps and not set(inc.caps) <= caps:
        return False
    if inc.minKernel and kernel < kernel_version(inc.minKernel):
        return False
    if exc.arches and family & set(exc.arches):
        return False
    if exc.caps and set(exc.caps) & caps:
        return False
    return not (exc.minKernel and kernel >= kernel_version(exc.minKernel))


def _architectures(profile: Profile, machine: str) -> list[str]:
    if profile.architectures:
        return list(profile.architectures)
    native = ARCHITECTURES.get(machine, ("", ()))[1]
    for entry in profile.archMap:
        if native and entry.architecture == native[0]:
            return [entry.architecture, *entry.subArchitectures]
    return list(native[:1])


def render(profile: Profile, *, machine: str, capabilities: Iterable[str], kernel: tuple[int, int]) -> dict[str, Any]:
    """The OCI `linux.seccomp` object of `profile` for this machine, capability set and kernel.

    Rules whose conditions fail are left out; unconditional allow rules are merged into one
    entry, so runc builds a small filter.
    """
    arch = ARCHITECTURES.get(machine, (machine, ()))[0]
    caps = set(capabilities)
    allowed: list[str] = []
    syscalls: list[dict[str, Any]] = []
    for rule in profile.syscalls:
        if not _applies(rule, arch, caps, kernel):
            continue
        if rule.action == "SCMP_ACT_ALLOW" and not rule.args:
            allowed += [n for n in rule.names if n not in allowed]
            continue
        entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.args:
            entry["args"] = [msgspec.to_builtins(a) for a in rule.args]
        if rule.errnoRet is not None:
            entry["errnoRet"] = rule.errnoRet
        syscalls.append(entry)
    if allowed:
        syscalls.insert(0, {"names": allowed, "action": "SCMP_ACT_ALLOW"})
    rendered: dict[str, Any] = {"defaultAction": profile.defaultAction,
                                "architectures": _architectures(profile, machine), "syscalls": syscalls}
    if profile.defaultErrnoRet is not None:
        rendered["defaultErrnoRet"] = profile.defaultErrnoRet
    return rendered


def allowed_names(rendered: dict[str, Any]) -> set[str]:
    """Names a rendered profile allows unconditionally (for tests and docs)."""
    return {n for s in rendered["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" and "args" not in s for n in s["names"]}


def blocked(rendered: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Which of `names` no rule of a rendered profile mentions: they get the default action."""
    mentioned = {n for s in rendered["syscalls"] for n in s["names"]}
    return [n for n in names if n not in mentioned]
