"""The pf generator (platform/freebsd/pf.py): upstream's rules and macros (freebsd-backend.md §4,
kleene-behaviours.md §6.3), the fixes of B16/B17/B18, and every ruleset parsed by the simulated
pfctl's parser (tests/freebsd_sim/pfparse.py), which refuses what pfctl refuses."""

from __future__ import annotations

import itertools

import pytest

from kleene_protocol.models import Network, PublishedPort
from kleened.platform.freebsd import pf
from tests.freebsd_sim.pfparse import ORDER_MESSAGE, PfError, parse

NET = "a1b2c3d4e5f6"
P = f"kleenet_{NET}"


def net(name: str = "n", **kw) -> Network:
    base = dict(id=NET, name=name, type="loopback", interface="kleene0", subnet="10.13.37.0/24", subnet6="",
                gateway="", gateway6="", nat="em0", icc=True, internal=False)
    return Network(**{**base, **kw})


def port(host: str = "8080", cont: str = "80", proto: str = "tcp", ip4: str = "10.13.37.1", ip6: str = "",
         interfaces: tuple[str, ...] = ("em0",)) -> PublishedPort:
    return PublishedPort(interfaces=list(interfaces), host_port=host, container_port=cont, protocol=proto,
                         ip_address=ip4, ip_address6=ip6)


def loads(ruleset: pf.Ruleset) -> None:
    """What `pfctl -n -f` does with the whole template: raises PfError when pf would refuse it."""
    parse(pf.render_template(pf.DEFAULT_TEMPLATE, ruleset))
    parse(ruleset.text())  # anchor mode


def test_the_references_example():
    """freebsd-backend.md §4.6's example, macro for macro; NAT now matches the subnet (§3.4)."""
    ruleset = pf.render([net()], [port()], host_gateway="em0")
    assert ruleset.macros == [
        'kleenet_host_gw_if="em0"',
        'kleenet_network_interfaces="{lo0, kleene0}"',
        f'{P}_interface="kleene0"',
        f'{P}_subnet="10.13.37.0/24"',
        f'{P}_nat_if="em0"',
        f'{P}_all_interfaces="{{kleene0, lo0}}"',
    ]
    assert ruleset.translation == [
        f"nat on ${P}_nat_if inet from ${P}_subnet to any -> (${P}_nat_if)",
        "rdr on em0 inet proto tcp from any to (em0) port 8080 -> 10.13.37.1 port 80",
    ]
    assert ruleset.filtering == [
        f"block in log from any to ${P}_subnet",
        f"pass quick on ${P}_all_interfaces from ${P}_subnet to ${P}_subnet",
        "pass quick on em0 inet proto tcp from any to 10.13.37.1 port 80",
        "pass quick on $kleenet_network_interfaces inet proto tcp from any to 10.13.37.1 port 80",
    ]
    loads(ruleset)


# --- §6.3: macros ------------------------------------------------------------------------------


def test_host_gateway_macro_only_when_known():
    assert 'kleenet_host_gw_if="vtnet0"' in pf.render([], [], host_gateway="vtnet0").macros
    assert not any(m.startswith("kleenet_host_gw_if") for m in pf.render([], []).macros)


def test_network_interfaces_macro():
    nets = [net("b", id="b" * 12, interface="kleene1"), net("a", interface="kleene0")]
    assert 'kleenet_network_interfaces="{lo0, kleene0,kleene1}"' in pf.render(nets, []).macros  # ordered by name
    assert pf.render([], []).macros == ['kleenet_network_interfaces="{lo0}"']


def test_per_network_macros_only_when_set_and_epairs_listed():
    ruleset = pf.render([net(subnet="", subnet6="fd00::/64", nat="")], [], epairs={NET: ["epair0a", "epair3a"]})
    assert ruleset.macros[1:] == [f'{P}_interface="kleene0"', f'{P}_subnet6="fd00::/64"',
                                  f'{P}_all_interfaces="{{kleene0, lo0, epair0a, epair3a}}"']
    loads(ruleset)


# --- §6.3: published ports ---------------------------------------------------------------------


def test_one_rdr_and_pass_per_interface_and_protocol():
    ruleset = pf.render([net()], [port(interfaces=("em0", "em1")), port(proto="udp", host="53", cont="53")])
    assert [r for r in ruleset.translation if r.startswith("rdr")] == [
        "rdr on em0 inet proto tcp from any to (em0) port 8080 -> 10.13.37.1 port 80",
        "rdr on em1 inet proto tcp from any to (em1) port 8080 -> 10.13.37.1 port 80",
        "rdr on em0 inet proto udp from any to (em0) port 53 -> 10.13.37.1 port 53",
    ]
    assert "pass quick on em1 inet proto tcp from any to 10.13.37.1 port 80" in ruleset.filtering
    loads(ruleset)


def test_the_cross_network_rule_keeps_the_ports_protocol():
    """B17: upstream wrote `proto tcp` here even for a udp port."""
    ruleset = pf.render([net()], [port(proto="udp", host="53", cont="53")])
    cross = "pass quick on $kleenet_network_interfaces inet proto udp from any to 10.13.37.1 port 53"
    assert cross in ruleset.filtering
    assert not any("proto tcp" in r for r in ruleset.filtering)


def test_ipv6_ports():
    ruleset = pf.render([net(subnet6="fd00::/64")], [port(ip6="fd00::1")])
    assert "rdr on em0 inet6 proto tcp from any to (em0) port 8080 -> fd00::1 port 80" in ruleset.translation
    assert "pass quick on em0 inet6 proto tcp from any to fd00::1 port 80" in ruleset.filtering
    assert "pass quick on $kleenet_network_interfaces inet6 proto tcp from any to fd00::1 port 80" in ruleset.filtering
    loads(ruleset)


def test_several_containers_and_none():
    ruleset = pf.render([net()], [port(ip4="10.13.37.1"), port(host="8081", ip4="10.13.37.2")])
    assert len([r for r in ruleset.translation if r.startswith("rdr")]) == 2
    assert pf.render([], []).translation == []  # no containers, no networks: an empty section


def test_port_ranges():
    """`*` is kept in the rdr target and resolved in the filter rules."""
    ruleset = pf.render([net()], [port(host="8080:8090", cont="80:*")])
    assert "rdr on em0 inet proto tcp from any to (em0) port 8080:8090 -> 10.13.37.1 port 80:*" in ruleset.translation
    assert "pass quick on em0 inet proto tcp from any to 10.13.37.1 port 80:90" in ruleset.filtering
    single = pf.render([net()], [port(host="5000", cont="4000:*")])
    assert "pass quick on em0 inet proto tcp from any to 10.13.37.1 port 4000" in single.filtering
    loads(ruleset)
    loads(single)


# --- §6.3: isolation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("internal", "icc", "nat"), list(itertools.product([False, True], [False, True],
                                                                            ["", "em0"])))
def test_every_icc_internal_nat_combination_loads(internal, icc, nat):
    ruleset = pf.render([net(internal=internal, icc=icc, nat=nat, subnet6="fd00::/64")], [port()],
                        host_gateway="em0")
    rules = ruleset.filtering
    assert rules[0] == f"block in log from any to ${P}_subnet"  # inbound to a subnet: always
    assert (f"pass quick on ${P}_all_interfaces from ${P}_subnet to ${P}_subnet" in rules) == icc
    assert (f"block out quick log on $kleenet_network_interfaces from ${P}_subnet" in rules) == internal
    assert (f"block out quick log on ${P}_nat_if from ${P}_subnet" in rules) == (internal and bool(nat))
    # upstream forgot this rule for internal + icc false + no nat; the other three rows match upstream
    assert (f"block out quick log on $kleenet_host_gw_if from ${P}_subnet" in rules) == (internal and not nat)
    assert any(r.startswith("nat on") for r in ruleset.translation) == (bool(nat) and not internal)
    assert f"block in log from any to ${P}_subnet6" in rules  # the IPv6 family gets the same rules
    loads(ruleset)


def test_no_default_route_no_undefined_macro():
    """B16: `$kleenet_host_gw_if` without its macro made pf refuse the whole ruleset."""
    ruleset = pf.render([net(internal=True, nat="")], [])
    assert not any("kleenet_host_gw_if" in r for r in ruleset.filtering)
    loads(ruleset)
    broken = pf.Ruleset(macros=[], translation=[], filtering=["block out quick log on $kleenet_host_gw_if from any"])
    with pytest.raises(PfError, match="macro 'kleenet_host_gw_if' not defined"):
        parse(broken.text())


def test_nat_for_a_bridge_without_an_address():
    """§3.4: `(if:network)` matched nothing on a bridge with gateway "", so vnet traffic had no NAT."""
    ruleset = pf.render([net(type="bridge", subnet6="fd00::/64")], [])
    assert ruleset.translation == [f"nat on ${P}_nat_if inet from ${P}_subnet to any -> (${P}_nat_if)",
                                   f"nat on ${P}_nat_if inet6 from ${P}_subnet6 to any -> (${P}_nat_if)"]


# --- rendering -------------------------------------------------------------------------------------


def test_rendering_keeps_markers_and_is_deterministic():
    ruleset = pf.render([net("b", id="b" * 12, interface="kleene1"), net("a")], [port()], host_gateway="em0")
    text = pf.render_template(pf.DEFAULT_TEMPLATE, ruleset)
    again = pf.render_template(pf.DEFAULT_TEMPLATE, pf.render([net("a"), net("b", id="b" * 12, interface="kleene1")],
                                                              [port()], host_gateway="em0"))
    assert text == again
    for marker in ("### KLEENED MACROS START ###", "### KLEENED TRANSLATION RULES END #####",
                   "### KLEENED FILTERING RULES END #######"):
        assert marker in text
    assert "<%" not in text
    empty = pf.render_template(pf.DEFAULT_TEMPLATE, pf.Ruleset([], [], []))
    assert "### KLEENED TRANSLATION RULES START ###\n\n### KLEENED TRANSLATION RULES END" in empty
    parse(empty)


def test_a_users_template_with_own_rules_keeps_working():
    template = ('ext_if = "em0"\nset block-policy drop\nset skip on lo0\nscrub in on $ext_if all fragment reassemble\n'
                + pf.DEFAULT_TEMPLATE + "block log all\npass in quick on $ext_if proto tcp to port 22 keep state\n")
    text = pf.render_template(template, pf.render([net()], [port()], host_gateway="em0"))
    parse(text)


@pytest.mark.parametrize("bad", [
    pf.DEFAULT_TEMPLATE.replace("<%= kleene_filtering %>", ""),
    pf.DEFAULT_TEMPLATE + "<%= kleene_macros %>\n",
    pf.DEFAULT_TEMPLATE + '<%= System.cmd("rm", ["-rf", "/"]) %>\n',
    pf.DEFAULT_TEMPLATE + "<% x = 1 %>\n",
])
def test_templates_are_filled_as_text_never_run(bad):
    """B18: upstream evaluated the template as Elixir code."""
    with pytest.raises(pf.TemplateError):
        pf.render_template(bad, pf.render([], []))


def test_anchor_mode():
    assert pf.anchor_hooks("kleened") == ['nat-anchor "kleened"', 'rdr-anchor "kleened"', 'anchor "kleened"']
    host = 'ext_if = "em0"\n' + "\n".join(pf.anchor_hooks("kleened")) + "\npass all\n"
    assert [r.kind for r in parse(host)] == ["nat-anchor", "rdr-anchor", "anchor", "filter"]
    assert pf.load_anchor_argv("kleened") == ["pfctl", "-a", "kleened", "-f", "-"]
    assert pf.flush_anchor_argv("kleened") == ["pfctl", "-a", "kleened", "-F", "all"]
    assert pf.has_hooks('anchor "kleened" all\n', 'nat-anchor "kleened" all\nrdr-anchor "kleened" all\n', "kleened")
    assert not pf.has_hooks("pass all\n", 'nat-anchor "kleened" all\n', "kleened")


# --- the parser refuses what pfctl refuses ---------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("pass quick on em0 inet proto tcp from any to 10.0.0.1 port 80:*\n", "syntax error"),  # `*` only in rdr
    ("pass quick on em0 inet proto tcp from any to 10.0.0.1 port 70000\n", "illegal port value 70000"),
    ("rdr on em0 inet proto tcp from any to (em0) port 80 -> fd00::1 port 80\n",
     "no translation address with matching address family found."),
    ("pass in inet from any to fd00::1\n", "rule expands to no valid combination"),
    ("pass all\nnat on em0 from 10.0.0.0/24 to any -> (em0)\n", ORDER_MESSAGE),
    ("pass on $nope\n", "macro 'nope' not defined"),
    ("pass quick on { em0, } from any to any\n", "syntax error"),
    ("pasz all\n", "syntax error"),
    ("block in log from any to 10.0.0.0/33\n", "syntax error"),
])
def test_the_parser_refuses(text, message):
    with pytest.raises(PfError) as info:
        parse(text)
    assert info.value.message == message


def test_a_corrupted_ruleset_is_refused():
    text = pf.render([net()], [port()]).text().replace("from any", "frm any", 1)
    with pytest.raises(PfError, match="syntax error"):
        parse(text)
