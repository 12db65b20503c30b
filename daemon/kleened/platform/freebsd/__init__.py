"""FreeBSD drivers (jail, ZFS, epair, pf): planned, behind the same interfaces as linux/."""
