"""calico_tunnel against a faked ``ip`` (links, addresses) and faked iptables-save/restore."""

from __future__ import annotations

import pytest
from calico_fake_kernel import FakeTunnelHost as FakeHost

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel
from ansible_collections.netfleet.calico.plugins.module_utils.tunnel import reconcile

LOCAL = '192.168.100.100'
PEERS = ['192.168.200.101', '192.168.100.101']


def params(**kw):
    base = {'name': 'tun0', 'state': 'present', 'local': LOCAL, 'mtu': None, 'firewall': True,
            'allow_from': PEERS, 'chain': 'cali-INPUT-ipip'}
    base.update(kw)
    return base


def writes(host):
    return [c for c in host.calls if c[0][0] == 'iptables-restore' or c[0][1:] == ['-batch', '-']]


def test_create_then_idempotent():
    host = FakeHost()
    res = reconcile(params(), False, host)
    assert res['changed'] and res['mtu'] == 1480 and res['workload_mtu'] == 1480
    assert res['commands'] == ['link add name tun0 type ipip local 192.168.100.100', 'link set dev tun0 mtu 1480 up']
    assert host.links['tun0']['mtu'] == 1480 and 'UP' in host.links['tun0']['flags']
    assert host.chains['INPUT'] == ['-p 4 -j cali-INPUT-ipip']
    assert host.chains['cali-INPUT-ipip'] == ['-s 192.168.100.101/32 -j RETURN', '-s 192.168.200.101/32 -j RETURN',
                                              '-j DROP']
    host.calls.clear()
    again = reconcile(params(), False, host)
    assert not again['changed'] and again['commands'] == [] and again['iptables'] is None
    assert writes(host) == []


def test_check_mode_changes_nothing_and_diffs():
    host = FakeHost()
    res = reconcile(params(), True, host)
    assert res['changed'] and 'tun0' not in host.links and writes(host) == []
    assert res['diff'][0]['before'] == '' and 'mtu 1480' in res['diff'][0]['after']
    assert '-j DROP' in res['diff'][1]['after'] and res['diff'][1]['before'] == ''


def test_mtu_follows_parent_and_down_device_comes_up():
    host = FakeHost()
    reconcile(params(), False, host)
    host.links['eth0']['mtu'] = 9000
    host.links['tun0']['flags'] = []
    res = reconcile(params(), False, host)
    assert res['commands'] == ['link set dev tun0 mtu 8980', 'link set dev tun0 up']
    assert res['workload_mtu'] == 8980 and host.links['tun0']['mtu'] == 8980


def test_wrong_local_is_replaced():
    host = FakeHost()
    reconcile(params(), False, host)
    host.links['tun0']['data']['local'] = '10.0.0.1'
    res = reconcile(params(), False, host)
    assert res['commands'][0] == 'link del dev tun0'
    assert host.links['tun0']['data']['local'] == LOCAL


def test_allow_list_change_rewrites_chain_keeps_one_jump():
    host = FakeHost()
    reconcile(params(), False, host)
    res = reconcile(params(allow_from=['192.168.200.102']), False, host)
    assert res['changed'] and res['commands'] == []
    assert host.chains['cali-INPUT-ipip'] == ['-s 192.168.200.102/32 -j RETURN', '-j DROP']
    assert host.chains['INPUT'] == ['-p 4 -j cali-INPUT-ipip']


def test_absent_removes_device_and_chain_then_idempotent():
    host = FakeHost()
    reconcile(params(), False, host)
    res = reconcile(params(state='absent'), False, host)
    assert res['changed'] and res['commands'] == ['link del dev tun0'] and res['workload_mtu'] == 1500
    assert 'tun0' not in host.links and 'cali-INPUT-ipip' not in host.chains and host.chains['INPUT'] == []
    assert not reconcile(params(state='absent'), False, host)['changed']


def test_other_rules_untouched():
    host = FakeHost()
    host.chains['INPUT'] = ['-p tcp -m tcp --dport 22 -j ACCEPT']
    reconcile(params(), False, host)
    assert host.chains['INPUT'] == ['-p 4 -j cali-INPUT-ipip', '-p tcp -m tcp --dport 22 -j ACCEPT']
    reconcile(params(state='absent'), False, host)
    assert host.chains['INPUT'] == ['-p tcp -m tcp --dport 22 -j ACCEPT']


@pytest.mark.parametrize('kw, text', [
    ({'local': '10.9.9.9'}, 'node IP 10.9.9.9 is not on any interface'),
    ({'name': 'tunnel-device-name'}, 'not a valid interface name'),
    ({'chain': 'INPUT-ipip'}, 'must start with cali-'),
    # the module is public API: what reaches the iptables-restore payload is checked whole
    ({'chain': 'cali-x\n-A INPUT -j ACCEPT'}, 'must start with cali-'),
    ({'name': 'tun0\n'}, 'not a valid interface name'),
    ({'allow_from': ['10.0.0.2\n-A INPUT -j ACCEPT']}, r"allow_from '10\.0\.0\.2\\n-A INPUT -j ACCEPT' is not an IPv4"),
    ({'allow_from': ['10.0.0.2/0']}, 'is not an IPv4 address'),
    ({'allow_from': ['10.0.0.256']}, 'is not an IPv4 address'),
    ({'local': '10.0.0.1 '}, "local '10.0.0.1 ' is not an IPv4 address"),
])
def test_errors(kw, text):
    host = FakeHost()
    with pytest.raises(tunnel.TunnelError, match=text):
        reconcile(params(**kw), False, host)
    # nothing written: no ip -batch, no iptables-restore
    assert not [c for c in host.calls if c[1] is not None or c[0][0] == 'iptables-restore']


def test_firewall_off_never_runs_iptables():
    host = FakeHost()
    reconcile(params(firewall=False), False, host)
    assert not [c for c in host.calls if c[0][0].startswith('iptables')]
