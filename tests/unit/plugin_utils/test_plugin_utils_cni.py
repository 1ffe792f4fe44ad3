"""CNI planning (plugins/plugin_utils/cni.py and its part of policy.py): network ranges, preflight, the host
policy document with ipsets, and static workloads' rules that admit the container ranges."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.module_utils.selector import canonical, parse_selector
from ansible_collections.netfleet.calico.plugins.plugin_utils import cni

HOSTS = {
    'host-a': {'calico_node_ip': '192.168.100.100', 'calico_block': '172.17.8.0/24', 'calico_cni': True,
               'calico_workloads': [{'name': 'a1', 'labels': {'app': 'web'}}]},
    'host-b': {'calico_node_ip': '192.168.100.101', 'calico_block': '172.17.9.0/24', 'calico_cni': True,
               'calico_workloads': [{'name': 'b1', 'labels': {'app': 'db'}}]},
    'host-c': {'calico_node_ip': '192.168.100.102', 'calico_block': '172.17.10.0/24',
               'calico_workloads': [{'name': 'c1', 'labels': {'app': 'db'}}]},
}
NETWORKS = ({'name': 'web', 'labels': {'app': 'web'}}, {'name': 'db', 'labels': {'app': 'db'}})
DB = {'name': 'db', 'selector': "app == 'db'",
      'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [5432], 'from': {'selector': "app == 'web'"}}]}


def plan(hosts=None, networks=NETWORKS, policies=(DB,), **allvars):
    hosts = copy.deepcopy(hosts or HOSTS)
    hostvars = {}
    for name, own in hosts.items():
        hostvars[name] = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24,
                          'calico_policies': list(policies), **allvars, **own}
        if networks is not None:
            hostvars[name]['calico_cni_networks'] = list(networks) if isinstance(networks, tuple) else networks
    groups = {'all': list(hosts), 'calico_nodes': list(hosts), 'calico_route_reflectors': []}
    return fabric(hostvars, groups)


def error(**kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        plan(**kwargs)
    text = str(exc.value)
    assert '\n' not in text and text.startswith('netfleet.calico preflight: ')
    return text


def test_each_network_gets_its_slot_of_every_cni_host_block():
    result = plan()
    a, b, c = (result['hosts'][h]['cni'] for h in ('host-a', 'host-b', 'host-c'))
    assert a == {'enabled': True, 'block': '172.17.8.0/24', 'static_range': '172.17.8.0/26',
                 'networks': {'web': {'range': '172.17.8.64/26', 'labels': {'app': 'web'}},
                              'db': {'range': '172.17.8.128/26', 'labels': {'app': 'db'}}},
                 'reserved': ['172.17.8.2'], 'policy': a['policy']}
    assert b['networks']['web']['range'] == '172.17.9.64/26'
    assert c == {'enabled': False}


def test_default_network_and_prefix():
    result = plan(networks=None, calico_cni_network_prefix=27)
    assert result['hosts']['host-a']['cni']['networks'] == {
        'netfleet': {'range': '172.17.8.32/27', 'labels': {}}}


def test_explicit_slot_is_kept_when_the_list_changes():
    result = plan(networks=[{'name': 'db', 'labels': {'app': 'db'}, 'slot': 2}])
    assert result['hosts']['host-a']['cni']['networks']['db']['range'] == '172.17.8.128/26'


def test_policy_document_resolves_selectors_to_ipsets_with_fleet_wide_members():
    result = plan()
    doc = result['hosts']['host-a']['cni']['policy']
    assert doc is result['hosts']['host-b']['cni']['policy'] or doc == result['hosts']['host-b']['cni']['policy']
    web_set = cni.set_name(parse_selector("app == 'web'"))
    assert doc['policies'] == [{
        'name': 'db', 'selector': "app == 'db'", 'types': ['ingress'], 'egress': [],
        'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': ['5432'], 'peers': None, 'set': web_set}]}]
    # the static web workload a1 and the web range of both CNI hosts (host-c runs no plugin)
    assert doc['sets'] == {web_set: {'selector': "app == 'web'",
                                     'members': ['172.17.8.2/32', '172.17.8.64/26', '172.17.9.64/26']}}
    assert len(web_set) <= 31 and web_set.startswith('cali-s-')


def test_static_workloads_admit_the_container_ranges_their_selectors_match():
    result = plan()
    b1 = result['hosts']['host-b']['policy'][0]
    c1 = result['hosts']['host-c']['policy'][0]
    assert b1['ingress'][0]['peers'] == ['172.17.8.2/32', '172.17.8.64/26', '172.17.9.64/26']
    assert c1['ingress'][0]['peers'] == b1['ingress'][0]['peers']  # host-c has no plugin, its rules still do


def test_selector_with_cidr_keeps_the_overlap_of_ranges():
    pol = {'name': 'db', 'selector': "app == 'db'",
           'ingress': [{'action': 'allow', 'from': {'selector': "app == 'web'", 'cidr': '172.17.9.96/27'}}]}
    result = plan(policies=[pol])
    assert result['hosts']['host-b']['policy'][0]['ingress'][0]['peers'] == ['172.17.9.96/27']
    rule = result['hosts']['host-b']['cni']['policy']['policies'][0]['ingress'][0]
    assert rule['peers'] == ['172.17.9.96/27'] and rule['set'].startswith('cali-s-')


def test_no_cni_anywhere_plans_nothing_new():
    hosts = {k: {kk: vv for kk, vv in v.items() if kk != 'calico_cni'} for k, v in HOSTS.items()}
    result = plan(hosts=hosts)
    assert all(h['cni'] == {'enabled': False} for h in result['hosts'].values())
    assert result['hosts']['host-b']['policy'][0]['ingress'][0]['peers'] == ['172.17.8.2/32']


def test_canonical_selectors_name_one_set_per_meaning():
    assert cni.set_name(parse_selector("app=='web'")) == cni.set_name(parse_selector("  app == 'web'"))
    assert canonical(parse_selector("t in {'b', 'a'}")) == canonical(parse_selector("t in {'a','b'}"))


@pytest.mark.parametrize('kwargs, expect', [
    ({'networks': [{'name': 'a'}, {'name': 'b'}, {'name': 'c'}, {'name': 'd'}]},
     "network 'd' slot 4 is outside 1-3"),
    ({'networks': [{'name': 'a', 'slot': 1}, {'name': 'b', 'slot': 1}]}, "networks 'a' and 'b' share slot 1"),
    ({'networks': [{'name': 'a'}, {'name': 'a'}]}, "network 'a' is listed twice"),
    ({'networks': [{'name': 'web\n'}]}, 'has no valid name'),
    ({'networks': [{'name': '../x'}]}, 'has no valid name'),
    ({'networks': [{'name': 'web', 'labels': {'app': 'a b'}}]}, "label app value 'a b' is not valid"),
    ({'networks': [{'name': 'web', 'labels': {'a"b': 'x'}}]}, 'label name'),
    ({'networks': [{'name': 'web', 'labels': ['app']}]}, 'labels is not a mapping'),
    ({'networks': [{'name': 'web', 'vlan': 3}]}, 'unknown key(s) vlan'),
    ({'networks': 'web'}, 'is not a non-empty list'),
    ({'calico_cni_network_prefix': 24}, 'calico_cni_network_prefix 24 is not a prefix length 25-32'),
    ({'calico_cni_network_prefix': '٢٦'}, 'is not a prefix length'),
])
def test_preflight_rejects_bad_cni_input_with_one_line(kwargs, expect):
    assert expect in error(**kwargs)


def test_a_static_workload_outside_range_zero_is_refused():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-a']['calico_workloads'] = [{'name': 'a1', 'ip': '172.17.8.70'}]
    text = error(hosts=hosts)
    assert "host 'host-a'" in text and "workload 'a1' ip 172.17.8.70 is outside 172.17.8.0/26" in text


def test_calico_cni_must_be_a_boolean():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-a']['calico_cni'] = 'maybe'
    assert "host 'host-a': calico_cni 'maybe' is not a boolean" in error(hosts=hosts)


def test_turning_cni_off_while_containers_are_attached_fails_in_preflight():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-a'].pop('calico_cni')
    hosts['host-a']['calico_node_facts'] = {'cni_attachments': 2}
    text = error(hosts=hosts)
    assert "host 'host-a': calico_cni is off but 2 container(s) are attached through its CNI plugin" in text
    hosts['host-a']['calico_node_facts'] = {'cni_attachments': 0}
    assert plan(hosts=hosts)['hosts']['host-a']['cni'] == {'enabled': False}
