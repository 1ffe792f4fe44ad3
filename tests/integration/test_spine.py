"""The L3 spine on a real netns lab: inventories/lab-spine (four racks, rack1 with two reflectors, two FRR spines).

Needs root. site.yml configures the spines (FRR per namespace: its own config, pid files, vty and zserv sockets
in the spine's state directory), then the reflectors and hosts. Every workload reaches every other one, a host
reaches other racks through its reflector, each spine's BGP table holds exactly the fleet's blocks (ECMP over
rack1's two reflectors), a second run changes nothing, and lab_down stops every FRR daemon by its pid file.
A running fleet of racks moves to the spine without an outage (make-before-break on the reflectors).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import yaml
from netfleet_lab import REPO, ContinuousPing, Lab, alive, namespaces, ns_json, sh

pytestmark = pytest.mark.lab

SPINES = ("sp1", "sp2")
FRR_DAEMONS = ("zebra", "bgpd")


def vtysh(lab, spine, command):
    return sh(["ip", "netns", "exec", lab.netns(spine), "vtysh", "--vty_socket", lab.state_dir(spine),
               "-c", command]).stdout


def bgp_table(lab, spine):
    return json.loads(vtysh(lab, spine, "show bgp ipv4 unicast json")).get("routes", {})


def frr_pids(lab):
    pids = []
    for spine in SPINES:
        for daemon in FRR_DAEMONS:
            path = os.path.join(lab.state_dir(spine), f"{daemon}.pid")
            if os.path.exists(path):
                pids.append(int(open(path).read().split()[0]))
    return pids


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def spine():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "s"
    lab = Lab(REPO / "inventories" / "lab-spine", prefix)
    pids = []
    try:
        lab.playbook("lab/playbooks/lab_up.yml")
        lab.playbook("site.yml")
        pids = frr_pids(lab)
        yield lab
    finally:
        pids = pids or frr_pids(lab)
        lab.playbook("lab/playbooks/lab_down.yml", check=False)
        assert not [n for n in namespaces() if n.startswith(prefix + "-")], "lab_down left namespaces"
        assert pids and not [p for p in pids if alive(p)], f"lab_down left FRR daemons running: {pids}"


def blocks(lab):
    return {h: lab.block(h) for h in lab.nodes}


def test_spines_hold_exactly_the_fleets_blocks(spine):
    want = sorted(blocks(spine).values())
    assert None not in want
    for name in SPINES:
        wait(lambda n=name: sorted(bgp_table(spine, n)) == want, 60, f"{name}'s BGP table to hold {want}")
        table = bgp_table(spine, name)
        # rack1's block arrives from both of its reflectors, both used (ECMP)
        rack1 = table[spine.block("r1h1")]
        assert sorted(p["peerId"] for p in rack1) == ["10.255.0.11", "10.255.0.12"], rack1
        assert all(p.get("multipath") or p.get("bestpath") for p in rack1), rack1
        routes = ns_json(spine.netns(name), "route", "show", spine.block("r1h1"))
        assert routes and len(routes[0].get("nexthops", [])) == 2, routes


def test_every_workload_pair_pings(spine):
    wait(lambda: not spine.ping_matrix(), 60, "every workload pair to ping")


def test_cross_rack_routes_go_via_the_reflector(spine):
    gateway = {"r1h1": {"192.168.101.1", "192.168.101.2"}, "r2h1": {"192.168.102.1"},
               "r3h1": {"192.168.103.1"}, "r4h1": {"192.168.104.1"}}
    for host in spine.nodes:
        for other in spine.nodes:
            if other == host:
                continue
            routes = ns_json(spine.netns(host), "route", "show", spine.block(other), "proto", "bird")
            assert routes, f"{host} has no route to {other}'s block"
            hops = {routes[0]["gateway"]} if routes[0].get("gateway") else {
                nh["gateway"] for nh in routes[0].get("nexthops", [])}
            assert hops and hops <= gateway[host], f"{host} -> {other}: {hops}"


def test_reflectors_peer_with_the_spines_only(spine):
    for rr in spine.reflectors:
        sessions = spine.sessions(rr)
        ebgp = sorted(name for name in sessions if name.startswith("Global_"))
        assert ebgp == ["Global_10_255_0_1", "Global_10_255_0_2"], sessions
        assert all(sessions[name][0] == "up" for name in ebgp), sessions


def test_second_run_changes_nothing(spine):
    proc = spine.playbook("site.yml")
    changed = {h: r["changed"] for h, r in proc.recap.items() if r["changed"]}
    assert changed == {}, proc.stdout[-4000:]


def test_a_running_fleet_moves_to_the_spine_without_outage(tmp_path, report):
    """The racks first peer reflector to reflector; adding calico_spines moves them to the spines while
    workloads of different racks keep pinging (each reflector keeps its old sessions until the new ones are up)."""
    source = REPO / "inventories" / "lab-spine"
    doc = yaml.safe_load((source / "hosts.yml").read_text())
    spines = doc["all"]["children"].pop("calico_spines")
    inventory = tmp_path / "inventory"
    shutil.copytree(source / "group_vars", inventory / "group_vars")
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "m"
    lab = Lab(inventory, prefix)
    pids = []
    try:
        lab.playbook("lab/playbooks/lab_up.yml")
        lab.playbook("site.yml")
        wait(lambda: not lab.ping_matrix(), 60, "every workload pair to ping over reflector-to-reflector eBGP")
        assert sorted(n for n in lab.sessions("rr2") if n.startswith("Global_")) == [
            "Global_10_255_0_11", "Global_10_255_0_12", "Global_10_255_0_31", "Global_10_255_0_41"]

        doc["all"]["children"]["calico_spines"] = spines
        (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        lab.reload()
        lab.playbook("lab/playbooks/lab_up.yml")  # adds the spine namespaces
        pairs = [(("r1h1", "r1h1w1"), ("r2h1", "r2h1w1")), (("r2h1", "r2h1w1"), ("r4h1", "r4h1w1")),
                 (("r3h1", "r3h1w1"), ("r1h1", "r1h1w2"))]
        pings = [(src, dst, ContinuousPing(lab.workload_netns(*src), lab.workload_ip(*dst))) for src, dst in pairs]
        time.sleep(1)
        try:
            lab.playbook("site.yml")
            pids = frr_pids(lab)
            time.sleep(2)
        finally:
            worst = 0.0
            for src, dst, ping in pings:
                sent, received, gap = ping.stop()
                worst = max(worst, gap)
                report(f"move to the spine: {src[1]} -> {dst[1]}: {received}/{sent} replies, worst gap {gap:.2f} s")
        assert worst <= 1.0, f"a workload pair was cut for {worst:.2f} s while the racks moved to the spine"
        for rr in lab.reflectors:
            ebgp = {n: s for n, s in lab.sessions(rr).items() if n.startswith("Global_")}
            assert sorted(ebgp) == ["Global_10_255_0_1", "Global_10_255_0_2"], (rr, ebgp)
            assert all(state == "up" for state, _since, _info in ebgp.values()), (rr, ebgp)
        assert not lab.ping_matrix()
    finally:
        pids = pids or frr_pids(lab)
        lab.playbook("lab/playbooks/lab_down.yml", check=False)
        assert not [n for n in namespaces() if n.startswith(prefix + "-")], "lab_down left namespaces"
        assert not [p for p in pids if alive(p)], f"lab_down left FRR daemons running: {pids}"
