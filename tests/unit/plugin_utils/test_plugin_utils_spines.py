"""The L3 spine (plugins/plugin_utils/spines.py through the fabric plan): reflectors peer with the spines instead of
each other, each spine's neighbors, prefix lists and options, the preflight lines, and the make-before-break move
(the lingering reflector-to-reflector sessions keep their configuration)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import bgp_sessions, session_timing
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.spines import bfd_multihop

RACKS = ('rack1', 'rack2', 'rack3')


def fleet(spines=True):
    """rack1: two reflectors and a host (with a floating IP); rack2, rack3: one reflector and a host; two spines."""
    common = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_bgp_topology': 'route_reflector',
              'lab_spine_segment': '10.255.0.0/24', 'calico_spine_as_number': 65100}
    hostvars = {
        'rr1a': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.1', calico_rr_spine_ip='10.255.0.11'),
        'rr1b': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.2', calico_rr_spine_ip='10.255.0.12'),
        'h1': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.11',
                   calico_workloads=[{'name': 'w1', 'floating_ip': '10.99.0.1'}]),
        'rr2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.1', calico_rr_spine_ip='10.255.0.21'),
        'h2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.11', calico_workloads=[{'name': 'w2'}]),
        'rr3': dict(common, calico_as_number=65003, calico_node_ip='192.168.103.1', calico_rr_spine_ip='10.255.0.31'),
        'h3': dict(common, calico_as_number=65003, calico_node_ip='192.168.103.11', calico_workloads=[{'name': 'w3'}]),
    }
    for name in hostvars:
        hostvars[name]['calico_node_prefixlen'] = 24
    groups = {'calico_nodes': ['h1', 'h2', 'h3'], 'calico_route_reflectors': ['rr1a', 'rr1b', 'rr2', 'rr3'],
              'rack1': ['rr1a', 'rr1b', 'h1'], 'rack2': ['rr2', 'h2'], 'rack3': ['rr3', 'h3']}
    if spines:
        hostvars['sp1'] = dict(common, calico_node_ip='10.255.0.1')
        hostvars['sp2'] = dict(common, ansible_host='10.255.0.2', calico_router_id='1.1.1.2')
        groups['calico_spines'] = ['sp1', 'sp2']
    return hostvars, groups


def plan(hostvars, groups):
    return fabric(hostvars, groups, racks=RACKS)


def refused(hostvars, groups):
    with pytest.raises(FabricError) as err:
        plan(hostvars, groups)
    text = str(err.value)
    assert '\n' not in text and text.startswith('netfleet.calico preflight: '), text
    return text


def peers_of(p, host):
    return [(x['name'], x['ip'], x['local_ip'], x['as_number'], x['type']) for x in p['hosts'][host]['peers']]


def test_reflectors_peer_with_the_spines_instead_of_each_other():
    p = plan(*fleet())
    assert peers_of(p, 'rr1a') == [('h1', '192.168.101.11', '192.168.101.1', 65001, 'ibgp'),
                                   ('rr1b', '192.168.101.2', '192.168.101.1', 65001, 'ibgp'),
                                   ('sp1', '10.255.0.1', '10.255.0.11', 65100, 'ebgp'),
                                   ('sp2', '10.255.0.2', '10.255.0.11', 65100, 'ebgp')]
    assert peers_of(p, 'rr2') == [('h2', '192.168.102.11', '192.168.102.1', 65002, 'ibgp'),
                                  ('sp1', '10.255.0.1', '10.255.0.21', 65100, 'ebgp'),
                                  ('sp2', '10.255.0.2', '10.255.0.21', 65100, 'ebgp')]
    spine_peer = p['hosts']['rr2']['peers'][1]
    assert spine_peer['spine'] is True and spine_peer['direct'] is True and spine_peer['connect_delay_offset'] == 0
    # hosts are untouched: their rack's reflectors only
    assert [x[0] for x in peers_of(p, 'h1')] == ['rr1a', 'rr1b']
    # a reflector takes from a spine any block of the pool and any floating IP but its own rack's, each with the
    # origin AS of its rack
    assert p['hosts']['rr2']['imports']['sp1'] == {
        'prefixes': [], 'any_block': '172.17.0.0/16{24,24}', 'any_floating': True, 'except': ['172.17.1.0/24+'],
        'origin_check': True, 'receive_limit': 256 + 1 + 64}
    assert p['hosts']['rr1a']['imports']['sp2']['except'] == ['10.99.0.1/32', '172.17.0.0/24+']


def test_without_spines_nothing_changes():
    with_group, groups = fleet(spines=False)
    p = plan(with_group, groups)
    assert 'spines' not in p
    assert [x['name'] for x in p['hosts']['rr2']['peers']] == ['h2', 'rr1a', 'rr1b', 'rr3']
    # the spine variables alone change nothing either
    groups['calico_spines'] = []
    assert plan(with_group, groups) == p


def test_each_spine_plan():
    p = plan(*fleet())
    sp1, sp2 = p['spines']['sp1'], p['spines']['sp2']
    assert (sp1['router_id'], sp1['as_number'], sp1['ip'], sp1['prefixlen']) == ('10.255.0.1', 65100, '10.255.0.1', 24)
    assert (sp2['router_id'], sp2['ip']) == ('1.1.1.2', '10.255.0.2')
    assert sp1['maximum_paths'] == 2 and sp1['bfd'] is None and sp1['password'] is False
    assert [(n['name'], n['ip'], n['local_ip'], n['as_number'], n['rack'], n['prefix_list_in']) for n in
            sp1['neighbors']] == [('rr1a', '10.255.0.11', '10.255.0.1', 65001, 'rack1', 'calico-in-rack1'),
                                  ('rr1b', '10.255.0.12', '10.255.0.1', 65001, 'rack1', 'calico-in-rack1'),
                                  ('rr2', '10.255.0.21', '10.255.0.1', 65002, 'rack2', 'calico-in-rack2'),
                                  ('rr3', '10.255.0.31', '10.255.0.1', 65003, 'rack3', 'calico-in-rack3')]
    for n in sp1['neighbors']:
        assert n['direct'] is True and n['ttl_security'] is True and n['bfd'] is False and n['bfd_multihop'] is False
        assert n['prefix_list_out'] == 'calico-out'
        # the reflector's timers: BIRD's hold time 240 s (keepalive 80 s), the role's connect retry 5 s
        assert (n['keepalive_time'], n['hold_time'], n['connect_retry']) == (80, 240, 5)
    # exactly one end of every session dials: the spine's side is the reflector's opposite
    for spine in ('sp1', 'sp2'):
        for n in p['spines'][spine]['neighbors']:
            theirs = next(x for x in p['hosts'][n['name']]['peers'] if x['name'] == spine)
            assert n['passive'] != theirs['passive']
            assert n['passive'] == session_timing(n['local_ip'], n['ip'], spread=False)[0]
            assert 'bfd_multihop' not in theirs  # without BFD every reflector's session stays `direct`
    assert not any('spine_bfd_multihop' in host for host in p['hosts'].values())


def test_a_spine_session_takes_the_timers_of_its_reflector():
    hostvars, groups = fleet()
    hostvars['rr2'].update(calico_node_bgp_hold_time=9, calico_node_bgp_connect_retry='3')
    hostvars['rr3'].update(calico_node_bgp_hold_time='')
    timers = {n['name']: (n['keepalive_time'], n['hold_time'], n['connect_retry'])
              for n in plan(hostvars, groups)['spines']['sp2']['neighbors']}
    assert timers == {'rr1a': (80, 240, 5), 'rr1b': (80, 240, 5), 'rr2': (3, 9, 3), 'rr3': (80, 240, 5)}


def test_prefix_lists_accept_a_racks_own_prefixes_and_send_every_block():
    p = plan(*fleet())
    lists = p['spines']['sp1']['prefix_lists']
    assert p['spines']['sp2']['prefix_lists'] == lists
    assert lists['calico-in-rack1'] == [
        {'seq': 5, 'action': 'permit', 'prefix': '10.99.0.1/32'},
        {'seq': 10, 'action': 'permit', 'prefix': '172.17.0.0/24'},
        {'seq': 15, 'action': 'deny', 'prefix': '0.0.0.0/0', 'le': 32}]
    assert lists['calico-in-rack2'][0] == {'seq': 5, 'action': 'permit', 'prefix': '172.17.1.0/24'}
    assert len(lists['calico-in-rack2']) == 2
    assert lists['calico-out'] == [
        {'seq': 5, 'action': 'permit', 'prefix': '172.17.0.0/16', 'ge': 24, 'le': 24},
        {'seq': 10, 'action': 'permit', 'prefix': '10.99.0.1/32'},
        {'seq': 15, 'action': 'deny', 'prefix': '0.0.0.0/0', 'le': 32}]


def test_password_bfd_gtsm_and_multihop():
    hostvars, groups = fleet()
    for name in hostvars:
        hostvars[name]['calico_bgp_password'] = 's3cr#t!'
        hostvars[name]['calico_bgp_bfd'] = {'interval': 50}
    hostvars['rr3']['calico_node_bgp_ttl_security'] = 'no'
    hostvars['rr2']['calico_rr_spine_ip'] = '10.254.0.21'  # another subnet: multihop, no GTSM
    hostvars['rr2']['calico_rr_spine_prefixlen'] = 24
    p = plan(hostvars, groups)
    sp1 = p['spines']['sp1']
    assert sp1['password'] is True and sp1['bfd'] == {'interval': 50, 'multiplier': 3}
    by_name = {n['name']: n for n in sp1['neighbors']}
    assert by_name['rr1a']['password'] and by_name['rr1a']['bfd'] and by_name['rr1a']['ttl_security']
    assert by_name['rr2']['direct'] is False and by_name['rr2']['ttl_security'] is False
    assert by_name['rr3']['direct'] is True and by_name['rr3']['ttl_security'] is False
    assert next(x for x in p['hosts']['rr2']['peers'] if x['name'] == 'sp1')['direct'] is False
    assert 's3cr#t!' not in repr(p)  # the secret itself never enters the plan
    # BFD: FRR runs it multihop with GTSM (rr1a) and across a router (rr2), single hop on rr3's plain session;
    # a reflector whose BIRD would run single hop with a multihop spine (rr1a: direct, GTSM) runs `multihop 1`
    for spine in ('sp1', 'sp2'):
        by_name = {n['name']: n for n in p['spines'][spine]['neighbors']}
        assert [by_name[r]['bfd_multihop'] for r in ('rr1a', 'rr1b', 'rr2', 'rr3')] == [True, True, True, False]
        theirs = {r: next(x for x in p['hosts'][r]['peers'] if x['name'] == spine) for r in ('rr1a', 'rr2', 'rr3')}
        assert theirs['rr1a']['bfd_multihop'] is True and theirs['rr1a']['direct'] is True
        assert 'bfd_multihop' not in theirs['rr2'] and 'bfd_multihop' not in theirs['rr3']
    assert [p['hosts'][r].get('spine_bfd_multihop') for r in ('rr1a', 'rr1b', 'rr2', 'rr3', 'h1')] == [
        True, True, None, None, None]
    assert not any(x.get('bfd_multihop') for x in p['hosts']['rr1a']['peers'] if not x.get('spine'))


@pytest.mark.parametrize('direct, gtsm, multihop', [
    (True, True, True),     # ttl-security hops 1: FRR sets the peer's TTL to 255, bgpd asks bfdd for multihop
    (None, True, True),
    (False, False, True),   # ebgp-multihop
    (True, False, False),
    (None, False, False),
])
def test_frr_runs_bfd_multihop_with_gtsm_or_across_a_router(direct, gtsm, multihop):
    assert bfd_multihop(direct, gtsm) is multihop


@pytest.mark.parametrize('change, message', [
    (lambda hv, g: [hv[h].update(calico_bgp_topology='full_mesh') for h in hv],
     "host 'sp1': calico_spines has hosts but calico_bgp_topology is full_mesh"),
    (lambda hv, g: g['calico_nodes'].append('sp1'), "host 'sp1': is in calico_spines and is a Calico host"),
    (lambda hv, g: [hv[h].pop('calico_spine_as_number') for h in hv], "host 'sp1': calico_spine_as_number is not set"),
    (lambda hv, g: hv['sp2'].update(calico_spine_as_number=65101), 'calico_spine_as_number 65101 differs from 65100'),
    (lambda hv, g: [hv[h].update(calico_spine_as_number=65002) for h in hv],
     "calico_spine_as_number 65002 is also the AS of rack 'rack2'"),
    (lambda hv, g: [hv[h].update(calico_spine_as_number='65100; x') for h in hv],
     "calico_spine_as_number '65100; x' is not a number"),
    (lambda hv, g: hv['sp1'].update(calico_node_ip='10.255.0.300'), "host 'sp1': calico_node_ip '10.255.0.300' is not"),
    (lambda hv, g: hv['sp1'].pop('calico_node_ip'), "host 'sp1': spine has no address"),
    (lambda hv, g: hv['sp1'].update(calico_node_ip='10.255.0.21'),
     "host 'sp1': address 10.255.0.21 is also the spine IP of host 'rr2'"),
    (lambda hv, g: hv['sp2'].update(calico_node_ip='10.255.0.1'),
     "host 'sp2': address 10.255.0.1 is also the spine address of host 'sp1'"),
    (lambda hv, g: hv['sp2'].update(calico_router_id='192.168.101.1'),
     "host 'sp2': router id 192.168.101.1 is also used by host 'rr1a'"),
    (lambda hv, g: hv['sp1'].update(calico_router_id='0.0.0.0'), "calico_router_id '0.0.0.0' is not an IPv4 address"),
    (lambda hv, g: hv['sp1'].update(calico_node_prefixlen=33), 'calico_node_prefixlen 33 is not a prefix length'),
    (lambda hv, g: [hv[h].update(calico_bgp_password='two words') for h in hv],
     "host 'sp1': the BGP password has a space (FRR takes one word)"),
    (lambda hv, g: hv['rr2'].update(calico_node_bgp_password='other'),
     "host 'rr2': its BGP password is not spine 'sp1''s"),
    (lambda hv, g: hv['sp1'].update(spine_bgp_password='x y'), "spine_bgp_password 'x y' is not allowed"),
])
def test_bad_spines_are_one_preflight_line(change, message):
    hostvars, groups = fleet()
    change(hostvars, groups)
    text = refused(hostvars, groups)
    assert message in text, text


def _running(name, ip, local_as, peer_as, up=True):
    return {'name': name, 'peer_ip': ip, 'local_as': local_as, 'peer_as': peer_as, 'established': up,
            'description': name}


def test_moving_to_the_spine_keeps_the_reflector_sessions_as_they_ran():
    before = plan(*fleet(spines=False))['hosts']['rr2']
    after = plan(*fleet())['hosts']['rr2']
    status = {'bird_running': True, 'sessions': [
        _running('Client_192_168_102_11', '192.168.102.11', 65002, 65002),
        _running('Global_10_255_0_11', '10.255.0.11', 65002, 65001),
        _running('Global_10_255_0_12', '10.255.0.12', 65002, 65001),
        _running('Global_10_255_0_31', '10.255.0.31', 65002, 65003)]}
    out = bgp_sessions(after, 'route_reflector', status)
    assert out['needed'] and out['wait_for'] == ['Global_10_255_0_1', 'Global_10_255_0_2']
    assert [x['name'] for x in out['lingering']] == ['Global_10_255_0_11', 'Global_10_255_0_12',
                                                     'Global_10_255_0_31']
    # each one exactly as the plan without spines rendered it: same local address, dialing side, direct, eBGP
    ran = {p['ip']: p for p in before['peers']}
    for old in out['lingering']:
        planned = ran[old['ip']]
        assert (old['local_ip'], old['passive'], old['connect_delay_offset'], old['direct'], old['type']) == (
            planned['local_ip'], planned['passive'], planned['connect_delay_offset'], planned['direct'],
            planned['type'])
    # once the spine sessions are up, the old ones go
    up = copy.deepcopy(status)
    up['sessions'] += [_running('Global_10_255_0_1', '10.255.0.1', 65002, 65100),
                       _running('Global_10_255_0_2', '10.255.0.2', 65002, 65100)]
    assert bgp_sessions(after, 'route_reflector', up)['lingering'] == []
    # and back: the spine sessions stay until the reflector sessions are up
    back = bgp_sessions(before, 'route_reflector', {'bird_running': True, 'sessions': up['sessions'][:1] + [
        s for s in up['sessions'] if s['peer_as'] == 65100]})
    assert [x['name'] for x in back['lingering']] == ['Global_10_255_0_1', 'Global_10_255_0_2']
    assert all(x['local_ip'] == '10.255.0.21' and x['direct'] is True for x in back['lingering'])
