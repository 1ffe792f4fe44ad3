"""netfleet.calico.bgp_peers (stand-alone filter)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.bgp_peers import FilterModule, bgp_peers
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing

P = 'netfleet.calico.bgp_peers: '


def error_of(*args, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        bgp_peers(*args, **kwargs)
    assert '\n' not in str(exc.value)
    return str(exc.value)


def peer(name, ip, as_number=64512, passive=None, kind='ibgp', client=False, cluster=None, local=None,
         direct=None):
    """A planned peer. ``passive`` is given only for reflector-client sessions (the reflector dials, offset 0);
    otherwise the session's timing is plugin_utils.bgp.session_timing's (tested on its own)."""
    offset = 0
    if passive is None:
        passive, offset = session_timing(local, ip)
    return {'name': name, 'ip': ip, 'local_ip': local, 'as_number': as_number, 'type': kind, 'direct': direct,
            'passive': passive, 'connect_delay_offset': offset, 'rr_client': client, 'rr_cluster_id': cluster}


RR = {
    'rr1': {'ip': '10.1.0.1', 'as_number': 65001, 'rack': 'rack1', 'role': 'reflector'},
    'h1': {'ip': '10.1.0.11', 'as_number': 65001, 'rack': 'rack1'},
    'rr2': {'ip': '10.2.0.1', 'as_number': 65002, 'rack': 'rack2', 'reflector': True},
    'h2': {'ip': '10.2.0.11', 'as_number': '65002', 'rack': 'rack2', 'role': 'node'},
}


def test_registered():
    assert FilterModule().filters() == {'bgp_peers': bgp_peers}


def test_documented_full_mesh_example():
    nodes = {'host-a': {'ip': '192.168.100.100', 'as_number': 64512},
             'host-b': {'ip': '192.168.100.101', 'as_number': 64512}}
    assert bgp_peers(nodes) == {'host-a': [peer('host-b', '192.168.100.101', local='192.168.100.100')],
                                'host-b': [peer('host-a', '192.168.100.100', local='192.168.100.101')]}


def test_default_as():
    assert bgp_peers({'a': {'ip': '10.0.0.1'}, 'b': {'ip': '10.0.0.2'}}, host='a') == [
        peer('b', '10.0.0.2', local='10.0.0.1')]


def test_documented_route_reflector_example():
    assert bgp_peers(RR, 'route_reflector', host='rr1') == [
        peer('h1', '10.1.0.11', 65001, passive=False, client=True, cluster='10.1.0.1', local='10.1.0.1'),
        peer('rr2', '10.2.0.1', 65002, kind='ebgp', local='10.1.0.1'),
    ]
    plan = bgp_peers(RR, 'route_reflector')
    assert plan['h2'] == [peer('rr2', '10.2.0.1', 65002, passive=True, local='10.2.0.11')]  # the client waits
    assert plan['rr2'] == [peer('h2', '10.2.0.11', 65002, passive=False, client=True, cluster='10.2.0.1',
                                local='10.2.0.1'),
                           peer('rr1', '10.1.0.1', 65001, kind='ebgp', local='10.2.0.1')]


def test_cluster_id_override():
    plan = bgp_peers(RR, 'route_reflector', cluster_ids={'rack1': '10.255.0.1', 'rack2': 2})
    assert plan['rr1'][0]['rr_cluster_id'] == '10.255.0.1'
    assert plan['rr2'][0]['rr_cluster_id'] == '0.0.0.2'


@pytest.mark.parametrize('nodes, topology, expected', [
    (RR, 'star', "input: calico_bgp_topology 'star' is not supported — use full_mesh or route_reflector"),
    ([1], 'full_mesh', 'input: nodes is not a mapping — pipe {host: {ip, as_number, rack?, role?}} into bgp_peers'),
    ({'a': 'x'}, 'full_mesh', "host 'a': entry is not a mapping — give {ip, as_number, rack?, role?}"),
    ({'a': {'ip': 'x'}}, 'full_mesh', "host 'a': ip 'x' is not an IPv4 address — set ip to the host's node IPv4 "
                                      "address"),
    ({'a': {'ip': '10.0.0.1', 'as_number': 0}}, 'full_mesh',
     "host 'a': as_number 0 is not a valid AS number — use 1-4294967295 except 23456 (AS_TRANS), e.g. a private AS "
     "from 64512-65534 or 4200000000-4294967294"),
    ({'a': {'ip': '10.0.0.1'}, 'b': {'ip': '10.0.0.1'}}, 'full_mesh',
     "host 'b': ip 10.0.0.1 is also used by host 'a' — give each host its own node IP"),
    (dict(RR, h9={'ip': '10.9.0.9', 'as_number': 65009}), 'route_reflector',
     "host 'h9': host is not in any rack — add it to a child group of calico_racks (route_reflector topology)"),
    (dict(RR, h9={'ip': '10.9.0.9', 'as_number': 65009, 'rack': 'rack9'}), 'route_reflector',
     "rack 'rack9': has nodes (h9) but no route reflector — add a host of rack 'rack9' to calico_route_reflectors"),
    (dict(RR, h9={'ip': '10.9.0.9', 'as_number': 65001, 'rack': 'rack9', 'role': 'reflector'}), 'route_reflector',
     "rack 'rack9': calico_as_number 65001 is also used by rack 'rack1' — give each rack its own calico_as_number "
     "(route_reflector: racks peer by eBGP)"),
])
def test_errors(nodes, topology, expected):
    assert error_of(nodes, topology) == P + expected


def test_unknown_host():
    assert error_of(RR, 'route_reflector', host='nope') == (
        P + "host 'nope': is not among the nodes — pass the name of one of the piped nodes as host")


def test_spine_ip_and_prefix_lengths():
    nodes = {name: dict(node, prefixlen=24) for name, node in RR.items()}
    nodes['rr1'].update(spine_ip='10.255.0.1', spine_prefixlen='24')
    nodes['rr2'].update(spine_ip='10.255.0.2')  # no spine_prefixlen: rr1's /24 decides
    plan = bgp_peers(nodes, 'route_reflector')
    assert plan['rr1'] == [
        peer('h1', '10.1.0.11', 65001, passive=False, client=True, cluster='10.1.0.1', local='10.1.0.1', direct=True),
        peer('rr2', '10.255.0.2', 65002, kind='ebgp', local='10.255.0.1', direct=True),
    ]
    assert plan['rr2'][-1] == peer('rr1', '10.255.0.1', 65001, kind='ebgp', local='10.255.0.2', direct=True)
    assert plan['h1'] == [peer('rr1', '10.1.0.1', 65001, passive=True, local='10.1.0.11', direct=True)]
    assert bgp_peers(nodes, host='rr1')[-1]['ip'] == '10.2.0.1'  # full mesh: rr2's node IP, not its spine IP


@pytest.mark.parametrize('changes, expected', [
    ({'h1': {'spine_ip': '10.255.0.9'}},
     "host 'h1': spine_ip 10.255.0.9 is set but the host is not a route reflector — drop spine_ip, or give the host "
     "role reflector"),
    ({'rr1': {'spine_ip': 'x'}},
     "host 'rr1': spine_ip 'x' is not an IPv4 address — set spine_ip to the reflector's address toward other racks' "
     "reflectors, or drop it (defaults to ip)"),
    ({'rr1': {'prefixlen': 33}},
     "host 'rr1': prefixlen 33 is not a prefix length 0-32 — set prefixlen to the prefix length of the subnet, or "
     "drop it"),
    ({'rr1': {'spine_ip': '10.255.0.1', 'spine_prefixlen': 'x'}},
     "host 'rr1': spine_prefixlen 'x' is not a prefix length 0-32"),
    ({'rr1': {'spine_ip': '10.255.0.1'}, 'rr2': {'spine_ip': '10.255.0.1'}},
     "host 'rr2': spine_ip 10.255.0.1 is also the spine_ip of host 'rr1' — give each reflector a spine_ip that no "
     "other host uses"),
    ({'rr2': {'spine_ip': '10.1.0.11'}},
     "host 'rr2': spine_ip 10.1.0.11 is also the ip of host 'h1'"),
])
def test_spine_errors(changes, expected):
    nodes = {name: dict(node, **changes.get(name, {})) for name, node in RR.items()}
    assert error_of(nodes, 'route_reflector').startswith(P + expected)
