"""lab_fabric: spec validation and naming (no kernel needed; the lab itself is tests/integration/test_lab.py)."""

import pytest

from ansible_collections.netfleet.calico.plugins.modules import lab_fabric as lf

SEGMENTS = [{'name': 'rack1', 'cidr': '192.168.100.0/24', 'gateway': None}]


def params(**kw):
    base = {'prefix': 'nf', 'state_dir': '/run/netfleet/nf', 'segments': SEGMENTS, 'neigh_gc_thresh': [1, 2, 3],
            'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.100', 'segment': 'rack1'}]}
    base.update(kw)
    return base


def test_defaults_and_names():
    spec = lf.Spec(params(), 'present')
    assert spec.fabric == 'nf-fabric' and spec.router == 'nf-router'
    assert str(spec.segments['rack1']['gateway']) == '192.168.100.1/24'
    host = spec.hosts['host-a']
    assert host['netns'] == 'nf-host-a' and str(host['address']) == '192.168.100.100/24'
    assert host['fabric_port'] == 'h-host-a' and host['bridge'] == 'br-rack1'


def test_long_names_are_hashed_to_15_chars():
    name = lf.ifname('h-', 'a-very-long-host-name.example.com')
    assert len(name) == 15 and name.startswith('h-')
    assert name == lf.ifname('h-', 'a-very-long-host-name.example.com')
    assert lf.ifname('br-', 'rack1') == 'br-rack1'


@pytest.mark.parametrize('changes, message', [
    ({'prefix': 'nf-x'}, "prefix 'nf-x' is invalid"),
    ({'state_dir': '/run'}, "state_dir '/run' must be an absolute path"),
    ({'state_dir': '/run/netfleet'}, "state_dir '/run/netfleet' must be"),
    ({'segments': [{'name': 'rack1', 'cidr': '192.168.100.1/24', 'gateway': None}]}, "cidr '192.168.100.1/24'"),
    ({'segments': SEGMENTS + [{'name': 'rack2', 'cidr': '192.168.100.128/25', 'gateway': None}]}, 'overlap'),
    ({'segments': [{'name': 'rack1', 'cidr': '192.168.100.0/24', 'gateway': '10.0.0.1'}]}, 'outside its segment'),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '10.0.0.1', 'segment': 'rack1'}]},
     "host 'host-a': address 10.0.0.1 is outside its segment 192.168.100.0/24"),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.1', 'segment': 'rack1'}]}, 'gateway'),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack9'}]},
     "segment 'rack9' is not defined"),
    ({'hosts': [{'name': 'host-a', 'netns': 'other-a', 'address': '192.168.100.5', 'segment': 'rack1'}]},
     "must start with 'nf-'"),
    ({'hosts': [{'name': 'fabric', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'}]}, 'reserved'),
    ({'hosts': [{'name': 'a', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'},
                {'name': 'b', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'}]}, 'share the address'),
])
def test_bad_spec(changes, message):
    with pytest.raises(lf.LabError) as err:
        lf.Spec(params(**changes), 'present')
    assert message in str(err.value)


def test_absent_ignores_wiring():
    spec = lf.Spec(params(segments=[{'name': 'x', 'cidr': 'bad', 'gateway': None}]), 'absent')
    assert spec.segments == {} and spec.hosts == {}
