# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts that outgrow their block (calico_max_blocks_per_host): growth, stability, release, limits, and what
the rest of the plan (imports, status) makes of several blocks per host."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.filter.status_report import build_report

P = 'netfleet.calico preflight: '
# /29 blocks: automatic addresses are network + 2 .. network + 6, five workloads per block
POOL = {'calico_pool': '10.0.0.0/24', 'calico_block_prefix': 29, 'calico_max_blocks_per_host': 3}
IPS = {'h1': '192.168.0.1', 'h2': '192.168.0.2', 'h3': '192.168.0.3', 'h0': '192.168.0.10'}


def workloads(count, prefix='w', first=1):
    return [{'name': f'{prefix}{i}'} for i in range(first, first + count)]


def plan(per_host, facts=None, settings=None, pins=None):
    """Full-mesh fleet: ``per_host`` {host: workload list}; ``facts`` {host: calico_node_facts}."""
    hostvars = {}
    for name, wls in per_host.items():
        hostvars[name] = dict(POOL, **(settings or {}), calico_node_ip=IPS[name], calico_workloads=wls)
        if facts and name in facts:
            hostvars[name]['calico_node_facts'] = facts[name]
        if pins and name in pins:
            hostvars[name]['calico_block'] = pins[name]
    groups = {'all': list(per_host), 'calico_nodes': list(per_host), 'calico_route_reflectors': []}
    return fabric(hostvars, groups)


def facts_of(result):
    """What calico_node_facts reads back once the plan ran: blackholes (sorted) and workload addresses."""
    return {name: {'blocks': sorted(h['blocks'], key=lambda b: [int(o) for o in b.split('/')[0].split('.')]),
                   'workloads': [{'name': w['name'], 'ip': w['ip']} for w in h['workloads']]}
            for name, h in result['hosts'].items()}


def blocks(result):
    return {name: h['blocks'] for name, h in result['hosts'].items()}


def error(*args, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        plan(*args, **kwargs)
    text = str(exc.value)
    assert '\n' not in text
    return text


FLEET = {'h1': workloads(12), 'h2': workloads(2, 'b'), 'h3': workloads(1, 'c')}


def test_a_full_host_grows_into_the_lowest_free_blocks():
    result = plan(FLEET)
    assert blocks(result) == {'h1': ['10.0.0.0/29', '10.0.0.24/29', '10.0.0.32/29'],
                              'h2': ['10.0.0.8/29'], 'h3': ['10.0.0.16/29']}
    h1 = result['hosts']['h1']
    assert h1['block'] == '10.0.0.0/29' and h1['block_source'] == 'allocated'
    assert [w['ip'] for w in h1['workloads']] == [
        '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6',
        '10.0.0.26', '10.0.0.27', '10.0.0.28', '10.0.0.29', '10.0.0.30', '10.0.0.34', '10.0.0.35']
    assert result['max_blocks_per_host'] == 3


def test_the_second_plan_is_identical():
    first = plan(FLEET)
    second = plan(FLEET, facts=facts_of(first))
    assert {h['block_source'] for h in second['hosts'].values()} == {'current'}
    for host in (*first['hosts'].values(), *second['hosts'].values()):
        host.pop('block_source')
    assert second == first
    third = plan(FLEET, facts=facts_of(second))
    for host in third['hosts'].values():
        host.pop('block_source')
    assert third == second


def test_removing_workloads_releases_only_a_trailing_empty_block():
    running = plan(FLEET)
    fewer = dict(FLEET, h1=workloads(10))  # w11 and w12 were the only ones in the third block
    after = plan(fewer, facts=facts_of(running))
    assert blocks(after) == dict(blocks(running), h1=['10.0.0.0/29', '10.0.0.24/29'])
    assert after['hosts']['h1']['workloads'] == running['hosts']['h1']['workloads'][:10]


def test_a_block_that_still_holds_a_workload_is_kept():
    running = plan(FLEET)
    # w1..w9 go: the 12 -> 3 left would fit in the first block, but w10..w12 keep their addresses
    fewer = dict(FLEET, h1=workloads(3, first=10))
    after = plan(fewer, facts=facts_of(running))
    assert blocks(after) == blocks(running)
    assert [w['ip'] for w in after['hosts']['h1']['workloads']] == ['10.0.0.30', '10.0.0.34', '10.0.0.35']
    # a new workload fills the first block again
    again = plan(dict(fewer, h1=workloads(3, first=10) + [{'name': 'new'}]), facts=facts_of(after))
    assert again['hosts']['h1']['workloads'][-1]['ip'] == '10.0.0.2'


def test_the_first_block_is_never_released():
    running = plan(FLEET)
    after = plan(dict(FLEET, h1=workloads(1, first=12)), facts=facts_of(running))  # only w12, in the third block
    assert blocks(after)['h1'] == running['hosts']['h1']['blocks']
    empty = plan(dict(FLEET, h1=[]), facts=facts_of(running))
    assert blocks(empty)['h1'] == ['10.0.0.0/29']


def test_other_hosts_never_move_when_one_grows_or_a_host_joins():
    running = plan(FLEET)
    bigger = dict(FLEET, h2=workloads(7, 'b'), h0=workloads(1, 'z'))  # h2 grows, h0 joins (sorts first)
    after = plan(bigger, facts=facts_of(running))
    assert blocks(after) == {'h0': ['10.0.0.40/29'], 'h1': blocks(running)['h1'],
                             'h2': ['10.0.0.8/29', '10.0.0.48/29'], 'h3': ['10.0.0.16/29']}
    for name in ('h1', 'h3'):
        assert after['hosts'][name]['workloads'] == running['hosts'][name]['workloads']
    assert after['hosts']['h2']['workloads'][:2] == running['hosts']['h2']['workloads']


def test_a_block_released_by_one_host_is_not_taken_by_another_in_the_same_run():
    running = plan(FLEET)
    after = plan(dict(FLEET, h1=workloads(5), h3=workloads(6, 'c')), facts=facts_of(running))
    # h1 drops 10.0.0.24/29 and 10.0.0.32/29 (still blackholed until h1 converges): h3 takes the next one
    assert blocks(after) == {'h1': ['10.0.0.0/29'], 'h2': ['10.0.0.8/29'], 'h3': ['10.0.0.16/29', '10.0.0.40/29']}


def test_pins_are_honoured_and_growth_goes_above_the_first_block():
    result = plan(FLEET, pins={'h1': '10.0.0.64/29', 'h2': '10.0.0.0/29'})
    assert blocks(result) == {'h1': ['10.0.0.64/29', '10.0.0.72/29', '10.0.0.80/29'],
                              'h2': ['10.0.0.0/29'], 'h3': ['10.0.0.8/29']}


def test_a_new_pin_moves_the_host_with_all_its_blocks():
    running = plan(FLEET)
    moved = plan(FLEET, facts=facts_of(running), pins={'h1': '10.0.0.128/29'})
    assert blocks(moved) == dict(blocks(running), h1=['10.0.0.128/29', '10.0.0.136/29', '10.0.0.144/29'])
    assert moved['hosts']['h1']['workloads'][0]['ip'] == '10.0.0.130'
    # with one block per host (the default), as before: the host moves, no error about its old block
    one = plan({'h1': workloads(2)}, settings={'calico_max_blocks_per_host': 1})
    again = plan({'h1': workloads(2)}, facts=facts_of(one), pins={'h1': '10.0.0.64/29'},
                 settings={'calico_max_blocks_per_host': 1})
    assert blocks(again) == {'h1': ['10.0.0.64/29']}


def test_a_pin_on_another_running_block_of_a_host_is_refused():
    running = plan(FLEET)
    assert error(FLEET, facts=facts_of(running), pins={'h3': '10.0.0.24/29'}) == (
        P + "host 'h3': calico_block 10.0.0.24/29 is a running block of host 'h1' — pin a free block for 'h3'")


def test_more_than_the_maximum_is_one_line_naming_the_host_and_the_fix():
    assert error(dict(FLEET, h2=workloads(16, 'b'))) == (
        P + "host 'h2': blocks 10.0.0.8/29, 10.0.0.40/29, 10.0.0.48/29 are full, no address left for workload "
        "'b16' (calico_max_blocks_per_host 3) — raise calico_max_blocks_per_host, lower calico_block_prefix, "
        "or move workloads to another host")


def test_the_default_is_one_block_as_before():
    settings = {'calico_max_blocks_per_host': None}
    small = plan({'h1': workloads(5), 'h2': workloads(1, 'b')}, settings=settings)
    assert blocks(small) == {'h1': ['10.0.0.0/29'], 'h2': ['10.0.0.8/29']} and small['max_blocks_per_host'] == 1
    assert error({'h1': workloads(6)}, settings=settings) == (
        P + "host 'h1': block 10.0.0.0/29 is full, no address left for workload 'w6' (calico_max_blocks_per_host 1) "
        "— raise calico_max_blocks_per_host, lower calico_block_prefix, or move workloads to another host")


def test_lowering_the_maximum_below_the_blocks_in_use_is_refused():
    running = plan(FLEET)
    assert error(FLEET, facts=facts_of(running), settings={'calico_max_blocks_per_host': 2}) == (
        P + "host 'h1': has workloads in 3 blocks but calico_max_blocks_per_host is 2 — raise "
        "calico_max_blocks_per_host, or move the workloads of its last blocks to another host")


def test_pool_exhaustion_names_the_host():
    small_pool = {'calico_pool': '10.0.0.0/27'}  # four /29 blocks
    assert error(FLEET, settings=small_pool) == (
        P + "host 'h1': needs another /29 for its workloads but calico_pool 10.0.0.0/27 has none free above its "
        "first block 10.0.0.0/29 — enlarge calico_pool, lower calico_block_prefix, or move workloads to another host")


def test_a_newcomer_never_takes_a_running_block_that_holds_workloads():
    small_pool = {'calico_pool': '10.0.0.0/27'}  # four /29 blocks
    running = plan({'h1': workloads(7), 'h2': workloads(1, 'b'), 'h3': workloads(1, 'c')}, settings=small_pool)
    assert blocks(running)['h1'] == ['10.0.0.0/29', '10.0.0.24/29']
    joined = {'h0': workloads(1, 'z'), 'h1': workloads(7), 'h2': workloads(1, 'b'), 'h3': workloads(1, 'c')}
    assert error(joined, facts=facts_of(running), settings=small_pool) == (
        P + "host 'h0': no free /29 left in calico_pool 10.0.0.0/27 (10.0.0.24/29 still holds workloads of host "
        "'h1') — enlarge calico_pool or raise calico_block_prefix")


def test_explicit_and_current_addresses_in_any_block():
    running = plan(FLEET)
    result = plan(dict(FLEET, h1=workloads(11) + [{'name': 'x', 'ip': '10.0.0.33'}]), facts=facts_of(running))
    assert [w['ip'] for w in result['hosts']['h1']['workloads'][-2:]] == ['10.0.0.34', '10.0.0.33']
    assert error(dict(FLEET, h2=[{'name': 'x', 'ip': '10.0.0.33'}]), facts=facts_of(running)) == (
        P + "host 'h2': workload 'x' ip 10.0.0.33 is outside the host's block 10.0.0.8/29 (in 10.0.0.32/29, a block "
        "of host 'h1') — pick an address inside 10.0.0.8/29 or drop ip")


def test_an_explicit_address_in_a_free_block_adds_that_block():
    # before any host grows: h1 (first in order) grows around the block h2's workload names
    wanted = dict(FLEET, h2=workloads(2, 'b') + [{'name': 'x', 'ip': '10.0.0.33'}])
    result = plan(wanted)
    assert blocks(result) == {'h1': ['10.0.0.0/29', '10.0.0.24/29', '10.0.0.40/29'],
                              'h2': ['10.0.0.8/29', '10.0.0.32/29'], 'h3': ['10.0.0.16/29']}
    assert [w['ip'] for w in result['hosts']['h2']['workloads']] == ['10.0.0.10', '10.0.0.11', '10.0.0.33']
    # the next run reads the block back as a running one: the same plan
    second = plan(wanted, facts=facts_of(result))
    assert blocks(second) == blocks(result)
    assert second['hosts']['h2']['workloads'] == result['hosts']['h2']['workloads']


def test_an_explicit_address_grows_a_running_host_and_moves_nobody():
    running = plan(FLEET)
    after = plan(dict(FLEET, h3=workloads(1, 'c') + [{'name': 'x', 'ip': '10.0.0.61/32'}]), facts=facts_of(running))
    assert blocks(after) == dict(blocks(running), h3=['10.0.0.16/29', '10.0.0.56/29'])
    for name in ('h1', 'h2'):
        assert after['hosts'][name]['workloads'] == running['hosts'][name]['workloads']
    assert after['hosts']['h3']['workloads'][1]['ip'] == '10.0.0.61'
    # the workload goes away: its block is trailing and empty, released
    assert blocks(plan(FLEET, facts=facts_of(after))) == blocks(running)


def test_an_explicit_address_in_a_block_the_host_cannot_take_stays_an_error_naming_the_fix():
    running = plan(FLEET)
    facts = facts_of(running)
    h3 = workloads(1, 'c') + [{'name': 'x', 'ip': '10.0.0.61'}]
    assert error(dict(FLEET, h3=h3), facts=facts, settings={'calico_max_blocks_per_host': 1}) == (
        P + "host 'h3': workload 'x' ip 10.0.0.61 is outside the host's block 10.0.0.16/29 (in 10.0.0.56/29, free, "
        "but the host holds 1 block already: calico_max_blocks_per_host 1) — raise calico_max_blocks_per_host to 2 "
        "to give the host 10.0.0.56/29, or pick an address inside 10.0.0.16/29 or drop ip")
    # h1 holds three blocks, the maximum
    assert error(dict(FLEET, h1=workloads(12) + [{'name': 'x', 'ip': '10.0.0.61'}]), facts=facts) == (
        P + "host 'h1': workload 'x' ip 10.0.0.61 is outside the host's blocks 10.0.0.0/29, 10.0.0.24/29, "
        "10.0.0.32/29 (in 10.0.0.56/29, free, but the host holds 3 blocks already: calico_max_blocks_per_host 3) "
        "— raise calico_max_blocks_per_host to 4 to give the host 10.0.0.56/29, or pick an address inside "
        "10.0.0.0/29, 10.0.0.24/29, 10.0.0.32/29 or drop ip")
    # further blocks are listed by address after the first one: one below it would become the first next run
    pinned = error(dict(FLEET, h3=h3[:1] + [{'name': 'x', 'ip': '10.0.0.42'}]), pins={'h3': '10.0.0.64/29'})
    assert pinned == (
        P + "host 'h3': workload 'x' ip 10.0.0.42 is outside the host's block 10.0.0.64/29 (in 10.0.0.40/29, below "
        "the host's first block: further blocks are taken above it) — pick an address inside 10.0.0.64/29 or drop ip")
    # a block another host still runs (blackholed), though no longer planned for it
    released = plan(dict(FLEET, h1=workloads(5)), facts=facts)
    assert error(dict(FLEET, h1=workloads(5), h3=h3[:1] + [{'name': 'x', 'ip': '10.0.0.26'}]), facts=facts) == (
        P + "host 'h3': workload 'x' ip 10.0.0.26 is outside the host's block 10.0.0.16/29 (in 10.0.0.24/29, a block "
        "of host 'h1') — pick an address inside 10.0.0.16/29 or drop ip")
    assert blocks(released)['h1'] == ['10.0.0.0/29']


def test_a_cni_host_grows_once_the_workloads_part_of_its_first_block_is_full():
    # /28 blocks, /30 container networks: slot 0 (10.0.0.0/30) keeps the workloads, .2 and .3 automatic
    settings = {'calico_block_prefix': 28, 'calico_cni': True, 'calico_cni_network_prefix': 30}
    result = plan({'h1': workloads(5), 'h2': []}, settings=settings)
    h1 = result['hosts']['h1']
    assert h1['blocks'] == ['10.0.0.0/28', '10.0.0.32/28']
    assert [w['ip'] for w in h1['workloads']] == ['10.0.0.2', '10.0.0.3', '10.0.0.34', '10.0.0.35', '10.0.0.36']
    assert h1['cni']['networks']['netfleet']['range'] == '10.0.0.4/30'  # container ranges stay in the first block
    assert error({'h1': workloads(3), 'h2': []}, settings=dict(settings, calico_max_blocks_per_host=1)) == (
        P + "host 'h1': block 10.0.0.0/28 is full (calico_workloads have 10.0.0.0/30 of the first block on a CNI "
        "host), no address left for workload 'w3' (calico_max_blocks_per_host 1) — raise "
        "calico_max_blocks_per_host, lower calico_block_prefix, or move workloads to another host")


def test_every_peer_imports_every_block_of_a_host():
    result = plan(FLEET)
    for name in ('h2', 'h3'):
        assert result['hosts'][name]['imports']['h1']['prefixes'] == result['hosts']['h1']['blocks']


def test_every_block_of_a_route_reflector_client_is_refused_back_to_it():
    hostvars = {name: dict(POOL, calico_node_ip=IPS[name], calico_as_number=65001,
                           calico_bgp_topology='route_reflector', calico_workloads=wls) for name, wls in FLEET.items()}
    hostvars['rr'] = dict(POOL, calico_node_ip='192.168.0.100', calico_as_number=65001,
                          calico_bgp_topology='route_reflector')
    groups = {'all': [*FLEET, 'rr'], 'calico_nodes': list(FLEET), 'calico_route_reflectors': ['rr'],
              'calico_racks': [*FLEET, 'rr'], 'rack1': [*FLEET, 'rr']}
    result = fabric(hostvars, groups, racks=['rack1'])
    h1 = result['hosts']['h1']
    assert h1['imports']['rr']['except'] == [b + '+' for b in h1['blocks']]
    assert result['hosts']['rr']['imports']['h1']['prefixes'] == h1['blocks']


def _status(blackholes, learned):
    return {'bird_running': True, 'sessions': [],
            'routes': {'blackholes': blackholes, 'workloads': [], 'bird': [{'dest': d} for d in learned]}}


def test_status_expects_every_block_of_every_other_host():
    result = plan({'h1': workloads(12), 'h2': workloads(1, 'b')})
    h1_blocks = result['hosts']['h1']['blocks']
    report = build_report({'h1': _status(h1_blocks, ['10.0.0.8/29']), 'h2': _status(['10.0.0.8/29'], h1_blocks[:2])},
                          plan=result)
    assert h1_blocks == ['10.0.0.0/29', '10.0.0.16/29', '10.0.0.24/29']
    assert 'h2: no route to 10.0.0.24/29 (block of h1)' in report['problems']
    assert not any('h1: no route' in p or 'blackhole' in p for p in report['problems']), report['problems']
    # a released block: its blackhole left on the host is stale, and so is its route elsewhere
    released = plan({'h1': workloads(10), 'h2': workloads(1, 'b')}, facts=facts_of(result))
    report = build_report({'h1': _status(h1_blocks, ['10.0.0.8/29']), 'h2': _status(['10.0.0.8/29'], h1_blocks)},
                          plan=released)
    assert 'h1: stale route blackhole 10.0.0.24/29 (planned blocks: 10.0.0.0/29, 10.0.0.16/29)' in report['problems']
    assert 'h2: stale route 10.0.0.24/29 proto bird (no host in the plan owns it)' in report['problems']
