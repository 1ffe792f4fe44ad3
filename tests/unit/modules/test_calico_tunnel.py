"""calico_tunnel against a faked ``ip`` (links, addresses) and faked iptables-save/restore."""

from __future__ import annotations

import json

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel
from ansible_collections.netfleet.calico.plugins.modules.calico_tunnel import reconcile

LOCAL = '192.168.100.100'
PEERS = ['192.168.200.101', '192.168.100.101']


class FakeHost:
    """Just enough of ip(8) and iptables-save/-restore for the module."""

    def __init__(self, parent_mtu=1500):
        self.links = {'eth0': {'ifname': 'eth0', 'mtu': parent_mtu, 'flags': ['UP'], 'addr': LOCAL}}
        self.chains = {'INPUT': []}
        self.builtin = {'INPUT'}
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        if argv[0] == 'ip':
            return self.ip(argv[1:], data)
        if argv[0] == 'iptables-save':
            return 0, self.save(), ''
        if argv[0] == 'iptables-restore':
            assert argv[1:] == ['--noflush']
            self.restore(data)
            return 0, '', ''
        raise AssertionError(argv)

    def ip(self, args, data):
        if args == ['-j', '-d', 'link', 'show']:
            out = []
            for link in self.links.values():
                entry = {'ifname': link['ifname'], 'mtu': link['mtu'], 'flags': link['flags']}
                if link.get('kind'):
                    entry['linkinfo'] = {'info_kind': link['kind'], 'info_data': link.get('data', {})}
                out.append(entry)
            return 0, json.dumps(out), ''
        if args == ['-j', 'addr', 'show']:
            return 0, json.dumps([{'ifname': lk['ifname'], 'mtu': lk['mtu'],
                                   'addr_info': [{'family': 'inet', 'local': lk['addr'], 'prefixlen': 24}]
                                   if lk.get('addr') else []} for lk in self.links.values()]), ''
        if args == ['-batch', '-']:
            for line in data.splitlines():
                self.batch(line.split())
            return 0, '', ''
        raise AssertionError(args)

    def batch(self, words):
        if words[:2] == ['link', 'add']:
            name, local = words[3], words[words.index('local') + 1]
            self.links[name] = {'ifname': name, 'mtu': 1480, 'flags': [], 'kind': 'ipip',
                                'data': {'proto': 'ip', 'remote': 'any', 'local': local}}
        elif words[:3] == ['link', 'del', 'dev']:
            del self.links[words[3]]
        elif words[:3] == ['link', 'set', 'dev']:
            link = self.links[words[3]]
            if 'mtu' in words:
                link['mtu'] = int(words[words.index('mtu') + 1])
            if 'up' in words:
                link['flags'] = ['POINTOPOINT', 'NOARP', 'UP', 'LOWER_UP']
        else:
            raise AssertionError(words)

    def save(self):
        lines = ['*filter', ':INPUT ACCEPT [0:0]']
        lines += [':%s - [0:0]' % c for c in self.chains if c not in self.builtin]
        for chain, rules in self.chains.items():
            lines += ['-A %s %s' % (chain, r) for r in rules]
        return '\n'.join(lines + ['COMMIT']) + '\n'

    def restore(self, data):
        lines = data.splitlines()
        assert lines[0] == '*filter' and lines[-1] == 'COMMIT'
        for line in lines[1:-1]:
            words = line.split()
            if line.startswith(':'):
                self.chains[words[0][1:]] = []
            elif words[0] == '-A':
                self.chains[words[1]].append(' '.join(words[2:]))
            elif words[0] == '-I':
                self.chains[words[1]].insert(int(words[2]) - 1, ' '.join(words[3:]))
            elif words[0] == '-D':
                self.chains[words[1]].remove(' '.join(words[2:]))
            elif words[0] == '-F':
                self.chains[words[1]] = []
            elif words[0] == '-X':
                del self.chains[words[1]]
            else:
                raise AssertionError(line)


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
])
def test_errors(kw, text):
    with pytest.raises(tunnel.TunnelError, match=text):
        reconcile(params(**kw), False, FakeHost())


def test_firewall_off_never_runs_iptables():
    host = FakeHost()
    reconcile(params(firewall=False), False, host)
    assert not [c for c in host.calls if c[0][0].startswith('iptables')]
