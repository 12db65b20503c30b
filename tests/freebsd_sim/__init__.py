"""A SIMULATED FreeBSD host for tests: stand-in `jail`, `jexec`, `jls`, `ps`, `zfs`, `ifconfig`,
`route`, `pfctl`, `mount`, `mount_nullfs`, `umount`, `sysctl`, `rctl` and `freebsd-update`
executables, written in Python, keeping their state in one directory.

This is a simulation on Linux, not FreeBSD, and nothing here is evidence that kleened works on
FreeBSD. What it gives the tests:
- the FreeBSD drivers' command lines are *run*, in order, against tools that keep state and
  refuse what the real tools refuse (cloning a missing snapshot, destroying a dataset that has
  clones or children without -r, `addm` of a missing interface, a jail name in use, a pf syntax
  error or an undefined macro, a second default route, ...): a wrong order or a missing
  cleanup fails a test;
- datasets are real directories (snapshots and clones are copies), nullfs mounts are real bind
  mounts, devfs is a real tmpfs, and a process started with `jexec` really runs, chrooted into
  the jail's root (the busybox tree of tests/rootfs.py), so output, exit codes, signals and
  ptys flow end to end.

What it does not do: jails are chroots (no process, network or user isolation), interfaces,
routes and pf rules are bookkeeping (no packet moves), rctl enforces nothing, and messages only
approximate the real tools' wording. Only the stdlib is used, so the simulation shares no code
with what it tests. Entry point for every stand-in: `tool.main(name, argv)`.
"""
