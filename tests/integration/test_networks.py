"""Networks against a real kleened: the REST API with upstream's statuses and messages, address
allocation, and what appears on (and disappears from) the host: bridges, namespaces, veths, the
nft table.

Traffic stays on this host: containers talk to each other, to the host's 127.0.0.1, and to an
"outside" namespace the tests create (a veth the NAT rules point at). Nothing is ever sent to an
external address.

Two parts:
- the first needs only the networks service (CRUD, validation, allocation on stopped
  containers, host interfaces, the table, restart and prune on daemons of their own);
- the tests named `test_wired_*` run containers: they need `Networks.prepare/release/...` wired
  into container start, stop, inspect and removal (see docs/networking.md, "Wiring").
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.wsapi import create_image, exec_stream

_counter = itertools.count(1)


# --- helpers ------------------------------------------------------------------------------------


def ipj(*args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False).stdout
    return json.loads(out) if out.strip() else []


def link(name: str) -> dict | None:
    found = ipj("-d", "link", "show", "dev", name)
    return found[0] if found else None


def addresses(name: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for e in ipj("addr", "show", "dev", name) for a in e["addr_info"]
            if a.get("scope") != "link"}


def nft_table(prefix: str) -> str:
    out = subprocess.run(["nft", "list", "table", "inet", prefix], capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else ""


def netns_of(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{prefix}-")) \
        if os.path.isdir("/run/netns") else []


def foreign_link(name: str) -> None:
    """An interface that is not the daemon's (this kernel has no dummy links: a veth pair)."""
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)


def owned_links(prefix: str) -> list[str]:
    return sorted(e["ifname"] for e in ipj("link", "show") if e.get("ifalias") == f"kleened:{prefix}")


def subnets(daemon: Daemon) -> tuple[str, str]:
    """A fresh IPv4 /24 and IPv6 /64 for this daemon (the prefix keeps two sessions apart)."""
    n = next(_counter)
    byte = int(daemon.prefix[-2:], 16) % 200 + 20
    return f"10.{byte}.{n}.0/24", f"fdaa:{byte:x}:{n:x}::/64"


def klee_network(name: str, **fields) -> dict:
    """What `klee network create` sends: every key."""
    return {"name": name, "type": "loopback", "gateway": "", "gateway6": "", "icc": True, "interface": "",
            "internal": False, "nat": "", "subnet": "", "subnet6": "", **fields}


@pytest.fixture
def nets(api) -> Iterator[list[str]]:
    """Networks a test created (by name); removed afterwards."""
    created: list[str] = []
    yield created
    for name in created:
        api.delete(f"/networks/{name}")


def create_net(api, nets: list[str], **fields) -> dict:
    name = fields.pop("name", None) or f"n{secrets.token_hex(3)}"
    r = api.post("/networks/create", json=klee_network(name, **fields))
    assert r.status_code == 201, r.text
    nets.append(name)
    inspect = api.get(f"/networks/{name}/inspect").json()
    assert inspect["network"]["id"] == r.json()["id"]
    return inspect["network"]


def create_error(api, **fields) -> tuple[int, str]:
    r = api.post("/networks/create", json=klee_network(f"bad{secrets.token_hex(3)}", **fields))
    return r.status_code, r.json().get("message", "")


# --- containers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"netbox:{secrets.token_hex(3)}")


@pytest.fixture
def containers(api) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for cid in created:
        api.post(f"/containers/{cid}/stop")
        api.delete(f"/containers/{cid}")


def container(api, image: str, created: list[str], driver: str = "vnet", cmd: list[str] | None = None,
              **config) -> str:
    body = {"image": image, "cmd": cmd or ["/bin/sleep", "300"], "network_driver": driver, **config}
    r = api.post("/containers/create", json=body)
    assert r.status_code == 201, r.text
    created.append(r.json()["id"])
    return r.json()["id"]


def connect(api, network: str, cid: str, ip: str = "<auto>", ip6: str = "<auto>"):
    return api.post("/networks/connect", json={"container": cid, "network": network, "ip_address": ip,
                                               "ip_address6": ip6})


def endpoint(api, network: str, cid: str) -> dict:
    eps = api.get(f"/networks/{network}/inspect").json()["network_endpoints"]
    return next(e for e in eps if e["container_id"] == cid)


def exec_create(api, cid: str, cmd: list[str]) -> str:
    r = api.post("/exec/create", json={"container_id": cid, "cmd": cmd})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start(api, daemon, cid: str) -> None:
    stream = exec_stream(daemon, exec_create(api, cid, []), attach=False, start_container=True)
    assert stream.close_code == 1001, stream


def run_in(api, daemon, cid: str, cmd: list[str], timeout: float = 30) -> tuple[str, int]:
    """Run `cmd` in the running container; (output, exit code)."""
    stream = exec_stream(daemon, exec_create(api, cid, cmd), start_container=False, timeout=timeout)
    assert stream.close_reason is not None, stream
    return stream.text, int(stream.close_reason["message"].rsplit(" ", 1)[1])


def fetch(api, daemon, cid: str, url: str, tries: int = 20) -> tuple[str, int]:
    """`wget` from inside `cid`; retried while the server may still be starting."""
    for _ in range(tries):
        text, code = run_in(api, daemon, cid, ["timeout", "2", "wget", "-q", "-O", "-", url])
        if code == 0:
            return text, code
        time.sleep(0.1)
    return text, code


def server_cmd(body: str, ports: tuple[int, ...] = (8000,)) -> list[str]:
    """Serve `body` over HTTP on `ports` (busybox httpd; the last one in the foreground)."""
    serve = " && ".join(f"httpd -p {p} -h /tmp/www" for p in ports[:-1])
    script = f"mkdir -p /tmp/www && echo {body} > /tmp/www/index.html"
    script += f" && {serve}" if serve else ""
    return ["/bin/sh", "-c", f"{script} && exec httpd -f -p {ports[-1]} -h /tmp/www"]


def url(address: str, port: int = 8000) -> str:
    return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"


# --- CRUD and validation --------------------------------------------------------------------------


def test_loopback_network_lifecycle(api, daemon, nets):
    subnet, _ = subnets(daemon)
    interface = f"{daemon.prefix}lo"
    net = create_net(api, nets, name=f"lo{secrets.token_hex(2)}", interface=interface, subnet=subnet,
                     gateway="<auto>", gateway6="<auto>")
    assert {k: net[k] for k in ("type", "interface", "subnet", "gateway", "gateway6", "nat")} == {
        "type": "loopback", "interface": interface, "subnet": subnet, "gateway": "<auto>", "gateway6": "<auto>",
        "nat": ""}  # gateways are stored verbatim and ignored on loopback networks
    host_link = link(interface)
    assert host_link is not None and host_link["linkinfo"]["info_kind"] == "bridge"
    assert host_link["ifalias"] == f"kleened:{daemon.prefix}"
    assert addresses(interface) == set()  # no gateway on a loopback network: .1 goes to a container
    assert subnet in nft_table(daemon.prefix)
    assert api.get("/networks/list").json() == sorted(api.get("/networks/list").json(), key=lambda n: n["name"])
    assert api.delete(f"/networks/{net['name']}").json() == {"id": net["id"]}
    assert link(interface) is None and subnet not in nft_table(daemon.prefix)
    r = api.delete(f"/networks/{net['name']}")
    assert (r.status_code, r.json()) == (404, {"message": "network not found."})


def test_bridge_with_auto_gateways(api, daemon, nets):
    subnet, subnet6 = subnets(daemon)
    net = create_net(api, nets, type="bridge", subnet=subnet, subnet6=subnet6, gateway="<auto>",
                     gateway6="<auto>", nat="<host-gateway>")
    base, base6 = subnet.split("/")[0], subnet6.split("/")[0]
    gateway, gateway6 = base[:-1] + "1", base6 + "1"
    assert (net["gateway"], net["gateway6"]) == (gateway, gateway6)
    assert net["interface"].startswith(daemon.prefix) and net["interface"][len(daemon.prefix):].isdigit()
    host_gw = ipj("-4", "route", "show", "default")
    assert net["nat"] == (host_gw[0]["dev"] if host_gw else "")
    assert addresses(net["interface"]) == {f"{gateway}/24", f"{gateway6}/64"}
    table = nft_table(daemon.prefix)
    if net["nat"]:
        assert f'ip saddr {subnet} oifname "{net["nat"]}" masquerade' in table
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"


def test_auto_interface_names_skip_used_ones(api, daemon, nets):
    first = create_net(api, nets, subnet=subnets(daemon)[0])
    second = create_net(api, nets, subnet=subnets(daemon)[0])
    numbers = [int(n["interface"][len(daemon.prefix):]) for n in (first, second)]
    assert numbers[0] != numbers[1]


def test_custom_network_keeps_its_interface(api, daemon, nets):
    dummy = f"{daemon.prefix}cu"
    foreign_link(dummy)
    try:
        net = create_net(api, nets, type="custom", interface=dummy, subnet=subnets(daemon)[0])
        assert net["interface"] == dummy
        assert api.delete(f"/networks/{net['id']}").status_code == 200
        assert link(dummy) is not None  # never destroyed: not ours
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False)
    assert create_error(api, type="custom", interface=f"{daemon.prefix}none") == (
        409, f"interface '{daemon.prefix}none' does not exist")


def test_existing_interface_is_never_taken_over(api, daemon):
    dummy = f"{daemon.prefix}x9"
    foreign_link(dummy)
    try:
        assert create_error(api, type="bridge", interface=dummy) == (
            409, f"interface '{dummy}' already exists and was not created by kleened")
        assert link(dummy)["linkinfo"]["info_kind"] == "veth"
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False)


def test_validation_messages(api, daemon, nets):
    net = create_net(api, nets)
    r = api.post("/networks/create", json=klee_network(net["name"]))
    assert (r.status_code, r.json()) == (409, {"message": "network name is already taken"})
    assert create_error(api, subnet="172.18.0.0-16") == (
        409, 'invalid subnet: could not parse cidr block: "172.18.0.0-16"')
    assert create_error(api, subnet6="10.0.0.0/24") == (409, "invalid subnet6: wrong IP protocol")
    assert create_error(api, gateway6="10.0.0.1") == (409, "invalid gateway6: wrong IP protocol")
    assert create_error(api, subnet="fdef::/64") == (409, "invalid subnet: wrong IP protocol")
    assert create_error(api, gateway="fdef::1") == (409, "invalid gateway: wrong IP protocol")
    taken = create_net(api, nets, subnet=subnets(daemon)[0])
    assert create_error(api, subnet=taken["subnet"])[0] == 409  # overlapping subnets are refused
    r = api.post("/networks/create", json=klee_network("long", interface="x" * 16))
    assert r.status_code == 422
    r = api.get("/networks/notexist/inspect")
    assert (r.status_code, r.json()) == (404, {"message": "network not found"})


def test_connect_errors_without_containers(api, daemon, nets):
    net = create_net(api, nets)
    r = connect(api, net["name"], "nosuchcontainer")
    assert (r.status_code, r.json()) == (404, {"message": "container not found"})
    r = api.post("/networks/nosuchnet/disconnect/nosuchcontainer")
    assert (r.status_code, r.json()) == (404, {"message": "container not found"})


# --- allocation (stopped containers) ------------------------------------------------------------


def test_loopback_allocation_and_exhaustion(api, daemon, nets, image, containers):
    """A loopback /30 admits exactly three containers: .1, .2 and .3 (upstream's rule)."""
    byte = int(daemon.prefix[-2:], 16) % 200 + 20
    net = create_net(api, nets, subnet=f"10.{byte}.254.0/30")
    got = []
    for _ in range(3):
        cid = container(api, image, containers, driver="ipnet")
        assert connect(api, net["name"], cid).status_code == 204
        got.append(endpoint(api, net["name"], cid))
    assert [e["ip_address"] for e in got] == [f"10.{byte}.254.{i}" for i in (1, 2, 3)]
    assert all(e["epair"] is None and e["ip_address6"] == "" and e["network_id"] == net["id"] for e in got)
    fourth = container(api, image, containers, driver="ipnet")
    r = connect(api, net["name"], fourth)
    assert (r.status_code, r.json()) == (409, {"message": "no more inet IP's left in the network"})
    assert api.post(f"/networks/{net['name']}/disconnect/{got[1]['container_id']}").status_code == 204
    assert connect(api, net["name"], fourth).status_code == 204
    assert endpoint(api, net["name"], fourth)["ip_address"] == f"10.{byte}.254.2"  # freed and reused


def test_bridge_allocation_with_auto_and_manual_gateways(api, daemon, nets, image, containers):
    subnet, subnet6 = subnets(daemon)
    base, base6 = subnet.split("/")[0][:-1], subnet6.split("/")[0]
    auto = create_net(api, nets, type="bridge", subnet=subnet, subnet6=subnet6, gateway="<auto>",
                      gateway6="<auto>")
    ipnet, vnet = container(api, image, containers, "ipnet"), container(api, image, containers, "vnet")
    assert connect(api, auto["name"], ipnet).status_code == 204
    assert connect(api, auto["name"], vnet).status_code == 204
    assert (endpoint(api, auto["name"], ipnet)["ip_address"], endpoint(api, auto["name"], ipnet)["ip_address6"]) \
        == (base + "2", base6 + "2")
    assert endpoint(api, auto["name"], vnet)["ip_address"] == base + "3"
    subnet, subnet6 = subnets(daemon)
    base = subnet.split("/")[0][:-1]
    manual = create_net(api, nets, type="bridge", subnet=subnet, subnet6=subnet6, gateway=base + "99",
                        gateway6="")
    assert addresses(manual["interface"]) == set()  # a manual gateway is the containers' router, not ours
    assert connect(api, manual["name"], ipnet).status_code == 204
    assert connect(api, manual["name"], vnet, ip=base + "50", ip6="").status_code == 204
    assert endpoint(api, manual["name"], ipnet)["ip_address"] == base + "1"
    assert endpoint(api, manual["name"], vnet)["ip_address"] == base + "50"
    assert endpoint(api, manual["name"], vnet)["ip_address6"] == ""
    r = connect(api, manual["name"], container(api, image, containers, "ipnet"), ip=base + "50")
    assert (r.status_code, r.json()["message"]) == (409, f"ip address {base}50 is already in use in the network")


def test_driver_rules_and_connect_messages(api, daemon, nets, image, containers):
    loopback = create_net(api, nets)  # no subnets at all
    bridge = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0])
    for driver in ("host", "disabled"):
        cid = container(api, image, containers, driver)
        for net in (loopback, bridge):
            r = connect(api, net["name"], cid)
            assert (r.status_code, r.json()["message"]) == (
                409, f"containers with the '{driver}' network-driver cannot connect to networks.")
    vnet = container(api, image, containers, "vnet")
    r = connect(api, loopback["name"], vnet)
    assert r.json()["message"] == "containers using the 'vnet' network-driver can't connect to loopback networks"
    ipnet = container(api, image, containers, "ipnet")
    r = connect(api, loopback["name"], ipnet, ip="10.56.78.2")
    assert (r.status_code, r.json()["message"]) == (
        409, "cannot set ip address because there is no IPv4 subnet defined for this network")
    r = connect(api, loopback["name"], ipnet, ip="", ip6="fd00::2")
    assert r.json()["message"] == "cannot set ip address because there is no IPv6 subnet defined for this network"
    assert connect(api, loopback["name"], ipnet).status_code == 204  # <auto> without a subnet: no address
    assert endpoint(api, loopback["name"], ipnet)["ip_address"] == ""
    r = connect(api, loopback["name"], ipnet)
    assert (r.status_code, r.json()["message"]) == (409, "container already connected to the network")
    r = connect(api, "nosuchnet", ipnet)
    assert (r.status_code, r.json()["message"]) == (404, "network not found")
    assert api.post(f"/networks/{loopback['name']}/disconnect/{ipnet}").status_code == 204
    r = api.post(f"/networks/{loopback['name']}/disconnect/{ipnet}")
    assert (r.status_code, r.json()["message"]) == (404, "endpoint configuration not found")
    r = api.post("/containers/create", json={"image": image, "network_driver": "host", "public_ports": [
        {"interfaces": [], "host_port": "8080", "container_port": "80", "protocol": "tcp"}]})
    assert r.json()["message"] == "cannot publish ports of a container using the 'host' network driver"


def test_wired_removing_a_network_disconnects_its_containers(api, daemon, nets, image, containers):
    net = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0])
    cid = container(api, image, containers, "vnet")
    assert connect(api, net["name"], cid).status_code == 204
    assert api.delete(f"/networks/{net['name']}").status_code == 200
    assert link(net["interface"]) is None
    assert api.get(f"/containers/{cid}/inspect").json()["container_endpoints"] == []


# --- daemons of their own: prune, restart, shutdown ------------------------------------------------


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-net-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def test_prune_removes_only_unused_networks(own_daemon):
    image = create_image(own_daemon)
    with own_daemon.client() as api:
        unused = api.post("/networks/create", json=klee_network("unused", type="bridge")).json()["id"]
        used = api.post("/networks/create", json=klee_network("used", subnet=subnets(own_daemon)[0])).json()["id"]
        cid = api.post("/containers/create", json={"image": image, "network_driver": "ipnet"}).json()["id"]
        assert connect(api, "used", cid).status_code == 204
        assert api.post("/networks/prune").json() == [unused]
        assert [n["id"] for n in api.get("/networks/list").json()] == [used]


def test_restart_recreates_what_the_store_needs_and_removes_the_rest(own_daemon):
    prefix = own_daemon.prefix
    subnet = subnets(own_daemon)[0]
    gateway = subnet.replace(".0/24", ".1/24")
    with own_daemon.client() as api:
        net = api.post("/networks/create", json=klee_network("keep", type="bridge", subnet=subnet,
                                                             gateway="<auto>")).json()
        interface = api.get(f"/networks/{net['id']}/inspect").json()["network"]["interface"]
    own_daemon.stop()
    assert link(interface) is None and nft_table(prefix) == "" and owned_links(prefix) == []  # clean shutdown
    stale, foreign = f"{prefix}77", f"{prefix}78"
    subprocess.run(["ip", "link", "add", stale, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", "dev", stale, "alias", f"kleened:{prefix}"], check=True)
    foreign_link(foreign)
    try:
        own_daemon.start()
        assert addresses(interface) == {gateway}
        assert subnet in nft_table(prefix)
        assert link(stale) is None  # ours, owned by no network
        assert link(foreign) is not None  # not ours
        subprocess.run(["ip", "link", "del", interface], check=True)  # as upstream's test destroys kleene0
        own_daemon.stop()
        own_daemon.start()
        assert addresses(interface) == {gateway}
    finally:
        subprocess.run(["ip", "link", "del", foreign], check=False)
        subprocess.run(["ip", "link", "del", stale], check=False)


def test_wired_sighup_reapplies_the_table(own_daemon):
    subnet = subnets(own_daemon)[0]
    with own_daemon.client() as api:
        api.post("/networks/create", json=klee_network("hup", subnet=subnet))
    subprocess.run(["nft", "delete", "table", "inet", own_daemon.prefix], check=True)  # a firewall reload
    own_daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while subnet not in nft_table(own_daemon.prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert subnet in nft_table(own_daemon.prefix)


# --- running containers (need Networks wired into container start/stop) ----------------------------


def test_wired_vnet_containers_talk_over_a_bridge(api, daemon, nets, image, containers):
    subnet, subnet6 = subnets(daemon)
    net = create_net(api, nets, type="bridge", subnet=subnet, subnet6=subnet6, gateway="<auto>",
                     gateway6="<auto>")
    server = container(api, image, containers, "vnet", server_cmd("from-server"))
    client = container(api, image, containers, "vnet")
    for cid in (server, client):
        assert connect(api, net["name"], cid).status_code == 204
        start(api, daemon, cid)
    ep = endpoint(api, net["name"], server)
    assert ep["epair"] and link(ep["epair"])["master"] == net["interface"]
    assert fetch(api, daemon, client, url(ep["ip_address"]))[0] == "from-server\n"
    assert fetch(api, daemon, client, url(ep["ip_address6"]))[0] == "from-server\n"
    routes, _ = run_in(api, daemon, client, ["ip", "route"])
    assert f"default via {net['gateway']}" in routes
    inspect = api.get(f"/containers/{server}/inspect").json()
    assert inspect["container_endpoints"] == [ep]
    assert api.post(f"/containers/{server}/stop").status_code == 200
    assert endpoint(api, net["name"], server)["epair"] is None
    assert _wait_gone(ep["epair"])
    assert f"{daemon.prefix}-{server}" not in netns_of(daemon.prefix)


def _wait_gone(name: str, timeout: float = 2) -> bool:
    deadline = time.monotonic() + timeout
    while link(name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return link(name) is None


def test_wired_ipnet_on_loopback_reaches_peers_and_the_host(api, daemon, nets, image, containers):
    net = create_net(api, nets, subnet=subnets(daemon)[0])
    server = container(api, image, containers, "ipnet", server_cmd("lo-server"))
    client = container(api, image, containers, "ipnet")
    for cid in (server, client):
        assert connect(api, net["name"], cid).status_code == 204
        start(api, daemon, cid)
    ip = endpoint(api, net["name"], server)["ip_address"]
    assert ip.endswith(".1")  # no gateway on loopback networks
    assert fetch(api, daemon, client, url(ip))[0] == "lo-server\n"
    with urllib.request.urlopen(url(ip), timeout=5) as r:  # the host reaches containers
        assert r.read() == b"lo-server\n"
    addrs, _ = run_in(api, daemon, client, ["ip", "-o", "addr"])
    assert " lo " in addrs and "eth0" in addrs


def test_wired_isolation_icc_and_published_ports(api, daemon, nets, image, containers):
    published = 20000 + secrets.randbelow(20000)
    closed = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>", icc=False)
    other = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>")
    ports = [{"interfaces": [], "host_port": str(published), "container_port": "8000", "protocol": "tcp"},
             {"interfaces": [], "host_port": f"{published + 1}:{published + 3}", "container_port": "7000:*",
              "protocol": "tcp"}]
    server = container(api, image, containers, "vnet", server_cmd("pub", (8001, 7001, 8000)), public_ports=ports)
    neighbour = container(api, image, containers, "vnet")
    stranger = container(api, image, containers, "vnet")
    for cid, net in ((server, closed), (neighbour, closed), (stranger, other)):
        assert connect(api, net["name"], cid).status_code == 204
        start(api, daemon, cid)
    ip = endpoint(api, closed["name"], server)["ip_address"]
    assert fetch(api, daemon, stranger, url(ip))[0] == "pub\n"  # published: open across networks
    assert fetch(api, daemon, neighbour, url(ip))[0] == "pub\n"  # and inside an icc=false network
    with urllib.request.urlopen(url(ip, 8001), timeout=5) as r:  # it serves (the host reaches it)...
        assert r.read() == b"pub\n"
    assert fetch(api, daemon, stranger, url(ip, 8001), tries=1)[1] != 0  # ...but not published: isolated
    assert fetch(api, daemon, neighbour, url(ip, 8001), tries=1)[1] != 0  # icc=false
    with urllib.request.urlopen(f"http://127.0.0.1:{published}/", timeout=5) as r:
        assert r.read() == b"pub\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{published + 2}/", timeout=5) as r:  # 7000:* -> 7001
        assert r.read() == b"pub\n"
    ports_seen = api.get(f"/containers/{server}/inspect").json()["container"]["public_ports"]
    assert ports_seen[0]["ip_address"] == ip


@pytest.fixture
def outside(daemon, tmp_path) -> Iterator[dict]:
    """A namespace standing for the world beyond the NAT interface, with a CGI that echoes the
    client address. Local to this host."""
    byte = int(daemon.prefix[-2:], 16) % 200 + 20
    ns, veth = f"{daemon.prefix}out", f"{daemon.prefix}o"
    host, far = f"10.{byte}.250.1", f"10.{byte}.250.2"
    www = tmp_path / "www"
    (www / "cgi-bin").mkdir(parents=True)
    script = www / "cgi-bin" / "addr"
    script.write_text('#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n')
    script.chmod(0o755)
    for argv in (["ip", "netns", "add", ns], ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                                                 "netns", ns],
                 ["ip", "addr", "add", f"{host}/24", "dev", veth], ["ip", "link", "set", veth, "up"],
                 ["ip", "-n", ns, "addr", "add", f"{far}/24", "dev", "eth0"],
                 ["ip", "-n", ns, "link", "set", "eth0", "up"], ["ip", "-n", ns, "link", "set", "lo", "up"]):
        subprocess.run(argv, check=True)
    httpd = subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "9000", "-h", str(www)])
    try:
        yield {"ns": ns, "veth": veth, "host": host, "far": far, "url": f"http://{far}:9000/cgi-bin/addr"}
    finally:
        httpd.kill()
        httpd.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", veth], check=False)


def client_address(cgi_output: str) -> str:
    """busybox httpd shows IPv4 clients as `[::ffff:a.b.c.d]`."""
    return cgi_output.strip().removeprefix("[").removesuffix("]").removeprefix("::ffff:")


def test_wired_nat_masquerades_towards_the_nat_interface(api, daemon, nets, image, containers, outside):
    natted = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>", nat=outside["veth"])
    plain = create_net(api, nets, subnet=subnets(daemon)[0], nat="")
    internal = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>",
                          nat=outside["veth"], internal=True)
    a = container(api, image, containers, "vnet")
    b = container(api, image, containers, "ipnet")
    c = container(api, image, containers, "vnet")
    for cid, net in ((a, natted), (b, plain), (c, internal)):
        assert connect(api, net["name"], cid).status_code == 204
        start(api, daemon, cid)
    subprocess.run(["ip", "-n", outside["ns"], "route", "add", "default", "via", outside["host"]], check=True)
    assert client_address(fetch(api, daemon, a, outside["url"])[0]) == outside["host"]  # masqueraded
    assert client_address(fetch(api, daemon, b, outside["url"])[0]) == endpoint(api, plain["name"], b)["ip_address"]
    assert fetch(api, daemon, c, outside["url"], tries=1)[1] != 0  # internal: no way out


def test_wired_published_port_from_the_outside(api, daemon, nets, image, containers, outside):
    published = 20000 + secrets.randbelow(20000)
    net = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>")
    ports = [{"interfaces": [outside["veth"]], "host_port": str(published), "container_port": "8000",
              "protocol": "tcp"}]
    server = container(api, image, containers, "vnet", server_cmd("outside-ok"), public_ports=ports)
    assert connect(api, net["name"], server).status_code == 204
    start(api, daemon, server)
    wget = ["ip", "netns", "exec", outside["ns"], "busybox", "timeout", "3", "wget", "-q", "-O", "-",
            f"http://{outside['host']}:{published}/"]
    for _ in range(20):
        out = subprocess.run(wget, capture_output=True, text=True, check=False)
        if out.returncode == 0:
            break
        time.sleep(0.1)
    assert out.stdout == "outside-ok\n"


def test_wired_hot_connect_and_disconnect(api, daemon, nets, image, containers):
    first = create_net(api, nets, subnet=subnets(daemon)[0])
    second = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>")
    ipnet = container(api, image, containers, "ipnet")
    vnet = container(api, image, containers, "vnet")
    assert connect(api, first["name"], ipnet).status_code == 204
    assert connect(api, second["name"], vnet).status_code == 204
    start(api, daemon, ipnet)
    start(api, daemon, vnet)
    r = connect(api, second["name"], vnet)
    assert (r.status_code, r.json()["message"]) == (409, "container already connected to the network")
    third = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0])
    r = connect(api, third["name"], vnet)
    assert (r.status_code, r.json()["message"]) == (409, "cannot connect a running vnet container to a network")
    assert connect(api, second["name"], ipnet).status_code == 204
    ep = endpoint(api, second["name"], ipnet)
    assert ep["epair"] is not None
    addrs, _ = run_in(api, daemon, ipnet, ["ip", "-o", "-4", "addr"])
    assert ep["ip_address"] in addrs and "eth1" in addrs
    assert api.post(f"/networks/{second['name']}/disconnect/{ipnet}").status_code == 204
    assert _wait_gone(ep["epair"])
    addrs, _ = run_in(api, daemon, ipnet, ["ip", "-o", "-4", "addr"])
    assert ep["ip_address"] not in addrs
    assert api.post(f"/networks/{second['name']}/disconnect/{vnet}").status_code == 204  # running vnet: allowed


def test_wired_hosts_file_names_peers(api, daemon, nets, image, containers):
    net = create_net(api, nets, subnet=subnets(daemon)[0])
    web = f"web{secrets.token_hex(3)}"
    server = container(api, image, containers, "ipnet", name=web)
    client = container(api, image, containers, "ipnet")
    for cid in (server, client):
        assert connect(api, net["name"], cid).status_code == 204
        start(api, daemon, cid)
    ip = endpoint(api, net["name"], server)["ip_address"]
    hosts, _ = run_in(api, daemon, client, ["cat", "/etc/hosts"])
    assert f"{ip}\t{web} {server}" in hosts.splitlines()
    renamed = f"new{secrets.token_hex(3)}"
    assert api.post(f"/containers/{server}/update", json={"name": renamed}).status_code == 201
    hosts, _ = run_in(api, daemon, client, ["cat", "/etc/hosts"])  # the running peer sees the change
    assert f"{ip}\t{renamed} {server}" in hosts.splitlines()
    assert api.post(f"/networks/{net['name']}/disconnect/{server}").status_code == 204
    hosts, _ = run_in(api, daemon, client, ["cat", "/etc/hosts"])
    assert server not in hosts


def test_wired_removal_rewrites_only_the_peers_hosts_files(api, daemon, nets, image, containers):
    """A removal rewrites the hosts files of the containers that shared a network with the
    removed one, and no other (a removal once rewrote every container's file)."""
    net = create_net(api, nets, subnet=subnets(daemon)[0])
    peer_name = f"peer{secrets.token_hex(3)}"
    watcher = container(api, image, containers, "ipnet")
    peer = container(api, image, containers, "ipnet", name=peer_name)
    loner = container(api, image, containers, "disabled")
    for cid in (watcher, peer):
        assert connect(api, net["name"], cid).status_code == 204
    start(api, daemon, watcher)
    hosts_file = daemon.state_root / "hosts" / watcher
    assert peer_name in hosts_file.read_text()
    with hosts_file.open("a") as f:
        f.write("# marker: gone when kleened rewrites the file\n")
    assert api.delete(f"/containers/{loner}").status_code == 200
    containers.remove(loner)
    assert "# marker" in hosts_file.read_text()  # it shared no network with the watcher
    assert api.delete(f"/containers/{peer}").status_code == 200
    containers.remove(peer)
    text = hosts_file.read_text()
    assert "# marker" not in text and peer_name not in text
    hosts, _ = run_in(api, daemon, watcher, ["cat", "/etc/hosts"])
    assert peer_name not in hosts


def test_wired_host_and_disabled_drivers(api, daemon, image, containers):
    disabled = container(api, image, containers, "disabled")
    start(api, daemon, disabled)
    links, _ = run_in(api, daemon, disabled, ["ip", "-o", "link"])
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    routes, _ = run_in(api, daemon, disabled, ["ip", "route"])
    assert routes.strip() == ""
    host = container(api, image, containers, "host")
    start(api, daemon, host)
    links, _ = run_in(api, daemon, host, ["ip", "-o", "link"])
    host_links = {e["ifname"] for e in ipj("link", "show")}
    assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} <= host_links | {"lo"}
    assert len(links.splitlines()) > 1


def test_wired_removal_frees_everything(api, daemon, nets, image, containers):
    net = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>")
    cid = container(api, image, containers, "vnet")
    assert connect(api, net["name"], cid).status_code == 204
    start(api, daemon, cid)
    ip = endpoint(api, net["name"], cid)["ip_address"]
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert api.delete(f"/containers/{cid}").status_code == 200
    containers.remove(cid)
    assert api.get(f"/networks/{net['name']}/inspect").json()["network_endpoints"] == []
    again = container(api, image, containers, "vnet")
    assert connect(api, net["name"], again).status_code == 204
    assert endpoint(api, net["name"], again)["ip_address"] == ip  # the address was freed
    assert api.delete(f"/networks/{net['name']}").status_code == 200
    nets.remove(net["name"])
    assert link(net["interface"]) is None
    assert f"{daemon.prefix}-{cid}" not in netns_of(daemon.prefix)
    assert not [n for n in owned_links(daemon.prefix) if n.startswith(f"{daemon.prefix}v")]


def test_wired_custom_networks_routed_and_bridged(api, daemon, nets, image, containers):
    """ipnet on a custom network: plugs are routed through the host when the interface is not a
    bridge, and join it when it is one; the interface is never changed or removed."""
    routed_if, bridge_if = f"{daemon.prefix}ro", f"{daemon.prefix}br"
    foreign_link(routed_if)
    subprocess.run(["ip", "link", "add", bridge_if, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge_if, "up"], check=True)
    try:
        for interface in (routed_if, bridge_if):
            subnet, subnet6 = subnets(daemon)
            net = create_net(api, nets, type="custom", interface=interface, subnet=subnet, subnet6=subnet6)
            server = container(api, image, containers, "ipnet", server_cmd(f"on-{interface}"))
            client = container(api, image, containers, "ipnet")
            for cid in (server, client):
                assert connect(api, net["name"], cid).status_code == 204
                start(api, daemon, cid)
            ep = endpoint(api, net["name"], server)
            assert ep["ip_address"].endswith(".1")
            assert link(ep["epair"]).get("master") == (bridge_if if interface == bridge_if else None)
            assert fetch(api, daemon, client, url(ep["ip_address"]))[0] == f"on-{interface}\n"
            assert fetch(api, daemon, client, url(ep["ip_address6"]))[0] == f"on-{interface}\n"
            for cid in (server, client):
                api.post(f"/containers/{cid}/stop")
            assert api.delete(f"/networks/{net['name']}").status_code == 200
            nets.remove(net["name"])
            assert link(interface) is not None
        assert ipj("neigh", "show", "proxy", "dev", routed_if) == []  # proxy ARP entries went with the plugs
    finally:
        subprocess.run(["ip", "link", "del", routed_if], check=False)
        subprocess.run(["ip", "link", "del", bridge_if], check=False)


def test_wired_sigkill_and_restart_restores_connectivity(own_daemon):
    """A kleened killed with SIGKILL leaves bridges, namespaces and its table behind; the next one
    reconciles them and its on-startup containers are reachable again by address and by name."""
    image = create_image(own_daemon)
    subnet = subnets(own_daemon)[0]
    with own_daemon.client() as api:
        net = create_net(api, [], type="bridge", subnet=subnet, gateway="<auto>")
        server = container(api, image, [], "vnet", server_cmd("after-restart"), name=f"srv{secrets.token_hex(2)}",
                           restart_policy="on-startup")
        client = container(api, image, [], "vnet", restart_policy="on-startup")
        for cid in (server, client):
            assert connect(api, net["name"], cid).status_code == 204
            start(api, own_daemon, cid)
        server_name = api.get(f"/containers/{server}/inspect").json()["container"]["name"]
        assert fetch(api, own_daemon, client, url(server_name))[0] == "after-restart\n"
    own_daemon.kill()
    own_daemon.start()
    with own_daemon.client() as api:
        deadline = time.monotonic() + 15
        while not all(api.get(f"/containers/{c}/inspect").json()["container"]["running"] for c in (server, client)):
            assert time.monotonic() < deadline, "on-startup containers did not come back"
            time.sleep(0.1)
        address = endpoint(api, net["name"], server)["ip_address"]
        assert fetch(api, own_daemon, client, url(address))[0] == "after-restart\n"
        assert fetch(api, own_daemon, client, url(server_name))[0] == "after-restart\n"
        for cid in (server, client):
            api.post(f"/containers/{cid}/stop")
            api.post(f"/containers/{cid}/update", json={"restart_policy": "no"})
            api.delete(f"/containers/{cid}")
        api.delete(f"/networks/{net['name']}")


def get_url(address: str, tries: int = 50) -> bytes:
    """GET from the host, retried while the server may still be starting (connection refused)."""
    for _ in range(tries):
        try:
            with urllib.request.urlopen(address, timeout=5) as r:
                return r.read()
        except (ConnectionRefusedError, urllib.error.URLError):
            time.sleep(0.1)
    raise AssertionError(f"nothing answers at {address}")


def test_wired_a_published_port_belongs_to_one_running_container(api, daemon, nets, image, containers):
    """Issue reproduction: two containers with `-p P:P` were both accepted, the first got all the
    traffic, and after it stopped P timed out (its rule stayed first in the table)."""
    port = 20000 + secrets.randbelow(20000)
    net = create_net(api, nets, type="bridge", subnet=subnets(daemon)[0], gateway="<auto>")
    published = [{"interfaces": [], "host_port": str(port), "container_port": "8000", "protocol": "tcp"}]
    first = container(api, image, containers, "vnet", server_cmd("first"), public_ports=published)
    second = container(api, image, containers, "vnet", server_cmd("second"), public_ports=published)
    for cid in (first, second):
        assert connect(api, net["name"], cid).status_code == 204
    start(api, daemon, first)
    assert get_url(f"http://127.0.0.1:{port}/") == b"first\n"
    r = api.post("/exec/create", json={"container_id": second, "cmd": []})
    stream = exec_stream(daemon, r.json()["id"], attach=False, start_container=True)
    assert stream.close_code == 1011 and "port is already allocated" in stream.close_reason["data"], stream
    r = api.post("/containers/create", json={"image": image, "network_driver": "vnet", "public_ports": published})
    assert r.status_code == 409 and "port is already allocated" in r.json()["message"], r.text
    assert api.post(f"/containers/{first}/stop").status_code == 200
    assert f"{port}" not in nft_table(daemon.prefix)  # rules exist only while their container runs
    start(api, daemon, second)
    assert get_url(f"http://127.0.0.1:{port}/") == b"second\n"
    assert api.post(f"/containers/{second}/stop").status_code == 200
    start(api, daemon, first)  # restored at start
    assert get_url(f"http://127.0.0.1:{port}/") == b"first\n"
