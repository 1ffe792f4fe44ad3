"""Routers outside the fleet (plugins/plugin_utils/external_peers.py) through the fabric filter: the sessions
bird.conf renders, what each router may announce, and the preflight lines of a peer list that does not fit the
fleet. (Hostile values of calico_bgp_peers: tests/unit/filter/test_bad_inputs.py.)"""

from __future__ import annotations

import pytest

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.filter.fabric_inputs import fabric_inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.external_peers import RECEIVE_LIMIT_BASE, parse_peers

P = 'netfleet.calico preflight: '
ROUTER = {'ip': '192.168.100.1', 'as_number': 65000}


def fleet(peers=None, per_host=None, floating=None):
    """Three hosts of one segment in full mesh (AS 64512), host-r a reflector without a block; ``peers`` on every
    host (as group_vars/all would set them)."""
    hostvars, groups = {}, {'calico_nodes': ['host-a', 'host-b'], 'calico_route_reflectors': ['host-r']}
    for i, name in enumerate(['host-a', 'host-b', 'host-r']):
        hv = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_as_number': 64512,
              'calico_node_ip': f'192.168.100.{10 + i}', 'calico_node_prefixlen': 24}
        if peers is not None:
            hv['calico_bgp_peers'] = peers
        hv.update((per_host or {}).get(name, {}))
        hostvars[name] = hv
    if floating:
        hostvars['host-a']['calico_workloads'] = [{'name': 'web', 'floating_ip': floating}]
    return hostvars, groups


def plan(*args, **kwargs):
    return fabric(*fleet(*args, **kwargs))


def test_no_peers_no_sessions():
    hosts = plan()['hosts']
    assert all(h['external_peers'] == [] and h['bfd'] is None for h in hosts.values())


def test_a_router_everyone_peers_with():
    peer = dict(ROUTER, name='dc-router', import_default=True, import_prefixes=['198.51.100.0/24', '10.0.0.0/8'],
                password='s3cret', bfd=True)
    hosts = plan([peer])['hosts']
    session = hosts['host-a']['external_peers'][0]
    assert session == {
        'ip': '192.168.100.1', 'family': 4, 'as_number': 65000, 'name': 'dc-router',
        'protocol': 'External_192_168_100_1', 'local_ip': '192.168.100.10', 'type': 'ebgp', 'connection': 'direct',
        'ttl_security': False, 'bfd': True,
        'password_define': 'CALICO_PEER_PASSWORD_192_168_100_1',
        # exact prefixes: the default route first, then by address
        'imports': ['0.0.0.0/0', '10.0.0.0/8', '198.51.100.0/24'], 'receive_limit': RECEIVE_LIMIT_BASE + 12,
    }
    assert 's3cret' not in repr(hosts)  # the password stays in the inventory (the role writes the secrets file)
    # a reflector peers too (it exports what it carries for the fleet: bird.conf's filter)
    assert hosts['host-r']['external_peers'][0]['local_ip'] == '192.168.100.12'
    # bfd on one router: the BFD protocol with the collection's timers, though the fleet has no BFD
    assert hosts['host-a']['bfd'] == {'interval': 100, 'multiplier': 3}


def test_nothing_imported_by_default_and_options():
    hosts = plan(per_host={'host-a': {'calico_bgp_peers': [
        dict(ROUTER, multihop=True), {'ip': '10.1.0.1', 'as_number': 64512, 'multihop': 3},
        {'ip': '192.168.100.2', 'as_number': '4200000000', 'ttl_security': 'yes', 'multihop': False}]}})['hosts']
    first, second, third = hosts['host-a']['external_peers']
    assert first['imports'] == [] and first['receive_limit'] == RECEIVE_LIMIT_BASE
    assert first['connection'] == 'multihop' and first['password_define'] is None and first['name'] == '192.168.100.1'
    assert second['connection'] == 'multihop 3' and second['type'] == 'ibgp'  # the router is in the fleet's AS
    assert third['connection'] == 'direct' and third['ttl_security'] and third['as_number'] == 4200000000
    # only host-a has routers; the others have none, and no BFD protocol
    assert hosts['host-b']['external_peers'] == [] and hosts['host-b']['bfd'] is None


def test_fleet_bfd_is_kept():
    hostvars, groups = fleet([dict(ROUTER, bfd=True)])
    for hv in hostvars.values():
        hv['calico_bgp_bfd'] = {'interval': 50, 'multiplier': 4}
    hosts = fabric(hostvars, groups)['hosts']
    assert hosts['host-a']['bfd'] == {'interval': 50, 'multiplier': 4}


def test_host_vars_override_the_group():
    hosts = plan([ROUTER], per_host={'host-b': {'calico_bgp_peers': []}})['hosts']
    assert [p['ip'] for p in hosts['host-a']['external_peers']] == ['192.168.100.1']
    assert hosts['host-b']['external_peers'] == []


@pytest.mark.parametrize('peer, floating, message', [
    ({'ip': '172.17.3.1', 'as_number': 65000}, None,
     "host 'host-a': calico_bgp_peers entry 1 (172.17.3.1) ip is inside calico_pool 172.17.0.0/16"),
    ({'ip': '192.168.100.11', 'as_number': 65000}, None, "ip is the node IP of host 'host-b'"),
    ({'ip': '192.168.100.255', 'as_number': 65000}, None, "ip is the broadcast address of host 'host-a''s subnet"),
    ({'ip': '203.0.113.7', 'as_number': 65000}, '203.0.113.7', 'ip is a floating IP of a workload'),
    (dict(ROUTER, import_prefixes=['172.17.9.0/24']), None,
     'import_prefixes 172.17.9.0/24 is inside calico_pool 172.17.0.0/16 — drop it'),
    (dict(ROUTER, import_prefixes=['172.17.9.2/32']), None, 'is inside calico_pool'),
    (dict(ROUTER, import_prefixes=['203.0.113.7/32']), '203.0.113.7',
     'import_prefixes 203.0.113.7/32 is a floating IP'),
])
def test_a_peer_that_does_not_fit_the_fleet_is_one_line(peer, floating, message):
    with pytest.raises(FabricError) as err:
        plan([peer], floating=floating)
    text = str(err.value)
    assert text.startswith(P) and message in text and '\n' not in text, text


def test_a_prefix_holding_the_pool_is_allowed():
    # a less specific route never takes the blocks' traffic (they are more specific), and the filter refuses
    # anything inside the pool whatever the list says
    hosts = plan([dict(ROUTER, import_prefixes=['172.16.0.0/12'])])['hosts']
    assert hosts['host-a']['external_peers'][0]['imports'] == ['172.16.0.0/12']


def test_the_first_preflight_step_checks_the_list_alone():
    hostvars, groups = fleet([ROUTER, ROUTER])
    with pytest.raises(FabricError, match=r"entry 2 \(192\.168\.100\.1\): peer 192\.168\.100\.1 is already entry 1"):
        fabric_inputs(hostvars, groups)


def test_parse_peers_normalises():
    assert parse_peers(None, 'host x') == [] and parse_peers('', 'host x') == []
    peers = parse_peers([dict(ROUTER, as_number='65000', bfd='yes', import_prefixes=['198.51.100.0/24'] * 2,
                              multihop='2')], 'host x')
    assert peers == [{'ip': '192.168.100.1', 'family': 4, 'as_number': 65000, 'name': None, 'password': False,
                      'multihop': 2,
                      'ttl_security': False, 'bfd': True, 'import_default': False,
                      'import_prefixes': ['198.51.100.0/24']}]


def test_a_router_off_the_subnet_needs_multihop():
    with pytest.raises(FabricError) as err:
        plan([{'ip': '10.1.0.1', 'as_number': 65000}])
    assert "host 'host-a': calico_bgp_peers entry 1 (10.1.0.1) ip is not on the host's subnet (192.168.100.0/24) — " \
           'set multihop: true' in str(err.value)
    # without a known prefix length the inventory is taken at its word
    hostvars, groups = fleet([{'ip': '10.1.0.1', 'as_number': 65000}])
    for hv in hostvars.values():
        del hv['calico_node_prefixlen']
    assert fabric(hostvars, groups)['hosts']['host-a']['external_peers'][0]['connection'] == 'direct'


def test_a_reflector_meets_a_spine_router_from_its_spine_address():
    extra = {'calico_rr_spine_ip': '10.255.0.11', 'calico_rr_spine_prefixlen': 24}
    hostvars, groups = fleet(per_host={'host-r': dict(extra, calico_bgp_peers=[
        {'ip': '10.255.0.1', 'as_number': 65000, 'ttl_security': True}, dict(ROUTER)])})
    hosts = fabric(hostvars, groups)['hosts']
    spine, fabric_side = hosts['host-r']['external_peers']
    assert spine['local_ip'] == '10.255.0.11' and spine['connection'] == 'direct' and spine['ttl_security']
    assert fabric_side['local_ip'] == '192.168.100.12'


def dual_stack_fleet(peers):
    """fleet() with an IPv6 pool and an IPv6 node address per host."""
    hostvars, groups = fleet(peers)
    for i, name in enumerate(['host-a', 'host-b', 'host-r']):
        hostvars[name].update(calico_pool_v6='fd00:17::/48', calico_node_ip_v6=f'fd00:100::{10 + i}')
    return hostvars, groups


def test_an_ipv6_router_gets_a_session_over_ipv6_carrying_ipv6_only():
    peer = {'ip': 'fd00:100::1', 'as_number': 65000, 'import_default': True, 'import_prefixes': ['2001:db8::/32'],
            'password': 's3cret', 'multihop': 2}
    hosts = fabric(*dual_stack_fleet([peer, ROUTER]))['hosts']
    v6, v4 = hosts['host-a']['external_peers']
    assert v6 == {'ip': 'fd00:100::1', 'family': 6, 'as_number': 65000, 'name': 'fd00:100::1',
                  'protocol': 'External_fd00_100__1', 'local_ip': 'fd00:100::10', 'type': 'ebgp',
                  'connection': 'multihop 2', 'ttl_security': False, 'bfd': False,
                  'password_define': 'CALICO_PEER_PASSWORD_fd00_100__1',
                  'imports': ['::/0', '2001:db8::/32'], 'receive_limit': RECEIVE_LIMIT_BASE + 8}
    assert v4['family'] == 4 and v4['imports'] == [] and v4['local_ip'] == '192.168.100.10'
    assert hosts['host-r']['external_peers'][0]['local_ip'] == 'fd00:100::12'


@pytest.mark.parametrize('peer, message', [
    ({'ip': 'fd00:100::1', 'as_number': 65000}, 'ip is IPv6 but calico_pool_v6 is not set'),
    ({'ip': 'fd00:100::1', 'as_number': 65000, 'import_prefixes': ['198.51.100.0/24']}, 'is not an IPv6 CIDR'),
    ({'ip': '192.168.100.1', 'as_number': 65000, 'import_prefixes': ['2001:db8::/32']}, 'is not'),
])
def test_an_ipv6_router_needs_a_dual_stack_fleet_and_ipv6_prefixes(peer, message):
    v4_fleet = 'not set' in message
    hostvars, groups = fleet([peer]) if v4_fleet else dual_stack_fleet([peer])
    with pytest.raises(FabricError) as err:
        fabric(hostvars, groups)
    assert message in str(err.value) and "host 'host-a'" in str(err.value), str(err.value)


@pytest.mark.parametrize('peer, message', [
    ({'ip': 'fd00:99::7', 'as_number': 65000}, 'ip is a floating IP of a workload'),
    ({'ip': 'fd00:100::1', 'as_number': 65000, 'import_prefixes': ['fd00:99::7/128']}, 'a floating IP of a workload'),
])
def test_an_ipv6_router_is_not_a_workloads_ipv6_floating_ip(peer, message):
    hostvars, groups = dual_stack_fleet([peer])
    hostvars['host-b']['calico_workloads'] = [{'name': 'web', 'floating_ip6': 'fd00:99::7'}]
    with pytest.raises(FabricError) as err:
        fabric(hostvars, groups)
    assert message in str(err.value) and "host 'host-a'" in str(err.value), str(err.value)
