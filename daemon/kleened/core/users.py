"""Resolving a container user ("name", "uid", "name:group", "uid:gid") from the image's
/etc/passwd and /etc/group, as a login would."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgument


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()  # supplementary groups, the primary one included (as `id` shows them)


def _entries(text: str | None) -> list[list[str]]:
    if not text:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(spec: str, passwd: str | None, group: str | None) -> User:
    spec = spec or "root"
    user_part, _, group_part = spec.partition(":")
    users = [e for e in _entries(passwd) if len(e) >= 6]
    match = next((e for e in users if e[0] == user_part), None)
    if match is None and user_part.isdigit():
        match = next((e for e in users if e[2] == user_part), None)
    if match is not None:
        name, uid, gid, home = match[0], int(match[2]), int(match[3]), match[5] or "/"
    elif user_part.isdigit():
        name, uid, gid, home = user_part, int(user_part), int(user_part), "/"
    elif user_part == "root":
        name, uid, gid, home = "root", 0, 0, "/root"
    else:
        raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
    groups = _entries(group)
    if group_part:
        g = next((e for e in groups if len(e) >= 3 and e[0] == group_part), None)
        if g is not None:
            gid = int(g[2])
        elif group_part.isdigit():
            gid = int(group_part)
        else:
            raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
    # As initgroups(3): the primary group, then every group that lists the user, once each.
    listed = [int(e[2]) for e in groups if len(e) >= 4 and name in e[3].split(",") and e[2].isdigit()]
    return User(name=name, uid=uid, gid=gid, home=home, groups=tuple(dict.fromkeys([gid, *listed])))


def passwd_names(passwd: str | None) -> dict[int, str]:
    """uid -> user name (the first entry of each uid), for listings such as `top`."""
    names: dict[int, str] = {}
    for e in _entries(passwd):
        if len(e) >= 3 and e[2].isdigit():
            names.setdefault(int(e[2]), e[0])
    return names
