"""Unit tests of netfleet.calico.calico_routes against the in-memory FakeKernel."""

from __future__ import annotations

import pytest
from calico_fake_kernel import FakeKernel, run_module

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.modules import calico_routes as mod

BLOCK = [{'dest': '172.17.8.0/24', 'type': 'blackhole'}]


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    fake = FakeKernel(tmp_path)
    fake.add_route(dst='10.0.0.0/8', dev='eth1', proto='static')
    fake.add_route(dst='172.17.9.0/24', gateway='192.168.100.101', dev='eth1', proto='bird', onlink=True)
    monkeypatch.setattr(mod, 'make_ip', lambda module: iproute.IpCommand(ip_bin='/sbin/ip', runner=fake.runner))
    return fake


def run(monkeypatch, routes, check_mode=False, diff=False, **params):
    return run_module(monkeypatch, mod, dict(routes=routes, **params), check_mode=check_mode, diff=diff)


def owned(kernel):
    return sorted((r['type'], r['dst'], r['gateway'], r['dev'], r['metric']) for r in kernel.host.routes
                  if r['proto'] == '80')


def others(kernel):
    return sorted((r['proto'], r['dst']) for r in kernel.host.routes if r['proto'] != '80')


def test_block_blackhole_added_once(kernel, monkeypatch):
    foreign = others(kernel)
    result = run(monkeypatch, BLOCK, diff=True)
    assert result['changed'] is True
    assert result['added'] == ['blackhole 172.17.8.0/24'] and result['deleted'] == result['replaced'] == []
    assert result['commands'] == ['route add blackhole 172.17.8.0/24 metric 0 proto 80 table main']
    assert result['diff'] == {'before': '', 'after': 'blackhole 172.17.8.0/24\n',
                              'before_header': 'routes proto 80 table main (kernel)',
                              'after_header': 'routes proto 80 table main (wanted)'}
    assert owned(kernel) == [('blackhole', '172.17.8.0/24', None, None, 0)]
    assert len(kernel.writes()) == 1
    again = run(monkeypatch, BLOCK, diff=True)
    assert again['changed'] is False and again['commands'] == []
    assert again['diff']['before'] == again['diff']['after'] == 'blackhole 172.17.8.0/24\n'
    assert len(kernel.writes()) == 1
    assert others(kernel) == foreign


def test_check_mode_changes_nothing(kernel, monkeypatch):
    result = run(monkeypatch, BLOCK, check_mode=True)
    assert result['changed'] is True and result['added'] == ['blackhole 172.17.8.0/24']
    assert kernel.writes() == [] and owned(kernel) == []


def test_full_reconcile_in_one_batch(kernel, monkeypatch):
    kernel.add_route(dst='172.17.7.0/24', rtype='blackhole', proto='80')           # stale block
    kernel.add_route(dst='172.17.8.0/24', rtype='unreachable', proto='80')         # wrong type
    kernel.add_route(dst='172.17.8.2/32', dev='eth1', proto='80')                  # pretend workload route
    kernel.host.links['cali0123456789a'] = dict(kernel.host.links['eth1'], ifname='cali0123456789a', ifindex=9)
    kernel.add_route(dst='172.17.8.3/32', dev='cali0123456789a', proto='80')       # workload route: ignored
    routes = BLOCK + [{'dest': '172.17.10.0/24', 'via': '192.168.100.102', 'dev': 'eth1', 'onlink': True},
                      {'dest': 'fd00:8::/64', 'type': 'blackhole'}]
    result = run(monkeypatch, routes, diff=True)
    assert result['added'] == ['172.17.10.0/24 via 192.168.100.102 dev eth1 onlink', 'blackhole fd00:8::/64']
    assert result['replaced'] == ['blackhole 172.17.8.0/24']
    assert result['deleted'] == ['blackhole 172.17.7.0/24', '172.17.8.2/32 dev eth1']
    assert len(kernel.writes()) == 1
    # additions and replacements first, removals last: a rejected line stops ip before anything is removed
    assert [line.split()[1] for line in result['commands']] == ['add', 'add', 'replace', 'del', 'del']
    assert all(' proto 80 ' in line for line in result['commands'])
    assert owned(kernel) == [('blackhole', '172.17.8.0/24', None, None, 0),
                             ('blackhole', 'fd00:8::/64', None, None, 1024),
                             ('unicast', '172.17.10.0/24', '192.168.100.102', 'eth1', 0),
                             ('unicast', '172.17.8.3/32', None, 'cali0123456789a', 0)]
    assert result['routes'] == ['blackhole 172.17.8.0/24', '172.17.10.0/24 via 192.168.100.102 dev eth1 onlink',
                                'blackhole fd00:8::/64']
    assert '172.17.8.3' not in result['diff']['before']
    assert run(monkeypatch, routes)['changed'] is False


def test_empty_list_removes_owned_but_keeps_other_protocols(kernel, monkeypatch):
    foreign = others(kernel)
    run(monkeypatch, BLOCK)
    result = run(monkeypatch, [])
    assert result['deleted'] == ['blackhole 172.17.8.0/24'] and owned(kernel) == []
    assert others(kernel) == foreign


def test_route_of_other_protocol_is_never_overwritten(kernel, monkeypatch):
    result = run(monkeypatch, [{'dest': '10.0.0.0/8', 'type': 'blackhole'}])
    assert result['failed']
    assert 'taken by a route of another protocol' in result['msg']
    assert ('static', '10.0.0.0/8') in others(kernel) and owned(kernel) == []


def test_table_and_protocol_parameters(kernel, monkeypatch):
    result = run(monkeypatch, BLOCK, protocol=99, table='100')
    assert result['commands'] == ['route add blackhole 172.17.8.0/24 metric 0 proto 99 table 100']
    assert run(monkeypatch, BLOCK, protocol=99, table='100')['changed'] is False
    assert run(monkeypatch, [], protocol=80)['changed'] is False   # proto 99 routes are not ours under 80


def test_metric_distinguishes_routes(kernel, monkeypatch):
    routes = BLOCK + [{'dest': '172.17.8.0/24', 'type': 'unreachable', 'metric': 100}]
    result = run(monkeypatch, routes)
    assert result['added'] == ['blackhole 172.17.8.0/24', 'unreachable 172.17.8.0/24 metric 100']
    assert run(monkeypatch, routes)['changed'] is False


def test_kernel_error_names_the_line(kernel, monkeypatch):
    result = run(monkeypatch, [{'dest': '172.17.11.0/24', 'dev': 'nope0'}])
    assert result['failed'] and 'Cannot find device "nope0"' in result['msg']
    assert result['failures'] == [{'line': 1, 'command': 'route add 172.17.11.0/24 dev nope0 metric 0 proto 80 '
                                   'table main', 'error': 'Cannot find device "nope0"'}]


@pytest.mark.parametrize('routes, params, message', [
    ([{'dest': '172.17.8.1/24', 'type': 'blackhole'}], {}, "routes[0]: invalid CIDR '172.17.8.1/24'"),
    ([{'dest': 'nonsense', 'type': 'blackhole'}], {}, "routes[0]: invalid CIDR 'nonsense'"),
    ([{'dest': '172.17.8.0/24', 'type': 'blackhole', 'via': '10.0.0.1'}], {}, 'a blackhole route takes no via'),
    ([{'dest': '172.17.8.0/24'}], {}, 'a unicast route needs via or dev'),
    ([{'dest': '172.17.8.0/24', 'via': '10.0.0.1', 'onlink': True}], {}, 'onlink needs via and dev'),
    ([{'dest': '172.17.8.0/24', 'via': 'fd00::1'}], {}, 'is not of the same address family'),
    ([{'dest': '172.17.8.0/24', 'dev': 'bad dev'}], {}, "invalid device name 'bad dev'"),
    ([{'dest': '172.17.8.0/24', 'dev': 'cali1234'}], {}, 'matches ignore_device_prefixes'),
    (BLOCK + [{'dest': '172.17.8.0/24', 'type': 'unreachable'}], {}, 'routes[1]: 172.17.8.0/24 metric 0 is already'),
    ([{'dest': '172.17.8.0/24', 'type': 'blackhole', 'metric': -1}], {}, 'out of range'),
    ([], {'protocol': 4}, 'protocol 4 is not allowed'),
    ([], {'protocol': 256}, 'protocol 256 is not allowed'),
    ([], {'table': 'all'}, "invalid routing table 'all'"),
    ([], {'table': 'a b'}, "invalid routing table 'a b'"),
    ([], {'ignore_device_prefixes': ['']}, 'ignore_device_prefixes: invalid interface prefix'),
    ([{'dest': '172.17.8.0/24', 'type': 'nat'}], {}, 'value of type must be one of'),
])
def test_bad_input_fails_with_one_line(kernel, monkeypatch, routes, params, message):
    result = run(monkeypatch, routes, **params)
    assert result.get('failed'), result
    assert message in result['msg'] and '\n' not in result['msg']
    assert kernel.writes() == []
