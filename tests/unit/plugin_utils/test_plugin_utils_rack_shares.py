# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One aggregate per rack (calico_rack_block_pool): shares, blocks from them, stability, exceptions, the preflight
lines, what reflectors import and export, the origin AS per prefix, and the status held against it."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric_status import analyse

P = 'netfleet.calico preflight: '
# a /24 pool, /29 blocks, /27 shares: four blocks per share, eight shares
POOL = {'calico_pool': '10.0.0.0/24', 'calico_block_prefix': 29, 'calico_bgp_topology': 'route_reflector'}


def fleet(racks, share=27, facts=None, pins=None, workloads=None, settings=None):
    """``racks``: {rack: number of nodes}; each rack has one reflector rr<N> and nodes h<N>-<i>."""
    hostvars, groups = {}, {'calico_nodes': [], 'calico_route_reflectors': []}
    for index, (rack, count) in enumerate(racks.items(), start=1):
        common = dict(POOL, calico_as_number=65000 + index, **(settings or {}))
        if share is not None:
            common['calico_rack_block_pool'] = share
        rr = f'rr{index}'
        hostvars[rr] = dict(common, calico_node_ip=f'192.168.{index}.1')
        groups['calico_route_reflectors'].append(rr)
        groups[rack] = [rr]
        for i in range(1, count + 1):
            name = f'h{index}-{i}'
            hostvars[name] = dict(common, calico_node_ip=f'192.168.{index}.{10 + i}')
            groups['calico_nodes'].append(name)
            groups[rack].append(name)
    for name, value in (facts or {}).items():
        hostvars[name]['calico_node_facts'] = value
    for name, value in (pins or {}).items():
        hostvars[name]['calico_block'] = value
    for name, value in (workloads or {}).items():
        hostvars[name]['calico_workloads'] = value
    return hostvars, groups


def plan(racks, **kwargs):
    hostvars, groups = fleet(racks, **kwargs)
    return fabric(hostvars, groups, racks=list(racks))


def error(racks, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        plan(racks, **kwargs)
    text = str(exc.value)
    assert '\n' not in text and text.startswith(P), text
    return text


def blocks(result):
    return {name: h['blocks'] for name, h in result['hosts'].items() if h['blocks']}


def running(result):
    return {name: {'blocks': h['blocks']} for name, h in result['hosts'].items() if h['blocks']}


def test_each_rack_takes_a_share_and_its_blocks_come_from_it():
    result = plan({'rack1': 2, 'rack2': 3})
    assert result['rack_block_pool'] == 27
    assert result['racks']['rack1']['share'] == '10.0.0.0/27' and result['racks']['rack2']['share'] == '10.0.0.32/27'
    assert blocks(result) == {'h1-1': ['10.0.0.0/29'], 'h1-2': ['10.0.0.8/29'], 'h2-1': ['10.0.0.32/29'],
                              'h2-2': ['10.0.0.40/29'], 'h2-3': ['10.0.0.48/29']}
    assert result['racks']['rack1']['exceptions'] == [] and result['racks']['rack2']['exceptions'] == []
    assert result['hosts']['rr2']['aggregate'] == {'share': '10.0.0.32/27', 'inside': '10.0.0.32/27{28,32}',
                                                   'outward': ['rr1']}
    assert 'aggregate' not in result['hosts']['h2-1']


def test_unset_plans_exactly_as_before():
    without = plan({'rack1': 2, 'rack2': 2}, share=None)
    assert 'rack_block_pool' not in without
    assert blocks(without) == {'h1-1': ['10.0.0.0/29'], 'h1-2': ['10.0.0.8/29'], 'h2-1': ['10.0.0.16/29'],
                               'h2-2': ['10.0.0.24/29']}
    assert all('share' not in r for r in without['racks'].values())
    assert all('aggregate' not in h for h in without['hosts'].values())
    # the origin check is there without shares too: each rack's blocks, exactly, from its AS
    assert without['origins'] == [
        {'rack': 'rack1', 'as_number': 65001, 'prefixes': ['10.0.0.0/29', '10.0.0.8/29']},
        {'rack': 'rack2', 'as_number': 65002, 'prefixes': ['10.0.0.16/29', '10.0.0.24/29']}]


def test_adding_a_host_or_a_rack_moves_nothing():
    first = plan({'rack1': 1, 'rack2': 1})
    # rack0 (named before the others, hosts h3-*) joins, and rack1 gets a host: running shares and blocks stay
    grown = plan({'rack1': 2, 'rack2': 1, 'rack0': 1}, facts=running(first))
    assert grown['racks']['rack1']['share'] == first['racks']['rack1']['share'] == '10.0.0.0/27'
    assert grown['racks']['rack2']['share'] == first['racks']['rack2']['share'] == '10.0.0.32/27'
    assert grown['racks']['rack0']['share'] == '10.0.0.64/27'  # the lowest free share
    assert {h: b for h, b in blocks(grown).items() if h in blocks(first)} == blocks(first)
    assert grown['hosts']['h1-2']['blocks'] == ['10.0.0.8/29'] and grown['hosts']['h3-1']['blocks'] == ['10.0.0.64/29']


def test_running_blocks_keep_their_share_and_a_new_host_takes_the_lowest_free_block():
    facts = {'h1-1': {'blocks': ['10.0.0.72/29']}, 'h2-1': {'blocks': ['10.0.0.8/29']}}
    result = plan({'rack1': 2, 'rack2': 2}, facts=facts)
    assert result['racks']['rack1']['share'] == '10.0.0.64/27'
    assert result['racks']['rack2']['share'] == '10.0.0.0/27'
    assert blocks(result) == {'h1-1': ['10.0.0.72/29'], 'h1-2': ['10.0.0.64/29'], 'h2-1': ['10.0.0.8/29'],
                              'h2-2': ['10.0.0.0/29']}


def test_a_fleet_turning_it_on_keeps_blocks_outside_the_share_as_exceptions():
    before = plan({'rack1': 2, 'rack2': 2}, share=None)  # 10.0.0.0, .8 rack1; .16, .24 rack2: all in share 0
    result = plan({'rack1': 2, 'rack2': 2}, facts=running(before))
    assert blocks(result) == blocks(before)  # never renumber running workloads
    assert result['racks']['rack1']['share'] == '10.0.0.0/27'
    assert result['racks']['rack2']['share'] == '10.0.0.32/27'  # the lowest share with no running block
    assert result['racks']['rack1']['exceptions'] == []
    assert result['racks']['rack2']['exceptions'] == ['10.0.0.16/29', '10.0.0.24/29']
    # a rack's exceptions come with its AS before any share (first match decides), then each share
    assert result['origins'] == [
        {'rack': 'rack2', 'as_number': 65002, 'prefixes': ['10.0.0.16/29', '10.0.0.24/29']},
        {'rack': 'rack1', 'as_number': 65001, 'prefixes': ['10.0.0.0/27+']},
        {'rack': 'rack2', 'as_number': 65002, 'prefixes': ['10.0.0.32/27+']}]
    # rack1's reflector takes rack2's exceptions (blocks inside its own share) and aggregate, not its own
    imports = result['hosts']['rr1']['imports']['rr2']
    assert imports['prefixes'] == ['10.0.0.32/27'] and imports['any_block'] == '10.0.0.0/24{29,29}'
    assert imports['except'] == ['10.0.0.0/29+', '10.0.0.8/29+', '10.0.0.0/27'] and imports['origin_check']
    # a host takes the other racks' aggregates from its reflector, never its own
    assert result['hosts']['h1-1']['imports']['rr1']['prefixes'] == ['10.0.0.32/27']
    assert result['hosts']['h1-1']['imports']['rr1']['origin_check'] is False
    # a new host of rack2 takes its block from the share
    more = plan({'rack1': 2, 'rack2': 3}, facts=running(before))
    assert more['hosts']['h2-3']['blocks'] == ['10.0.0.32/29']


def test_growing_hosts_take_blocks_from_their_share():
    many = [{'name': f'w{i}'} for i in range(8)]  # five automatic addresses per /29
    result = plan({'rack1': 1, 'rack2': 1}, workloads={'h2-1': many}, settings={'calico_max_blocks_per_host': 2})
    assert result['hosts']['h2-1']['blocks'] == ['10.0.0.32/29', '10.0.0.40/29']


def test_an_explicit_address_adds_a_block_of_the_hosts_share_only():
    settings = {'calico_max_blocks_per_host': 2}
    result = plan({'rack1': 1, 'rack2': 1}, workloads={'h1-1': [{'name': 'x', 'ip': '10.0.0.26'}]}, settings=settings)
    assert result['hosts']['h1-1']['blocks'] == ['10.0.0.0/29', '10.0.0.24/29']
    assert error({'rack1': 1, 'rack2': 1}, workloads={'h1-1': [{'name': 'x', 'ip': '10.0.0.66'}]},
                 settings=settings) == (
        P + "host 'h1-1': workload 'x' ip 10.0.0.66 is outside the host's block 10.0.0.0/29 (in 10.0.0.64/29, "
        "outside its rack's share) — pick an address inside 10.0.0.0/29 or drop ip")


@pytest.mark.parametrize('value, message', [
    ('x', "calico_rack_block_pool 'x' is not an integer — set calico_rack_block_pool to a prefix length from 25 "
          "to 28"),
    (24, 'calico_rack_block_pool 24 is not between calico_pool /24 and calico_block_prefix /29'),
    (29, 'calico_rack_block_pool 29 is not between'),
    (True, 'is not an integer'),
    ('2\n', 'is not an integer'),
])
def test_a_bad_value_is_one_line(value, message):
    assert message in error({'rack1': 1}, share=value)


def test_set_without_racks_or_reflectors_is_an_error():
    hostvars = {'h1': dict(POOL, calico_bgp_topology='full_mesh', calico_rack_block_pool=27,
                           calico_node_ip='192.168.0.1')}
    with pytest.raises(AnsibleFilterError) as exc:
        fabric(hostvars, {'calico_nodes': ['h1'], 'calico_route_reflectors': []})
    assert str(exc.value) == (P + "host 'h1': calico_rack_block_pool is set but calico_bgp_topology is full_mesh "
                              '(no racks to aggregate) — drop calico_rack_block_pool, or set calico_bgp_topology: '
                              'route_reflector with racks')


def test_a_full_share_names_the_rack_and_the_fix():
    assert error({'rack1': 1, 'rack2': 5}) == (
        P + "rack 'rack2': its hosts need more /29 blocks than its share 10.0.0.32/27 holds (4) — set a shorter "
        'calico_rack_block_pool (larger shares), or move hosts to another rack')
    many = [{'name': f'w{i}'} for i in range(16)]
    assert "rack 'rack1': its hosts need more /29 blocks" in error(
        {'rack1': 2}, workloads={'h1-1': many}, settings={'calico_max_blocks_per_host': 4})


def test_more_racks_than_shares():
    assert error({f'rack{i}': 0 for i in range(1, 4)}, share=25) == (
        P + "rack 'rack3': is one rack too many: calico_rack_block_pool /25 splits calico_pool 10.0.0.0/24 into 2 "
        'shares — set a longer calico_rack_block_pool (more, smaller shares), enlarge calico_pool, or merge racks')


def test_a_new_pin_outside_the_share_is_an_error_a_running_one_an_exception():
    assert error({'rack1': 1, 'rack2': 1}, pins={'h2-1': '10.0.0.8/29', 'h1-1': '10.0.0.0/29'}) == (
        P + "host 'h2-1': calico_block 10.0.0.8/29 is outside the share 10.0.0.32/27 of rack 'rack2' "
        '(calico_rack_block_pool) — pin a block inside 10.0.0.32/27, or drop calico_block')
    result = plan({'rack1': 1, 'rack2': 1}, pins={'h2-1': '10.0.0.8/29', 'h1-1': '10.0.0.0/29'},
                  facts={'h2-1': {'blocks': ['10.0.0.8/29']}})
    assert result['racks']['rack2']['exceptions'] == ['10.0.0.8/29']


def status(result, routes):
    """Every host's status: BIRD runs, every planned session up, ``routes`` {host: [proto bird destinations]}."""
    out = {}
    for name, host in result['hosts'].items():
        sessions = [{'name': f"x{i}", 'peer_ip': p['ip'], 'established': True} for i, p in enumerate(host['peers'])]
        out[name] = {'bird_running': True, 'sessions': sessions,
                     'routes': {'bird': [{'dest': d} for d in routes.get(name, [])], 'blackholes': host['blocks'],
                                'workloads': [], 'owned': []}}
    return out


def test_status_wants_the_racks_blocks_and_the_other_racks_aggregates():
    result = plan({'rack1': 2, 'rack2': 1})
    want = {'h1-1': ['10.0.0.8/29', '10.0.0.32/27'], 'h1-2': ['10.0.0.0/29', '10.0.0.32/27'],
            'h2-1': ['10.0.0.0/27'],
            # a reflector: its rack's blocks, the other racks' aggregates, its own aggregate (blackhole)
            'rr1': ['10.0.0.0/29', '10.0.0.8/29', '10.0.0.32/27', '10.0.0.0/27'],
            'rr2': ['10.0.0.32/29', '10.0.0.0/27', '10.0.0.32/27']}
    analysis = analyse(status(result, want), result)
    assert analysis['problems'] == [] and analysis['converged'], analysis['problems']
    assert analysis['hosts']['rr1']['learned'] == 3  # its own aggregate is not learned
    # per-block routes of another rack, a missing aggregate, and a host holding its own rack's aggregate
    wrong = dict(want, **{'h1-1': ['10.0.0.8/29', '10.0.0.32/29', '10.0.0.0/27'], 'rr2': ['10.0.0.32/29']})
    analysis = analyse(status(result, wrong), result)
    assert analysis['hosts']['h1-1']['problems'] == [
        'h1-1: no route to 10.0.0.32/27 (aggregate of rack2)',
        "h1-1: stale route 10.0.0.32/29 proto bird (a block inside rack2's aggregate)",
        "h1-1: stale route 10.0.0.0/27 proto bird (its own rack's aggregate)"]
    assert analysis['hosts']['rr2']['problems'] == [
        'rr2: no route to 10.0.0.0/27 (aggregate of rack1)', "rr2: its rack's aggregate 10.0.0.32/27 is not "
                                                             'blackholed']
