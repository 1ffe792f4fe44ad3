"""The CNI plan of a dual-stack fleet (plugins/plugin_utils/cni.py, v6.py, policy.py) through the fabric filter:
each network gets an IPv6 range cut from the host's first IPv6 block like its IPv4 range, calico_workloads keep
slot 0 of both, and selectors match container ranges of both families."""

from __future__ import annotations

import pytest
from test_plugin_utils_v6 import mesh

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import netaddr

NETWORKS = [{'name': 'web', 'labels': {'app': 'web'}}, {'name': 'db', 'labels': {'app': 'db'}}]


def cni_mesh(v6=True, workloads=2, **extra):
    hostvars, groups = mesh(v6=v6, workloads=workloads, **extra)
    for name in ('h1', 'h2'):
        hostvars[name].update(calico_cni=True, calico_cni_networks=NETWORKS)
    return hostvars, groups


def test_each_network_gets_an_ipv6_range_in_the_same_slot():
    hosts = fabric(*cni_mesh())['hosts']
    for name in ('h1', 'h2'):
        host = hosts[name]
        cni = host['cni']
        block6 = netaddr.IPNetwork(host['blocks_v6'][0])  # /122: four /124 slots, as the /24 has four /26
        assert cni['block6'] == str(block6)
        assert cni['static_range6'] == str(next(block6.subnet(124)))
        for slot, net in enumerate(('web', 'db'), start=1):
            assert cni['networks'][net]['range6'] == str(list(block6.subnet(124))[slot])
            assert cni['networks'][net]['range'] == str(list(netaddr.IPNetwork(host['block']).subnet(26))[slot])
        # calico_workloads keep slot 0 of both blocks, and their ip6 are never handed out
        first_two = [str(block6.network + 1), str(block6.network + 2)]
        assert [w['ip6'] for w in host['workloads']] == cni['reserved6'] == first_two
    assert 'block6' not in hosts['h3'].get('cni', {})


def test_an_ipv4_fleet_has_no_ipv6_ranges():
    cni = fabric(*cni_mesh(v6=False))['hosts']['h1']['cni']
    assert not {'block6', 'static_range6', 'reserved6'} & set(cni)
    assert all('range6' not in net for net in cni['networks'].values())


def test_automatic_ip6_stay_in_slot_0_and_the_host_grows_when_it_is_full():
    """A CNI host's workloads fill slot 0 of the first IPv6 block (16 addresses of a /122, less the anycast
    one), then a further IPv6 block, never the container ranges."""
    hostvars, groups = cni_mesh(workloads=0)
    hostvars['h1'].update(calico_workloads=[{'name': 'w%d' % i} for i in range(17)], calico_max_blocks_per_host=2,
                          calico_block_prefix=26)
    for hv in hostvars.values():
        hv['calico_block_prefix'] = 26
    host = fabric(hostvars, groups)['hosts']['h1']
    first, second = (netaddr.IPNetwork(b) for b in host['blocks_v6'])
    slot0 = netaddr.IPNetwork(host['cni']['static_range6'])
    ip6 = [netaddr.IPAddress(w['ip6']) for w in host['workloads']]
    assert all(a in slot0 for a in ip6[:15]) and all(a in second for a in ip6[15:])
    assert slot0.first == first.first and slot0.prefixlen == 124


def test_an_explicit_ip6_in_a_container_range_is_refused():
    hostvars, groups = cni_mesh(workloads=0)
    hostvars['h1']['calico_workloads'] = [{'name': 'web', 'ip6': 'fd00:10::21'}]  # slot 2 of h1's ::/122
    with pytest.raises(FabricError, match=r"host 'h1'.*workload 'web' ip6 fd00:10::21 is outside fd00:10::/124"):
        fabric(hostvars, groups)


def test_ranges_longer_than_128_are_refused():
    hostvars, groups = cni_mesh()
    for hv in hostvars.values():
        hv.update(calico_block_prefix_v6=126, calico_cni_network_prefix=28)
    with pytest.raises(FabricError, match='longer than /128'):
        fabric(hostvars, groups)


def test_selectors_match_container_ranges_of_both_families():
    policy = [{'name': 'db', 'selector': "app == 'db'",
               'ingress': [{'action': 'allow', 'from': {'selector': "app == 'web'"}}]}]
    hostvars, groups = cni_mesh(workloads=0)
    hostvars['h3']['calico_workloads'] = [{'name': 'db1', 'labels': {'app': 'db'}}]
    for hv in hostvars.values():
        hv['calico_policies'] = policy
    hosts = fabric(hostvars, groups)['hosts']
    web = {name: hosts[name]['cni']['networks']['web'] for name in ('h1', 'h2')}
    (db1,) = hosts['h3']['policy']
    # the static workload admits the web containers of every CNI host, over IPv4 and IPv6
    assert db1['ingress'][0]['peers'] == [web['h1']['range'], web['h2']['range'], web['h1']['range6'],
                                          web['h2']['range6']]
    (spec,) = hosts['h1']['cni']['policy']['sets'].values()
    assert spec['members'] == [web['h1']['range'], web['h2']['range']]
    assert spec['members6'] == [web['h1']['range6'], web['h2']['range6']]
    hostvars, groups = cni_mesh(v6=False, workloads=0)
    for hv in hostvars.values():
        hv['calico_policies'] = policy
    (spec,) = fabric(hostvars, groups)['hosts']['h1']['cni']['policy']['sets'].values()
    assert 'members6' not in spec
