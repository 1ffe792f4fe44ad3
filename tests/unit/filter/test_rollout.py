"""Unit tests of site.yml's host checks (netfleet.calico.node_checks) and roll-out batches (rollout)."""

from __future__ import annotations

import pytest

from ansible_collections.netfleet.calico.plugins.filter.rollout import node_checks, rollout
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.rollout import batch_sizes, version_tuple

PRE = "netfleet.calico preflight: host 'h1': "


def facts(bird='2.0.12', nft=0, legacy=0, **extra):
    return {'calico_node_facts': dict(bird_version=bird, iptables_rules={'nft': nft, 'legacy': legacy}, **extra)}


def test_a_good_host_has_no_problem():
    assert node_checks(facts(), 'h1') == []
    assert node_checks(facts(bird='2.15.1', nft=7), 'h1') == []
    assert node_checks({'skipped': True}, 'h1') == []


def test_unreachable_names_the_host_and_what_to_check():
    result = {'unreachable': True, 'msg': "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 "
                                          "port 1: Connection refused\nmore"}
    [line] = node_checks(result, 'h1')
    assert line.startswith(PRE + 'is unreachable (Failed to connect to the host via ssh: ')
    assert line.endswith('— check its connectivity (is it up, can this controller reach it) and its inventory entry '
                         '(ansible_host, ansible_port, ansible_user, ansible_connection)')
    assert '\n' not in line


@pytest.mark.parametrize('version, kwargs, problem', [
    ('2.0.8', {}, "BIRD 2.0.8 is too old (onlink routes need 2.0.12) — install BIRD >= 2.0.12 (Debian bookworm's "
                  "bird2)"),
    ('2.0.11', {'onlink': False, 'ipip_mode': 'always'}, 'BIRD 2.0.11 is too old (IPIP tunnel routes need 2.0.12)'),
    ('1.6.8', {'onlink': False}, 'BIRD 1.6.8 is too old (the configuration needs 2.0.0)'),
    ('garbage', {}, 'BIRD garbage is too old'),
])
def test_old_bird(version, kwargs, problem):
    [line] = node_checks(facts(bird=version), 'h1', **kwargs)
    assert line.startswith(PRE + problem)


def test_bird_2_0_8_is_fine_without_onlink_and_ipip():
    assert node_checks(facts(bird='2.0.8'), 'h1', onlink=False) == []


def test_missing_bird():
    assert node_checks(facts(bird=None), 'h1') == []   # the role installs it
    [line] = node_checks(facts(bird=None), 'h1', install_packages=False, bird_binary='/opt/bird')
    assert line.startswith(PRE + 'BIRD is not installed (/opt/bird not found) — install BIRD >= 2.0.12')


def test_iptables_rules_in_both_backends():
    [line] = node_checks(facts(nft=3, legacy=2), 'h1')
    assert line.startswith(PRE + 'has iptables rules in both backends (iptables-nft: 3, iptables-legacy: 2)')
    assert 'calico_iptables_backend: nft or legacy' in line
    assert node_checks(facts(nft=3, legacy=2), 'h1', iptables_backend='legacy') == []  # an explicit choice
    assert node_checks(facts(nft=3, legacy=2), 'h1', iptables=False) == []             # no rule written here


def test_forced_backend_while_the_rules_are_in_the_other():
    [line] = node_checks(facts(legacy=4), 'h1', iptables_backend='nft')
    assert line.startswith(PRE + 'calico_iptables_backend is nft but its 4 iptables rule(s) are in iptables-legacy')
    assert line.endswith('set calico_iptables_backend: legacy (or auto) for this host, or move its firewall to '
                         'iptables-nft')
    assert node_checks(facts(legacy=4), 'h1', iptables_backend='legacy') == []
    assert node_checks(facts(), 'h1', iptables_backend='nft') == []                     # nothing anywhere
    missing = {'calico_node_facts': {'bird_version': '2.0.12', 'iptables_rules': {'nft': None, 'legacy': 0}}}
    assert 'iptables-nft is not installed' in node_checks(missing, 'h1', iptables_backend='nft')[0]


def test_version_tuple():
    assert version_tuple('2.0.12') == (2, 0, 12) and version_tuple('v3.0') == (3, 0, 0)
    assert version_tuple('2.0.12-rc1') == (2, 0, 12) and version_tuple('x') is None


@pytest.mark.parametrize('serial, count, sizes', [
    ([1, '10%', '25%'], 20, [1, 2, 5, 5, 5, 2]),
    ([1, '10%', '25%'], 3, [1, 1, 1]),
    (['100%'], 3, [3]),
    ([2], 5, [2, 2, 1]),
    ([1], 0, []),
])
def test_batch_sizes_follow_ansible(serial, count, sizes):
    assert batch_sizes(serial, count) == sizes


PLAN = {'topology': 'full_mesh', 'hosts': {
    'rr1': {'role': 'reflector', 'block': None, 'peers': []},
    'h1': {'role': 'node', 'block': '10.0.0.0/24', 'peers': []},
    'h2': {'role': 'node', 'block': '10.0.1.0/24', 'peers': []},
}}


def test_rollout_defaults_are_cautious():
    out = rollout({}, PLAN)
    assert out['nodes'] == {'serial': [1, '10%', '25%'], 'max_fail_percentage': 0, 'any_errors_fatal': True,
                            'batches': [1, 1], 'prepare': ['h1', 'h2'], 'after': []}
    assert out['reflectors']['serial'] == [1] and out['reflectors']['batches'] == [1]


def test_rollout_knobs():
    out = rollout({}, PLAN, serial='100%', rr_serial=['50%'], max_fail_percentage='20')
    assert out['nodes']['serial'] == ['100%'] and out['nodes']['batches'] == [2]
    assert out['nodes']['max_fail_percentage'] == 20 and out['nodes']['any_errors_fatal'] is False


@pytest.mark.parametrize('kwargs, text', [
    ({'serial': 0}, "calico_serial: 0 is not a batch size — use a number of hosts"),
    ({'serial': ['101%']}, "calico_serial: ['101%'] is not a batch size"),
    ({'rr_serial': []}, 'calico_rr_serial: is an empty list'),
    ({'max_fail_percentage': 150}, 'calico_max_fail_percentage: 150 is not a percentage 0-100'),
    ({'max_fail_percentage': '٥٠'}, "calico_max_fail_percentage: '٥٠' is not a percentage 0-100"),
    ({'serial': ['1', '١٠%']}, "calico_serial: ['1', '١٠%'] is not a batch size"),
    ({'rr_serial': '1\n'}, "calico_rr_serial: '1\\n' is not a batch size"),
])
def test_rollout_rejects_bad_knobs(kwargs, text):
    with pytest.raises(FabricError) as err:
        rollout({}, PLAN, **kwargs)
    assert str(err.value).startswith('netfleet.calico preflight: ' + text)


def test_make_before_break_must_run_in_one_batch():
    plan = {'topology': 'route_reflector', 'hosts': {
        'h1': {'role': 'node', 'block': '10.0.0.0/24', 'node_ip': '10.1.0.1',
               'peers': [{'ip': '10.1.0.9', 'as_number': 64512}]},
        'h2': {'role': 'node', 'block': '10.0.1.0/24', 'node_ip': '10.1.0.2', 'peers': []},
    }}
    mesh = {'bird_running': True, 'sessions': [{'name': 'Mesh_10_1_0_2', 'peer_ip': '10.1.0.2',
                                                'established': True}]}
    hostvars = {'h1': {'calico_node_facts': {'bgp': mesh}}, 'h2': {}}
    with pytest.raises(FabricError) as err:
        rollout(hostvars, plan, serial=[1])
    assert str(err.value).startswith("netfleet.calico preflight: host 'h1': its BGP peers change make-before-break")
    assert '"calico_serial": ["100%"]' in str(err.value)
    out = rollout(hostvars, plan, serial=['100%'])
    assert out['nodes']['batches'] == [2]
    assert out['nodes']['after'] == ['h1']  # drops its mesh session once h2 runs its new ones


def test_a_failed_read_is_one_line_too():
    [line] = node_checks({'failed': False, 'failed_when_result': False,
                          'msg': 'Task failed: Module failed: protocol 2 is reserved\ntraceback'}, 'h1')
    assert line == (PRE + 'its facts could not be read (protocol 2 is reserved) — fix the host so that '
                    'netfleet.calico.calico_node_facts runs there, then run site.yml again')
