"""Unit tests of netfleet.calico.calico_node_facts against the in-memory FakeKernel."""

from __future__ import annotations

import pytest
from calico_fake_kernel import FakeKernel, run_module

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.modules import calico_node_facts as mod


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    fake = FakeKernel(tmp_path)
    monkeypatch.setattr(mod, 'make_ip', lambda module: iproute.IpCommand(ip_bin='/sbin/ip', runner=fake.runner))
    outputs = {'bird': 'BIRD version 2.0.12\n', 'iptables': 'iptables v1.8.9 (nf_tables)\n'}
    monkeypatch.setattr(mod, 'tool_output', lambda module, name, args: outputs.get(name))
    fake.tools = outputs
    return fake


def add_endpoint(kernel, name, ip, owned=True, route=True):
    ifname = iproute.workload_ifname(name)
    kernel.host.links[ifname] = {'ifname': ifname, 'ifindex': 200 + len(kernel.host.links), 'flags': ['UP'],
                                 'mtu': 1500, 'address': 'ee:ee:ee:ee:ee:ee', 'kind': 'veth', 'addrs': [],
                                 'group': 'default',
                                 'ifalias': iproute.encode_owner_alias(name, 'calico-' + name, owned)}
    if route:
        kernel.add_route(dst=ip + '/32', dev=ifname, proto='80')
    return ifname


def test_facts(kernel, monkeypatch):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    kernel.add_route(dst='172.17.200.0/26', rtype='blackhole', proto='80')
    kernel.add_route(dst='172.17.9.0/24', rtype='blackhole', proto='bird')      # not ours
    web = add_endpoint(kernel, 'web-1', '172.17.8.2')
    add_endpoint(kernel, 'idle', '172.17.8.3', owned=False, route=False)
    kernel.host.links['cali_foreign01'] = dict(kernel.host.links[web], ifname='cali_foreign01', ifindex=300,
                                               ifalias='not ours')
    result = run_module(monkeypatch, mod, {})
    facts = result['calico_node_facts']
    assert result['changed'] is False and result['ansible_facts'] == {'calico_node_facts': facts}
    assert facts == {
        'blocks': ['172.17.8.0/24', '172.17.200.0/26'],
        'workloads': {'web-1': '172.17.8.2'},
        'endpoints': [{'name': 'idle', 'ifname': iproute.workload_ifname('idle'), 'ip': None,
                       'netns': 'calico-idle', 'owned_netns': False},
                      {'name': 'web-1', 'ifname': web, 'ip': '172.17.8.2', 'netns': 'calico-web-1',
                       'owned_netns': True}],
        'addresses': [{'ifname': 'lo', 'address': '127.0.0.1', 'prefixlen': 8},
                      {'ifname': 'eth1', 'address': '192.168.100.100', 'prefixlen': 24}],
        'default_route': True,
        'bird_version': '2.0.12',
        'iptables_backend': 'nft',
    }
    # one ip process for all kernel state
    assert len(kernel.calls) == 1 and kernel.calls[0][0] == ['/sbin/ip', '-j', '-batch', '-']


def test_check_mode_is_identical(kernel, monkeypatch):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    normal = run_module(monkeypatch, mod, {})
    checked = run_module(monkeypatch, mod, {}, check_mode=True)
    assert normal == checked and checked['changed'] is False


def test_empty_host(kernel, monkeypatch):
    kernel.host.routes = []
    kernel.tools.clear()
    facts = run_module(monkeypatch, mod, {})['calico_node_facts']
    assert facts['blocks'] == [] and facts['workloads'] == {} and facts['default_route'] is False
    assert facts['bird_version'] is None and facts['iptables_backend'] is None


def test_protocol_and_prefix_parameters(kernel, monkeypatch):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='99')
    facts = run_module(monkeypatch, mod, {'protocol': 99})['calico_node_facts']
    assert facts['blocks'] == ['172.17.8.0/24']
    assert run_module(monkeypatch, mod, {'protocol': 2})['failed']
    assert 'invalid interface_prefix' in run_module(monkeypatch, mod, {'interface_prefix': 'a b'})['msg']


@pytest.mark.parametrize('text, expected', [
    ('BIRD version 2.0.12\n', '2.0.12'),
    ('BIRD version v3.0.0-beta\n', 'v3.0.0-beta'),
    ('bird: unknown option\n', None),
])
def test_parse_bird_version(text, expected):
    assert mod.parse_bird_version(text) == expected


@pytest.mark.parametrize('text, expected', [
    ('iptables v1.8.9 (nf_tables)\n', 'nft'),
    ('iptables v1.8.9 (legacy)\n', 'legacy'),
    ('iptables v1.6.1\n', 'legacy'),
    ('something else', None),
])
def test_parse_iptables_backend(text, expected):
    assert mod.parse_iptables_backend(text) == expected
