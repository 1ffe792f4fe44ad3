"""A host that outgrows its block, on a real netns lab: site.yml gives it further blocks (calico_max_blocks_per_host),
each blackholed on the host and routed to it by every other host's BIRD (status.yml agrees); removing the workloads
of the last block releases that block everywhere and moves nothing else.

Needs root. Three hosts with /30 blocks (one automatic workload address each): host-a's three workloads need three
blocks; host-b has one workload to ping, host-c none (seven namespaces in all).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
from netfleet_lab import Lab, ns_json, write_inventory

pytestmark = pytest.mark.lab

NODE_IP = {"host-a": "192.168.100.100", "host-b": "192.168.100.101", "host-c": "192.168.100.102"}
DOC = {"all": {
    "vars": {"calico_pool": "172.17.0.0/24", "calico_block_prefix": 30, "calico_max_blocks_per_host": 3,
             "calico_bgp_topology": "full_mesh"},
    "children": {
        "calico_racks": {"children": {"rack1": {
            "vars": {"calico_as_number": 64512, "lab_segment": "192.168.100.0/24"},
            "hosts": {
                "host-a": {"calico_node_ip": NODE_IP["host-a"],
                           "calico_workloads": [{"name": "a1"}, {"name": "a2"}, {"name": "a3"}]},
                "host-b": {"calico_node_ip": NODE_IP["host-b"], "calico_workloads": [{"name": "b1"}]},
                "host-c": {"calico_node_ip": NODE_IP["host-c"], "calico_workloads": []},
            }}}},
        "calico_nodes": {"children": {"rack1": None}},
    }}}
# host-a takes the lowest block, host-b and host-c the next ones; host-a then grows into the two after them
A_BLOCKS = ["172.17.0.0/30", "172.17.0.12/30", "172.17.0.16/30"]
OTHER_BLOCKS = {"host-b": "172.17.0.4/30", "host-c": "172.17.0.8/30"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "k"
    lab = Lab(write_inventory(tmp_path_factory.mktemp("inv"), DOC), prefix)
    with lab.running():
        yield lab


def blackholes(lab, host):
    return [r["dst"] for r in ns_json(lab.netns(host), "route", "show", "proto", "80", "type", "blackhole")]


def bird_routes(lab, host):
    """{destination: gateway} of the routes BIRD installed on a host."""
    return {r["dst"]: r.get("gateway") for r in ns_json(lab.netns(host), "route", "show", "proto", "bird")}


def wait_for_routes(lab, expected, timeout=20):
    """Wait until every host's BIRD routes are exactly ``expected`` ({host: {dst: gateway}}); return them."""
    deadline = time.monotonic() + timeout
    while True:
        now = {h: bird_routes(lab, h) for h in expected}
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def test_a_host_grows_into_three_blocks_then_releases_the_last(lab):
    lab.playbook("site.yml")
    assert blackholes(lab, "host-a") == A_BLOCKS
    for host, block in OTHER_BLOCKS.items():
        assert blackholes(lab, host) == [block]
    via_a = dict.fromkeys(A_BLOCKS, NODE_IP["host-a"])
    expected = {
        "host-a": {b: NODE_IP[h] for h, b in OTHER_BLOCKS.items()},
        "host-b": {**via_a, OTHER_BLOCKS["host-c"]: NODE_IP["host-c"]},
        "host-c": {**via_a, OTHER_BLOCKS["host-b"]: NODE_IP["host-b"]},
    }
    assert wait_for_routes(lab, expected) == expected
    status = lab.playbook("playbooks/status.yml")  # expects every block of every other host
    assert "3 hosts, 6/6 BGP sessions Established, 5 blocks" in status.stdout, status.stdout[-3000:]
    assert "fabric converged" in status.stdout, status.stdout[-3000:]
    ips = {w: lab.workload_ip(h, w) for h, w in lab.all_workloads()}
    assert ips == {"a1": "172.17.0.2", "a2": "172.17.0.14", "a3": "172.17.0.18", "b1": "172.17.0.6"}
    # the third block's workload reaches another host's workload and back
    assert lab.ping(lab.workload_netns("host-a", "a3"), ips["b1"], count=2)
    assert lab.ping(lab.workload_netns("host-b", "b1"), ips["a3"], count=2)

    second = lab.playbook("site.yml")
    assert {h: r["changed"] for h, r in second.recap.items() if r["changed"]} == {}

    doc = copy.deepcopy(DOC)
    doc["all"]["children"]["calico_racks"]["children"]["rack1"]["hosts"]["host-a"]["calico_workloads"].pop()
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    lab.playbook("site.yml")
    assert blackholes(lab, "host-a") == A_BLOCKS[:2]
    for host, block in OTHER_BLOCKS.items():
        assert blackholes(lab, host) == [block]
    for host in OTHER_BLOCKS:
        expected[host].pop(A_BLOCKS[2])
    assert wait_for_routes(lab, expected) == expected
    assert {w: lab.workload_ip(h, w) for h, w in lab.all_workloads()} == {w: ips[w] for w in ("a1", "a2", "b1")}
    assert lab.ping(lab.workload_netns("host-a", "a2"), ips["b1"], count=2)
