"""calico_bgp_ipv6_sessions (plugins/plugin_utils/v6.py, bgp.py): every peer relation of a dual-stack fleet runs an
IPv6 session beside the IPv4 one, and switching the option on or off is a make-before-break peer change."""

from __future__ import annotations

import copy

import pytest
from test_plugin_utils_v6 import racks as dual_stack_racks

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.module_utils import bird
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import bgp_sessions
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError


def mesh(**extra):
    """Three dual-stack full-mesh hosts on one segment."""
    hostvars = {}
    for i, name in enumerate(('h1', 'h2', 'h3'), start=1):
        hostvars[name] = dict({'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24,
                               'calico_node_ip': f'192.168.100.{i}', 'calico_node_prefixlen': 24,
                               'calico_pool_v6': 'fd00:10::/48', 'calico_node_ip_v6': f'fd00:100::{i}',
                               'calico_workloads': [{'name': f'{name}w'}]}, **extra)
    return hostvars, {'calico_nodes': ['h1', 'h2', 'h3']}


def racks(**extra):
    """Two racks with a reflector each, the reflectors peering from their spine addresses."""
    hostvars, groups = dual_stack_racks()
    hostvars['rr1'].update(calico_rr_spine_ip='10.255.0.11', calico_rr_spine_ip_v6='fd00:255::11')
    hostvars['rr2'].update(calico_rr_spine_ip='10.255.0.21', calico_rr_spine_ip_v6='fd00:255::21')
    for host in hostvars.values():
        host.update(extra)
    return hostvars, groups


def plan_of(hostvars, groups):
    return fabric(hostvars, groups, racks=('rack1', 'rack2'))


def up(*names_ips, running=True):
    """A calico_bgp_status with these sessions Established: ``(name, peer_ip, description, peer_as)``."""
    return {'bird_running': running, 'sessions': [
        {'name': n, 'peer_ip': ip, 'description': d, 'peer_as': asn, 'local_as': asn, 'established': True}
        for n, ip, d, asn in names_ips]}


def running_sessions(plan, host, families=(4, 6)):
    """What ``host`` runs once the plan is in place: its planned sessions (of these families), all Established."""
    out = bgp_sessions(plan['hosts'][host], plan['topology'])
    chosen = (out['peers'] if 4 in families else []) + (out['peers6'] if 6 in families else [])
    return up(*((p['protocol'], p['ip'], p['name'], p['as_number']) for p in chosen))


def test_off_plans_exactly_as_before():
    hostvars, groups = racks()
    before = plan_of(hostvars, groups)
    for value in (False, 'false', 'no'):
        hostvars, groups = racks(calico_bgp_ipv6_sessions=value)
        assert plan_of(hostvars, groups) == before
    assert not bgp_sessions(before['hosts']['h1'], 'route_reflector')['peers6']


def test_every_relation_gets_an_ipv6_session_beside_the_ipv4_one():
    plan = plan_of(*racks(calico_bgp_ipv6_sessions=True))
    assert plan['bgp_ipv6_sessions'] is True
    rr2 = bgp_sessions(plan['hosts']['rr2'], 'route_reflector')
    got = {p['v4_protocol']: (p['protocol'], p['local_ip'], p['ip']) for p in rr2['peers6']}
    assert got == {
        # reflector <-> reflector of another rack: eBGP between the spine addresses
        'Global_10_255_0_11': ('Global_fd00_255__11', 'fd00:255::21', 'fd00:255::11'),
        # the reflector's client: between the node addresses, still a client of the same cluster
        'Client_192_168_102_11': ('Client_fd00_102__11', 'fd00:102::1', 'fd00:102::11'),
    }
    v4 = {p['protocol']: p for p in rr2['peers']}
    for six in rr2['peers6']:  # the dialing side, GTSM, BFD and client role of the IPv4 session
        four = v4[six['v4_protocol']]
        for key in ('passive', 'connect_delay_offset', 'type', 'direct', 'rr_client', 'rr_cluster_id', 'as_number'):
            assert six[key] == four[key], key
        assert six['family'] == 6 and six['description'] == four['name']
    # both ends agree on who dials, in the mesh too
    mesh_plan = fabric(*mesh(calico_bgp_ipv6_sessions='yes'))
    h1 = bgp_sessions(mesh_plan['hosts']['h1'], 'full_mesh')['peers6']
    h2 = bgp_sessions(mesh_plan['hosts']['h2'], 'full_mesh')['peers6']
    one = next(p for p in h1 if p['name'] == 'h2')
    other = next(p for p in h2 if p['name'] == 'h1')
    assert (one['protocol'], other['protocol']) == ('Mesh_fd00_100__2', 'Mesh_fd00_100__1')
    assert one['passive'] != other['passive']
    names = [p['protocol'] for p in h1] + [p['protocol'] for p in bgp_sessions(mesh_plan['hosts']['h1'],
                                                                               'full_mesh')['peers']]
    assert len(set(names)) == len(names) == 4


def test_the_option_is_refused_without_an_ipv6_pool_or_with_spines():
    hostvars, groups = racks(calico_bgp_ipv6_sessions=True)
    for hv in hostvars.values():
        for var in ('calico_pool_v6', 'calico_node_ip_v6', 'calico_rr_spine_ip_v6'):
            hv.pop(var, None)
    with pytest.raises(FabricError, match='calico_bgp_ipv6_sessions is true but calico_pool_v6 is not set'):
        plan_of(hostvars, groups)
    for hv in hostvars.values():  # false needs no IPv6 pool
        hv['calico_bgp_ipv6_sessions'] = False
    plan_of(hostvars, groups)
    # the spine routers (FRR) run IPv6 in the IPv4 sessions only
    hostvars, groups = racks(calico_bgp_ipv6_sessions=True, calico_spine_as_number=65100)
    hostvars['sp1'] = {'calico_node_ip': '10.255.0.1', 'calico_node_ip_v6': 'fd00:255::1',
                       'calico_spine_as_number': 65100, 'calico_node_prefixlen': 24}
    groups['calico_spines'] = ['sp1']
    with pytest.raises(FabricError, match='calico_bgp_ipv6_sessions is not supported with calico_spines'):
        plan_of(hostvars, groups)
    del hostvars['rr1']['calico_bgp_ipv6_sessions']  # the only reason the fleet is refused
    for hv in hostvars.values():
        hv.pop('calico_bgp_ipv6_sessions', None)
    plan_of(hostvars, groups)


def test_switching_on_carries_the_ipv6_routes_in_the_ipv4_sessions_until_the_ipv6_ones_bring_them():
    before = plan_of(*racks())
    after = plan_of(*racks(calico_bgp_ipv6_sessions=True))
    status = running_sessions(before, 'rr2')
    out = bgp_sessions(after['hosts']['rr2'], 'route_reflector', status)
    assert out['needed'] and out['lingering'] == []
    assert out['wait_for'] == ['Client_fd00_102__11', 'Global_fd00_255__11']
    assert out['carry_v6'] == ['Client_192_168_102_11', 'Global_10_255_0_11']
    assert out['replaced'] == ['Client_192_168_102_11:ipv6', 'Global_10_255_0_11:ipv6']
    # once the IPv6 sessions run, nothing to do: the IPv4 sessions' ipv6 channels go empty
    done = bgp_sessions(after['hosts']['rr2'], 'route_reflector', running_sessions(after, 'rr2'))
    assert not done['needed'] and done['carry_v6'] == [] and done['replaced'] == [] and done['wait_for'] == []
    # an IPv4 session that is down carries nothing worth keeping
    status['sessions'] = [dict(s, established=s['name'] != 'Client_192_168_102_11') for s in status['sessions']]
    part = bgp_sessions(after['hosts']['rr2'], 'route_reflector', status)
    assert part['carry_v6'] == ['Global_10_255_0_11'] and part['needed']


def test_switching_off_keeps_the_ipv6_sessions_as_they_ran_until_the_ipv4_sessions_bring_their_routes():
    on = plan_of(*racks(calico_bgp_ipv6_sessions=True))
    off = plan_of(*racks())
    status = running_sessions(on, 'rr2')
    out = bgp_sessions(off['hosts']['rr2'], 'route_reflector', status)
    assert out['needed'] and out['wait_for'] == [] and out['carry_v6'] == []
    kept = {k['name']: k for k in out['lingering']}
    assert out['replaced'] == sorted(kept) == ['Client_fd00_102__11', 'Global_fd00_255__11']
    # rendered from the same entry as the plan rendered the running session (BIRD sees it unchanged)
    planned = {p['protocol']: p for p in bgp_sessions(on['hosts']['rr2'], 'route_reflector')['peers6']}
    for name, entry in kept.items():
        assert entry == dict(planned[name], name=name), name
    # without the IPv4 session to that peer Established, its IPv6 session has nothing to hand over to
    status['sessions'] = [dict(s, established=s['name'] != 'Global_10_255_0_11') for s in status['sessions']]
    assert [k['name'] for k in bgp_sessions(off['hosts']['rr2'], 'route_reflector', status)['lingering']] == [
        'Client_fd00_102__11']
    # once they are gone, nothing to do
    assert not bgp_sessions(off['hosts']['rr2'], 'route_reflector', running_sessions(off, 'rr2'))['needed']


def test_a_reflector_converged_before_its_hosts_leaves_the_change_toward_them_to_finish():
    """site.yml converges a reflector-only host before its clients: an IPv6 session to one cannot come up yet, nor
    can its IPv4 session bring the IPv6 routes back; the reflector keeps the old way toward them and finishes once
    they run theirs (``later`` empty)."""
    clients = ['h1', 'h2']
    before, after = plan_of(*racks()), plan_of(*racks(calico_bgp_ipv6_sessions=True))
    out = bgp_sessions(after['hosts']['rr2'], 'route_reflector', running_sessions(before, 'rr2'), later=clients)
    assert out['wait_for'] == ['Global_fd00_255__11'] and out['needed']  # the other reflector: same play
    assert out['carry_v6'] == ['Global_10_255_0_11', 'Client_192_168_102_11']
    assert out['replaced'] == ['Global_10_255_0_11:ipv6']
    assert out['final_carry_v6'] == ['Client_192_168_102_11'] and out['unfinished']
    # the last play: the client runs its IPv6 session now, nothing left for later
    status = running_sessions(after, 'rr2')
    done = bgp_sessions(after['hosts']['rr2'], 'route_reflector', status)
    assert not done['unfinished'] and not done['needed'] and done['final_carry_v6'] == []
    # switched off: the IPv6 session to the client stays in the configuration the reflector's play leaves
    out = bgp_sessions(before['hosts']['rr2'], 'route_reflector', status, later=clients)
    assert [k['name'] for k in out['final_lingering']] == ['Client_fd00_102__11'] and out['unfinished']
    assert out['replaced'] == ['Global_fd00_255__11'] and out['needed']
    last = bgp_sessions(before['hosts']['rr2'], 'route_reflector', status)
    assert last['replaced'] == ['Client_fd00_102__11', 'Global_fd00_255__11'] and not last['unfinished']


def test_a_router_outside_the_fleet_over_ipv6_is_never_kept_as_a_fleet_session():
    off = plan_of(*racks())
    status = running_sessions(off, 'h1')
    status['sessions'].append({'name': 'External_fd00_99__1', 'peer_ip': 'fd00:99::1', 'description': 'rr1',
                               'peer_as': 65001, 'local_as': 65001, 'established': True})
    assert not bgp_sessions(off['hosts']['h1'], 'route_reflector', status)['needed']


def test_the_transition_waits_only_for_the_ipv6_routes_of_an_ipv4_session():
    routes = [('172.17.2.0/24', 'Client_192_168_102_11'), ('fd00:10::80/122', 'Client_192_168_102_11')]
    old = {'Client_192_168_102_11:ipv6'}
    others = {'Client_192_168_102_11'}
    assert bird.uncovered(routes, old, others) == ['fd00:10::80/122']
    routes.append(('fd00:10::80/122', 'Client_fd00_102__11'))
    assert bird.uncovered(routes, old, others | {'Client_fd00_102__11'}) == []
    # the IPv4 routes of that session are never waited for
    assert bird.uncovered(routes[:1], old, others) == []


def test_bgp_sessions_does_not_change_the_plan():
    plan = plan_of(*racks(calico_bgp_ipv6_sessions=True))
    kept = copy.deepcopy(plan)
    bgp_sessions(plan['hosts']['rr2'], 'route_reflector', running_sessions(plan_of(*racks()), 'rr2'))
    assert plan == kept
