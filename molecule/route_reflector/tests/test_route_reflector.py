"""Verifier of the route-reflector scenario: racks as ASes, reflectors as ToRs, eBGP between racks."""

import ipaddress
import json

from netfleet_lab import netns_host


def _rack_of(lab):
    racks = {}
    for rack in lab.groups["calico_racks"]["children"]:
        for h in lab.groups[rack].get("hosts", []):
            racks[h] = rack
    return racks


def _routes(lab, host):
    return json.loads(netns_host(lab.netns(host)).check_output("ip -j -4 route show table main"))


def _gateways(route):
    if route.get("gateway"):
        return {route["gateway"]}
    return {nh["gateway"] for nh in route.get("nexthops", [])}


def test_hosts_peer_only_with_their_racks_reflectors(lab):
    rack = _rack_of(lab)
    for h in lab.nodes:
        mine = {lab.node_ip(r) for r in lab.reflectors if rack[r] == rack[h]}
        sessions = lab.sessions(h)
        assert {n.split("_", 1)[1].replace("_", ".") for n in sessions} == mine, f"{h}: {sessions}"
        assert all(n.startswith("RR_") for n in sessions)
        assert all(s[2].startswith("Established") for s in sessions.values()), f"{h}: {sessions}"


def test_reflectors_peer_by_ebgp_with_other_racks(lab):
    rack = _rack_of(lab)
    for r in lab.reflectors:
        sessions = lab.sessions(r)
        assert all(s[2].startswith("Established") for s in sessions.values()), f"{r}: {sessions}"
        ebgp = {n for n in sessions if n.startswith("Global_")}
        others = {o for o in lab.reflectors if rack[o] != rack[r]}
        want = {"Global_" + lab.hostvars[o]["calico_rr_spine_ip"].replace(".", "_") for o in others}
        assert ebgp == want, f"{r}: eBGP sessions {ebgp}, expected {want}"
        clients = {n for n in sessions if n.startswith("Client_")}
        assert len(clients) == sum(1 for h in lab.nodes if rack[h] == rack[r])
        # GTSM between directly connected reflectors
        conf = open(f"{lab.state_dir(r)}/bird.conf").read()
        assert conf.count("ttl security on") == len(want)


def test_cross_rack_routes_via_own_reflector_with_other_racks_as(lab):
    rack = _rack_of(lab)
    blocks = {h: lab.block(h) for h in lab.nodes}
    for h in lab.nodes:
        routes = {r["dst"]: r for r in _routes(lab, h)}
        my_rrs = {lab.node_ip(r) for r in lab.reflectors if rack[r] == rack[h]}
        for peer in lab.nodes:
            if peer == h:
                continue
            r = routes.get(blocks[peer])
            assert r and r.get("protocol") == "bird", f"{h}: no BGP route to {peer}'s block {blocks[peer]}"
            if rack[peer] == rack[h]:
                assert _gateways(r) == {lab.node_ip(peer)}, f"{h}: same-rack {blocks[peer]} via {r}"
            else:
                assert _gateways(r) <= my_rrs, f"{h}: cross-rack {blocks[peer]} via {r}, not via {my_rrs}"
                as_number = lab.hostvars[peer]["calico_as_number"]
                shown = lab.birdc(h, "show", "route", "for", blocks[peer], "all")
                assert f"BGP.as_path: {as_number}" in shown, f"{h}: AS path to {peer} lacks {as_number}:\n{shown}"


def test_blocks_are_aggregated_and_inside_the_pool(lab):
    pool = ipaddress.ip_network(lab.hostvars[lab.nodes[0]]["calico_pool"])
    for r in lab.reflectors:
        learned = [x for x in _routes(lab, r) if x.get("protocol") == "bird"]
        assert learned and all(ipaddress.ip_network(x["dst"]).subnet_of(pool) for x in learned)
        assert all(x["dst"].endswith("/24") for x in learned), "a /32 leaked into BGP"


def test_full_ping_matrix(lab):
    failed = lab.ping_matrix()
    assert not failed, "unreachable workload pairs:\n" + "\n".join(failed)
