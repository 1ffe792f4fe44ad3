"""status_report and the topology picture in a dual-stack fleet (both families' routes judged and counted), and an
IPv4-only fleet's report exactly as it was before dual stack."""

from __future__ import annotations

import copy

from fleet_fixture import bird_down, converged_statuses, rack_plan

from ansible_collections.netfleet.calico.plugins.filter.status_report import build_report
from ansible_collections.netfleet.calico.plugins.plugin_utils import topology
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric_status import _dest, analyse

# rack_plan(2, 2) with r2h1's BIRD down and a stale route on r1h1, as the report printed it before dual stack
IPV4_ONLY_TEXT = """\
+-------+-------+-------+-----+-------------+------+----------------------+--------------+-------------------------+
|  RACK |   AS  | HOSTS | RRS | SESSIONS UP | DOWN | HOSTS MISSING BLOCKS | STALE ROUTES |          STATUS         |
+-------+-------+-------+-----+-------------+------+----------------------+--------------+-------------------------+
| rack1 | 65001 | 3     | 1   | 5/5         | 0    | 3                    | 1            | NOT CONVERGED (3 hosts) |
| rack2 | 65002 | 3     | 1   | 3/5         | 2    | 3                    | 0            | NOT CONVERGED (3 hosts) |
+-------+-------+-------+-----+-------------+------+----------------------+--------------+-------------------------+
problem hosts (3 of 6):
  r1h1 [rack1] sessions 1/1: stale route 172.31.0.0/24 proto bird (no host in the plan owns it)
  r2h1 [rack2] sessions 0/1: BIRD not running (Unable to connect to server control socket), no route to 3 blocks: \
172.16.0.0/24, 172.16.1.0/24, 172.16.3.0/24
  rr2 [rack2] sessions 2/3: session to r2h1 (10.0.2.2) is Active
blocks missing on most hosts:
  172.16.2.0/24 (block of r2h1): no route on 5 of 5 hosts (r1h1, r1h2, r2h2, rr1 (+1 more))
6 hosts, 8/10 BGP sessions Established, 4 blocks"""


def test_an_ipv4_only_fleet_reports_exactly_as_before():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    statuses = bird_down(converged_statuses(plan), plan, "r2h1")
    statuses["r1h1"]["routes"]["bird"].append({"dest": "172.31.0.0/24", "gateway": "10.0.0.9", "dev": "eth0"})
    # a host that also reports (empty) IPv6 routes, as calico_bgp_status does now, changes nothing
    statuses["r1h2"]["routes6"] = {"bird": [], "workloads": [], "blackholes": [], "owned": []}
    rep = build_report(statuses, plan)
    assert rep["text"] == IPV4_ONLY_TEXT
    assert "IPv6" not in rep["detail"]
    analysis = analyse(statuses, plan)
    assert "dual_stack" not in analysis and "blocks_v6" not in analysis["hosts"]["r1h1"]
    assert "IPv6" not in topology.render_dot(analysis)


def _dual():
    plan = rack_plan(racks=2, hosts_per_rack=2, dual=True)
    return plan, converged_statuses(plan)


def test_dual_stack_converged_counts_both_families():
    plan, statuses = _dual()
    rep = build_report(statuses, plan)
    assert rep["converged"], rep["problems"]
    assert rep["summary"] == ("6 hosts, 10/10 BGP sessions Established, 4 blocks, 4 IPv6 blocks; routes to other "
                              "hosts' blocks: IPv4 20/20, IPv6 20/20")
    assert "| 0 (IPv6 0) " in rep["text"]
    assert "  IPv6: block fd00:17::/122; 1 workload /128s, 3 learned by BGP" in rep["detail"]


def test_a_missing_ipv6_route_fails_naming_the_host():
    plan, statuses = _dual()
    gone = plan["hosts"]["r2h2"]["blocks_v6"][0]
    statuses["r1h1"]["routes6"]["bird"] = [r for r in statuses["r1h1"]["routes6"]["bird"] if r["dest"] != gone]
    rep = build_report(statuses, plan)
    assert not rep["converged"]
    assert rep["problems"] == ["r1h1: no route to %s (block of r2h2)" % gone]
    assert rep["problem_hosts"] == ["r1h1"] and "IPv6 19/20" in rep["summary"]
    assert "| 1 (IPv6 1) " in rep["text"] and "r1h1 [rack1] sessions 1/1: no route to " + gone in rep["text"]


def test_ipv6_blackhole_workload_and_stale_routes_are_judged_like_ipv4_ones():
    plan, statuses = _dual()
    st = statuses["r2h1"]["routes6"]
    own = st["blackholes"].pop()
    st["bird"].append({"dest": "fd00:99::/122", "gateway": "fd00:1::1", "dev": "eth0"})
    st["bird"].append({"dest": own, "gateway": "fd00:1::1", "dev": "eth0"})
    st["workloads"].append({"dest": "fd00:17::99", "dev": "cali0123456789a"})
    st["owned"].append({"dest": "fd00:1234::/64", "dev": "eth0"})
    probs = build_report(statuses, plan)["problems"]
    assert probs == [
        "r2h1: its block %s is not blackholed" % own,
        "r2h1: stale route fd00:99::/122 proto bird (no host in the plan owns it)",
        "r2h1: stale route %s proto bird (r2h1's own block)" % own,
        "r2h1: stale route fd00:17::99/128 dev cali0123456789a (no planned workload)",
        "r2h1: stale route fd00:1234::/64 dev eth0 (owned protocol, not in the plan)",
    ]


def test_ipv6_floating_ips_learned_by_bgp_are_planned_and_unplanned_ones_stale():
    plan = rack_plan(racks=2, hosts_per_rack=2, dual=True, floating=True)
    assert plan["floating_ips_v6"] == ["fd00:99:1::1/128", "fd00:99:1::2/128", "fd00:99:2::1/128",
                                       "fd00:99:2::2/128"]
    statuses = converged_statuses(plan)
    assert "fd00:99:2::2" in [r["dest"] for r in statuses["r1h1"]["routes6"]["bird"]]
    rep = build_report(statuses, plan)
    assert rep["converged"], rep["problems"]
    statuses["r1h1"]["routes6"]["bird"].append({"dest": "fd00:99:9::1", "gateway": "fd00:1::1", "dev": "eth0"})
    assert build_report(statuses, plan)["problems"] == [
        "r1h1: stale route fd00:99:9::1/128 proto bird (no host in the plan owns it)"]


def test_a_host_down_is_missing_its_ipv6_block_everywhere_in_one_line():
    plan, statuses = _dual()
    statuses = bird_down(statuses, plan, "r2h1")
    gone = plan["hosts"]["r2h1"]["blocks_v6"][0]
    for name, st in statuses.items():
        if name != "r2h1":
            st["routes6"]["bird"] = [r for r in st["routes6"]["bird"] if r["dest"] != gone]
    rep = build_report(statuses, plan)
    assert "  %s (block of r2h1): no route on 5 of 5 hosts" % gone in rep["text"]
    assert "r2h1: no route to %s (block of r2h2)" % plan["hosts"]["r2h2"]["blocks_v6"][0] in rep["problems"]


def test_without_a_plan_ipv6_blackholes_make_the_fleet_dual_stack():
    plan, statuses = _dual()
    rep = build_report(copy.deepcopy(statuses))
    assert rep["converged"], rep["problems"]
    assert "4 IPv6 blocks" in rep["summary"]
    statuses["r1h2"]["routes6"]["bird"] = []
    assert len(build_report(statuses)["problems"]) == 3


def test_topology_shows_ipv6_blocks():
    plan, statuses = _dual()
    analysis = analyse(statuses, plan)
    assert analysis["hosts"]["r1h1"]["blocks_v6"] == ["fd00:17::/122"]
    assert "IPv6 block fd00:17::/122" in topology.render_dot(analysis)
    page = topology.render_html(analysis, "<svg></svg>")
    assert "<td class=\"block\">172.16.0.0/24, fd00:17::/122</td>" in page


def test_ipv6_host_routes_are_slash_128():
    assert _dest("fd00:17::1") == "fd00:17::1/128"
    assert _dest("172.17.8.2") == "172.17.8.2/32"
    assert _dest("fd00:17:0:0::40/122") == "fd00:17::40/122"


def test_spines_carry_the_ipv6_floating_ips():
    """A dual-stack fleet with spines: each rack's IPv6 prefix list names its hosts' IPv6 floating IPs (/128) beside
    their IPv6 blocks, and the list the spines send out carries every one of them."""
    plan = rack_plan(racks=2, floating=True, dual=True, spines=True)
    lists6 = plan["spines"]["sp1"]["ipv6"]["prefix_lists"]
    for rack in ("rack1", "rack2"):
        hosts = [h for h, p in plan["hosts"].items() if p["rack"] == rack]
        own = {p for h in hosts for p in plan["hosts"][h]["blocks_v6"] + plan["hosts"][h].get("floating_ips_v6", [])}
        listed = {e["prefix"] for e in lists6["calico-in-" + rack] if e["action"] == "permit"}
        assert listed == own and any(p.endswith("/128") for p in listed), (rack, listed)
    out = {e["prefix"] for e in lists6["calico-out"] if e["action"] == "permit"}
    assert set(plan["floating_ips_v6"]) <= out and len(plan["floating_ips_v6"]) == 4


def test_a_cni_containers_ipv6_route_is_not_stale():
    """A /128 inside one of the host's container networks' IPv6 ranges is a container's (the CNI plugin's), as a
    /32 inside its IPv4 range; outside them it is stale."""
    plan, statuses = _dual()
    plan["hosts"]["r2h1"]["cni"] = {"enabled": True, "networks": {
        "web": {"range": "172.16.2.16/28", "range6": "fd00:17::10/124", "labels": {}}}}
    st = statuses["r2h1"]["routes6"]
    st["workloads"] += [{"dest": "fd00:17::11", "dev": "cali0123456789a"},
                        {"dest": "fd00:17::21", "dev": "cali0123456789b"}]
    assert build_report(statuses, plan)["problems"] == [
        "r2h1: stale route fd00:17::21/128 dev cali0123456789b (no planned workload)"]


def test_ipv6_sessions_are_expected_established_beside_the_ipv4_ones():
    plan = rack_plan(racks=2, hosts_per_rack=2, dual=True, extra={"calico_bgp_ipv6_sessions": True})
    statuses = converged_statuses(plan)
    rep = build_report(statuses, plan)
    assert rep["converged"], rep["problems"]
    assert rep["summary"].startswith("6 hosts, 20/20 BGP sessions Established")
    v6 = [s for s in analyse(statuses, plan)["sessions"] if s.get("family") == 6]
    assert len(v6) == 5 and all(s["up"] and s["id"].endswith("--v6") for s in v6)
    assert {(s["a"], s["b"]) for s in v6} == {(s["a"], s["b"]) for s in analyse(statuses, plan)["sessions"]
                                              if "family" not in s}
    # the IPv6 session of r1h1 and its reflector gone on r1h1's side: one problem, naming the IPv6 address
    statuses["r1h1"]["sessions"] = [s for s in statuses["r1h1"]["sessions"] if s["name"] != "RR_fd00_1__1"]
    rep = build_report(statuses, plan)
    assert not rep["converged"]
    assert rep["problems"] == ["r1h1: no session to rr1 (fd00:1::1) (no BGP protocol RR_fd00_1__1 configured)"]
    # the option off again while r1h1 still runs one: an IPv6 session the plan does not have, matched to its peer
    off = rack_plan(racks=2, hosts_per_rack=2, dual=True)
    statuses = converged_statuses(plan)
    keep = next(s for s in statuses["r1h1"]["sessions"] if s["name"] == "RR_fd00_1__1")
    statuses = converged_statuses(off)
    statuses["r1h1"]["sessions"].append(keep)
    rep = build_report(statuses, off)
    assert rep["problems"] == ["r1h1: session RR_fd00_1__1 to fd00:1::1 is not in the plan"]
