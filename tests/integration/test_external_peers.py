"""Routers outside the fleet (calico_bgp_peers) against a real FRR: the data centre's router.

inventories/lab (three hosts in full mesh) with calico_bgp_peers set in group_vars/all: every host peers with
one router (FRR's zebra and bgpd, configured by hand here, not by the collection) in a namespace of its own on
the lab's segment; host-c (host_vars) with the router's loopback instead, over two hops (multihop: its next hop
resolves through host-c's static route to that loopback). The router announces a default route, an outside
prefix (198.51.100.0/24, its address 198.51.100.1 on lo: this kernel has no dummy interfaces) and, as a
misconfigured router would, a /32 inside host-b's block and a free block of the pool. Every host takes the
default route and the outside prefix, nothing else; the router learns exactly each host's block from that
host; a workload reaches 198.51.100.1; a second site.yml changes nothing.

The lab gives every host a default route via the lab's router: it is removed first, as on a host that takes
its default route from BGP (BIRD never replaces a route it did not make).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

import pytest
from netfleet_lab import REPO, Lab, alive, namespaces, ns_json, sh

pytestmark = pytest.mark.lab

ROUTER_IP = "192.168.100.250"
ROUTER_AS = 65000
OUTSIDE = "198.51.100.0/24"
OUTSIDE_IP = "198.51.100.1"
LOOPBACK_IP = "10.77.0.1"  # host-c's session: multihop, from the router's loopback
HIJACK = ["172.17.9.2/32", "172.17.200.0/24"]  # inside host-b's block; a free block of the pool
PASSWORD = "dc-r0uter's!key"  # (FRR takes no spaces in a password)
FRR = "/usr/lib/frr"

PEERS_YML = f"""---
# The data centre's router: every host peers with it and takes its default route and one outside prefix.
calico_bgp_peers:
  - ip: {ROUTER_IP}
    as_number: {ROUTER_AS}
    name: dc-router
    password: "{PASSWORD}"
    import_default: true
    import_prefixes: [{OUTSIDE}]
"""
HOST_C_YML = PEERS_YML.replace(ROUTER_IP, LOOPBACK_IP).replace("name: dc-router", "name: dc-router-lo\n    multihop: 2")


def frr_config(lab, hostname):
    neighbors = "".join(f" neighbor {lab.node_ip(h)} remote-as 64512\n neighbor {lab.node_ip(h)} password {PASSWORD}\n"
                        for h in lab.nodes)
    neighbors += (f" neighbor {lab.node_ip('host-c')} ebgp-multihop 2\n"
                  f" neighbor {lab.node_ip('host-c')} update-source {LOOPBACK_IP}\n")
    originate = "".join(f"  neighbor {lab.node_ip(h)} default-originate\n" for h in lab.nodes)
    networks = "".join(f"  network {p}\n" for p in [OUTSIDE, *HIJACK])
    return (f"hostname {hostname}\n"
            f"router bgp {ROUTER_AS}\n bgp router-id {OUTSIDE_IP}\n no bgp ebgp-requires-policy\n"
            f" no bgp network import-check\n{neighbors}"
            f" address-family ipv4 unicast\n{networks}{originate} exit-address-family\n")


class Router:
    """FRR's zebra and bgpd in a namespace on the lab's segment, with their own config, pid files and sockets."""

    def __init__(self, lab):
        self.lab = lab
        self.netns = f"{lab.prefix}-dcr"
        self.port = "dcr0"
        self.dir = tempfile.mkdtemp(prefix=f"netfleet-{lab.prefix}-frr-")
        shutil.chown(self.dir, "frr", "frr")

    def start(self):
        fabric = f"{self.lab.prefix}-fabric"
        bridges = [link["ifname"] for link in ns_json(fabric, "link", "show", "type", "bridge")]
        assert len(bridges) == 1, bridges
        sh(["ip", "netns", "add", self.netns])
        sh(["ip", "-n", fabric, "link", "add", self.port, "type", "veth", "peer", "name", "eth0", "netns", self.netns])
        sh(["ip", "-n", fabric, "link", "set", self.port, "master", bridges[0], "up"])
        for argv in (["link", "set", "lo", "up"], ["addr", "add", f"{OUTSIDE_IP}/24", "dev", "lo"],
                     ["addr", "add", f"{LOOPBACK_IP}/32", "dev", "lo"],
                     ["addr", "add", f"{ROUTER_IP}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            sh(["ip", "-n", self.netns, *argv])
        conf = os.path.join(self.dir, "frr.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(frr_config(self.lab, self.netns))
        shutil.chown(conf, "frr", "frr")
        for daemon in ("zebra", "bgpd"):
            sh(["ip", "netns", "exec", self.netns, f"{FRR}/{daemon}", "-d", "-f", conf, "-i", self.pidfile(daemon),
                "-z", os.path.join(self.dir, "zserv.api"), "--vty_socket", self.dir, "-P", "0",
                "--log", f"file:{self.dir}/{daemon}.log"])
        with open(f"{self.dir}/bgpd.log", encoding="utf-8") as f:
            log = f.read()
        assert "No such command" not in log, log  # the configuration was taken whole

    def pidfile(self, daemon):
        return os.path.join(self.dir, f"{daemon}.pid")

    def vtysh(self, command):
        out = sh(["ip", "netns", "exec", self.netns, "vtysh", "--vty_socket", self.dir, "-c", command]).stdout
        return json.loads(out)

    def stop(self):
        for daemon in ("bgpd", "zebra"):
            with contextlib.suppress(OSError, ValueError), open(self.pidfile(daemon), encoding="utf-8") as f:
                pid = int(f.read().strip())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if self.netns in namespaces():
            sh(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    inv = tmp_path_factory.mktemp("inv")
    shutil.copy(REPO / "inventories" / "lab" / "hosts.yml", inv / "hosts.yml")
    shutil.copytree(REPO / "inventories" / "lab" / "group_vars", inv / "group_vars")
    (inv / "group_vars" / "all" / "peers.yml").write_text(PEERS_YML)
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "host-c.yml").write_text(HOST_C_YML)
    lab = Lab(inv, os.environ.get("NETFLEET_LAB_PREFIX", "t") + "xp")
    with lab.running():
        router = Router(lab)
        try:
            router.start()
            for host in lab.nodes:  # the default route comes from the router (see the module docstring)
                sh(["ip", "-n", lab.netns(host), "route", "del", "default"])
            sh(["ip", "-n", lab.netns("host-c"), "route", "add", f"{LOOPBACK_IP}/32", "via", ROUTER_IP])
            lab.router = router
            yield lab
        finally:
            router.stop()


def wait_for(what, check, timeout=20):
    """``check()`` once it is true; after ``timeout`` s a failure saying ``what`` (a callable: read then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, what() if callable(what) else what
            return result
        time.sleep(0.25)


def test_the_fleet_peers_with_a_router_outside_it(lab, report):
    t0 = time.monotonic()
    lab.playbook("site.yml")
    router = lab.router
    ips = {lab.node_ip(h): h for h in lab.nodes}
    proto = {h: "External_" + (LOOPBACK_IP if h == "host-c" else ROUTER_IP).replace(".", "_") for h in lab.nodes}
    blocks = {h: lab.block(h) for h in lab.nodes}

    # both ends Established: FRR's summary and every host's BIRD
    def established():
        peers = router.vtysh("show bgp summary json")["ipv4Unicast"]["peers"]
        return all(peers.get(ip, {}).get("state") == "Established" for ip in ips)
    wait_for(lambda: f"FRR: {router.vtysh('show bgp summary json')}; host-a: "
             f"{lab.birdc('host-c', 'show', 'protocols', 'all', proto['host-c'])}", established)
    for host in lab.nodes:
        assert lab.sessions(host)[proto[host]][0] == "up", lab.birdc(host, "show", "protocols")
        assert "Established" in lab.birdc(host, "show", "protocols", proto[host])
    took = time.monotonic() - t0

    # status.yml (it waits for every session and block) counts the routers' sessions apart
    status = lab.playbook("playbooks/status.yml")
    assert "fabric converged: 3 hosts, 6/6 BGP sessions Established" in status.stdout, status.stdout[-3000:]
    assert ("3 hosts, 6/6 BGP sessions Established, 3 blocks, 3/3 sessions to routers outside the fleet "
            "Established\n") in status.stdout, status.stdout[-3000:]

    # the router learns exactly each host's block from that host, nothing else from the fleet
    for ip, host in ips.items():
        learned = wait_for(f"{host}'s block at the router", lambda ip=ip: set(router.vtysh(
            f"show bgp ipv4 unicast neighbors {ip} routes json").get("routes") or {}))
        assert learned == {blocks[host]}, (host, learned)

    # every host: the default route and the outside prefix via the router (proto bird; host-c's resolved through
    # its route to the loopback), never a hijack
    for host in lab.nodes:
        ns = lab.netns(host)
        wait_for(f"{host}: default route", lambda ns=ns: sh(["ip", "-n", ns, "route", "show", "default"]).stdout)
        for dest in ("default", OUTSIDE):
            route = sh(["ip", "-n", ns, "route", "show", dest]).stdout
            assert f"via {ROUTER_IP}" in route and "proto bird" in route, (host, dest, route)
        for prefix in HIJACK:
            assert "proto bird" not in sh(["ip", "-n", ns, "route", "show", prefix]).stdout, (host, prefix)
        # kept as filtered, never used
        filtered = lab.birdc(host, "show", "route", "filtered", "protocol", proto[host])
        assert all(prefix in filtered for prefix in HIJACK), (host, filtered)
    assert "via 192.168.100.101" in sh(["ip", "-n", lab.netns("host-c"), "route", "get", "172.17.9.2"]).stdout

    # workloads reach the outside, and still each other
    for host in lab.nodes:
        src = lab.workloads(host)[0]
        assert lab.ping(lab.workload_netns(host, src), OUTSIDE_IP), f"{host}/{src} cannot reach {OUTSIDE_IP}"
    assert not lab.ping_matrix()

    # the password is in the secrets file only, never in bird.conf
    for host in lab.nodes:
        with open(f"{lab.state_dir(host)}/bird.conf", encoding="utf-8") as f:
            assert PASSWORD not in f.read()
        with open(f"{lab.state_dir(host)}/bird-secrets.conf", encoding="utf-8") as f:
            assert f'"{PASSWORD}"' in f.read()

    again = lab.playbook("site.yml")
    assert all(r["changed"] == 0 for h, r in again.recap.items() if h in lab.nodes), again.recap
    report(f"test_external_peers: 3 hosts Established with FRR {took:.1f} s after site.yml started; default "
           f"route and {OUTSIDE} installed, hijacks filtered; {time.monotonic() - t0:.1f} s in all")
