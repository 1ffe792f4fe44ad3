"""The CNI plugin on a dual-stack host (plugins/module_utils/cni.py, cni_endpoint.py, cni_policy.py): a container
gets an IPv6 address from its network's ``range6`` too, with the endpoint, ADD result, CHECK, DEL and the
ip6tables chains and IPv6 ipsets that go with it; against test_cni's fake ``ip`` and recording policy runner."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from test_cni import (  # noqa: F401  (fixtures: policy_run, sysctls)  # pylint: disable=unused-import
    CID,
    NETNS,
    SET,
    FakeIp,
    FakeNetlink,
    PolicyRun,
    conf,
    config_file,
    env,
    error_of,
    policy_run,
    store_of,
    sysctls,
)

from ansible_collections.netfleet.calico.plugins.module_utils import (
    cni,
    cni_batch,
    cni_endpoint,
    cni_policy,
    iproute,
)

RANGE6 = 'fd00:8::10/125'  # web's IPv6 range: ::10 - ::17 (not a block's first address: all handed out)


class FakeNetlink6(FakeNetlink):
    """FakeNetlink with the IPv6 address (``nodad``) a dual-stack endpoint adds inside the container."""

    def addr_add(self, index, address, prefixlen, name='', nodad=False):
        self._call('addr_add', name, '%s/%d' % (address, prefixlen), nodad)
        link = next(v for v in self.fake.links.values() if v['netns'] == self.netns)
        link['addr6' if ':' in address else 'addr'] = address


class FakeIp6(FakeIp):
    """FakeIp whose routes and container read-back carry IPv6 (``-6 route``, the IPv6 default route)."""

    def host(self):
        return FakeNetlink6(self, None)

    def container(self, netns):
        self.pending_netns = netns
        return _yield(FakeNetlink6(self, netns))

    def json(self, args, netns=None):
        family = 6 if '-6' in args else 4
        return [r for r in super().json(args, netns) if (':' in r['dst']) == (family == 6)]

    def json_batch(self, lines, netns=None):
        self.calls.append(('json_batch', netns, list(lines)))
        link = next(v for v in self.links.values() if v['netns'] == netns)
        addrs = [{'family': 'inet', 'local': link['addr'], 'prefixlen': 32},
                 {'family': 'inet6', 'local': 'fe80::c:1', 'prefixlen': 64, 'scope': 'link'}]
        if link.get('addr6'):
            addrs.append({'family': 'inet6', 'local': link['addr6'], 'prefixlen': 128, 'scope': 'global'})
        docs = [[{'ifname': link['ifname'], 'addr_info': addrs}],
                [{'dst': 'default', 'gateway': iproute.CALICO_GATEWAY, 'dev': link['ifname']}],
                [{'dst': 'default', 'gateway': iproute.CALICO_GATEWAY6, 'dev': link['ifname']}]
                if link.get('default6', True) else []]
        return docs[:len(lines)]


class _yield:  # noqa: N801  (a context manager like FakeIp.container's, for the subclass)
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value, 99

    def __exit__(self, *_exc):
        return False


@pytest.fixture
def ip6(sysctls, policy_run):  # noqa: F811
    return FakeIp6()


@pytest.fixture
def config(tmp_path):
    data = {'version': 1, 'data_dir': str(tmp_path / 'data'), 'mtu': 1440,
            'gateway6': iproute.CALICO_GATEWAY6,
            'networks': {'web': {'range': '10.0.1.0/28', 'range6': RANGE6, 'labels': {'app': 'web'}}},
            'reserved': [], 'reserved6': ['fd00:8::10'],
            'policy': {'enabled': False}}
    return config_file(tmp_path, data)


def add(ip, config, version='1.0.0', **environ):
    status, out = cni.handle(env('ADD', **environ), conf(config, version), ip=ip)
    assert status == 0, out
    return json.loads(out)


def test_add_gives_both_addresses_and_makes_the_ipv6_endpoint(ip6, config, sysctls):  # noqa: F811
    result = add(ip6, config)
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    assert result['ips'] == [{'address': '10.0.1.1/32', 'gateway': '169.254.1.1', 'interface': 1},
                             {'address': 'fd00:8::11/128', 'gateway': 'fe80::ecee:eeff:feee:eeee', 'interface': 1}]
    assert result['routes'] == [{'dst': '0.0.0.0/0', 'gw': '169.254.1.1'},
                                {'dst': '::/0', 'gw': 'fe80::ecee:eeff:feee:eeee'}]
    assert ('nl', NETNS, 'addr_add', 'eth0', 'fd00:8::11/128', True) in ip6.calls  # nodad
    assert ('nl', NETNS, 'route_replace', '::/0', 'fe80::ecee:eeff:feee:eeee', 'eth0', 3) in ip6.calls
    assert ip6.routes == {'10.0.1.1/32': host_if, 'fd00:8::11/128': host_if}
    want = iproute.WORKLOAD_SYSCTLS + iproute.WORKLOAD_SYSCTLS6
    assert sysctls == {tmpl.format(ifname=host_if): value for tmpl, value in want}
    # the IPv6 sysctls (accept_dad 0, the EUI-64 link-local that is the gateway) are set before the link is up
    up = next(i for i, c in enumerate(ip6.calls) if c[:3] == ('nl', None, 'link_set') and c[4])
    route6 = ip6.calls.index(('nl', None, 'route_replace', 'fd00:8::11/128', None, host_if, 80))
    assert up < route6
    rec = store_of(config).get(CID + '_eth0')
    assert (rec['ip'], rec['ip6']) == ('10.0.1.1', 'fd00:8::11')


@pytest.mark.parametrize('version', ['0.3.1', '0.4.0'])
def test_legacy_results_carry_each_address_version(ip6, config, version):
    assert [(e['version'], e['address']) for e in add(ip6, config, version)['ips']] == [
        ('4', '10.0.1.1/32'), ('6', 'fd00:8::11/128')]


def test_a_network_without_range6_stays_ipv4_only(ip6, config, sysctls):  # noqa: F811
    del config['networks']['web']['range6']
    config.write()
    result = add(ip6, config)
    assert [e['address'] for e in result['ips']] == ['10.0.1.1/32']
    assert 'ip6' not in store_of(config).get(CID + '_eth0')
    assert not any(c[2] == 'addr_add' and ':' in c[4] for c in ip6.calls if c[0] == 'nl')
    assert not any('ipv6' in name for name in sysctls)


def test_del_releases_the_ipv6_address_and_round_robin_goes_on(ip6, config):
    add(ip6, config, CNI_CONTAINERID='a', CNI_NETNS='/run/netns/a')
    add(ip6, config, CNI_CONTAINERID='b', CNI_NETNS='/run/netns/b')
    assert cni.handle(env('DEL', CNI_CONTAINERID='a'), conf(config), ip=ip6) == (0, '')
    assert [r['ip6'] for r in store_of(config).records().values()] == ['fd00:8::12']
    assert 'fd00:8::11/128' not in ip6.routes  # went with the veth
    # the range: ::10 reserved (a static workload), ::11 freed, ::12 b's; round robin goes on from ::13
    got = [add(ip6, config, CNI_CONTAINERID='c%d' % i, CNI_NETNS='/run/netns/c%d' % i)['ips'][1]['address']
           for i in range(6)]
    assert got == ['fd00:8::%x/128' % i for i in (0x13, 0x14, 0x15, 0x16, 0x17, 0x11)]
    doc = error_of(*cni.handle(env('ADD', CNI_CONTAINERID='full', CNI_NETNS='/run/netns/full'), conf(config),
                               ip=ip6), code=100)
    assert 'fd00:8::10/125' in doc['msg']


def test_check_verifies_both_families(ip6, config):
    result = add(ip6, config)
    check_conf = conf(config, prevResult=result)
    assert cni.handle(env('CHECK'), check_conf, ip=ip6) == (0, '')
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    del ip6.routes['fd00:8::11/128']
    ip6.links[host_if]['default6'] = False
    doc = error_of(*cni.handle(env('CHECK'), check_conf, ip=ip6), code=101)
    assert 'host route fd00:8::11/128 dev %s is missing' % host_if in doc['msg']
    assert 'no IPv6 default route via fe80::ecee:eeff:feee:eeee' in doc['msg']
    ip6.routes['fd00:8::11/128'] = host_if
    ip6.links[host_if]['default6'] = True
    v4_only = dict(result, ips=result['ips'][:1])
    doc = error_of(*cni.handle(env('CHECK'), conf(config, prevResult=v4_only), ip=ip6), code=101)
    assert 'the attachment 10.0.1.1/32, fd00:8::11/128' in doc['msg']


# ------------------------------------------------------------------------------------------ policy

SET6 = SET + '-6'


def policy_config(config):
    config['policy'] = {'enabled': True, 'iptables': 'nft', 'ipv6': True,
                        'policies': [{'name': 'web', 'selector': "app == 'web'", 'types': ['ingress'],
                                      'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [80],
                                                   'peers': None, 'set': SET},
                                                  {'action': 'allow', 'protocol': 'icmp', 'peers': None}]}],
                        'sets': {SET: {'selector': 'has(app)', 'members': ['10.0.9.0/28'],
                                       'members6': ['fd00:9::/124']}}}
    config.write()


def test_a_batch_writes_ipv6_chains_and_set_members_with_the_ipv4_ones(ip6, config, policy_run):  # noqa: F811
    policy_config(config)
    calls = [(env('ADD', CNI_CONTAINERID='c%d' % i, CNI_NETNS='/run/netns/c%d' % i), conf(config)) for i in range(2)]
    answers = cni_batch.handle_many(calls, ip6)
    assert [len(json.loads(out)['ips']) for _status, out in answers] == [2, 2]
    assert [argv for argv, _data in policy_run.calls] == [
        ['ipset', 'restore', '-exist'], ['iptables-nft-restore', '--noflush'], ['ip6tables-nft-restore', '--noflush']]
    assert policy_run.calls[0][1] == ('add %s 10.0.1.1\nadd %s fd00:8::11\nadd %s 10.0.1.2\nadd %s fd00:8::12\n'
                                      % (SET, SET6, SET, SET6))
    v4, v6 = policy_run.calls[1][1], policy_run.calls[2][1]
    fw, tw = cni_policy.endpoint_chain_names(cni_endpoint.host_ifname('c0', 'eth0'))
    assert '-A %s -p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT' % (tw, SET6) in v6
    assert '-A %s -p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT' % (tw, SET) in v4
    assert '-A %s -p icmp -j ACCEPT' % tw in v4 and '-p icmp' not in v6  # ICMP is IPv4's
    assert v6.count('-I cali-cni-from-dispatch 1') == 2 and v6.count(':%s - [0:0]' % fw) == 1
    policy_run.calls.clear()
    assert cni.handle(env('DEL', CNI_CONTAINERID='c0'), conf(config), ip=ip6) == (0, '')
    assert [argv for argv, _data in policy_run.calls] == [
        ['iptables-nft-restore', '--noflush'], ['ip6tables-nft-restore', '--noflush'], ['ipset', 'restore', '-exist']]
    assert '-X %s' % fw in policy_run.calls[1][1]
    assert policy_run.calls[2][1] == 'del %s 10.0.1.1\ndel %s fd00:8::11\n' % (SET, SET6)


def test_sync_converges_ipv6_chains_and_creates_inet6_sets(config, policy_run, monkeypatch):  # noqa: F811
    policy_config(config)
    record = {'key': 'c_eth0', 'ip': '10.0.1.1', 'ip6': 'fd00:8::11', 'labels': {'app': 'web'},
              'host_ifname': cni_endpoint.host_ifname('c', 'eth0'), 'container_id': 'c'}
    monkeypatch.setitem(PolicyRun.SAVES, ('ip6tables-nft-save', '-t', 'filter'),
                        PolicyRun.SAVES[('iptables-nft-save', '-t', 'filter')])
    result = cni_policy.sync([record], config['policy'])
    assert result['changed']
    assert 'create %s hash:net family inet6\n' % SET6 in result['commands']['ipset']
    assert 'add %s fd00:8::11\n' % SET6 in result['commands']['ipset']
    assert 'add %s fd00:9::/124\n' % SET6 in result['commands']['ipset']
    assert '-A cali-cni-from-dispatch -i %s -g' % record['host_ifname'] in result['commands']['ip6tables']
    restores = [argv[0] for argv, _data in policy_run.calls if argv[-1] == '--noflush']
    assert restores == ['iptables-nft-restore', 'ip6tables-nft-restore']
    assert 'ip6tables:' in result['diff']['after']


def test_ipv4_only_policy_reads_and_writes_no_ip6tables(config, policy_run):  # noqa: F811
    policy_config(config)
    config['policy'].pop('ipv6')
    config.write()
    cni_policy.sync([], config['policy'])
    assert not any(argv[0].startswith('ip6tables') for argv, _data in policy_run.calls)
    assert 'ip6tables' not in cni_policy.sync([], config['policy'])['commands']


# ------------------------------------------------------------------------------------------ concurrency

def _add_in_process(config_path, index, barrier, results):
    try:
        barrier.wait(10)
        environ = env('ADD', CNI_CONTAINERID='p%02d' % index, CNI_NETNS='/run/netns/p%02d' % index)
        status, out = cni.handle(environ, json.dumps({'cniVersion': '1.0.0', 'name': 'web',
                                                      'config_file': config_path}), ip=FakeIp6())
        results.put(tuple(e['address'] for e in json.loads(out)['ips']) if status == 0 else out)
    except Exception as exc:  # reported to the test, which then fails at once
        results.put(repr(exc))


def test_concurrent_adds_get_distinct_ipv6_addresses(ip6, config):
    """Separate plugin processes (no agent) serialise on the store lock: every container its own addresses."""
    config['networks']['web'].update(range='10.0.0.0/26', range6='fd00:8::/122')
    config['reserved6'] = []
    config.write()
    ctx = multiprocessing.get_context('fork')
    n = 30
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_add_in_process, args=(config.path, i, barrier, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=20) for _i in range(n)]
    for proc in procs:
        proc.join(10)
    assert all(isinstance(pair, tuple) for pair in got), got
    assert {b for _a, b in got} == {'fd00:8::%x/128' % i for i in range(1, n + 1)}  # never fd00:8:: (anycast)
    assert len({a for a, _b in got}) == n
    assert sorted(r['ip6'] for r in store_of(config).records().values()) == sorted(
        b[:-4] for _a, b in got)
