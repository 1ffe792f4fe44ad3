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
