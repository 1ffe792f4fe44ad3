import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.lab_spec import lab_spec

LAB = {'lab_prefix': 'nf', 'lab_state_dir': '/run/netfleet/nf'}


def _fleet(**overrides):
    hostvars = {
        'host-a': dict(LAB, lab_segment='192.168.100.0/24', calico_node_ip='192.168.100.100',
                       ansible_netns='nf-host-a'),
        'host-b': dict(LAB, lab_segment='192.168.100.0/24', calico_node_ip='192.168.100.101'),
        'host-10': dict(LAB, lab_segment='192.168.200.0/24', calico_node_ip='192.168.200.10',
                        lab_gateway='192.168.200.254'),
    }
    for host, changes in overrides.items():
        hostvars[host].update(changes)
    groups = {'calico_nodes': ['host-a', 'host-b', 'host-10'], 'rack1': ['host-a', 'host-b'], 'rack2': ['host-10']}
    return hostvars, groups


def test_spec_from_racks():
    hostvars, groups = _fleet()
    spec = lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    assert spec['prefix'] == 'nf' and spec['state_dir'] == '/run/netfleet/nf'
    assert spec['segments'] == [{'name': 'rack1', 'cidr': '192.168.100.0/24'},
                                {'name': 'rack2', 'cidr': '192.168.200.0/24', 'gateway': '192.168.200.254'}]
    assert spec['hosts'] == [  # natural name order
        {'name': 'host-10', 'netns': 'nf-host-10', 'address': '192.168.200.10', 'segment': 'rack2'},
        {'name': 'host-a', 'netns': 'nf-host-a', 'address': '192.168.100.100', 'segment': 'rack1'},
        {'name': 'host-b', 'netns': 'nf-host-b', 'address': '192.168.100.101', 'segment': 'rack1'},
    ]


def test_teardown_needs_only_prefix_and_state_dir():
    hostvars, groups = _fleet(**{'host-a': {'calico_node_ip': 'garbage'}})
    assert lab_spec(hostvars, groups, racks=['rack1', 'rack2'], wiring=False) == {
        'prefix': 'nf', 'state_dir': '/run/netfleet/nf'}


@pytest.mark.parametrize('overrides, racks, message', [
    ({'host-b': {'calico_node_ip': '10.0.0.5'}}, ['rack1', 'rack2'],
     "netfleet.calico.lab_spec: host 'host-b': calico_node_ip 10.0.0.5 is outside rack 'rack1' lab_segment "
     "192.168.100.0/24 — "),
    ({'host-10': {'lab_segment': None}}, ['rack1', 'rack2'],
     "netfleet.calico.lab_spec: rack 'rack2': has no lab_segment — set lab_segment"),
    ({'host-b': {'lab_segment': '192.168.101.0/24'}}, ['rack1', 'rack2'],
     "netfleet.calico.lab_spec: rack 'rack1': hosts disagree on lab_segment"),
    ({'host-a': {'lab_segment': '192.168.100.0/33'}, 'host-b': {'lab_segment': '192.168.100.0/33'}},
     ['rack1', 'rack2'],
     "netfleet.calico.lab_spec: rack 'rack1': lab_segment '192.168.100.0/33' is not an IPv4 network"),
    ({'host-b': {'calico_node_ip': None}}, ['rack1', 'rack2'],
     "netfleet.calico.lab_spec: host 'host-b': has no calico_node_ip"),
    ({}, {'rack1': ['host-a', 'host-b'], 'rack2': ['host-10', 'host-a']},
     "netfleet.calico.lab_spec: host 'host-a': is in two racks ('rack1' and 'rack2')"),
    ({}, ['rack1'], "netfleet.calico.lab_spec: host 'host-10': is in no rack and has no lab_segment"[:40]),
])
def test_errors_are_one_line(overrides, racks, message):
    hostvars, groups = _fleet(**overrides)
    if racks == ['rack1']:  # host-10 outside every rack but with a lab_segment: a segment of its own
        spec = lab_spec(hostvars, groups, racks=racks)
        assert {'name': '192.168.200.0_24', 'cidr': '192.168.200.0/24'} in spec['segments']
        assert spec['hosts'][0] == {'name': 'host-10', 'netns': 'nf-host-10', 'address': '192.168.200.10',
                                    'segment': '192.168.200.0_24'}
        hostvars['host-10'].pop('lab_segment')
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups, racks=racks)
    assert str(err.value.message).startswith(message), err.value.message
    assert '\n' not in str(err.value.message)
