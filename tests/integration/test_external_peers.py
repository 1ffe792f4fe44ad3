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

import os
import time

import pytest
import yaml
from netfleet_frr import Router, wait_for
from netfleet_lab import REPO, Lab, sh, write_inventory

pytestmark = pytest.mark.lab

ROUTER_IP = "192.168.100.250"
ROUTER_AS = 65000
OUTSIDE = "198.51.100.0/24"
OUTSIDE_IP = "198.51.100.1"
LOOPBACK_IP = "10.77.0.1"  # host-c's session: multihop, from the router's loopback
HIJACK = ["172.17.9.2/32", "172.17.200.0/24"]  # inside host-b's block; a free block of the pool
PASSWORD = "dc-r0uter's!key"  # (FRR takes no spaces in a password)

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    hosts = yaml.safe_load((REPO / "inventories" / "lab" / "hosts.yml").read_text())
    inv = write_inventory(tmp_path_factory.mktemp("inv"), hosts)
    (inv / "group_vars" / "all" / "peers.yml").write_text(PEERS_YML)
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "host-c.yml").write_text(HOST_C_YML)
    lab = Lab(inv, os.environ.get("NETFLEET_LAB_PREFIX", "t") + "xp")
    with lab.running():
        router = Router(lab, "dcr", "host-a", f"{ROUTER_IP}/24", [f"{OUTSIDE_IP}/24", f"{LOOPBACK_IP}/32"],
                        frr_config(lab, f"{lab.prefix}-dcr"))
        try:
            router.start()
            for host in lab.nodes:  # the default route comes from the router (see the module docstring)
                sh(["ip", "-n", lab.netns(host), "route", "del", "default"])
            sh(["ip", "-n", lab.netns("host-c"), "route", "add", f"{LOOPBACK_IP}/32", "via", ROUTER_IP])
            lab.router = router
            yield lab
        finally:
            router.stop()


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
