"""FreeBSD drivers: jails (jail(8), jexec(8)), ZFS, epair/bridge/lo clones and pf, plus rctl.

Status: not wired into the daemon yet (`kleened.wiring` still refuses non-Linux hosts). The
drivers are written *data first*: every module except the driver classes computes host command
lines and rulesets as plain values, which the unit tests in tests/unit/freebsd check against
upstream's behaviour (freebsd-backend.md). The driver classes run them through one helper
(`command.Commands`) and are exercised against a *simulated* FreeBSD host (tests/freebsd_sim),
not a real one; docs/freebsd.md says what that proves and what still needs a FreeBSD machine.

Modules: `command` (running), `params` and `jail` (jails), `zfs` (datasets), `mounts` (nullfs),
`netif` (interfaces), `pf` (rules), `rctl` (limits), `images` (fetch-auto, freebsd-update),
`settings` (config defaults); driver classes `runtime.JailRuntime`, `storage.ZfsStorage`,
`network.FreeBSDNetworkDriver`, `firewall.PfFirewall`, `images.FreeBSDRootfs`, and
`reconcile.Reconciler`.
"""
