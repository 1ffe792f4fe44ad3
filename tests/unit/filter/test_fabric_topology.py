"""The fabric picture: Graphviz source and HTML page from the analysis (no dot needed here; the lab test runs it)."""

from __future__ import annotations

import json
import re

import pytest
from ansible.errors import AnsibleFilterError
from fleet_fixture import bird_down, converged_statuses, rack_plan

from ansible_collections.netfleet.calico.plugins.filter.fabric_topology import build_topology, fabric_topology
from ansible_collections.netfleet.calico.plugins.filter.topology_html import topology_html
from ansible_collections.netfleet.calico.plugins.plugin_utils import topology as t
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric_status import end_state, session_state

GREEN, AMBER, RED, GREY = (t.COLOURS[k] for k in ("established", "connecting", "down", "missing"))


def _edge(dot, sid):
    lines = [ln for ln in dot.splitlines() if 'id="session-%s"' % sid in ln]
    assert len(lines) == 1, (sid, dot)
    return lines[0]


def test_every_host_rack_and_planned_session_is_drawn():
    plan = rack_plan(racks=2, hosts_per_rack=2, reflectors={"rack1": 2})
    topo = build_topology(converged_statuses(plan), plan)
    dot = topo["dot"]
    assert dot.startswith("graph fabric {") and dot.rstrip().endswith("}")
    for h in plan["hosts"]:
        assert 'id="host-%s"' % h in dot
    assert 'id="rack-rack1"' in dot and 'id="rack-rack2"' in dot
    assert dot.count("subgraph ") == 2
    expected = set()
    for h, p in plan["hosts"].items():
        for peer in p["peers"]:
            expected.add(tuple(sorted((h, peer["name"]))))
    assert {(s["a"], s["b"]) for s in topo["sessions"]} == expected
    assert len(re.findall(r'^  "[^"]+" -- "[^"]+" \[id="session-', dot, re.M)) == len(expected)
    for a, b in expected:
        line = _edge(dot, "%s--%s" % (a, b))
        assert 'class="session up state-established planned' in line and 'color="%s"' % GREEN in line
    # reflector end first (ranked above its clients), eBGP between racks named as such
    assert _edge(dot, "r1h1--rr1a").lstrip().startswith('"rr1a" -- "r1h1"')
    assert "kind-ebgp" in _edge(dot, "rr1a--rr2") and "kind-client" in _edge(dot, "r1h1--rr1a")
    assert "kind-reflector-peer" in _edge(dot, "rr1a--rr1b")
    assert 'class="host reflector ok"' in dot and 'shape=box3d' in dot
    assert "rack1  AS 65001" in dot and "block %s" % plan["hosts"]["r1h1"]["block"] in dot


def test_bird_down_colours_each_end():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    topo = build_topology(bird_down(converged_statuses(plan), plan, "r2h1"), plan)
    line = _edge(topo["dot"], "r2h1--rr2")
    assert 'class="session down state-connecting planned' in line
    assert 'color="%s;0.5:%s"' % (AMBER, GREY) in line  # rr2 (tail) Active, r2h1 missing
    assert "r2h1: missing (BIRD not running)" in line and "rr2: Active" in line
    assert 'id="host-r2h1"' in topo["dot"] and "BIRD down" in topo["dot"]
    assert re.search(r'"r2h1" \[id="host-r2h1", [^\n]*class="host node problem"', topo["dot"])
    assert not topo["converged"] and topo["hosts"]["r2h1"]["sessions_up"] == 0


def test_end_and_session_states():
    assert end_state(None) == "missing"
    assert end_state({"established": True, "info": "Established"}) == "established"
    assert end_state({"established": False, "info": "Active Socket: Connection refused"}) == "connecting"
    assert end_state({"established": False, "info": "OpenSent"}) == "connecting"
    assert end_state({"established": False, "info": "Idle", "state": "start"}) == "down"
    assert end_state({"established": False, "info": "down", "state": "down"}) == "down"
    ends = [{"state": "established"}, {"state": "down"}]
    assert session_state(ends) == "down"
    assert session_state([{"state": "missing"}, {"state": "connecting"}]) == "connecting"
    assert session_state([{"state": "established"}] * 2) == "established"
    assert session_state([]) == "missing"


def test_down_state_is_red_and_unplanned_session_dashed_to_unknown_peer():
    plan = rack_plan(racks=1, hosts_per_rack=1)
    st = converged_statuses(plan)
    for h in ("rr1", "r1h1"):
        st[h]["sessions"][0].update(established=False, info="Idle", state="start")
    st["r1h1"]["sessions"].append(dict(st["r1h1"]["sessions"][0], name="Mesh_192_0_2_7", peer_ip="192.0.2.7",
                                       established=True, info="Established"))
    topo = build_topology(st, plan)
    assert 'color="%s"' % RED in _edge(topo["dot"], "r1h1--rr1")
    lines = [ln for ln in topo["dot"].splitlines() if "unplanned" in ln and " -- " in ln]
    assert len(lines) == 1 and "style=dashed" in lines[0] and 'state-established unplanned' in lines[0]
    assert '"peer 192.0.2.7" [id="peer-peer_192.0.2.7-' in topo["dot"]
    assert "r1h1: session Mesh_192_0_2_7 to 192.0.2.7 is not in the plan" in topo["problems"]


def test_names_are_escaped_for_graphviz_and_html():
    evil = 'x"\\N<b>&\'\n'
    # preflight refuses such a host name; the picture escapes names anyway (a plan is only data)
    plan = json.loads(json.dumps(rack_plan(racks=1, hosts_per_rack=1)).replace("r1h1", json.dumps(evil)[1:-1]))
    st = converged_statuses(plan)
    topo = build_topology(st, plan, title='fab "<i>"')
    dot = topo["dot"]
    assert '"x\\"\\\\N<b>&amp;\' "' in dot  # quote escaped, backslash doubled (no \N escape), newline gone
    assert evil not in dot
    node_id = t.dom_id("host", evil)
    assert re.fullmatch(r"host-x_N_b-[0-9a-f]{8}", node_id), node_id
    svg = '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg"><g id="graph0"/></svg>'
    page = topology_html(topo, svg, generated="<now>")
    assert "<b>" not in page and "<i>" not in page and "<now>" not in page
    assert "x&quot;\\N&lt;b&gt;&amp;&#x27;" in page
    assert 'id="row-%s"' % node_id.replace("host-", "", 1) in page or 'id="%s"' % t.dom_id("row", evil) in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and '<figure id="picture"><svg ' in page


def test_html_page_has_summary_table_and_down_sessions():
    plan = rack_plan(racks=2, hosts_per_rack=2)
    topo = build_topology(bird_down(converged_statuses(plan), plan, "r2h1"), plan)
    page = topology_html(topo, "<svg></svg>")
    assert page.startswith("<!DOCTYPE html>") and 'class="summary problem">NOT converged: ' in page
    for h in plan["hosts"]:
        assert 'id="row-%s"' % h in page
    row = re.search(r'<tr id="row-r2h1"[^\n]*', page).group(0)
    assert 'class="host-row problem"' in row and '<td class="sessions num">0/1</td>' in row
    assert '<td class="rack">rack2</td>' in row and '<td class="as num">65002</td>' in row
    assert re.search(r'<tr id="row-r1h1" class="host-row problem"[^\n]*<td class="missing">%s</td>'
                     % re.escape(plan["hosts"]["r2h1"]["block"]), page)
    assert "Sessions not Established (1 of 5)" in page and 'id="row-session-r2h1--rr2"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    converged = topology_html(build_topology(converged_statuses(plan), plan), "<svg></svg>")
    assert 'class="summary ok">converged: 6 hosts, 10/10 BGP sessions Established, 4 blocks' in converged


def test_filters_check_their_input():
    plan = rack_plan(racks=1, hosts_per_rack=1)
    with pytest.raises(AnsibleFilterError, match="not an SVG"):
        topology_html(build_topology(converged_statuses(plan), plan), "dot: syntax error")
    with pytest.raises(AnsibleFilterError, match="expects the result of netfleet.calico.fabric_topology"):
        topology_html({"dot": ""}, "<svg/>")
    topo = fabric_topology({"rr1": {}, "r1h1": {}}, ["rr1", "r1h1"], plan=plan)
    assert all(s["state"] == "missing" for s in topo["sessions"]) and len(topo["sessions"]) == 1
    assert "host not reached" in topo["dot"] or "not reached" in topo["dot"]
