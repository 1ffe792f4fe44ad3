"""Policy planning (plugins/plugin_utils/policy.py): selectors, per-endpoint rule sets, floating IPs, preflight."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils import policy as p

HOSTS = {
    'host-a': {'calico_node_ip': '192.168.100.100', 'calico_block': '172.17.8.0/24',
               'calico_workloads': [{'name': 'a1', 'labels': {'app': 'web'}, 'floating_ip': '10.99.0.10'},
                                    {'name': 'a2', 'labels': {'app': 'db', 'role': 'db'}}]},
    'host-b': {'calico_node_ip': '192.168.100.101', 'calico_block': '172.17.9.0/24',
               'calico_workloads': [{'name': 'b1', 'labels': {'app': 'client'}},
                                    {'name': 'b2', 'labels': {'app': 'client', 'role': 'admin'}}]},
}
WEB = {'name': 'web', 'order': 100, 'selector': "app == 'web'",
       'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [80, '8000:8080'],
                    'from': {'selector': "app == 'client'"}},
                   {'action': 'allow', 'protocol': 'icmp', 'from': {'cidr': '192.168.100.0/24'}}]}


def plan(policies=None, hosts=None, **allvars):
    hosts = copy.deepcopy(hosts or HOSTS)
    hostvars = {}
    for name, own in hosts.items():
        hostvars[name] = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24,
                          'calico_policies': policies or [], **allvars, **own}
    groups = {'all': list(hosts), 'calico_nodes': list(hosts), 'calico_route_reflectors': []}
    return fabric(hostvars, groups)


def error(policies=None, hosts=None):
    with pytest.raises(AnsibleFilterError) as exc:
        plan(policies, hosts)
    text = str(exc.value)
    assert '\n' not in text and text.startswith('netfleet.calico preflight: ')
    return text


def endpoints(result, host):
    return {e['name']: e for e in result['hosts'][host]['policy']}


# ------------------------------------------------------------------------------------------------ selectors

@pytest.mark.parametrize('selector,labels,expected', [
    ("app == 'web'", {'app': 'web'}, True),
    ("app == 'web'", {'app': 'db'}, False),
    ("app == 'web'", {}, False),
    ("role != 'db'", {}, True),  # != also matches a missing label (Calico)
    ("role != 'db'", {'role': 'db'}, False),
    ('has(app)', {'app': ''}, True),
    ('!has(app)', {'app': 'x'}, False),
    ('all()', {}, True),
    ("app == 'web' && role != 'db'", {'app': 'web', 'role': 'x'}, True),
    ("app == 'web' && has(tier)", {'app': 'web'}, False),
    ("app == 'a' || app == \"b\"", {'app': 'b'}, True),
    ("(app == 'a' || app == 'b') && !has(x)", {'app': 'a', 'x': '1'}, False),
    ("tier in {'web', 'api'}", {'tier': 'api'}, True),
    ("tier not in {'web'}", {}, True),
    ("k8s-app/name == 'x.y'", {'k8s-app/name': 'x.y'}, True),
])
def test_selector_matches(selector, labels, expected):
    assert p.match_selector(p.parse_selector(selector), labels) is expected


@pytest.mark.parametrize('selector,expect', [
    ("app = 'web'", 'unexpected'),
    ("app == web", 'quoted value'),
    ("app == 'web' &&", 'at the end'),
    ('has(app', "expected \\)"),
    ('', 'is empty'),
    ("app == 'web' role == 'x'", "unexpected 'role'"),
    ("app ~ 'x'", 'unexpected'),
    ('all(', "expected \\)"),
])
def test_selector_syntax_errors(selector, expect):
    with pytest.raises(p.SelectorError, match=expect):
        p.parse_selector(selector)


# ------------------------------------------------------------------------------------------------ planning

def test_no_policy_everything_unselected_and_floating_ip_planned():
    result = plan()
    a = endpoints(result, 'host-a')
    assert a['a1'] == {'name': 'a1', 'ip': '172.17.8.2', 'ifname': a['a1']['ifname'], 'ingress': None,
                       'egress': None, 'policies': [], 'floating_ip': '10.99.0.10'}
    assert result['hosts']['host-a']['floating_ips'] == ['10.99.0.10/32']
    assert result['hosts']['host-b']['floating_ips'] == []
    assert result['floating_ips'] == ['10.99.0.10/32']


def test_selector_resolved_to_addresses_across_the_fabric():
    result = plan([WEB])
    a = endpoints(result, 'host-a')
    assert a['a1']['policies'] == ['web'] and a['a1']['egress'] is None
    assert a['a1']['ingress'] == [
        {'action': 'allow', 'protocol': 'tcp', 'ports': ['80', '8000:8080'],
         'peers': ['172.17.9.2/32', '172.17.9.3/32']},
        {'action': 'allow', 'protocol': 'icmp', 'ports': [], 'peers': ['192.168.100.0/24']}]
    assert a['a2']['ingress'] is None and a['a2']['policies'] == []  # not selected: allow all


def test_policy_order_types_and_default_deny():
    deny_db = {'name': 'deny-db', 'order': 10, 'selector': 'all()',
               'ingress': [{'action': 'deny', 'from': {'selector': "role == 'db'"}}]}
    egress = {'name': 'zz-egress', 'selector': "app == 'client'", 'types': ['egress'],
              'egress': [{'action': 'allow', 'protocol': 'udp', 'ports': [53], 'to': {'cidr': ['10.0.0.53']}}]}
    isolate = {'name': 'isolate', 'selector': "role == 'admin'", 'types': ['ingress', 'egress']}
    result = plan([WEB, egress, deny_db, isolate])
    a1 = endpoints(result, 'host-a')['a1']
    assert a1['policies'] == ['deny-db', 'web']  # order 10 before 100
    assert a1['ingress'][0] == {'action': 'deny', 'protocol': None, 'ports': [], 'peers': ['172.17.8.3/32']}
    b = endpoints(result, 'host-b')
    assert b['b1']['egress'] == [{'action': 'allow', 'protocol': 'udp', 'ports': ['53'], 'peers': ['10.0.0.53/32']}]
    assert b['b2']['egress'] == b['b1']['egress']  # isolate adds no egress rule, zz-egress does
    assert b['b2']['policies'] == ['deny-db', 'isolate', 'zz-egress']
    # isolate selects b2 for ingress with no rules of its own: only deny-db's rule, then default deny
    assert b['b2']['ingress'] == [a1['ingress'][0]]


def test_selector_and_cidr_together_intersect():
    pol = {'name': 'x', 'selector': "app == 'web'",
           'ingress': [{'from': {'selector': "app == 'client'", 'cidr': '172.17.9.3/32'}}]}
    assert endpoints(plan([pol]), 'host-a')['a1']['ingress'][0]['peers'] == ['172.17.9.3/32']


# ------------------------------------------------------------------------------------------------ preflight

def with_rule(**rule):
    return [{'name': 'bad', 'selector': 'all()', 'ingress': [{'action': 'allow', **rule}]}]


@pytest.mark.parametrize('policies,expect', [
    ([{'name': 'bad', 'selector': "app = 'web'"}], r"policy 'bad': selector \"app = 'web'\" is malformed.*— write it"),
    (with_rule(**{'from': {'selector': "has(app"}}), r"policy 'bad': ingress rule 1 from selector .* is malformed"),
    (with_rule(protocol='tcp', ports=[70000]), r"policy 'bad': ingress rule 1: port 70000 is outside 1-65535 — "),
    (with_rule(protocol='tcp', ports=[0]), r"port 0 is outside 1-65535"),
    (with_rule(protocol='tcpp'), r"policy 'bad': ingress rule 1: protocol 'tcpp' is unknown .* — use tcp, udp"),
    (with_rule(protocol='icmp', ports=[80]), r"lists ports but protocol is icmp"),
    (with_rule(action='permit'), r"action 'permit' is not valid — use allow or deny"),
    (with_rule(to={'cidr': '10.0.0.0/8'}), r"uses 'to' in an ingress rule"),
    (with_rule(**{'from': {'cidr': '10.0.0.0/33'}}), r"cidr '10.0.0.0/33' is not an IPv4 CIDR"),
    ([{'name': 'dup'}, {'name': 'dup'}], r"policy 'dup': is defined twice"),
    ([{'selector': 'all()'}], r"calico_policies\[0\]: has no valid name"),
    ([{'name': 'x', 'ingres': []}], r"policy 'x': has unknown key\(s\) ingres"),
    ([{'name': 'x', 'types': ['inbound']}], r"types .* is not valid"),
])
def test_policy_preflight_errors(policies, expect):
    import re
    text = error(policies)
    assert re.search(expect, text), text


def test_floating_ip_inside_pool_is_an_error():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-b']['calico_workloads'][0]['floating_ip'] = '172.17.200.1'
    assert error(hosts=hosts) == ("netfleet.calico preflight: host 'host-b': workload 'b1' floating_ip 172.17.200.1 "
                                  'is inside calico_pool 172.17.0.0/16 — pick a floating IP outside the pool '
                                  '(it is NATed to the workload)')


def test_one_floating_ip_on_two_workloads_is_an_error():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-b']['calico_workloads'][1]['floating_ip'] = '10.99.0.10'
    text = error(hosts=hosts)
    assert "host 'host-b': workload 'b2' floating_ip 10.99.0.10 is also the floating_ip of workload 'a1' on host " \
           "'host-a' — give each workload its own floating_ip" in text


@pytest.mark.parametrize('fip,expect', [('10.99.0', 'is not an IPv4 address'),
                                        ('192.168.100.101', "is the node IP of host 'host-b'")])
def test_bad_floating_ips(fip, expect):
    hosts = copy.deepcopy(HOSTS)
    hosts['host-a']['calico_workloads'][1]['floating_ip'] = fip
    assert expect in error(hosts=hosts)


def test_bad_labels():
    hosts = copy.deepcopy(HOSTS)
    hosts['host-a']['calico_workloads'][1]['labels'] = ['app=web']
    assert "workload 'a2' labels is not a mapping" in error(hosts=hosts)
