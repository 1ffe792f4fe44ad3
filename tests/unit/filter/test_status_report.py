from ansible_collections.netfleet.calico.plugins.filter.status_report import build_report


def _status(block, sessions, learned, running=True):
    return {
        "bird_running": running,
        "sessions": sessions,
        "routes": {"blackholes": [block], "workloads": [{"dest": "x"}], "bird": [{"dest": d} for d in learned]},
    }


def _s(ip, ok=True):
    return {"name": "Mesh_" + ip.replace(".", "_"), "peer_ip": ip, "state": "up" if ok else "start",
            "since": "2026-11-25 11:51:02", "info": "Established" if ok else "Active", "established": ok,
            "type": "ibgp"}


def test_converged_fabric():
    rep = build_report({
        "a": _status("172.17.8.0/24", [_s("10.0.0.2")], ["172.17.9.0/24"]),
        "b": _status("172.17.9.0/24", [_s("10.0.0.1")], ["172.17.8.0/24"]),
    })
    assert rep["converged"], rep["problems"]
    assert rep["summary"] == "2 hosts, 2/2 BGP sessions Established, 2 blocks"
    assert "node-to-node mesh" in rep["detail"] and "Established" in rep["detail"]


def test_down_session_and_missing_block_are_problems():
    rep = build_report({
        "a": _status("172.17.8.0/24", [_s("10.0.0.2", ok=False)], []),
        "b": _status("172.17.9.0/24", [_s("10.0.0.1")], ["172.17.8.0/24"]),
    })
    assert not rep["converged"]
    assert "a: session to 10.0.0.2 is Active" in rep["problems"]
    assert "a: no route to 172.17.9.0/24 (block of b)" in rep["problems"]


def test_bird_down_is_a_problem():
    rep = build_report({"a": _status("172.17.8.0/24", [], [], running=False)})
    assert not rep["converged"]
    assert rep["problems"][0].startswith("a: BIRD not running")


def test_peer_types_follow_protocol_names():
    from ansible_collections.netfleet.calico.plugins.filter.status_report import _peer_type
    assert _peer_type({"name": "Mesh_10_0_0_1"}) == "node-to-node mesh"
    assert _peer_type({"name": "RR_10_0_0_1"}) == "route reflector"
    assert _peer_type({"name": "Client_10_0_0_1"}) == "rr client"
    assert _peer_type({"name": "Global_10_0_0_1", "type": "ebgp"}) == "other rack (eBGP)"
    assert _peer_type({"name": "custom", "type": "ebgp"}) == "global (eBGP)"


# --- held against the fabric plan (racks, stale routes, scale) ---------------------------------------------

import copy  # noqa: E402
import re  # noqa: E402

from fleet_fixture import bird_down, converged_statuses, rack_plan  # noqa: E402


def _lines(rep, prefix):
    return [ln for ln in rep["text"].splitlines() if ln.startswith(prefix)]


def test_planned_converged_fleet_one_line_per_rack():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    rep = build_report(converged_statuses(plan), plan)
    assert rep["converged"], rep["problems"]
    # rr1: 2 clients + rr2; r1h1, r1h2: 1 each -> 5 per rack
    assert rep["summary"] == "6 hosts, 10/10 BGP sessions Established, 4 blocks"
    assert _lines(rep, "| rack1 ") == ["| rack1 | 65001 | 3     | 1   | 5/5         | 0    | 0                    "
                                       "| 0            | converged |"]
    assert len(_lines(rep, "| rack")) == 2
    assert "problem hosts" not in rep["text"] and "missing" not in rep["text"].split("\n", 3)[-1]
    assert rep["racks"]["rack2"]["converged"] and rep["brief"] == "none"


def test_bird_down_names_the_host_once_and_its_block_once():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    rep = build_report(bird_down(converged_statuses(plan), plan, "r2h1"), plan)
    assert not rep["converged"]
    text = rep["text"]
    assert "NOT CONVERGED (3 hosts)" in _lines(rep, "| rack1 ")[0]  # every rack1 host misses r2h1's block
    assert "NOT CONVERGED" in _lines(rep, "| rack2 ")[0] and "| 3/5 " in _lines(rep, "| rack2 ")[0]
    hosts = [ln.split()[0] for ln in text.split("problem hosts (")[1].split("blocks missing")[0].splitlines()[1:]]
    assert hosts == ["r2h1", "rr2"], text  # rack1's hosts only miss r2h1's block: told once, below
    assert "r2h1 [rack2] sessions 0/1: BIRD not running" in text
    assert "no route to 3 blocks: " in text  # r2h1 itself: one item, not three
    assert "rr2 [rack2] sessions 2/3: session to r2h1 (10.0.2.2) is Active" in text
    block = plan["hosts"]["r2h1"]["block"]
    assert "  %s (block of r2h1): no route on 5 of 5 hosts" % block in text
    assert "rr1: no route to %s (block of r2h1)" % block in rep["problems"]
    assert rep["brief"].startswith("%d problem(s) on 6 host(s): " % len(rep["problems"]))


def test_a_block_missing_on_one_host_stays_on_its_line():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    st = converged_statuses(plan)
    gone = plan["hosts"]["r2h2"]["block"]
    st["r1h1"]["routes"]["bird"] = [r for r in st["r1h1"]["routes"]["bird"] if r["dest"] != gone]
    rep = build_report(st, plan)
    assert "  r1h1 [rack1] sessions 1/1: no route to %s (block of r2h2)" % gone in rep["text"]
    assert "blocks missing on most hosts" not in rep["text"]
    assert rep["racks"]["rack1"]["hosts_missing_blocks"] == 1


def test_stale_routes_bird_and_owned():
    plan = rack_plan(racks=2, hosts_per_rack=2, floating=True)
    st = converged_statuses(plan)
    assert build_report(st, plan)["converged"]  # floating /32s learned by BGP are planned
    r = st["r1h1"]["routes"]
    r["bird"].append({"dest": "172.31.99.0/24", "gateway": "10.0.1.9", "dev": "eth0"})   # block of a removed host
    r["blackholes"].append("172.31.98.0/24")                                              # old block
    r["workloads"].append({"dest": "172.16.0.77", "dev": "cali0123456789a"})              # removed workload
    r["owned"].append({"dest": "192.0.2.0/24", "gateway": "10.0.1.9", "dev": "eth0"})
    rep = build_report(st, plan)
    assert not rep["converged"]
    stale = [p for p in rep["problems"] if p.startswith("r1h1: stale route")]
    assert stale == [
        "r1h1: stale route 172.31.99.0/24 proto bird (no host in the plan owns it)",
        "r1h1: stale route blackhole 172.31.98.0/24 (planned block: %s)" % plan["hosts"]["r1h1"]["block"],
        "r1h1: stale route 172.16.0.77/32 dev cali0123456789a (no planned workload)",
        "r1h1: stale route 192.0.2.0/24 via 10.0.1.9 (owned protocol, not in the plan)",
    ]
    assert "| 4            | NOT CONVERGED (1 host) |" in _lines(rep, "| rack1 ")[0]


def test_own_block_not_blackholed_and_unplanned_session():
    plan = rack_plan(racks=1, hosts_per_rack=2)
    st = converged_statuses(plan)
    st["r1h2"]["routes"]["blackholes"] = []
    extra = dict(st["r1h1"]["sessions"][0], name="Mesh_10_0_1_3", peer_ip="10.0.1.3", description="r1h2")
    st["r1h1"]["sessions"].append(extra)
    rep = build_report(st, plan)
    assert "r1h2: its block %s is not blackholed" % plan["hosts"]["r1h2"]["block"] in rep["problems"]
    assert "r1h1: session Mesh_10_0_1_3 to 10.0.1.3 is not in the plan" in rep["problems"]


def test_planned_session_missing_and_host_not_reached():
    plan = rack_plan(racks=1, hosts_per_rack=2)
    st = converged_statuses(plan)
    st["rr1"]["sessions"] = [s for s in st["rr1"]["sessions"] if s["peer_ip"] != "10.0.1.3"]
    del st["r1h1"]
    rep = build_report(st, plan)
    assert "rr1: no session to r1h2 (10.0.1.3) (no BGP protocol Client_10_0_1_3 configured)" in rep["problems"]
    assert "r1h1: not in the status run" in rep["problems"]
    assert "r1h1 [rack1] sessions 0/1: not in the status run" in rep["text"]


def test_status_report_filter_reads_hostvars():
    from ansible_collections.netfleet.calico.plugins.filter.status_report import status_report
    plan = rack_plan(racks=1, hosts_per_rack=1)
    st = converged_statuses(plan)
    hostvars = {"rr1": {"calico_node_status": st["rr1"]}, "r1h1": {}}
    rep = status_report(hostvars, ["rr1", "r1h1"], plan=plan)
    assert "r1h1: host not reached" in rep["problems"]
    assert "rr1: session to r1h1 (10.0.1.2) is Established" not in rep["problems"]


def test_hundreds_of_hosts_stay_compact():
    plan = rack_plan(racks=60, hosts_per_rack=5)  # 360 speakers
    st = converged_statuses(plan)
    rep = build_report(st, plan)
    assert rep["converged"]
    assert len(rep["text"].splitlines()) == 60 + 5  # 3 rule lines, header, summary
    broken = bird_down(st, plan, "r7h3")
    broken["r30h1"]["routes"]["blackholes"].append("172.31.250.0/24")
    rep = build_report(broken, plan)
    lines = rep["text"].splitlines()
    assert len(lines) == 60 + 5 + 1 + 3 + 2, "\n".join(lines)  # + problem hosts: r7h3, rr7, r30h1; + the block
    assert sum(1 for ln in lines if "NOT CONVERGED" in ln) == 60  # every rack misses r7h3's block
    assert len(rep["problems"]) > 359 and len(rep["brief"]) < 400
    assert [ln.split()[0] for ln in lines[65:68]] == ["r7h3", "r30h1", "rr7"]


def test_sessions_are_matched_by_address_when_renamed():
    plan = rack_plan(racks=1, hosts_per_rack=1)
    st = converged_statuses(plan)
    st["r1h1"]["sessions"][0]["name"] = "custom_name"
    assert build_report(copy.deepcopy(st), plan)["converged"]


def test_full_mesh_plan_without_racks():
    from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
    from ansible_collections.netfleet.calico.plugins.filter.fabric_topology import build_topology
    hv = {"host-%s" % c: {"calico_pool": "172.17.0.0/16", "calico_block_prefix": 24,
                          "calico_node_ip": "192.168.100.%d" % (100 + i)} for i, c in enumerate("abc")}
    plan = fabric(hv, {"all": list(hv), "calico_nodes": list(hv)})
    st = converged_statuses(plan)
    rep = build_report(st, plan)
    assert rep["converged"] and rep["summary"] == "3 hosts, 6/6 BGP sessions Established, 3 blocks"
    assert len(_lines(rep, "| - ")) == 1 and "| 3     | 0   | 6/6 " in _lines(rep, "| - ")[0]
    topo = build_topology(st, plan)
    assert [s["id"] for s in topo["sessions"]] == ["host-a--host-b", "host-a--host-c", "host-b--host-c"]
    assert all(s["kind"] == "mesh" for s in topo["sessions"]) and "subgraph" not in topo["dot"]


def test_removed_host_still_announcing_is_one_stale_line():
    """r2h2 left the inventory but its BIRD still runs: its block is stale everywhere, rr2's session unplanned."""
    full = rack_plan(racks=2, hosts_per_rack=2)
    st = converged_statuses(full)
    gone = full["hosts"]["r2h2"]["block"]
    del st["r2h2"]
    plan = copy.deepcopy(full)
    del plan["hosts"]["r2h2"]
    plan["hosts"]["rr2"]["peers"] = [p for p in plan["hosts"]["rr2"]["peers"] if p["name"] != "r2h2"]
    plan["racks"]["rack2"]["hosts"].remove("r2h2")
    rep = build_report(st, plan)
    assert not rep["converged"]
    assert "r1h1: stale route %s proto bird (no host in the plan owns it)" % gone in rep["problems"]
    assert "rr2: session Client_10_0_2_3 to 10.0.2.3 is not in the plan" in rep["problems"]
    text = rep["text"]
    assert "stale routes on most hosts:\n  %s proto bird (no host in the plan owns it): on 5 of 5 hosts" % gone in text
    assert re.findall(r"^  (\S+) \[", text, re.M) == ["rr2"], text  # the only host with a problem of its own
    assert "| 3            | NOT CONVERGED (3 hosts) |" in _lines(rep, "| rack1 ")[0]


def test_containers_of_the_cni_plugin_are_not_stale_routes():
    plan = rack_plan(racks=1, hosts_per_rack=2)
    host = plan["hosts"]["r1h1"]
    block = host["block"]
    web = block.rsplit(".", 1)[0] + ".64/26"
    host["cni"] = {"enabled": True, "networks": {"web": {"range": web, "labels": {}}}}
    st = converged_statuses(plan)
    st["r1h1"]["routes"]["workloads"].append({"dest": web.split("/")[0], "dev": "cali0123456789a"})
    assert build_report(st, plan)["converged"]
    outside = block.rsplit(".", 1)[0] + ".200"
    st["r1h1"]["routes"]["workloads"].append({"dest": outside, "dev": "calibbbbbbbbbbb"})
    rep = build_report(st, plan)
    assert "r1h1: stale route %s/32 dev calibbbbbbbbbbb (no planned workload)" % outside in rep["problems"]


def test_routers_outside_the_fleet_are_counted_apart():
    router = {"ip": "192.0.2.1", "as_number": 65100, "name": "dc-router", "multihop": True, "import_default": True,
              "import_prefixes": ["198.51.100.0/24"]}
    plan = rack_plan(racks=1, hosts_per_rack=2, extra={"calico_bgp_peers": [router]})
    st = converged_statuses(plan)
    for h in st.values():
        h["sessions"].append({"name": "External_192_0_2_1", "description": "dc-router", "peer_ip": "192.0.2.1",
                              "peer_as": 65100, "type": "ebgp", "state": "up", "info": "Established",
                              "established": True, "filtered": 250})  # a router announces more than we take
        h["routes"]["bird"] += [{"dest": "default", "gateway": "192.0.2.1", "dev": "eth0"},
                                {"dest": "198.51.100.0/24", "gateway": "192.0.2.1", "dev": "eth0"}]
    rep = build_report(st, plan)
    assert rep["converged"], rep["problems"]
    assert rep["summary"] == ("3 hosts, 4/4 BGP sessions Established, 2 blocks, 3/3 sessions to routers outside "
                              "the fleet Established")
    assert "router outside the fleet" in rep["detail"]
    # a route the host does not import from its router is stale; a router session down is a problem
    st["r1h1"]["routes"]["bird"].append({"dest": "203.0.113.0/24", "gateway": "192.0.2.1", "dev": "eth0"})
    st["r1h2"]["sessions"][-1].update(state="start", info="Active", established=False)
    rep = build_report(st, plan)
    assert not rep["converged"]
    assert "r1h1: stale route 203.0.113.0/24 proto bird (no host in the plan owns it)" in rep["problems"]
    assert "r1h2: session to router dc-router (192.0.2.1) is Active" in rep["problems"]
    assert rep["summary"].endswith(", 2/3 sessions to routers outside the fleet Established")
    assert rep["racks"]["rack1"]["sessions_up"] == 4  # the fleet's sessions alone
