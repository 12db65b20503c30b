"""Networking: the start latency of a vnet container (its own namespace, a veth into a bridge,
an address) against a host-network one, and TCP throughput from the host to a container over
the veth against the same transfer over the host's loopback (the floor), in one run.

The receiver is the same program both times (busybox `nc -l` into /dev/null), so only the path
differs. Traffic stays on this machine: the bridge and the container's namespace are the
benchmark's own.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from typing import Any

from bench.common import bench_daemon, measure, summary
from tests.wsapi import create_image, exec_stream

PAYLOAD_MB = 256
PORT = 5001


def _run_container(api: Any, daemon: Any, image: str, driver: str, network: str | None) -> None:
    cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/true"],
                                               "network_driver": driver}).json()["id"]
    if network:
        r = api.post("/networks/connect", json={"container": cid, "network": network, "ip_address": "<auto>",
                                                "ip_address6": ""})
        assert r.status_code == 204, r.text
    eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    stream = exec_stream(daemon, eid)
    assert stream.close_reason["message"].endswith("exit-code 0"), stream
    api.delete(f"/containers/{cid}")


def _send(host: str, port: int, megabytes: int, timeout: float = 10) -> float:
    """Connect (retrying while the receiver starts), send, close; return MB/s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    chunk = b"x" * (1 << 20)
    with sock:
        t0 = time.perf_counter()
        for _ in range(megabytes):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait for the receiver to have read everything and closed
        return megabytes / (time.perf_counter() - t0)


def run(runs: int = 20) -> dict[str, object]:
    results: dict[str, object] = {}
    with bench_daemon() as daemon, daemon.client() as api:
        image = create_image(daemon, tag="benchnet")
        byte = int(daemon.prefix[-2:], 16) % 200 + 20
        name = f"bench{secrets.token_hex(3)}"
        r = api.post("/networks/create", json={"name": name, "type": "bridge", "subnet": f"10.{byte}.250.0/24",
                                               "gateway": "<auto>", "gateway6": "", "subnet6": "", "nat": "",
                                               "icc": True, "internal": False, "interface": ""})
        assert r.status_code == 201, r.text
        try:
            host_times = measure(lambda: _run_container(api, daemon, image, "host", None), runs)
            vnet_times = measure(lambda: _run_container(api, daemon, image, "vnet", name), runs)
            results["start_latency"] = {"host": summary(host_times), "vnet": summary(vnet_times),
                                        "vnet_over_host": round(summary(vnet_times)["median_ms"]
                                                                / summary(host_times)["median_ms"], 2)}

            floor = subprocess.Popen(["busybox", "nc", "-l", "-p", str(PORT)], stdout=subprocess.DEVNULL)
            try:
                loopback = _send("127.0.0.1", PORT, PAYLOAD_MB)
            finally:
                floor.wait(10)
            cid = api.post("/containers/create", json={
                "image": image, "network_driver": "vnet",
                "cmd": ["/bin/sh", "-c", f"nc -l -p {PORT} > /dev/null"]}).json()["id"]
            api.post("/networks/connect", json={"container": cid, "network": name, "ip_address": "<auto>",
                                                "ip_address6": ""})
            eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
            exec_stream(daemon, eid, attach=False)
            address = api.get(f"/containers/{cid}/inspect").json()["container_endpoints"][0]["ip_address"]
            veth = _send(address, PORT, PAYLOAD_MB)
            api.post(f"/containers/{cid}/stop")
            api.delete(f"/containers/{cid}")
            results["tcp_throughput_mb_s"] = {"host_loopback": round(loopback, 1), "host_to_container": round(veth, 1),
                                              "ratio": round(veth / loopback, 2), "payload_mb": PAYLOAD_MB}
        finally:
            api.delete(f"/networks/{name}")
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
