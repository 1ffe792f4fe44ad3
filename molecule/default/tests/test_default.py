"""Verifier of the full-mesh scenario: the article's data plane, checked in the kernel."""

import ipaddress
import json

from netfleet_lab import netns_host

MAC = "ee:ee:ee:ee:ee:ee"


def _routes(lab, host):
    return json.loads(netns_host(lab.netns(host)).check_output("ip -j -4 route show table main"))


def _blocks(lab):
    """Each host's block, read from its kernel (the blackhole it owns)."""
    blocks = {}
    for h in lab.nodes:
        bh = [r["dst"] for r in _routes(lab, h) if r.get("type") == "blackhole" and r.get("protocol") == "80"]
        assert len(bh) == 1, f"{h}: expected one blackholed block, found {bh}"
        blocks[h] = bh[0]
    return blocks


def test_every_bgp_session_established(lab):
    for h in lab.nodes:
        sessions = lab.sessions(h)
        assert len(sessions) == len(lab.nodes) - 1, f"{h}: {sessions}"
        bad = {n: s for n, s in sessions.items() if not s[2].startswith("Established")}
        assert not bad, f"{h}: sessions not Established: {bad}"


def test_article_blocks_pinned(lab):
    blocks = _blocks(lab)
    assert blocks["host-a"] == "172.17.8.0/24"
    assert blocks["host-b"] == "172.17.9.0/24"
    assert len(set(blocks.values())) == len(blocks)


def test_route_table_has_the_articles_shape(lab):
    blocks = _blocks(lab)
    for h in lab.nodes:
        routes = _routes(lab, h)
        block = ipaddress.ip_network(blocks[h])
        # own workloads: <ip> dev cali… scope link, tagged with our protocol
        for w in lab.workloads(h):
            ip = lab.workload_ip(h, w)
            assert ipaddress.ip_address(ip) in block
            r = [r for r in routes if r["dst"] == ip]
            assert len(r) == 1, f"{h}: no single route for workload {w} {ip}: {r}"
            assert r[0]["dev"].startswith("cali") and len(r[0]["dev"]) == 15
            assert r[0]["scope"] == "link" and r[0]["protocol"] == "80"
        # own block blackholed
        assert any(r["dst"] == blocks[h] and r.get("type") == "blackhole" for r in routes)
        # each peer's block via the peer's node IP on eth0, learned by BIRD, onlink
        for peer in lab.nodes:
            if peer == h:
                continue
            r = [r for r in routes if r["dst"] == blocks[peer]]
            assert len(r) == 1, f"{h}: route to {peer}'s block {blocks[peer]}: {r}"
            assert r[0]["gateway"] == lab.node_ip(peer) and r[0]["dev"] == "eth0", r[0]
            assert r[0]["protocol"] == "bird" and "onlink" in r[0].get("flags", []), r[0]
        # no /32 of another host leaks into this host's table
        leaked = [r["dst"] for r in routes if r["dst"].count(".") == 3 and "/" not in r["dst"]
                  and r.get("protocol") == "bird"]
        assert not leaked, f"{h}: /32s learned over BGP: {leaked}"


def test_workload_sees_the_articles_routes(lab):
    for h, w in lab.all_workloads():
        wl = netns_host(lab.workload_netns(h, w))
        routes = wl.check_output("ip -4 route show")
        assert "default via 169.254.1.1 dev eth0" in routes
        assert "169.254.1.1 dev eth0 scope link" in routes
        addr = json.loads(wl.check_output("ip -j -4 addr show dev eth0"))[0]["addr_info"][0]
        assert addr["prefixlen"] == 32
        # nobody owns 169.254.1.1 on the host
        assert "169.254.1.1" not in netns_host(lab.netns(h)).check_output("ip -4 addr show")


def test_full_ping_matrix(lab):
    failed = lab.ping_matrix()
    assert not failed, "unreachable workload pairs:\n" + "\n".join(failed)


def test_gateway_answered_by_proxy_arp(lab):
    # after the ping matrix every workload has resolved its gateway
    for h, w in lab.all_workloads():
        wl = netns_host(lab.workload_netns(h, w))
        wl.run("ping -n -c1 -W1 %s", lab.node_ip(h))
        neigh = json.loads(wl.check_output("ip -j neigh show 169.254.1.1 dev eth0"))
        assert neigh and neigh[0]["lladdr"] == MAC, f"{h}/{w}: {neigh}"
        assert neigh[0]["state"][0] in ("REACHABLE", "STALE", "DELAY", "PROBE")
