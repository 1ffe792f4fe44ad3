import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.bgp_sessions import bgp_sessions
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import protocol_name, session_timing
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric import compute_peers


def _s(name, ip, up=True):
    return {"name": name, "description": "d-" + ip, "peer_ip": ip, "peer_as": 64512, "local_as": 64512,
            "established": up}


def _plan(peers, role="node", ip="10.0.0.3"):
    return {"node_ip": ip, "role": role, "peers": peers}


def _p(ip, **kw):
    return dict({"name": "h" + ip[-1], "ip": ip, "as_number": 64512, "type": "ibgp", "rr_client": False}, **kw)


def test_protocol_names():
    assert protocol_name(_p("10.0.0.1"), "full_mesh", "node") == "Mesh_10_0_0_1"
    assert protocol_name(_p("10.0.0.1"), "route_reflector", "node") == "RR_10_0_0_1"
    assert protocol_name(_p("10.0.0.1", rr_client=True), "route_reflector", "reflector") == "Client_10_0_0_1"
    assert protocol_name(_p("10.0.0.1"), "route_reflector", "reflector") == "Peer_10_0_0_1"
    assert protocol_name(_p("10.0.0.1", type="ebgp"), "route_reflector", "reflector") == "Global_10_0_0_1"


def test_without_status_only_names():
    out = bgp_sessions(_plan([_p("10.0.0.1")]), "full_mesh")
    assert out == {"peers": [dict(_p("10.0.0.1"), protocol="Mesh_10_0_0_1")], "peers6": [], "wait_for": [],
                   "lingering": [], "carry_v6": [], "replaced": [], "needed": False, "final_lingering": [],
                   "final_carry_v6": [], "unfinished": False}
    with pytest.raises(AnsibleFilterError):
        bgp_sessions({"peers": None}, "full_mesh")


def test_mesh_to_reflector_keeps_mesh_until_reflector_session_is_up():
    # host 10.0.0.3 in a mesh with .2, .4 and the future reflector .9
    status = {"bird_running": True, "sessions": [
        _s("Mesh_10_0_0_2", "10.0.0.2"), _s("Mesh_10_0_0_4", "10.0.0.4"), _s("Mesh_10_0_0_9", "10.0.0.9"),
        _s("Mesh_10_0_0_7", "10.0.0.7", up=False)]}
    out = bgp_sessions(_plan([_p("10.0.0.9")]), "route_reflector", status)
    assert out["needed"] and out["wait_for"] == ["RR_10_0_0_9"]
    # the reflector's mesh session cannot stay beside RR_ (same neighbour); a down session is not worth keeping
    assert [x["name"] for x in out["lingering"]] == ["Mesh_10_0_0_2", "Mesh_10_0_0_4"]
    assert out["lingering"][0] == {"name": "Mesh_10_0_0_2", "description": "d-10.0.0.2", "ip": "10.0.0.2",
                                   "as_number": 64512, "local_as": 64512,
                                   "passive": session_timing("10.0.0.3", "10.0.0.2")[0],
                                   "connect_delay_offset": session_timing("10.0.0.3", "10.0.0.2")[1],
                                   # every key the template reads, also where the session ran from the node IP
                                   "local_ip": None, "type": None, "direct": None, "family": 4}
    # rendered by the plan's own rule, so BIRD sees the session unchanged and keeps it up
    fabric = compute_peers({"a": {"ip": "10.0.0.3", "as_number": 64512, "rack": None, "reflector": False},
                            "b": {"ip": "10.0.0.4", "as_number": 64512, "rack": None, "reflector": False}},
                           "full_mesh")
    assert (out["lingering"][1]["passive"], out["lingering"][1]["connect_delay_offset"]) == (
        fabric["a"][0]["passive"], fabric["a"][0]["connect_delay_offset"])


def test_no_transition_when_planned_sessions_are_up_or_nothing_is_dropped():
    up = {"bird_running": True, "sessions": [_s("Mesh_10_0_0_2", "10.0.0.2"), _s("Mesh_10_0_0_4", "10.0.0.4")]}
    assert not bgp_sessions(_plan([_p("10.0.0.2")]), "full_mesh", up)["needed"]  # a removal only
    grow = bgp_sessions(_plan([_p("10.0.0.2"), _p("10.0.0.4"), _p("10.0.0.5")]), "full_mesh", up)
    assert grow["wait_for"] == ["Mesh_10_0_0_5"] and not grow["needed"]  # an addition only
    assert not bgp_sessions(_plan([_p("10.0.0.9")]), "full_mesh", {"bird_running": False})["needed"]


def test_a_peer_change_neither_waits_for_nor_keeps_the_routers_sessions():
    # mesh -> reflector while an External_ session runs (up) and a new router is added (not up yet)
    status = {"bird_running": True, "sessions": [
        _s("Mesh_10_0_0_2", "10.0.0.2"), _s("External_192_0_2_1", "192.0.2.1")]}
    plan = dict(_plan([_p("10.0.0.9")]), external_peers=[
        {"ip": "192.0.2.1", "protocol": "External_192_0_2_1"}, {"ip": "192.0.2.2", "protocol": "External_192_0_2_2"}])
    out = bgp_sessions(plan, "route_reflector", status)
    assert out["wait_for"] == ["RR_10_0_0_9"]
    assert [x["name"] for x in out["lingering"]] == ["Mesh_10_0_0_2"]
