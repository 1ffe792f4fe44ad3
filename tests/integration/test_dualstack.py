"""Dual stack on a real netns lab: inventories/lab-dualstack (two racks, a reflector each, IPv4 and IPv6 pools)
built and converged by site.yml, nothing mocked.

Shown: every workload reaches every other one in both families (ping and ping -6); the IPv6 routes have the
shape of the IPv4 ones (per host its IPv6 block's blackhole and one /128 per workload, proto 80; per other host
its IPv6 block learned by BGP, proto bird, through the host's rack reflector for another rack); a workload
sending from another workload's IPv6 address reaches nobody (ip6tables rpfilter); a second site.yml changes
nothing. The lab's prefix is ``<NETFLEET_LAB_PREFIX or t>d``; it is removed at the end.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os

import netfleet_lab
import pytest
import yaml
from netfleet_lab import REPO, Lab, ns_json, sh

pytestmark = pytest.mark.lab

DUAL = REPO / "inventories" / "lab-dualstack"


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    doc = yaml.safe_load((DUAL / "hosts.yml").read_text())
    inventory = netfleet_lab.write_inventory(tmp_path_factory.mktemp("dual"), doc, DUAL)
    lab = Lab(inventory, os.environ.get("NETFLEET_LAB_PREFIX", "t") + "d")
    with lab.running():
        lab.playbook("site.yml")
        out = lab.playbook("playbooks/status.yml")  # waits until every session is Established
        assert "fabric converged" in out.stdout, out.stdout[-4000:]
        yield lab


def workload_ip6(lab, host, workload):
    for link in ns_json(lab.workload_netns(host, workload), "-6", "addr", "show", "dev", "eth0", "scope", "global"):
        for a in link.get("addr_info", []):
            return a["local"]
    raise AssertionError(f"workload {host}/{workload} has no global IPv6 address on eth0")


def ping6(lab, src, dst_ip):
    argv = ["ip", "netns", "exec", lab.workload_netns(*src), "ping", "-6", "-n", "-c", "1", "-W", "2", dst_ip]
    return sh(argv, check=False).returncode == 0


def v6_routes(lab, host, *selector):
    return ns_json(lab.netns(host), "-6", "route", "show", "table", "main", *selector)


def test_every_pair_pings_in_both_families(dual):
    lab = dual
    assert not lab.ping_matrix(), "IPv4 pairs unreachable"
    wls = lab.all_workloads()
    ips = {w: workload_ip6(lab, *w) for w in wls}
    assert len(set(ips.values())) == len(wls)
    pairs = [(s, d) for s in wls for d in wls if s != d]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ok = list(pool.map(lambda p: ping6(lab, p[0], ips[p[1]]), pairs))
    failed = [f"{s[0]}/{s[1]} -> {d[0]}/{d[1]} ({ips[d]})" for (s, d), good in zip(pairs, ok) if not good]
    assert not failed, "IPv6 pairs unreachable:\n" + "\n".join(failed)
    # the address the inventory gave, and the default route through the host veth's link-local address
    assert ips[("r1h1", "r1h1w2")] == "fd00:17::22"
    routes = ns_json(lab.workload_netns("r1h1", "r1h1w1"), "-6", "route", "show", "default")
    assert [r.get("gateway") for r in routes] == ["fe80::ecee:eeff:feee:eeee"], routes


def test_ipv6_routes_have_the_shape_of_the_ipv4_ones(dual):
    lab = dual
    pool = ipaddress.ip_network(lab.hostvars["r1h1"]["calico_pool_v6"])
    blocks = {}
    for host in lab.nodes:
        own = v6_routes(lab, host, "proto", "80", "type", "blackhole")
        assert len(own) == 1 and ipaddress.ip_network(own[0]["dst"]).prefixlen == 122, own
        blocks[host] = ipaddress.ip_network(own[0]["dst"])
        assert blocks[host].subnet_of(pool)
        # one /128 per workload, to its veth, proto 80, inside the host's block
        hosts128 = [r for r in v6_routes(lab, host, "proto", "80") if r.get("type", "unicast") == "unicast"]
        assert len(hosts128) == len(lab.workloads(host)), hosts128
        assert all(ipaddress.ip_address(r["dst"]) in blocks[host]
                   and r["dev"].startswith("cali") for r in hosts128), hosts128
    for host in lab.nodes:
        learned = v6_routes(lab, host, "proto", "bird")
        others = {blocks[h] for h in lab.nodes if h != host}
        assert {ipaddress.ip_network(r["dst"]) for r in learned} == others, (host, learned)
        # a block of the same rack through its host, one of the other rack through the rack's reflector
        rack = "rack1" if host.startswith("r1") else "rack2"
        reflector = lab.hostvars["rr1" if rack == "rack1" else "rr2"]["calico_node_ip_v6"]
        for route in learned:
            owner = next(h for h in lab.nodes if blocks[h] == ipaddress.ip_network(route["dst"]))
            want = lab.hostvars[owner]["calico_node_ip_v6"] if owner[:2] == host[:2] else reflector
            assert route.get("gateway") == want, (host, route)
    for reflector in lab.reflectors:
        learned = {ipaddress.ip_network(r["dst"]) for r in v6_routes(lab, reflector, "proto", "bird")}
        assert learned == set(blocks.values()), (reflector, learned)
        assert "ipv6" in lab.birdc(reflector, "show", "protocols", "all").lower()


def test_a_workload_cannot_send_from_another_workloads_ipv6_address(dual):
    """ip6tables' raw cali-PREROUTING (rpfilter) on every host with IPv6 workloads: r1h1w1 sending from
    r2h1w1's address reaches nobody, from its own it does."""
    lab = dual
    for host in lab.nodes:
        raw = sh(["ip", "netns", "exec", lab.netns(host), "ip6tables-save", "-t", "raw"]).stdout
        assert "-A cali-PREROUTING -i cali+ -m rpfilter --invert -j DROP" in raw, (host, raw)
    src, dst = ("r1h1", "r1h1w1"), ("r1h2", "r1h2w1")
    own, other, target = workload_ip6(lab, *src), workload_ip6(lab, "r2h1", "r2h1w1"), workload_ip6(lab, *dst)
    netns = lab.workload_netns(*src)
    sh(["ip", "-n", netns, "-6", "addr", "add", f"{other}/128", "dev", "eth0", "nodad"])
    try:
        argv = ["ip", "netns", "exec", netns, "ping", "-6", "-n", "-c", "2", "-W", "1", "-I"]
        assert sh(argv + [other, target], check=False).returncode != 0, "a spoofed IPv6 source got through"
        assert sh(argv + [own, target], check=False).returncode == 0
    finally:
        sh(["ip", "-n", netns, "-6", "addr", "del", f"{other}/128", "dev", "eth0"])


def test_second_converge_changes_nothing(dual):
    lab = dual
    proc = lab.playbook("site.yml")
    changed = {host: recap["changed"] for host, recap in proc.recap.items() if recap["changed"]}
    assert not changed, f"a second site.yml changed {changed}:\n{proc.stdout[-6000:]}"
