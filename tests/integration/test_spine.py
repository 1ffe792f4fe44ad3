"""The L3 spine on a real netns lab: inventories/lab-spine (four racks, rack1 with two reflectors, two FRR spines,
one aggregate per rack: calico_rack_block_pool 20).

Needs root. site.yml configures the spines (FRR per namespace: its own config, pid files, vty and zserv sockets
in the spine's state directory), then the reflectors and hosts. Every workload reaches every other one, a host
reaches other racks through its reflector, each spine's BGP table holds exactly the racks' aggregates (ECMP over
rack1's two reflectors), each reflector blackholes its rack's share, a second run changes nothing, and lab_down
stops every FRR daemon by its pid file. With BFD on, every spine-reflector BFD session is Up on both ends, and a
reflector whose spine leg is cut (iptables, BIRD running) loses its rack's aggregate on both spines within 1.5 s.
A running fleet of racks moves to the spine without an outage (make-before-break on the reflectors).

One router outside the fleet (FRR's zebra and bgpd started by hand, netfleet_frr.Router) sits on rack3's segment
and peers with rack3's reflector and host through calico_bgp_peers in rack3's group_vars. Rack3's segment rather
than the spine segment: the spines' FRR config is the collection's, and on a rack segment both a reflector and a
plain host peer with the router. It announces a default route and an outside prefix (a workload reaches the
router's lo address) and, from the wrong place, rack3's own block and rack2's block: rack3's hosts keep them
filtered (calico_bgp_peers imports only what the inventory allows), neither is installed from it, and cross-rack
routes still go via the reflector (the spine path). A spine announcing rack3's aggregate by hand (a shorter path
than the real one) is refused by every reflector: by rack3 as its own, by the others for its origin AS.
A host's cross-rack routes (one per other rack) are counted and reported.

Dual stack (the inventory's calico_pool_v6): the same sessions carry IPv6. Each spine holds every host's IPv6 block
(one by one: rack shares are of the IPv4 pool), rack1's from both of its reflectors with their calico_rr_spine_ip_v6
as next hop, and sends them on with its own calico_node_ip_v6; workloads of different racks ping over IPv6; sp1
announcing rack3's IPv6 block by hand is refused for its origin AS as the IPv4 aggregate is. The router outside the
fleet has an IPv6 address too and a second session with rack3's hosts over IPv6 (calico_bgp_peers with an IPv6
ip): it gives them ::/0 and an outside IPv6 prefix, which a workload reaches.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from netfleet_frr import Router, wait_for
from netfleet_lab import REPO, ContinuousPing, Lab, alive, namespaces, ns_json, sh
from netfleet_lab import spine_if as _spine_if

pytestmark = pytest.mark.lab

SPINES = ("sp1", "sp2")
FRR_DAEMONS = ("zebra", "bgpd")
ROUTER_IP = "192.168.103.250"
ROUTER_AS = 65000
OUTSIDE = "198.51.100.0/24"
OUTSIDE_IP = "198.51.100.1"
RACK3 = ("rr3", "r3h1")  # the hosts that peer with the router
ROUTER_IP6 = "fd00:103::250"
OUTSIDE6 = "2001:db8:100::/64"
OUTSIDE6_IP = "2001:db8:100::1"

PEERS_YML = f"""---
# Rack3's router outside the fleet: its reflector and host take a default route and one outside prefix from it,
# over IPv4 and (a second session) over IPv6.
calico_bgp_peers:
  - ip: {ROUTER_IP}
    as_number: {ROUTER_AS}
    name: rack3-router
    import_default: true
    import_prefixes: [{OUTSIDE}]
  - ip: "{ROUTER_IP6}"
    as_number: {ROUTER_AS}
    name: rack3-router-v6
    import_default: true
    import_prefixes: ["{OUTSIDE6}"]
"""


def router_config(lab, hijack):
    """Default route and OUTSIDE to rack3's hosts; ``hijack`` (blocks of the fleet) announced from the wrong place.
    Over IPv6 (sessions to the hosts' calico_node_ip_v6, IPv6 only): ::/0 and OUTSIDE6."""
    ips = [lab.node_ip(h) for h in RACK3]
    ips6 = [lab.hostvars[h]["calico_node_ip_v6"] for h in RACK3]
    neighbors = "".join(f" neighbor {ip} remote-as {lab.hostvars['r3h1']['calico_as_number']}\n" for ip in ips + ips6)
    originate = "".join(f"  neighbor {ip} default-originate\n" for ip in ips)
    networks = "".join(f"  network {p}\n" for p in [OUTSIDE, *hijack])
    v4_only = "".join(f"  no neighbor {ip} activate\n" for ip in ips6)
    v6 = "".join(f"  neighbor {ip} activate\n  neighbor {ip} default-originate\n" for ip in ips6)
    return (f"hostname {lab.prefix}-r3x\nrouter bgp {ROUTER_AS}\n bgp router-id {OUTSIDE_IP}\n"
            f" no bgp ebgp-requires-policy\n no bgp network import-check\n{neighbors}"
            f" address-family ipv4 unicast\n{networks}{originate}{v4_only} exit-address-family\n"
            f" address-family ipv6 unicast\n  network {OUTSIDE6}\n{v6} exit-address-family\n")


def vtysh(lab, spine, *commands):
    return sh(["ip", "netns", "exec", lab.netns(spine), "vtysh", "--vty_socket", lab.state_dir(spine),
               *(arg for c in commands for arg in ("-c", c))]).stdout


def bgp_table(lab, spine, family="ipv4"):
    return json.loads(vtysh(lab, spine, f"show bgp {family} unicast json")).get("routes", {})


def block6(lab, host):
    """The IPv6 block a host owns (its proto-80 blackhole)."""
    return ns_json(lab.netns(host), "-6", "route", "show", "proto", "80", "type", "blackhole")[0]["dst"]


def workload_ip6(lab, host, workload):
    return ns_json(lab.workload_netns(host, workload), "-6", "addr", "show", "dev", "eth0", "scope", "global")[0][
        "addr_info"][0]["local"]


def ping6(lab, src_netns, dst_ip):
    return sh(["ip", "netns", "exec", src_netns, "ping", "-6", "-n", "-c", "1", "-W", "2", dst_ip],
              check=False).returncode == 0


# workload pairs of different racks (a ring over the racks) that must reach each other over IPv6
PAIRS6 = [(("r1h1", "r1h1w1"), ("r2h1", "r2h1w1")), (("r2h1", "r2h1w1"), ("r3h1", "r3h1w1")),
          (("r3h1", "r3h1w1"), ("r4h1", "r4h1w1")), (("r4h1", "r4h1w1"), ("r1h1", "r1h1w2"))]


def failed_pairs6(lab):
    return [f"{s[1]} -> {d[1]}" for s, d in PAIRS6 if not ping6(lab, lab.workload_netns(*s), workload_ip6(lab, *d))]


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
def spine(tmp_path_factory):
    inv = tmp_path_factory.mktemp("inv")
    shutil.copy(REPO / "inventories" / "lab-spine" / "hosts.yml", inv / "hosts.yml")
    shutil.copytree(REPO / "inventories" / "lab-spine" / "group_vars", inv / "group_vars")
    (inv / "group_vars" / "rack3.yml").write_text(PEERS_YML)
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "s"
    lab = Lab(inv, prefix)
    pids = []
    router = None
    try:
        lab.playbook("lab/playbooks/lab_up.yml")
        lab.playbook("site.yml")
        pids = frr_pids(lab)
        lab.hijack = [lab.block("r3h1"), lab.block("r2h1")]
        router = Router(lab, "r3x", "r3h1", f"{ROUTER_IP}/24", [f"{OUTSIDE_IP}/24", f"{OUTSIDE6_IP}/64"],
                        router_config(lab, lab.hijack), address6=f"{ROUTER_IP6}/64")
        for host in RACK3:  # the default route comes from the router (BIRD never replaces a route it did not make)
            sh(["ip", "-n", lab.netns(host), "route", "del", "default"], check=False)
        router.start()
        # the router forwards to the blocks it announces by mistake the right way (its BGP never installs them)
        sh(["ip", "-n", router.netns, "route", "add", lab.hijack[0], "via", lab.node_ip("r3h1")])
        sh(["ip", "-n", router.netns, "route", "add", lab.hijack[1], "via", lab.node_ip("rr3")])
        lab.router = router
        yield lab
    finally:
        if router:
            router.stop()
        pids = pids or frr_pids(lab)
        lab.playbook("lab/playbooks/lab_down.yml", check=False)
        assert not [n for n in namespaces() if n.startswith(prefix + "-")], "lab_down left namespaces"
        assert pids and not [p for p in pids if alive(p)], f"lab_down left FRR daemons running: {pids}"


def share(lab, host):
    """The aggregate of a host's rack: the share of calico_rack_block_pool its block lies in."""
    length = int(lab.hostvars[host]["calico_rack_block_pool"])
    return str(ipaddress.ip_network(lab.block(host)).supernet(new_prefix=length))


def _dest(dst):
    return "0.0.0.0/0" if dst == "default" else dst


def route_get(lab, host, address):
    return sh(["ip", "-n", lab.netns(host), "route", "get", address]).stdout


def test_spines_hold_exactly_the_racks_aggregates(spine):
    want = sorted({share(spine, h) for h in spine.nodes}, key=ipaddress.ip_network)
    assert len(want) == 4, want  # one share per rack, each of its blocks inside it
    for name in SPINES:
        wait(lambda n=name: sorted(bgp_table(spine, n), key=ipaddress.ip_network) == want, 60,
             f"{name}'s BGP table to hold {want}")
        table = bgp_table(spine, name)
        # rack1's aggregate arrives from both of its reflectors, both used (ECMP)
        rack1 = table[share(spine, "r1h1")]
        assert sorted(p["peerId"] for p in rack1) == ["10.255.0.11", "10.255.0.12"], rack1
        assert all(p.get("multipath") or p.get("bestpath") for p in rack1), rack1
        routes = ns_json(spine.netns(name), "route", "show", share(spine, "r1h1"))
        assert routes and len(routes[0].get("nexthops", [])) == 2, routes
    # IPv6: every host's block one by one, rack1's from both of its reflectors, each with its calico_rr_spine_ip_v6
    # as the global next hop (BIRD's `next hop address`)
    want6 = sorted(block6(spine, h) for h in spine.nodes)
    for name in SPINES:
        wait(lambda n=name: sorted(bgp_table(spine, n, "ipv6")) == want6, 60, f"{name}'s IPv6 table to hold {want6}")
        rack1 = bgp_table(spine, name, "ipv6")[block6(spine, "r1h1")]
        hops = sorted(h["ip"] for p in rack1 for h in p["nexthops"] if h.get("scope") == "global")
        assert hops == sorted(spine.hostvars[rr]["calico_rr_spine_ip_v6"] for rr in ("rr1a", "rr1b")), rack1
        routes = ns_json(spine.netns(name), "-6", "route", "show", block6(spine, "r1h1"))
        assert routes and len(routes[0].get("nexthops", [])) == 2, routes
    # each reflector drops unused addresses of its rack's share (no loop back to the spine)
    for rr, host in (("rr1a", "r1h1"), ("rr1b", "r1h1"), ("rr2", "r2h1"), ("rr3", "r3h1"), ("rr4", "r4h1")):
        holes = ns_json(spine.netns(rr), "route", "show", share(spine, host), "proto", "bird")
        assert [r.get("type") for r in holes] == ["blackhole"], (rr, holes)
        unused = str(ipaddress.ip_network(share(spine, host))[-2])
        covering = ns_json(spine.netns(rr), "route", "show", "match", unused)
        best = max(covering, key=lambda r: ipaddress.ip_network(_dest(r["dst"])).prefixlen)
        assert (best["dst"], best.get("type")) == (share(spine, host), "blackhole"), (rr, unused, covering)


def test_every_workload_pair_pings(spine):
    wait(lambda: not spine.ping_matrix(), 60, "every workload pair to ping")


def test_workloads_of_different_racks_ping_over_ipv6(spine, report):
    """The IPv6 routes cross the spine: a reflector's route to another rack's IPv6 block goes via both spines'
    calico_node_ip_v6 (the next hop FRR sends, its route-map's), and sample pairs of workloads ping over IPv6."""
    spines6 = sorted(spine.hostvars[sp]["calico_node_ip_v6"] for sp in SPINES)
    routes = ns_json(spine.netns("rr2"), "-6", "route", "show", block6(spine, "r1h1"), "proto", "bird")
    assert routes and sorted(h["gateway"] for h in routes[0].get("nexthops", [])) == spines6, routes
    wait(lambda: not failed_pairs6(spine), 30, "workloads of different racks to ping over IPv6")
    report(f"test_spine: {len(PAIRS6)} workload pairs of different racks ping over IPv6 through the spines")


def test_cross_rack_routes_go_via_the_reflector(spine, report):
    gateway = {"r1h1": {"192.168.101.1", "192.168.101.2"}, "r2h1": {"192.168.102.1"},
               "r3h1": {"192.168.103.1"}, "r4h1": {"192.168.104.1"}}
    for host in spine.nodes:
        for other in spine.nodes:
            if other == host:
                continue
            wait(lambda h=host, o=other: ns_json(spine.netns(h), "route", "show", share(spine, o), "proto", "bird"),
                 60, f"{host} to route the aggregate of {other}'s rack")
            routes = ns_json(spine.netns(host), "route", "show", share(spine, other), "proto", "bird")
            hops = {routes[0]["gateway"]} if routes[0].get("gateway") else {
                nh["gateway"] for nh in routes[0].get("nexthops", [])}
            assert hops and hops <= gateway[host], f"{host} -> {other}: {hops}"
    # the kernel holds exactly one route per other rack: its aggregate, never a block of another rack
    cross = [r["dst"] for r in ns_json(spine.netns("r1h1"), "route", "show", "root", "172.17.0.0/16", "proto",
                                       "bird")]
    others = sorted(share(spine, h) for h in ("r2h1", "r3h1", "r4h1"))
    assert sorted(cross) == others, cross
    report(f"test_spine: r1h1 holds {len(cross)} cross-rack routes (one aggregate per other rack: "
           f"{', '.join(others)})")
    # status.yml wants exactly that: a rack's blocks inside it, the other racks' aggregates, each share blackholed
    # (it waits, as by default, for every session: rack3's router came up after site.yml)
    status = spine.playbook("playbooks/status.yml")
    assert "fabric converged" in status.stdout and ", 4 blocks" in status.stdout, status.stdout[-3000:]


def test_rack3_takes_the_default_route_from_its_router_only(spine, report):
    router = spine.router
    ips = {spine.node_ip(h): h for h in RACK3}

    def established():
        peers = router.vtysh("show bgp summary json")["ipv4Unicast"]["peers"]
        return all(peers.get(ip, {}).get("state") == "Established" for ip in ips)
    wait_for(lambda: f"FRR: {router.vtysh('show bgp summary json')}", established, timeout=30)
    proto = "External_" + ROUTER_IP.replace(".", "_")
    for host in RACK3:
        ns = spine.netns(host)
        wait_for(f"{host}: default route", lambda ns=ns: "proto bird" in sh(
            ["ip", "-n", ns, "route", "show", "default"]).stdout)
        for dest in ("default", OUTSIDE):
            route = sh(["ip", "-n", ns, "route", "show", dest]).stdout
            assert f"via {ROUTER_IP}" in route and "proto bird" in route, (host, dest, route)
        # the blocks announced from the wrong place: kept as filtered, never installed from the router
        wait_for(f"{host}: the router's hijacks kept as filtered", lambda h=host: all(
            p in spine.birdc(h, "show", "route", "filtered", "protocol", proto) for p in spine.hijack))
        for prefix in spine.hijack:
            assert ROUTER_IP not in sh(["ip", "-n", ns, "route", "show", prefix]).stdout, (host, prefix)
    # rack2's block still reaches rack3 over the spine; rack3's host owns its block (blackhole), its reflector
    # reaches it via the host
    rack2_address = str(ipaddress.ip_network(spine.hijack[1])[2])
    assert "via 192.168.103.1" in route_get(spine, "r3h1", rack2_address)
    assert f"via {spine.node_ip('r3h1')}" in sh(
        ["ip", "-n", spine.netns("rr3"), "route", "show", spine.hijack[0]]).stdout
    # hosts of other racks never see the router's routes
    for host in ("r1h1", "r2h1", "r4h1", "rr1a", "rr2", "rr4"):
        assert "proto bird" not in sh(["ip", "-n", spine.netns(host), "route", "show", OUTSIDE]).stdout, host
    # the router's lo address is reached from a workload, and every workload pair still pings
    assert spine.ping(spine.workload_netns("r3h1", "r3h1w1"), OUTSIDE_IP), "r3h1w1 cannot reach the router"
    assert not spine.ping_matrix()
    # the IPv6 router (a session over IPv6 carrying IPv6 only): ::/0 and OUTSIDE6 via its IPv6 address
    proto6 = "External_" + ROUTER_IP6.replace(":", "_")
    for host in RACK3:
        ns = spine.netns(host)
        wait_for(f"{host}: IPv6 default route", lambda ns=ns: "proto bird" in sh(
            ["ip", "-n", ns, "-6", "route", "show", "default"]).stdout)
        for dest in ("default", OUTSIDE6):
            route = sh(["ip", "-n", ns, "-6", "route", "show", dest]).stdout
            assert f"via {ROUTER_IP6}" in route and "proto bird" in route, (host, dest, route)
        channels = spine.birdc(host, "show", "protocols", "all", proto6)
        assert "Channel ipv6" in channels and "Channel ipv4" not in channels, channels
    for host in ("r1h1", "rr2"):
        assert "proto bird" not in sh(["ip", "-n", spine.netns(host), "-6", "route", "show", OUTSIDE6]).stdout, host
    assert ping6(spine, spine.workload_netns("r3h1", "r3h1w1"), OUTSIDE6_IP), "r3h1w1 cannot reach the router (IPv6)"
    report(f"test_spine: rack3 takes the default route and {OUTSIDE} from its router (and ::/0, {OUTSIDE6} over "
           f"IPv6); {len(spine.hijack)} blocks announced from the wrong place kept filtered")


def test_reflectors_peer_with_the_spines_only(spine):
    for rr in spine.reflectors:
        sessions = spine.sessions(rr)
        ebgp = sorted(name for name in sessions if name.startswith("Global_"))
        assert ebgp == ["Global_10_255_0_1", "Global_10_255_0_2"], sessions
        assert all(sessions[name][0] == "up" for name in ebgp), sessions


def test_a_spine_announcing_a_racks_aggregate_is_refused_for_its_origin_as(spine, report):
    """sp1 announces rack3's aggregate by hand (vtysh, not in its config): its path (sp1's AS alone) is shorter
    than the real one (sp2, then rack3's AS), so without the origin-AS check the other racks would send rack3's
    traffic to sp1, which has no route for it (FRR does not install a prefix it originates by a network
    statement). Every reflector keeps it as filtered: rr3 as its own share, the others because its origin AS is
    not rack3's; no host routes rack3's share via sp1, and every workload pair still pings. Withdrawn afterwards."""
    aggregate = share(spine, "r3h1")
    aggregate6 = block6(spine, "r3h1")  # IPv6: rack3's block, refused the same way
    as_number = spine.hostvars["sp1"]["calico_spine_as_number"]
    proto = "Global_" + spine.hostvars["sp1"]["calico_node_ip"].replace(".", "_")
    before = vtysh(spine, "sp1", "show running-config")
    # the network statement needs no route in the RIB (sp1 withdraws its route from the racks once it originates it)
    bgp = ["configure terminal", f"router bgp {as_number}"]
    reflectors = ("rr1a", "rr1b", "rr2", "rr3", "rr4")
    try:
        vtysh(spine, "sp1", *bgp, "no bgp network import-check", "address-family ipv4 unicast",
              f"network {aggregate}", "exit-address-family", "address-family ipv6 unicast", f"network {aggregate6}")
        for rr in reflectors:
            wait(lambda rr=rr: all(p in spine.birdc(rr, "show", "route", "filtered", "protocol", proto)
                                   for p in (aggregate, aggregate6)), 30,
                 f"{rr} to keep {aggregate} and {aggregate6} from sp1 as filtered")
        sp1 = spine.hostvars["sp1"]["calico_node_ip"]
        for rr in ("rr1a", "rr2", "rr4"):  # rack3's share only from sp2, the path with rack3's AS at its end
            for host in ("sp1", "sp2"):
                table = spine.birdc(rr, "show", "route", "for", aggregate, "protocol", proto.replace(
                    sp1.replace(".", "_"), spine.hostvars[host]["calico_node_ip"].replace(".", "_")))
                assert (aggregate in table) == (host == "sp2"), (rr, host, table)
            assert f"via {sp1} " not in route_get(spine, rr, str(ipaddress.ip_network(spine.block("r3h1"))[2]))
        wait(lambda: not spine.ping_matrix(), 30, "every workload pair to ping with sp1's hand announcement")
    finally:
        vtysh(spine, "sp1", *bgp, "address-family ipv4 unicast", f"no network {aggregate}", "exit-address-family",
              "address-family ipv6 unicast", f"no network {aggregate6}")
        if vtysh(spine, "sp1", "show running-config") != before:  # the import check was on (FRR's default)
            vtysh(spine, "sp1", *bgp, "bgp network import-check")
    assert vtysh(spine, "sp1", "show running-config") == before
    for rr in reflectors:
        wait(lambda rr=rr: not any(p in spine.birdc(rr, "show", "route", "filtered", "protocol", proto)
                                   for p in (aggregate, aggregate6)), 30, f"sp1 to withdraw {aggregate}, {aggregate6}")
    via_rr3 = spine.hostvars["rr3"]["calico_rr_spine_ip"]
    wait(lambda: f"via {via_rr3}" in sh(["ip", "-n", spine.netns("sp1"), "route", "show", aggregate]).stdout, 30,
         f"sp1 to route {aggregate} via rr3 again")
    report(f"test_spine: {aggregate} and {aggregate6} announced by hand on sp1 (shorter path) refused by all "
           f"{len(reflectors)} reflectors (origin AS, rack3's own share or block)")


def test_second_run_changes_nothing(spine):
    proc = spine.playbook("site.yml")
    changed = {h: r["changed"] for h, r in proc.recap.items() if r["changed"]}
    assert changed == {}, proc.stdout[-4000:]


def _bfd_up(lab, spine, reflector):
    """Whether the BFD session between ``spine`` and ``reflector`` is Up on both ends."""
    rr_ip = lab.hostvars[reflector]["calico_rr_spine_ip"]
    peers = json.loads(vtysh(lab, spine, "show bfd peers json"))
    frr = any(p.get("peer") == rr_ip and p.get("status") == "up" for p in peers)
    sp_ip = lab.hostvars[spine]["calico_node_ip"]
    bird = any(line.split()[:1] == [sp_ip] and " Up " in line
               for line in lab.birdc(reflector, "show", "bfd", "sessions").splitlines())
    return frr and bird


def test_bfd_between_spines_and_reflectors(spine, report):
    """With calico_bgp_bfd (100 ms x 3) every spine-reflector BFD session is Up on both ends, GTSM kept on the
    BGP sessions (FRR runs their BFD as multihop, so does BIRD). rr2's spine leg cut by iptables in its namespace
    (its BIRD keeps running): both spines withdraw rack2's aggregate within 1.5 s. Leaves BFD on."""
    lab = spine
    path = Path(lab.inventory) / "hosts.yml"
    doc = yaml.safe_load(path.read_text())
    doc["all"]["vars"]["calico_bgp_bfd"] = {"interval": 100, "multiplier": 3}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    lab.reload()
    lab.playbook("site.yml")
    pairs = [(sp, rr) for sp in SPINES for rr in lab.reflectors]
    wait(lambda: all(_bfd_up(lab, sp, rr) for sp, rr in pairs), 30, "every spine-reflector BFD session to be Up")
    assert "ttl-security hops 1" in vtysh(lab, "sp1", "show running-config")
    rack2 = share(lab, "r2h1")
    assert all(rack2 in bgp_table(lab, sp) for sp in SPINES)
    drop = [["INPUT", "-i", _spine_if(lab, "rr2")], ["OUTPUT", "-o", _spine_if(lab, "rr2")]]
    for rule in drop:
        sh(["ip", "netns", "exec", lab.netns("rr2"), "iptables", "-w", "-I", *rule, "-j", "DROP"])
    start = time.monotonic()
    try:
        while any(rack2 in bgp_table(lab, sp) for sp in SPINES):  # polled back to back (vtysh: ~50 ms each)
            assert time.monotonic() - start < 30, f"the spines kept {rack2} with rr2's spine leg cut"
        gone = time.monotonic() - start
        assert alive(int(open(os.path.join(lab.state_dir("rr2"), "bird.pid")).read().split()[0]))
    finally:
        for rule in drop:
            sh(["ip", "netns", "exec", lab.netns("rr2"), "iptables", "-w", "-D", *rule, "-j", "DROP"])
    wait(lambda: all(_bfd_up(lab, sp, "rr2") for sp in SPINES) and all(
        rack2 in bgp_table(lab, sp) for sp in SPINES), 60, f"rr2's BFD sessions and {rack2} back on both spines")
    # the sessions now run multihop 1: IPv6 next hops resolve through the spine leg's subnet too
    wait(lambda: not failed_pairs6(lab), 30, "workloads of different racks to ping over IPv6 with BFD")
    report(f"test_spine: BFD (100 ms x 3) Up on all {len(pairs)} spine-reflector sessions; rr2's spine leg cut, "
           f"both spines withdrew {rack2} after {gone:.2f} s")
    assert gone <= 1.5, gone


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
        assert worst <= 0.3, f"a workload pair was cut for {worst:.2f} s while the racks moved to the spine"
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
