"""A parser for the subset of pf.conf(5) that kleened's rulesets and typical host templates use,
strict where pfctl is: what it accepts is meant to load, what it refuses pfctl refuses too.

Covered: comments and `\\` continuations; macros (`name = "value"`, `$name` expanded as tokens,
an undefined macro is an error); `set` options and `scrub` (taken as a whole); `table`; `nat`,
`rdr` and `nat-anchor`/`rdr-anchor`; `pass`/`block` (direction, log, quick, on, address family,
proto, from/to with ports, state and flags options) and `anchor`. Checked: the section order
pfctl enforces (options, normalization, queueing, translation, filtering), interface lists,
addresses (IPs, CIDRs, `(if)`, `(if:network)`, `any`, lists, tables), ports (0-65535, ranges;
`N:*` only as an rdr target), and that literal addresses match the rule's address family.
Everything else is a syntax error. `parse(text)` returns `Rule`s or raises `PfError(line, msg)`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

OPTIONS, NORMALIZATION, QUEUEING, TRANSLATION, FILTER = range(5)
ORDER_MESSAGE = "Rules must be in order: options, normalization, queueing, translation, filtering"
_TOKEN = re.compile(r'\s*(?:(?P<str>"[^"]*")|(?P<macro>\$[A-Za-z_]\w*)|(?P<arrow>->)|(?P<op><>|><|!=|<=|>=)'
                    r'|(?P<punct>[{}(),!<>=])|(?P<word>[A-Za-z0-9_.:/*+-]+))')
_MACRO_DEF = re.compile(r'^\s*([A-Za-z_]\w*)\s*=\s*(.*?)\s*$')
_IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_SET_OPTIONS = {"skip", "block-policy", "loginterface", "optimization", "limit", "timeout", "state-policy", "debug",
                "hostid", "require-order", "fingerprints", "ruleset-optimization", "reassemble", "state-defaults",
                "keepcounters", "syncookies"}
_KEYWORDS = {"pass", "block", "nat", "rdr", "binat", "anchor", "nat-anchor", "rdr-anchor", "set", "scrub", "table",
             "match", "altq", "queue", "load"}


class PfError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Rule:
    section: int
    kind: str  # "nat", "rdr", "filter", "anchor", "nat-anchor", "rdr-anchor", "option", "scrub", "table"
    text: str  # tokens after macro expansion, joined by spaces
    line: int


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with continuations joined and comments removed, with their first line number."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return [(n, line) for n, line in out if line.strip()]


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _tokens(text: str, macros: dict[str, str], line: int, depth: int = 0) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise PfError(line, "syntax error")
        pos = match.end()
        if match.group("macro"):
            name = match.group("macro")[1:]
            if name not in macros:
                raise PfError(line, f"macro '{name}' not defined")
            if depth > 8:
                raise PfError(line, "macro expansion too deep")
            tokens += _tokens(macros[name], macros, line, depth + 1)
        else:
            tokens.append(next(v for v in match.groupdict().values() if v is not None))
    return tokens


def _macro_value(raw: str, macros: dict[str, str], line: int) -> str:
    parts = re.findall(r'"([^"]*)"|(\$[A-Za-z_]\w*)|(\S+)', raw)
    if not parts:
        raise PfError(line, "syntax error")
    values = []
    for quoted, macro, bare in parts:
        if macro:
            if macro[1:] not in macros:
                raise PfError(line, f"macro '{macro[1:]}' not defined")
            values.append(macros[macro[1:]])
        else:
            values.append(quoted if quoted or not bare else bare)
    return " ".join(values)


def parse(text: str) -> list[Rule]:
    macros: dict[str, str] = {}
    rules: list[Rule] = []
    current = OPTIONS
    for line, content in _logical_lines(text):
        definition = _MACRO_DEF.match(content)
        if definition and definition.group(1) not in _KEYWORDS:
            macros[definition.group(1)] = _macro_value(definition.group(2), macros, line)
            continue
        rule = _Statement(_tokens(content, macros, line), line).parse()
        if rule.kind != "table":
            if rule.section < current:
                raise PfError(line, ORDER_MESSAGE)
            current = rule.section
        rules.append(rule)
    return rules


class _Statement:
    def __init__(self, tokens: list[str], line: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.line = line
        self.af: str | None = None
        self.addresses: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    # --- token helpers ---------------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            self.fail()
        self.pos += 1
        return token  # type: ignore[return-value]

    def accept(self, *words: str) -> str | None:
        if self.peek() in words:
            return self.take()
        return None

    def expect(self, word: str) -> None:
        if self.take() != word:
            self.fail()

    def fail(self, message: str = "syntax error") -> None:
        raise PfError(self.line, message)

    def done(self, section: int, kind: str) -> Rule:
        if self.peek() is not None:
            self.fail()
        return Rule(section, kind, " ".join(self.tokens), self.line)

    # --- statements ------------------------------------------------------------------------------

    def parse(self) -> Rule:
        head = self.take()
        if head == "set":
            if self.take() not in _SET_OPTIONS or self.peek() is None:
                self.fail()
            self.pos = len(self.tokens)
            return self.done(OPTIONS, "option")
        if head == "scrub":
            self.pos = len(self.tokens)
            return self.done(NORMALIZATION, "scrub")
        if head == "table":
            self.expect("<")
            self.name()
            self.expect(">")
            self.pos = len(self.tokens)
            return self.done(FILTER, "table")
        if head in ("nat-anchor", "rdr-anchor", "anchor"):
            return self.anchor(head)
        if head in ("nat", "rdr"):
            return self.translation(head)
        if head in ("pass", "block"):
            return self.filter(head)
        self.fail()
        raise AssertionError

    def anchor(self, kind: str) -> Rule:
        name = self.take()
        if not (name.startswith('"') and len(name) > 2):
            self.fail()
        if kind == "anchor":
            self.accept("in", "out")
        if self.accept("on"):
            self.ifspec()
        self.family()
        if self.peek() is not None:
            self.hosts()
        elif "all" not in self.tokens:
            self.tokens.append("all")
            self.pos += 1
        return self.done(TRANSLATION if kind != "anchor" else FILTER, kind)

    def translation(self, kind: str) -> Rule:
        self.accept("pass")
        if self.accept("log") and self.accept("("):
            self.skip_group(")")
        self.expect("on")
        self.ifspec()
        self.family()
        if self.accept("proto"):
            self.proto()
        self.hosts(require=True)
        self.expect("->")
        self.redirect(kind)
        return self.done(TRANSLATION, kind)

    def filter(self, action: str) -> Rule:
        if action == "block":
            self.accept("drop", "return", "return-rst", "return-icmp")
        self.accept("in", "out")
        while (token := self.accept("log", "quick")) is not None:  # pf takes `log quick` and `quick log`
            if token == "log" and self.accept("("):
                self.skip_group(")")
        if self.accept("on"):
            self.ifspec()
        self.family()
        if self.accept("proto"):
            self.proto()
        if self.peek() in ("all", "from", "to"):
            self.hosts()
        while self.peek() is not None:
            self.filter_option()
        return self.done(FILTER, "filter")

    # --- pieces ------------------------------------------------------------------------------------

    def skip_group(self, close: str) -> None:
        while self.take() != close:
            pass

    def name(self) -> str:
        word = self.take()
        if not re.match(r"^[A-Za-z_][\w.-]*$", word):
            self.fail()
        return word

    def family(self) -> None:
        found = self.accept("inet", "inet6")
        if found:
            self.af = found

    def ifname(self) -> None:
        self.accept("!")
        if not _IFNAME.match(self.take()):
            self.fail()

    def ifspec(self) -> None:
        if self.accept("{"):
            self.ifname()
            while not self.accept("}"):
                self.accept(",")
                self.ifname()
        else:
            self.ifname()

    def proto(self) -> None:
        items = [self.take()]
        if items[0] == "{":
            items = []
            while (token := self.take()) != "}":
                if token != ",":
                    items.append(token)
        for item in items:
            if item not in ("tcp", "udp", "icmp", "icmp6", "carp", "pfsync", "esp", "ah", "gre") and not item.isdigit():
                self.fail(f"unknown protocol {item}")

    def hosts(self, *, require: bool = False) -> None:
        if self.accept("all"):
            if require:
                self.fail()
            return
        seen = False
        for word in ("from", "to"):
            if self.accept(word):
                seen = True
                if self.peek() != "port":  # `to port 22` is `to any port 22`
                    self.hostspec()
                if self.accept("port"):
                    self.portspec(redirect=False)
        if not seen:
            self.fail()
        self.check_family("rule expands to no valid combination")

    def hostspec(self) -> None:
        self.accept("!")
        if self.accept("{"):
            self.host()
            while not self.accept("}"):
                self.accept(",")
                self.host()
        else:
            self.host()

    def host(self) -> None:
        token = self.take()
        if token in ("any", "self", "no-route", "urpf-failed"):
            return
        if token == "(":
            self.interface_address()
            self.expect(")")
            return
        if token == "<":
            self.name()
            self.expect(">")
            return
        try:
            self.addresses.append(ipaddress.ip_network(token, strict=False))
            return
        except ValueError:
            pass
        self.pos -= 1
        self.interface_address()

    def interface_address(self) -> None:
        ifname, _, modifier = self.take().partition(":")
        if not _IFNAME.match(ifname) or modifier not in ("", "network", "broadcast", "peer", "0"):
            self.fail()

    def port(self, text: str, *, redirect: bool) -> None:
        parts = text.split(":")
        if len(parts) > 2 or (parts[-1] == "*" and (not redirect or len(parts) != 2)):
            self.fail()
        for part in parts:
            if part == "*":
                continue
            if part.isdigit():
                if int(part) > 65535:
                    self.fail(f"illegal port value {part}")
            elif not re.match(r"^[a-z][a-z0-9-]*$", part):
                self.fail()

    def portspec(self, *, redirect: bool) -> None:
        self.accept("=", "!=", "<", ">", "<=", ">=")
        if self.accept("{"):
            while (token := self.take()) != "}":
                if token != ",":
                    self.port(token, redirect=False)
            return
        self.port(self.take(), redirect=redirect)
        if self.accept("><", "<>"):
            self.port(self.take(), redirect=False)

    def redirect(self, kind: str) -> None:
        before = len(self.addresses)
        self.hostspec()
        if self.accept("port"):
            if kind != "rdr":
                self.portspec(redirect=False)
            else:
                self.portspec(redirect=True)
        self.accept("static-port", "round-robin", "random", "source-hash", "bitmask")
        targets = self.addresses[before:]
        if self.af and targets and not any(self._matches(a) for a in targets):
            self.fail("no translation address with matching address family found.")

    def _matches(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return (network.version == 6) == (self.af == "inet6")

    def check_family(self, message: str) -> None:
        if self.af and any(not self._matches(a) for a in self.addresses):
            self.fail(message)

    def filter_option(self) -> None:
        token = self.take()
        if token in ("keep", "modulate", "synproxy", "no"):
            self.expect("state")
        elif token in ("flags", "label", "tag", "tagged", "queue", "probability"):
            self.take()
        elif token not in ("allow-opts", "fragment"):
            self.fail()
