from ansible_collections.netfleet.calico.plugins.module_utils import bird

SHOW = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-11-25 11:50:47  

kernel4    Kernel     master4    up     2026-11-25 11:50:47  
  Channel ipv4
    State:          UP
    Routes:         0 imported, 0 exported, 0 preferred

Mesh_192_168_100_101 BGP        ---        up     2026-11-25 11:51:02  Established   
  Description:    host-b
  BGP state:          Established
    Neighbor address: 192.168.100.101
    Neighbor AS:      64512
    Local AS:         64512
  Channel ipv4
    State:          UP
    Routes:         1 imported, 1 exported, 1 preferred

Mesh_192_168_100_102 BGP        ---        start  2026-11-25 11:50:47  Active        Socket: Connection refused
  Description:    host-c
  BGP state:          Active
    Neighbor address: 192.168.100.102
    Neighbor AS:      64513
    Local AS:         64512
    Last error:       Socket: Connection refused
  Channel ipv4
    State:          DOWN
"""


def test_parse_protocols_reads_every_protocol():
    protos = bird.parse_protocols(SHOW)
    assert [p["name"] for p in protos] == ["device1", "kernel4", "Mesh_192_168_100_101", "Mesh_192_168_100_102"]
    assert protos[0]["since"] == "2026-11-25 11:50:47"
    assert protos[3]["info"] == "Active        Socket: Connection refused"


def test_bgp_sessions_shape():
    sessions = bird.bgp_sessions(bird.parse_protocols(SHOW))
    assert len(sessions) == 2
    up, down = sessions
    assert up["peer_ip"] == "192.168.100.101" and up["established"] and up["type"] == "ibgp"
    assert (up["imported"], up["exported"]) == (1, 1)
    assert up["description"] == "host-b" and up["since"] == "2026-11-25 11:51:02"
    assert not down["established"] and down["info"] == "Active" and down["type"] == "ebgp"
    assert down["last_error"] == "Socket: Connection refused"
    assert down["imported"] == 0


def test_configure_result():
    assert bird.configure_result("BIRD 2.0.12 ready.\nReading configuration from x\nReconfigured\n") == (
        True, "Reconfigured")
    ok, msg = bird.configure_result("BIRD 2.0.12 ready.\nReading configuration from x\nx:3:1 syntax error\n")
    assert not ok and "syntax error" in msg
    assert bird.configure_result("") == (False, "no answer from birdc")


def test_pid_alive(tmp_path):
    import os
    pf = tmp_path / "bird.pid"
    assert bird.pid_alive(str(pf)) is None
    pf.write_text(str(os.getpid()))
    assert bird.pid_alive(str(pf)) == os.getpid()
    assert bird.pid_alive(str(pf), must_contain="no-such-thing-in-cmdline") is None
    pf.write_text("999999999")
    assert bird.pid_alive(str(pf)) is None
    pf.write_text("garbage")
    assert bird.pid_alive(str(pf)) is None


ROUTES = """BIRD 2.0.12 ready.
Table master4:
172.17.0.0/20        unicast [Global_10_255_0_11 10:09:29.260] * (100) [AS65001i]
\tvia 10.255.0.11 on eth1
                     unicast [Global_10_255_0_1 10:09:28.100] (100) [AS65100 65001i]
\tvia 10.255.0.11 on eth1
172.17.48.0/24       unicast [Global_10_255_0_41 10:09:26.312] * (100) [AS65004i]
\tvia 10.255.0.41 on eth1
172.17.16.0/20       blackhole [calico_aggregate 10:09:16.001] * (200)
172.17.32.0/24       unicast [Global_10_255_0_31 10:09:26.235] * (100) [AS65003i]
\tvia 10.255.0.31 on eth1
0.0.0.0/0            unicast [Global_10_255_0_2 10:09:28.300] * (100) [AS65100i]
\tvia 10.255.0.2 on eth1

Table master6:
fd00:1::/122         unicast [Global_10_255_0_41 10:09:26.312] * (100) [AS65004i]
\tvia fd00::41 on eth1
fd00::/16            unicast [Global_10_255_0_1 10:09:26.312] * (100) [AS65100 65004i]
\tvia fd00::1 on eth1
"""


def test_parse_route_sources_reads_every_route_best_or_not():
    routes = bird.parse_route_sources(ROUTES)
    assert ("172.17.0.0/20", "Global_10_255_0_1") in routes and ("172.17.0.0/20", "Global_10_255_0_11") in routes
    assert ("172.17.16.0/20", "calico_aggregate") in routes and ("fd00:1::/122", "Global_10_255_0_41") in routes
    assert len(routes) == 8


def test_uncovered_names_what_the_old_sessions_alone_bring():
    routes = bird.parse_route_sources(ROUTES)
    new = {"Global_10_255_0_1", "Global_10_255_0_2"}
    # the spine brings rack1's aggregate; rack4's block and rack3's block only come from the old sessions (the
    # default route from sp2 covers nothing); the v6 block is inside the v6 route the spine brings
    old = {"Global_10_255_0_11", "Global_10_255_0_31", "Global_10_255_0_41"}
    assert bird.uncovered(routes, old, new) == ["172.17.32.0/24", "172.17.48.0/24"]
    assert bird.uncovered(routes, {"Global_10_255_0_11"}, new) == []
    assert bird.uncovered(routes, set(), new) == []
    # a static route of the host itself does not count as a path through a session
    assert bird.uncovered(routes, {"Global_10_255_0_41"}, {"Global_10_255_0_1"}) == ["172.17.48.0/24"]
