"""Dual stack on a real netns lab: inventories/lab-dualstack (two racks, a reflector each, IPv4 and IPv6 pools) built
and converged by site.yml, nothing mocked.

Shown: every workload reaches every other one in both families (ping and ping -6); the IPv6 routes have the shape of
the IPv4 ones (per host its IPv6 block's blackhole and one /128 per workload, proto 80; per other host its IPv6
block learned by BGP, proto bird, through the host's rack reflector for another rack); a workload sending from
another workload's IPv6 address reaches nobody (ip6tables rpfilter); the policy set of group_vars/all/policy.yml
(inventories/lab-policy's) allows and denies the same TCP connections over IPv4 and IPv6; a podman container on r2h2
(CNI plugin, network "clients") gets an address of each family, pings another rack's workload over IPv6 and is
pinged back, is in its selectors' IPv6 ipsets, and leaves nothing behind (its IPv6 address released) when removed;
the web workload is reached at its IPv6 floating IP (ip6tables DNAT on its host, the /128 announced by BIRD) as at
its IPv4 one, and leaves from it; status.yml judges both families (converged, then failing on the host whose IPv6
routes are gone); a second site.yml changes nothing; calico_bgp_ipv6_sessions switched on and off under pings
(IPv6 sessions beside the IPv4 ones, hitless both ways); a converge without calico_pool_v6 removes the cali-*
ip6tables chains (nat too). The lab's prefix is ``<NETFLEET_LAB_PREFIX or t>d``; it is removed at the end.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ipaddress
import json
import os
import shutil
import subprocess
import sys

import netfleet_lab
import pytest
import yaml
from netfleet_lab import REPO, ContinuousPing, Lab, cni_plugin_state, ns_json, sh
from netfleet_podman import Podman, prepare_image

pytestmark = pytest.mark.lab

DUAL = REPO / "inventories" / "lab-dualstack"
# the web workload's floating IPs (hosts.yml): DNATed on r1h1, announced by r1h1's BIRD
WEB, FIP4, FIP6 = ("r1h1", "r1h1w1"), "10.99.0.10", "fd00:99::10"


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    doc = yaml.safe_load((DUAL / "hosts.yml").read_text())
    inventory = netfleet_lab.write_inventory(tmp_path_factory.mktemp("dual"), doc, DUAL)
    lab = Lab(inventory, os.environ.get("NETFLEET_LAB_PREFIX", "t") + "d")
    with lab.running():
        lab.playbook("site.yml")
        out = lab.playbook("playbooks/status.yml")  # waits until every session is Established
        assert "fabric converged" in out.stdout, out.stdout[-4000:]
        # both families counted: 4 nodes' blocks, each route held on 5 other speakers
        assert "4 blocks, 4 IPv6 blocks; routes to other hosts' blocks: IPv4 20/20, IPv6 20/20" in out.stdout, \
            out.stdout[-4000:]
        lab.doc = doc
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
    fip6 = ipaddress.ip_network(FIP6)  # the floating /128, announced by its host like a block
    for host in lab.nodes:
        learned = v6_routes(lab, host, "proto", "bird")
        others = {blocks[h] for h in lab.nodes if h != host} | ({fip6} if host != WEB[0] else set())
        assert {ipaddress.ip_network(r["dst"]) for r in learned} == others, (host, learned)
        # a block of the same rack through its host, one of the other rack through the rack's reflector
        rack = "rack1" if host.startswith("r1") else "rack2"
        reflector = lab.hostvars["rr1" if rack == "rack1" else "rr2"]["calico_node_ip_v6"]
        for route in learned:
            owner = WEB[0] if ipaddress.ip_network(route["dst"]) == fip6 else next(
                h for h in lab.nodes if blocks[h] == ipaddress.ip_network(route["dst"]))
            want = lab.hostvars[owner]["calico_node_ip_v6"] if owner[:2] == host[:2] else reflector
            assert route.get("gateway") == want, (host, route)
    for reflector in lab.reflectors:
        learned = {ipaddress.ip_network(r["dst"]) for r in v6_routes(lab, reflector, "proto", "bird")}
        assert learned == set(blocks.values()) | {fip6}, (reflector, learned)
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


# every workload listens on 80 and 5432 in both families (one IPv6 socket taking IPv4 too), says "up" when bound
LISTENER = r'''
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in (80, 5432):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ)
print("up", flush=True)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
'''
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)"
WL = {"web": ("r1h1", "r1h1w1"), "db": ("r1h1", "r1h1w2"), "admin": ("r1h2", "r1h2w1"),
      "client": ("r2h1", "r2h1w1"), "other": ("r2h2", "r2h2w1"), "none": ("r2h1", "r2h1w2")}
# (source, destination, port) -> allowed, by group_vars/all/policy.yml
TCP = {
    ("client", "web", 80): True,    # a client, from the other rack
    ("admin", "web", 80): False,    # a client but admin: denied by the order-10 policy
    ("other", "web", 80): False,    # not a client
    ("db", "web", 80): True,        # db egress allows web:80, web ingress allows db
    ("web", "db", 5432): True,
    ("client", "db", 5432): False,  # db accepts 5432 from web only
    ("web", "db", 80): False,
    ("db", "client", 80): False,    # db egress: web only
    ("other", "none", 80): True,    # nobody selects either: allow all
}


def test_policy_outcomes_hold_in_both_families(dual):
    lab = dual
    procs = []
    try:
        for host, wl in WL.values():
            proc = subprocess.Popen(["ip", "netns", "exec", lab.workload_netns(host, wl), sys.executable, "-c",
                                     LISTENER], stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout.readline().strip() == "up", f"listener in {host}/{wl} did not start"
        ip = {name: {4: lab.workload_ip(*WL[name]), 6: workload_ip6(lab, *WL[name])} for name in WL}

        def reached(case):
            (src, dst, port), family = case
            argv = ["ip", "netns", "exec", lab.workload_netns(*WL[src]), sys.executable, "-c", CONNECT,
                    ip[dst][family], str(port)]
            return subprocess.run(argv, capture_output=True, check=False).returncode == 0

        cases = [(pair, family) for pair in TCP for family in (4, 6)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            got = dict(zip(cases, pool.map(reached, cases)))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)
    wrong = ["IPv%d %s -> %s:%d %s" % (family, *pair, "reached" if ok else "refused")
             for (pair, family), ok in got.items() if ok != TCP[pair]]
    assert not wrong, "policy outcomes differ from the policy:\n" + "\n".join(wrong)


# a host's listener: accepts one connection, prints the address it came from
PEER = ("import socket, sys; s = socket.socket(socket.AF_INET6); s.bind(('::', 8080)); s.listen(1); "
        "print('up', flush=True); s.settimeout(5); print(s.accept()[1][0], flush=True)")


def test_the_web_workload_is_reached_at_its_floating_ips_in_both_families(dual):
    """r1h1 DNATs fd00:99::10 to r1h1w1 with ip6tables' cali-fip-dnat as it DNATs 10.99.0.10 with iptables', and
    every other speaker learned the /128 (ipv6 channel) as the /32: a client of the other rack connects to port 80
    at either and pings the IPv6 one, the policy still refuses the admin behind the DNAT, and the web workload's
    own connection out of the pool (to host r1h2) leaves from its IPv6 floating IP."""
    lab = dual
    web6 = workload_ip6(lab, *WEB)
    nat6 = sh(["ip", "netns", "exec", lab.netns(WEB[0]), "ip6tables-save", "-t", "nat"]).stdout
    assert f"-A cali-fip-dnat -d {FIP6}/128 -j DNAT --to-destination {web6}" in nat6, nat6
    assert "cali-fip-dnat" not in sh(["ip", "netns", "exec", lab.netns("r2h1"), "ip6tables-save", "-t", "nat"]).stdout
    procs = [subprocess.Popen(["ip", "netns", "exec", lab.workload_netns(*WEB), sys.executable, "-c", LISTENER],
                              stdout=subprocess.PIPE, text=True),
             subprocess.Popen(["ip", "netns", "exec", lab.netns("r1h2"), sys.executable, "-c", PEER],
                              stdout=subprocess.PIPE, text=True)]
    try:
        assert [proc.stdout.readline().strip() for proc in procs] == ["up", "up"]

        def connect(case):
            src, ip, port = case
            argv = ["ip", "netns", "exec", lab.workload_netns(*src), sys.executable, "-c", CONNECT, ip, str(port)]
            return subprocess.run(argv, capture_output=True, check=False).returncode == 0

        cases = [(WL["client"], FIP4, 80), (WL["client"], FIP6, 80), (WL["admin"], FIP6, 80),
                 (WEB, lab.hostvars["r1h2"]["calico_node_ip_v6"], 8080)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            got = list(pool.map(connect, cases))
        assert got == [True, True, False, True], list(zip(cases, got))
        assert procs[1].stdout.readline().strip() == FIP6  # SNAT: the web workload left from its floating IP
        assert ping6(lab, WL["other"], FIP6)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)


def test_a_podman_container_gets_both_families(dual):
    """A container podman starts on r2h2 (the CNI plugin site.yml installed, run by podman) gets an address of each
    family from its network's ranges, reaches a workload of the other rack over IPv6 and back, and leaves nothing
    behind when removed: its IPv6 address is free again."""
    lab = dual
    cni_dir = f"{lab.state_dir('r2h2')}/cni"
    cfg = json.loads(open(f"{cni_dir}/cni.json").read())
    before = cni_plugin_state(lab, "r2h2")
    pm = Podman(lab.netns("r2h2"), f"/run/netfleet/{lab.prefix}-podman/r2h2", cni_config_dir=f"{cni_dir}/net.d",
                cni_plugin_dirs=(f"{cni_dir}/bin",), image_tar=prepare_image()).setup()
    try:
        pm.run("c1", "clients")
        net = pm.inspect("c1")["NetworkSettings"]["Networks"]["clients"]
        ip4, ip6 = net["IPAddress"], net["GlobalIPv6Address"]
        assert ipaddress.ip_address(ip4) in ipaddress.ip_network(cfg["networks"]["clients"]["range"]), net
        assert ipaddress.ip_address(ip6) in ipaddress.ip_network(cfg["networks"]["clients"]["range6"]), net
        # the host: its /128 proto 80 to the container's veth, per-endpoint ip6tables chains, the IPv6 ipset twin
        state = cni_plugin_state(lab, "r2h2")
        (veth,) = state["links"]
        assert any(route.startswith(f"{ip6} dev {veth} ") for route in state["routes"]), state["routes"]
        assert f"ip6tables-save :cali-cni-fw-{veth} - [0:0]" in state["chains"], state["chains"]
        assert any(line.endswith(f"-6 {ip6}") for line in state["sets"]), state["sets"]
        # inside: its /128 and the default route through the host side's link-local
        inside = pm.exec("c1", "ip", "-6", "route", "show", "default").stdout
        assert "via fe80::ecee:eeff:feee:eeee dev eth0" in inside, inside
        web = workload_ip6(lab, "r1h1", "r1h1w1")
        assert pm.exec("c1", "ping", "-6", "-c", "1", "-W", "2", web, check=False, timeout=10).returncode == 0, \
            f"c1 (r2h2) cannot ping r1h1w1 {web} over IPv6"
        assert ping6(lab, ("r1h1", "r1h1w1"), ip6), f"r1h1w1 cannot ping c1 {ip6} over IPv6"
        out = lab.playbook("playbooks/status.yml")  # the container's /128 is not a stale route of the fleet
        assert "fabric converged" in out.stdout, out.stdout[-4000:]
        pm.rm("c1")
        assert cni_plugin_state(lab, "r2h2") == before, "the container left state behind"
        pm.run("c2", "clients")  # round robin: the next address, c1's is free (no record holds it)
        assert pm.inspect("c2")["NetworkSettings"]["Networks"]["clients"]["GlobalIPv6Address"] != ip6
        pm.rm("c2")
    finally:
        pm.cleanup()
        shutil.rmtree(f"/run/netfleet/{lab.prefix}-podman", ignore_errors=True)
    assert cni_plugin_state(lab, "r2h2") == before


def test_status_fails_naming_the_host_without_its_ipv6_routes(dual):
    """r1h1's BIRD stops installing IPv6 routes (kernel6 disabled withdraws them; IPv4 is untouched): status.yml
    fails on r1h1's missing IPv6 blocks only."""
    lab = dual
    lab.birdc("r1h1", "disable", "kernel6")
    try:
        assert not v6_routes(lab, "r1h1", "proto", "bird") and lab.sessions("r1h1")
        out = lab.playbook("playbooks/status.yml", "-e", "calico_node_status_wait=0", check=False)
        assert out.returncode != 0 and "fabric not converged" in out.stdout, out.stdout[-4000:]
        assert "r1h1 [rack1] sessions 1/1: no route to 3 blocks: fd00:17:" in out.stdout, out.stdout[-4000:]
        assert "IPv4 20/20, IPv6 17/20" in out.stdout and "r1h2 [" not in out.stdout, out.stdout[-4000:]
    finally:
        lab.birdc("r1h1", "enable", "kernel6")
    out = lab.playbook("playbooks/status.yml")
    assert "fabric converged" in out.stdout, out.stdout[-4000:]


def test_second_converge_changes_nothing(dual):
    lab = dual
    proc = lab.playbook("site.yml")
    changed = {host: recap["changed"] for host, recap in proc.recap.items() if recap["changed"]}
    assert not changed, f"a second site.yml changed {changed}:\n{proc.stdout[-6000:]}"


# (host, IPv4 session, IPv6 session beside it when calico_bgp_ipv6_sessions is on): a client and its reflector,
# the two reflectors (eBGP between their spine addresses)
SESSIONS = [("r1h1", "RR_192_168_101_1", "RR_fd00_101__1"), ("rr1", "Client_192_168_101_11", "Client_fd00_101__11"),
            ("rr1", "Global_10_255_0_21", "Global_fd00_255__21"), ("rr2", "Global_10_255_0_11", "Global_fd00_255__11")]


def v6_routes_of(lab, host, protocol):
    """The IPv6 prefixes BIRD has from one protocol."""
    out = lab.birdc(host, "show", "route", "protocol", protocol)
    return {line.split()[0] for line in out.splitlines() if line[:1] not in ("", " ", "\t") and ":" in line.split()[0]}


def converge_under_pings(lab, inventory):
    """site.yml while workloads of both racks ping each other in both families; every worst gap."""
    src, dst = ("r1h1", "r1h1w1"), ("r2h1", "r2h1w1")
    near = ("r1h2", "r1h2w1")
    pings = [ContinuousPing(lab.workload_netns(*src), ip) for ip in (
        lab.workload_ip(*dst), workload_ip6(lab, *dst), workload_ip6(lab, *near))]
    proc = lab.playbook("site.yml", inventory=str(inventory))
    gaps = [ping.stop() for ping in pings]
    return proc, gaps


def test_ipv6_sessions_switched_on_and_off_under_traffic(dual, tmp_path):
    """calico_bgp_ipv6_sessions on a running fleet: every relation gets an IPv6 session beside its IPv4 one, the
    IPv6 routes come from it, and neither family's pings see a gap over 1 s, nor does an IPv4 session reset
    (their ipv6 channel stays, empty); a second run changes nothing; turned off, the IPv6 sessions go and the
    IPv4 sessions carry the IPv6 routes again, still without a gap."""
    lab = dual
    before = {(h, four): lab.sessions(h)[four][1] for h, four, _six in SESSIONS}
    doc = copy.deepcopy(lab.doc)
    doc["all"]["vars"]["calico_bgp_ipv6_sessions"] = True
    inventory = netfleet_lab.write_inventory(tmp_path / "on", doc, DUAL)
    proc, gaps = converge_under_pings(lab, inventory)
    assert all(got >= sent - 1 and gap <= 1.0 for sent, got, gap in gaps), (gaps, proc.stdout[-3000:])
    for host, four, six in SESSIONS:
        sessions = lab.sessions(host)
        assert sessions[six][2].startswith("Established"), (host, sessions)
        assert sessions[four][1] == before[(host, four)], (host, four, "the IPv4 session was reset")
        assert v6_routes_of(lab, host, six) and not v6_routes_of(lab, host, four), (host, six)
    again = lab.playbook("site.yml", inventory=str(inventory))
    changed = {host: recap["changed"] for host, recap in again.recap.items() if recap["changed"]}
    assert not changed, f"a second site.yml changed {changed}:\n{again.stdout[-6000:]}"

    proc, gaps = converge_under_pings(lab, lab.inventory)
    assert all(got >= sent - 1 and gap <= 1.0 for sent, got, gap in gaps), (gaps, proc.stdout[-3000:])
    for host, four, six in SESSIONS:
        sessions = lab.sessions(host)
        assert six not in sessions and sessions[four][1] == before[(host, four)], (host, sessions)
        assert v6_routes_of(lab, host, four), (host, four)


def test_a_converge_without_ipv6_removes_the_ipv6_chains(dual, tmp_path):
    """The fleet drops calico_pool_v6 (and what only IPv6 needs): site.yml removes every cali-* ip6tables chain
    (and the IPv6 workload routes) while IPv4 keeps working."""
    lab = dual
    doc = copy.deepcopy(lab.doc)
    for key in ("calico_pool_v6", "calico_block_prefix_v6"):
        doc["all"]["vars"].pop(key)
    for rack in doc["all"]["children"]["calico_racks"]["children"].values():
        for host in rack["hosts"].values():
            host.pop("calico_rr_spine_ip_v6", None)
            for workload in host.get("calico_workloads", []):
                workload.pop("ip6", None)
                workload.pop("floating_ip6", None)
    inventory = netfleet_lab.write_inventory(tmp_path / "v4", doc, DUAL)
    lab.playbook("site.yml", inventory=str(inventory))
    for host in lab.nodes:
        six = sh(["ip", "netns", "exec", lab.netns(host), "ip6tables-save"]).stdout
        assert "cali-" not in six, (host, six)
        assert not v6_routes(lab, host, "proto", "80"), host
    assert not lab.ping_matrix(), "IPv4 pairs unreachable"
