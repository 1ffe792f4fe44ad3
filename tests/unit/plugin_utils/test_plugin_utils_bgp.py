"""Unit tests of plugins/plugin_utils/bgp.py: who dials a session, and when."""

from __future__ import annotations

import ipaddress
from collections import Counter

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import CONNECT_DELAY_SPREAD, session_timing

FLEET = [str(ipaddress.ip_address('10.64.1.1') + i) for i in range(120)]


def test_exactly_one_end_dials_and_both_agree_on_the_delay():
    for a in FLEET[:30]:
        for b in FLEET[:30]:
            if a != b:
                (pa, oa), (pb, ob) = session_timing(a, b), session_timing(b, a)
                assert pa != pb and oa == ob and 0 <= oa < CONNECT_DELAY_SPREAD


def test_depends_only_on_the_two_addresses():
    assert (session_timing('192.168.100.100', '192.168.100.101')
            == session_timing('192.168.100.100', '192.168.100.101'))
    from ipaddress import IPv4Address
    assert session_timing(IPv4Address('10.0.0.1'), '10.0.0.2') == session_timing('10.0.0.1', '10.0.0.2')


def test_a_full_mesh_spreads_incoming_sessions_and_their_start():
    # "the lower address waits" gives the lowest host 119 incoming sessions at once in a 120-host mesh
    incoming = Counter()
    offsets = Counter()
    for i, a in enumerate(FLEET):
        for b in FLEET[i + 1:]:
            passive_a, offset = session_timing(a, b)
            incoming[a if passive_a else b] += 1
            offsets[offset] += 1
    assert max(incoming.values()) <= 80 and min(incoming.values()) >= 40
    total = sum(offsets.values())
    assert set(offsets) == set(range(CONNECT_DELAY_SPREAD))
    assert all(count > total / CONNECT_DELAY_SPREAD * 0.8 for count in offsets.values())


def test_without_spread_the_dialer_is_the_same_and_nobody_waits_longer():
    for b in FLEET[1:40]:
        assert session_timing(FLEET[0], b, spread=False) == (session_timing(FLEET[0], b)[0], 0)
