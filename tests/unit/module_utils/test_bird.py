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
