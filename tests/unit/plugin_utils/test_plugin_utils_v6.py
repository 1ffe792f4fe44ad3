"""Dual stack (plugins/plugin_utils/v6.py, family.py) through the fabric filter: IPv6 blocks and workload
addresses, stable across runs like the IPv4 ones; the ipv6 channel's next hops and imports; an IPv4-only fleet
plans exactly as before."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import BlocksFull, FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import network6_or_none
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import netaddr
from ansible_collections.netfleet.calico.plugins.plugin_utils.v6 import assign_ip6, current_blocks_v6, current_ip6

V6_KEYS = {'pool_v6', 'block_prefix_v6', 'node_ip_v6', 'spine_ip_v6', 'blocks_v6', 'imports_v6', 'next_hop_v6',
           'ip6', 'floating_ips_v6', 'floating_ip6'}


def mesh(v6=True, workloads=2, **extra):
    """Three full-mesh hosts on one segment; ``v6``: dual stack."""
    hostvars = {}
    for i, name in enumerate(('h1', 'h2', 'h3'), start=1):
        hv = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_node_ip': f'192.168.100.{i}',
              'calico_node_prefixlen': 24, 'calico_workloads': [{'name': f'{name}w{k}'} for k in range(workloads)]}
        if v6:
            hv.update(calico_pool_v6='fd00:10::/48', calico_node_ip_v6=f'fd00:100::{i}')
        hv.update(extra.get(name, {}))
        hostvars[name] = hv
    return hostvars, {'calico_nodes': ['h1', 'h2', 'h3']}


def racks():
    """Two racks with a reflector each (the second from its own spine address)."""
    common = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_bgp_topology': 'route_reflector',
              'calico_node_prefixlen': 24, 'calico_pool_v6': 'fd00:10::/48'}
    hostvars = {
        'rr1': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.1', calico_node_ip_v6='fd00:101::1'),
        'h1': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.11', calico_node_ip_v6='fd00:101::11',
                   calico_workloads=[{'name': 'web1'}]),
        'rr2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.1', calico_node_ip_v6='fd00:102::1',
                    calico_rr_spine_ip='192.168.101.21', calico_rr_spine_ip_v6='fd00:101::21'),
        'h2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.11', calico_node_ip_v6='fd00:102::11',
                   calico_workloads=[{'name': 'db1'}]),
    }
    groups = {'calico_nodes': ['h1', 'h2'], 'calico_route_reflectors': ['rr1', 'rr2'], 'rack1': ['rr1', 'h1'],
              'rack2': ['rr2', 'h2']}
    return hostvars, groups


def strip_v6(value):
    if isinstance(value, dict):
        return {k: strip_v6(v) for k, v in value.items() if k not in V6_KEYS}
    if isinstance(value, list):
        return [strip_v6(v) for v in value]
    return value


def keys(value):
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_an_ipv4_fleet_plans_as_before_and_its_v4_keys_do_not_change_in_dual_stack():
    v4 = fabric(*mesh(v6=False))
    assert not keys(v4) & V6_KEYS
    # the IPv6 node addresses alone (a lab puts them on the hosts) change nothing
    hostvars, groups = mesh(v6=False, **{n: {'calico_node_ip_v6': f'fd00:100::{i}'} for i, n in
                                         enumerate(('h1', 'h2', 'h3'), start=1)})
    assert fabric(hostvars, groups) == v4
    dual = fabric(*mesh())
    assert keys(dual) & V6_KEYS == V6_KEYS - {'spine_ip_v6', 'floating_ip6'}
    assert strip_v6(dual) == v4


def test_blocks_and_addresses_of_both_families():
    plan = fabric(*mesh())
    assert plan['pool_v6'] == 'fd00:10::/48' and plan['block_prefix_v6'] == 122
    hosts = plan['hosts']
    assert [hosts[n]['blocks_v6'] for n in ('h1', 'h2', 'h3')] == [['fd00:10::/122'], ['fd00:10::40/122'],
                                                                   ['fd00:10::80/122']]
    assert [(w['ip'], w['ip6']) for w in hosts['h2']['workloads']] == [('172.17.1.2', 'fd00:10::41'),
                                                                       ('172.17.1.3', 'fd00:10::42')]
    assert hosts['h1']['node_ip_v6'] == 'fd00:100::1'
    assert {p['name']: p['next_hop_v6'] for p in hosts['h1']['peers']} == {'h2': 'fd00:100::1', 'h3': 'fd00:100::1'}
    assert hosts['h1']['imports_v6']['h2'] == {'prefixes': ['fd00:10::40/122'], 'any_block': None,
                                               'any_floating': False, 'except': [], 'receive_limit': 68}


def test_running_blocks_and_addresses_are_kept():
    """A host keeps its running IPv6 blackhole and each workload its running address (calico_node_facts: the
    endpoints' ip6, workloads6); a new host takes the lowest free block."""
    facts = {'h2': {'calico_node_facts': {'blocks': ['172.17.1.0/24'], 'blocks6': ['fd00:10::1:0/122'],
                                          'endpoints': [{'name': 'h2w1', 'ip': '172.17.1.3', 'ip6': 'fd00:10::1:7'}]}},
             'h3': {'calico_node_facts': {'blocks6': ['fd00:10::/122'], 'workloads6': {'h3w0': 'fd00:10::9'}}}}
    hosts = fabric(*mesh(**facts))['hosts']
    assert hosts['h2']['blocks_v6'] == ['fd00:10::1:0/122']
    assert [w['ip6'] for w in hosts['h2']['workloads']] == ['fd00:10::1:1', 'fd00:10::1:7']
    assert hosts['h3']['blocks_v6'] == ['fd00:10::/122']
    assert [w['ip6'] for w in hosts['h3']['workloads']] == ['fd00:10::9', 'fd00:10::1']
    assert hosts['h1']['blocks_v6'] == ['fd00:10::40/122']


def test_second_run_from_its_own_state_plans_the_same():
    first = fabric(*mesh())
    hostvars, groups = mesh()
    for name, host in first['hosts'].items():
        hostvars[name]['calico_node_facts'] = {
            'blocks': host['blocks'], 'blocks6': host['blocks_v6'],
            'endpoints': [{'name': w['name'], 'ip': w['ip'], 'ip6': w['ip6']} for w in host['workloads']]}
    hostvars['h1']['calico_workloads'].insert(0, {'name': 'new'})
    hosts = fabric(hostvars, groups)['hosts']
    assert [w['ip6'] for w in hosts['h1']['workloads']] == ['fd00:10::3', 'fd00:10::1', 'fd00:10::2']
    assert dict(hosts['h2'], block_source='allocated') == first['hosts']['h2']


def test_explicit_ip6_and_a_host_that_outgrows_its_block():
    hostvars, groups = mesh(workloads=0)
    for hv in hostvars.values():
        hv.update(calico_block_prefix_v6=126, calico_max_blocks_per_host=2)
    hostvars['h1']['calico_workloads'] = [{'name': 'a', 'ip6': 'fd00:10::2'}, {'name': 'b'}, {'name': 'c'},
                                          {'name': 'd'}]
    hosts = fabric(hostvars, groups)['hosts']
    # /126: three automatic addresses (::0 is the anycast address); the fourth workload takes the lowest free
    # block once every host has its first
    assert hosts['h1']['blocks_v6'] == ['fd00:10::/126', 'fd00:10::c/126']
    assert [w['ip6'] for w in hosts['h1']['workloads']] == ['fd00:10::2', 'fd00:10::1', 'fd00:10::3', 'fd00:10::d']
    assert hosts['h2']['blocks_v6'] == ['fd00:10::4/126']
    hostvars['h1']['calico_workloads'].append({'name': 'e'})
    hostvars['h1']['calico_workloads'] += [{'name': f'x{i}'} for i in range(3)]
    with pytest.raises(FabricError, match=r"host 'h1': IPv6 blocks fd00:10::/126, fd00:10::c/126 are full, no "
                                          r"address left for workload 'x1' \(calico_max_blocks_per_host 2\)"):
        fabric(hostvars, groups)


def test_a_full_ipv6_pool_names_the_ipv6_variables():
    hostvars, groups = mesh()
    for hv in hostvars.values():
        hv.update(calico_pool_v6='fd00:10::/121')
    with pytest.raises(FabricError, match=r"host 'h3': no free /122 left in calico_pool_v6 fd00:10::/121 .* — "
                                          r'enlarge calico_pool_v6 or raise calico_block_prefix_v6'):
        fabric(hostvars, groups)


def test_reflectors_next_hops_and_imports():
    plan = fabric(*racks(), racks=['rack1', 'rack2'])
    hosts = plan['hosts']
    assert hosts['rr2']['spine_ip_v6'] == 'fd00:101::21' and hosts['rr1']['spine_ip_v6'] == 'fd00:101::1'
    assert 'spine_ip_v6' not in hosts['h1']
    hops = {p['name']: p['next_hop_v6'] for p in hosts['rr2']['peers']}
    assert hops == {'rr1': 'fd00:101::21', 'h2': 'fd00:102::1'}
    # another rack's blocks come with that rack's origin AS (origins_v6), as the IPv4 ones
    assert hosts['rr1']['imports_v6']['rr2'] == {'prefixes': [], 'any_block': 'fd00:10::/48{122,122}',
                                                 'any_floating': False, 'except': ['fd00:10::/122+'],
                                                 'origin_check': True, 'receive_limit': 65600}
    assert hosts['h2']['imports_v6']['rr2']['except'] == ['fd00:10::40/122+']
    assert 'origin_check' not in hosts['rr1']['imports_v6']['h1']
    assert plan['origins_v6'] == [{'rack': 'rack1', 'as_number': 65001, 'prefixes': ['fd00:10::/122']},
                                  {'rack': 'rack2', 'as_number': 65002, 'prefixes': ['fd00:10::40/122']}]
    assert 'origins_v6' not in fabric(*mesh())


def spine_fleet():
    """racks() with one spine router on the reflectors' spine subnet (rr1 meets it from its node address)."""
    hostvars, groups = racks()
    for hv in hostvars.values():
        hv['calico_spine_as_number'] = 65100
    hostvars['sp1'] = {'calico_node_ip': '192.168.101.254', 'calico_node_ip_v6': 'fd00:101::254',
                       'calico_spine_as_number': 65100, 'calico_node_prefixlen': 24}
    groups['calico_spines'] = ['sp1']
    return hostvars, groups


def test_spines_carry_ipv6_blocks_one_by_one():
    plan = fabric(*spine_fleet(), racks=['rack1', 'rack2'])
    sp1 = plan['spines']['sp1']
    assert sp1['ipv6']['ip'] == 'fd00:101::254'
    lists = {name: [(e['action'], e['prefix'], e.get('ge'), e.get('le')) for e in entries]
             for name, entries in sp1['ipv6']['prefix_lists'].items()}
    assert lists == {'calico-out': [('permit', 'fd00:10::/48', 122, 122), ('deny', '::/0', None, 128)],
                     'calico-in-rack1': [('permit', 'fd00:10::/122', None, None), ('deny', '::/0', None, 128)],
                     'calico-in-rack2': [('permit', 'fd00:10::40/122', None, None), ('deny', '::/0', None, 128)]}
    # the reflectors' side: the spine's routes of the other rack, with that rack's origin AS, next hop their own
    hosts = plan['hosts']
    assert hosts['rr2']['imports_v6']['sp1']['origin_check'] is True
    assert hosts['rr2']['imports_v6']['sp1']['except'] == ['fd00:10::40/122+']
    assert {p['name']: p['next_hop_v6'] for p in hosts['rr2']['peers']} == {'h2': 'fd00:102::1', 'sp1': 'fd00:101::21'}
    # the IPv4 plan of the spine is the one it has without the IPv6 pool
    hostvars, groups = spine_fleet()
    for hv in hostvars.values():
        hv.pop('calico_pool_v6', None)
        hv.pop('calico_rr_spine_ip_v6', None)
    v4 = fabric(hostvars, groups, racks=['rack1', 'rack2'])['spines']['sp1']
    assert 'ipv6' not in v4 and {k: v for k, v in sp1.items() if k != 'ipv6'} == v4


@pytest.mark.parametrize('value, message', [
    (None, "host 'sp1': has no calico_node_ip_v6 but calico_pool_v6 is set — set calico_node_ip_v6 to the spine's "
           'IPv6 address on the spine segment'),
    ('fd00:101::254\n', "host 'sp1': calico_node_ip_v6 'fd00:101::254\\n' is not an IPv6 address"),
    ('fe80::1', 'is not a global unicast or unique local address'),
    ('fd00:10::9', 'is inside calico_pool_v6 fd00:10::/48'),
    ('fd00:101::21', "host 'sp1': calico_node_ip_v6 fd00:101::21 is also used by host 'rr2'"),
])
def test_a_spines_ipv6_address_is_checked(value, message):
    hostvars, groups = spine_fleet()
    hostvars['sp1']['calico_node_ip_v6'] = value
    with pytest.raises(FabricError) as err:
        fabric(hostvars, groups, racks=['rack1', 'rack2'])
    assert message in str(err.value) and '\n' not in str(err.value), str(err.value)


def test_assign_ip6_alone():
    blocks = [netaddr.IPNetwork('fd00::/127')]
    assert assign_ip6(blocks, [{'name': 'a'}], {}, 'input') == [{'name': 'a', 'ip': 'fd00::1'}]
    with pytest.raises(BlocksFull):
        assign_ip6(blocks, [{'name': 'a'}, {'name': 'b'}], {}, 'input')
    # a running address outside the blocks, or the anycast one, is not kept
    kept = assign_ip6(blocks, [{'name': 'a'}], {'a': netaddr.IPAddress('fd00::')}, 'input')
    assert kept == [{'name': 'a', 'ip': 'fd00::1'}]


def test_facts_readers_ignore_junk():
    facts = {'blocks': ['fd00::80/122'], 'blocks6': ['172.17.0.0/24', 'junk', 'fd00::/122', 'fd00::40/122', 3],
             'endpoints': [{'name': 'a', 'ip6': 'x'}, {'name': 'b', 'ip6': 'fd00::2'}, 'junk', {'ip6': 'fd00::3'}]}
    assert current_blocks_v6(facts) == ['fd00::/122', 'fd00::40/122']
    assert current_ip6(facts) == {'b': netaddr.IPAddress('fd00::2')}
    assert network6_or_none('fd00::/122 ') is None and network6_or_none('fd00::/122') is not None


def test_the_plan_is_not_changed_by_planning_twice():
    hostvars, groups = mesh()
    again = copy.deepcopy(hostvars)
    assert fabric(hostvars, groups) == fabric(again, groups)


def test_policy_endpoints_and_peers_of_both_families():
    """ip6tables gets the same policy: each endpoint its ip6, a selector's peers their /128 next to their /32; a
    rule limited to IPv4 CIDRs keeps IPv4 peers only."""
    policy = [{'name': 'db', 'selector': "app == 'db'", 'ingress': [
        {'action': 'allow', 'from': {'selector': "app == 'web'"}},
        {'action': 'allow', 'from': {'selector': "app == 'web'", 'cidr': ['172.17.0.0/16']}}]}]
    hostvars, groups = mesh(workloads=0)
    hostvars['h1']['calico_workloads'] = [{'name': 'web', 'labels': {'app': 'web'}}]
    hostvars['h2']['calico_workloads'] = [{'name': 'db', 'labels': {'app': 'db'}}]
    for hv in hostvars.values():
        hv['calico_policies'] = policy
    hosts = fabric(hostvars, groups)['hosts']
    (db,) = hosts['h2']['policy']
    assert (db['ip'], db['ip6']) == ('172.17.1.2', 'fd00:10::41')
    assert [rule['peers'] for rule in db['ingress']] == [['172.17.0.2/32', 'fd00:10::1/128'], ['172.17.0.2/32']]
    hostvars, groups = mesh(v6=False, workloads=0)
    hostvars['h2']['calico_workloads'] = [{'name': 'db', 'labels': {'app': 'db'}}]
    hostvars['h1']['calico_workloads'] = [{'name': 'web', 'labels': {'app': 'web'}}]
    for hv in hostvars.values():
        hv['calico_policies'] = policy
    assert 'ip6' not in fabric(hostvars, groups)['hosts']['h2']['policy'][0]


def test_an_ipv6_floating_ip_is_announced_by_its_host_and_taken_by_every_other_one():
    hostvars, groups = racks()
    hostvars['h1']['calico_workloads'] = [{'name': 'web1', 'floating_ip': '10.99.0.10',
                                           'floating_ip6': 'fd00:99:0::10/128'}]
    plan = fabric(hostvars, groups, racks=['rack1', 'rack2'])
    hosts = plan['hosts']
    assert plan['floating_ips'] == ['10.99.0.10/32'] and plan['floating_ips_v6'] == ['fd00:99::10/128']
    assert hosts['h1']['floating_ips_v6'] == ['fd00:99::10/128'] and hosts['h2']['floating_ips_v6'] == []
    (web,) = hosts['h1']['policy']
    assert (web['ip6'], web['floating_ip6'], web['floating_ip']) == ('fd00:10::1', 'fd00:99::10', '10.99.0.10')
    # its reflector takes it from h1 as an exact prefix, the other rack's reflector among the fleet's floating IPs;
    # h1 never takes it back from its reflector (nothing lies inside a /128)
    assert hosts['rr1']['imports_v6']['h1']['prefixes'] == ['fd00:10::/122', 'fd00:99::10/128']
    assert hosts['rr2']['imports_v6']['rr1']['any_floating'] is True
    assert hosts['rr2']['imports_v6']['rr1']['receive_limit'] == 65600 + 1
    assert hosts['h1']['imports_v6']['rr1']['except'] == ['fd00:10::/122+', 'fd00:99::10/128']
    assert hosts['h2']['imports_v6']['rr2']['any_floating'] is True
    # the IPv4 channel carries the IPv4 one only
    assert hosts['h1']['imports']['rr1']['except'] == ['10.99.0.10/32', '172.17.0.0/24+']
    assert hosts['rr1']['imports']['h1']['prefixes'] == ['10.99.0.10/32', '172.17.0.0/24']


def test_a_fleet_without_ipv6_floating_ips_plans_none():
    plan = fabric(*racks(), racks=['rack1', 'rack2'])
    assert plan['floating_ips_v6'] == [] and not any(i['any_floating'] for h in plan['hosts'].values()
                                                     for i in h['imports_v6'].values())


def test_an_explicit_ip6_in_a_free_block_adds_that_block():
    hostvars, groups = mesh(workloads=1)
    for hv in hostvars.values():
        hv['calico_max_blocks_per_host'] = 2
    before = fabric(hostvars, groups)['hosts']
    hostvars['h1']['calico_workloads'].append({'name': 'x', 'ip6': 'fd00:10::1:5'})
    hosts = fabric(hostvars, groups)['hosts']
    assert hosts['h1']['blocks_v6'] == ['fd00:10::/122', 'fd00:10::1:0/122']
    assert [w['ip6'] for w in hosts['h1']['workloads']] == ['fd00:10::1', 'fd00:10::1:5']
    assert [hosts[n]['blocks_v6'] for n in ('h2', 'h3')] == [before[n]['blocks_v6'] for n in ('h2', 'h3')]
    for hv in hostvars.values():
        hv['calico_max_blocks_per_host'] = 1
    with pytest.raises(FabricError) as err:
        fabric(hostvars, groups)
    assert str(err.value) == (
        "netfleet.calico preflight: host 'h1': workload 'x' ip6 fd00:10::1:5 is outside the host's IPv6 block "
        "fd00:10::/122 (in fd00:10::1:0/122, free, but the host holds 1 IPv6 block already: calico_max_blocks_per_host "
        "1) — raise calico_max_blocks_per_host to 2 to give the host fd00:10::1:0/122, or pick an address inside "
        "fd00:10::/122 or drop ip6")
    hostvars['h1']['calico_workloads'][-1]['ip6'] = 'fd00:10::45'  # h2's block
    with pytest.raises(FabricError, match=r"\(in fd00:10::40/122, a block of host 'h2'\)"):
        fabric(hostvars, groups)
