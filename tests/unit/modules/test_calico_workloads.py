"""Unit tests of netfleet.calico.calico_workloads against the in-memory FakeKernel."""

from __future__ import annotations

import os

import pytest
from calico_fake_kernel import FakeError, FakeKernel, run_module

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.modules import calico_workloads as mod

EPS = [{'name': 'web-1', 'ip': '172.17.8.2'}, {'name': 'web-2', 'ip': '172.17.8.3'},
       {'name': 'db-1', 'ip': '172.17.8.4/32', 'mtu': 1400}]


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    fake = FakeKernel(tmp_path)
    fake.slave = False

    def make_reconciler(module, settings):
        ip = iproute.IpCommand(ip_bin='/sbin/ip', nsenter_bin='/usr/bin/nsenter', runner=fake.runner, workers=1)
        return mod.WorkloadReconciler(ip, settings, sysctl_root=fake.sysctl_root, run_dir=fake.run_dir,
                                      netns_state=fake.netns_state, path_exists=fake.path_exists,
                                      netns_dir_is_slave=lambda: fake.slave)

    monkeypatch.setattr(mod, 'make_reconciler', make_reconciler)
    return fake


def run(monkeypatch, endpoints, check_mode=False, diff=False, **params):
    return run_module(monkeypatch, mod, dict(endpoints=endpoints, **params), check_mode=check_mode, diff=diff)


def ifname(name):
    return iproute.workload_ifname(name)


def test_create_three_endpoints(kernel, monkeypatch):
    result = run(monkeypatch, EPS, diff=True)
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['created'] == ['db-1', 'web-1', 'web-2']
    assert result['updated'] == [] and result['removed'] == []
    # one host link batch, one route batch, one batch per workload namespace
    writes = kernel.writes()
    host_writes = [argv for argv, _data in writes if argv[1] in ('-force', '-batch')]
    ns_writes = [argv for argv, _data in writes if argv[:2] == ['/sbin/ip', '-n']]
    assert len(host_writes) == 2 and len(ns_writes) == 3
    # host side
    link = kernel.host.links[ifname('web-1')]
    assert link['address'] == 'ee:ee:ee:ee:ee:ee' and 'UP' in link['flags']
    assert link['ifalias'] == 'netfleet:ep:web-1:calico-web-1:own'
    assert kernel.host.links[ifname('db-1')]['mtu'] == 1400
    for kind, key, value in (('conf', 'proxy_arp', '1'), ('neigh', 'proxy_delay', '0'), ('conf', 'forwarding', '1'),
                             ('conf', 'route_localnet', '1')):
        assert kernel.sysctl(ifname('web-2'), kind, key) == value
    routes = {(r['dst'], r['dev'], r['proto'], r['scope']) for r in kernel.host.routes if r['proto'] == '80'}
    assert routes == {('172.17.8.2/32', ifname('web-1'), '80', 'link'),
                      ('172.17.8.3/32', ifname('web-2'), '80', 'link'),
                      ('172.17.8.4/32', ifname('db-1'), '80', 'link')}
    # workload side
    ns = kernel.netns['calico-db-1']
    assert ns.links['eth0']['addrs'] == ['172.17.8.4/32'] and 'UP' in ns.links['eth0']['flags']
    assert ns.links['eth0']['mtu'] == 1400 and 'UP' in ns.links['lo']['flags']
    assert {(r['dst'], r['gateway'], r['dev'], r['scope']) for r in ns.routes} == {
        ('169.254.1.1/32', None, 'eth0', 'link'), ('0.0.0.0/0', '169.254.1.1', 'eth0', 'global')}
    assert result['diff']['before'] == ''
    assert 'web-1: ip=172.17.8.2/32 if=%s netns=calico-web-1 mac=ee:ee:ee:ee:ee:ee\n' % ifname('web-1') \
        in result['diff']['after']
    assert result['endpoints'][0] == {'name': 'db-1', 'ip': '172.17.8.4', 'ip6': None, 'ifname': ifname('db-1'),
                                      'netns': 'calico-db-1', 'netns_path': kernel.run_dir + '/calico-db-1',
                                      'mac': 'ee:ee:ee:ee:ee:ee', 'mtu': 1400}
    assert result['routes']['add'] == ['172.17.8.2/32 dev %s' % ifname('web-1'), '172.17.8.3/32 dev %s'
                                       % ifname('web-2'), '172.17.8.4/32 dev %s' % ifname('db-1')]


def test_second_run_is_idempotent_and_read_only(kernel, monkeypatch):
    run(monkeypatch, EPS)
    before = len(kernel.writes())
    result = run(monkeypatch, EPS, diff=True)
    assert result['changed'] is False, result
    assert result['created'] == result['updated'] == result['removed'] == [] and result['commands'] == []
    assert len(kernel.writes()) == before
    assert result['diff']['before'] == result['diff']['after']
    # reads: one link list, one route list, one per namespace
    assert result['stats']['ip_calls'] == 2 + len(EPS)


def test_check_mode_changes_nothing(kernel, monkeypatch):
    result = run(monkeypatch, EPS, check_mode=True, diff=True)
    assert result['changed'] is True and result['created'] == ['db-1', 'web-1', 'web-2']
    assert kernel.writes() == [] and kernel.netns == {}
    assert any(line.startswith('netns add calico-web-1') for line in result['commands'])
    assert result['diff']['after'].count('\n') == 3


def test_check_mode_on_converged_host_reports_no_change(kernel, monkeypatch):
    run(monkeypatch, EPS)
    result = run(monkeypatch, EPS, check_mode=True)
    assert result['changed'] is False


def test_drift_is_repaired(kernel, monkeypatch):
    run(monkeypatch, EPS)
    web1, web2, db1 = ifname('web-1'), ifname('web-2'), ifname('db-1')
    kernel.netns['calico-web-1'].links['eth0']['addrs'] = ['172.17.8.99/32']
    kernel.netns['calico-web-1'].routes = []
    kernel.host.links[web2]['address'] = '02:00:00:00:00:01'
    kernel.host.links[web2]['flags'].remove('UP')
    kernel.set_sysctl(db1, 'conf', 'proxy_arp', '0')
    kernel.host.routes = [r for r in kernel.host.routes if r['dev'] != db1]
    result = run(monkeypatch, EPS, diff=True)
    assert result['changed'] is True and result['created'] == []
    assert result['updated'] == ['db-1', 'web-1', 'web-2']
    assert 'eth0 address 172.17.8.99/32 (want 172.17.8.2/32)' in result['drift']['web-1']
    assert 'default route via 169.254.1.1 dev eth0 missing' in result['drift']['web-1']
    assert 'mac 02:00:00:00:00:01 (want ee:ee:ee:ee:ee:ee)' in result['drift']['web-2']
    assert 'host link down' in result['drift']['web-2']
    assert result['drift']['db-1'] == ['sysctl proxy_arp=0', 'host route 172.17.8.4/32 missing']
    assert 'drift=' in result['diff']['before'] and 'drift=' not in result['diff']['after']
    assert kernel.netns['calico-web-1'].links['eth0']['addrs'] == ['172.17.8.2/32']
    assert kernel.host.links[web2]['address'] == 'ee:ee:ee:ee:ee:ee' and 'UP' in kernel.host.links[web2]['flags']
    assert kernel.sysctl(db1, 'conf', 'proxy_arp') == '1'
    assert web1 in {r['dev'] for r in kernel.host.routes}
    assert run(monkeypatch, EPS)['changed'] is False


def test_ip_change_moves_address_and_route(kernel, monkeypatch):
    run(monkeypatch, EPS)
    eps = [dict(EPS[0], ip='172.17.8.20')] + EPS[1:]
    result = run(monkeypatch, eps)
    assert result['updated'] == ['web-1']
    assert result['routes']['add'] == ['172.17.8.20/32 dev %s' % ifname('web-1')]
    assert result['routes']['delete'] == ['172.17.8.2/32 dev %s' % ifname('web-1')]
    assert kernel.netns['calico-web-1'].links['eth0']['addrs'] == ['172.17.8.20/32']
    assert run(monkeypatch, eps)['changed'] is False


def test_removing_one_endpoint_deletes_veth_and_namespace(kernel, monkeypatch):
    run(monkeypatch, EPS)
    result = run(monkeypatch, EPS[:2], diff=True)
    assert result['changed'] is True and result['removed'] == ['db-1']
    assert 'link del dev %s' % ifname('db-1') in result['commands']
    assert 'netns del calico-db-1' in result['commands']
    assert ifname('db-1') not in kernel.host.links and 'calico-db-1' not in kernel.netns
    assert not any(r['dev'] == ifname('db-1') for r in kernel.host.routes)
    assert 'db-1: ip=172.17.8.4/32' in result['diff']['before'] and 'db-1' not in result['diff']['after']
    assert run(monkeypatch, EPS[:2])['changed'] is False


def test_removing_many_uses_one_group_delete(kernel, monkeypatch):
    run(monkeypatch, EPS)
    result = run(monkeypatch, [])
    assert result['removed'] == ['db-1', 'web-1', 'web-2']
    deletes = [c for c in result['commands'] if c.startswith('link del')]
    assert len(deletes) == 1 and deletes[0].startswith('link del group ')
    assert not [link for link in kernel.host.links.values() if link['kind'] == 'veth'] and kernel.netns == {}
    assert [r for r in kernel.host.routes if r['proto'] == '80'] == []


def test_foreign_veths_and_routes_are_left_alone(kernel, monkeypatch):
    kernel.host.links['califoreign0001'] = {'ifname': 'califoreign0001', 'ifindex': 50, 'flags': ['UP'], 'mtu': 1500,
                                            'address': '02:aa:00:00:00:01', 'kind': 'veth', 'addrs': [],
                                            'group': 'default', 'ifalias': 'somebody else'}
    kernel.add_route(dst='10.9.0.0/16', rtype='blackhole', proto='80')   # calico_routes' business
    kernel.add_route(dst='172.17.8.77/32', dev='califoreign0001', proto='static')
    run(monkeypatch, EPS)
    result = run(monkeypatch, [])
    assert 'califoreign0001' in kernel.host.links
    assert {r['dst'] for r in kernel.host.routes if r['proto'] in ('80', 'static')} == {'10.9.0.0/16',
                                                                                        '172.17.8.77/32'}
    assert result['removed'] == ['db-1', 'web-1', 'web-2']


def test_netns_path_is_never_created_or_deleted(kernel, monkeypatch):
    kernel.add_path_netns('/proc/4242/ns/net')
    eps = [{'name': 'ctr', 'ip': '172.17.8.9', 'netns_path': '/proc/4242/ns/net'}]
    refused = run(monkeypatch, eps)  # a path only where netns_paths allows it
    assert refused['failed'] and refused['msg'] == ("endpoint 'ctr': netns_path /proc/4242/ns/net is not allowed by "
                                                    'netns_paths (none allowed)')
    result = run(monkeypatch, eps, netns_paths=['/proc/*/ns/net'])
    assert result['created'] == ['ctr'] and not any('netns add' in c for c in result['commands'])
    assert kernel.host.links[ifname('ctr')]['ifalias'] == 'netfleet:ep:ctr:/proc/4242/ns/net:ext'
    assert ['/usr/bin/nsenter', '--net=/proc/4242/ns/net', '/sbin/ip', '-force', '-batch', '-'] in \
        [argv for argv, _data in kernel.writes()]
    assert run(monkeypatch, eps, netns_paths=['/proc/*/ns/net'])['changed'] is False
    result = run(monkeypatch, [])
    assert result['removed'] == ['ctr'] and not any('netns del' in c for c in result['commands'])
    assert '/proc/4242/ns/net' in kernel.paths


def test_missing_netns_path_fails(kernel, monkeypatch):
    result = run(monkeypatch, [{'name': 'ctr', 'ip': '172.17.8.9', 'netns_path': '/proc/4243/ns/nope'}],
                 netns_paths=['/proc/*/ns/*'])
    assert result['failed'] and result['msg'] == "endpoint 'ctr': netns_path /proc/4243/ns/nope does not exist"
    # PID 1's namespace never, whatever netns_paths allows
    result = run(monkeypatch, [{'name': 'ctr', 'ip': '172.17.8.9', 'netns_path': '/proc/1/ns/net'}],
                 netns_paths=['/*'])
    assert result['failed'] and result['msg'] == ("endpoint 'ctr': netns_path /proc/1/ns/net is PID 1's network "
                                                  'namespace')


def test_explicit_netns_must_be_under_the_prefix(kernel, monkeypatch):
    kernel.add_netns('nf-fabric')
    result = run(monkeypatch, [{'name': 'x', 'ip': '172.17.8.9', 'netns': 'nf-fabric'}])
    assert result['failed'] and result['msg'] == ("endpoint 'x': netns 'nf-fabric' is not under the workload prefix "
                                                  "'calico-' (a workload never gets another namespace of the host's)")
    assert kernel.writes() == []


def test_existing_explicit_netns_with_foreign_eth0_fails(kernel, monkeypatch):
    ns = kernel.add_netns('calico-mine')
    ns.links['eth0'] = {'ifname': 'eth0', 'ifindex': 7, 'flags': ['UP'], 'mtu': 1500, 'address': '02:00:00:00:00:07',
                        'kind': 'veth', 'addrs': [], 'group': 'default'}
    result = run(monkeypatch, [{'name': 'x', 'ip': '172.17.8.9', 'netns': 'calico-mine'}])
    assert result['failed'] and 'already has an eth0' in result['msg']
    assert kernel.writes() == []


def test_stale_eth0_in_own_namespace_is_replaced(kernel, monkeypatch):
    ns = kernel.add_netns('calico-x')
    ns.links['eth0'] = {'ifname': 'eth0', 'ifindex': 7, 'flags': ['UP'], 'mtu': 1500, 'address': '02:00:00:00:00:07',
                        'kind': 'veth', 'addrs': [], 'group': 'default'}
    result = run(monkeypatch, [{'name': 'x', 'ip': '172.17.8.9'}])
    assert not result.get('failed'), result
    assert kernel.netns['calico-x'].links['eth0']['peer'][1]['ifname'] == ifname('x')
    assert run(monkeypatch, [{'name': 'x', 'ip': '172.17.8.9'}])['changed'] is False


def test_broken_namespace_file_is_recreated(kernel, monkeypatch):
    open(kernel.run_dir + '/calico-x', 'w').close()   # left by `ip netns add` under `ip netns exec`
    result = run(monkeypatch, [{'name': 'x', 'ip': '172.17.8.9'}])
    assert result['commands'][:2] == ['netns del calico-x', 'netns add calico-x']
    assert 'calico-x' in kernel.netns


def test_private_mount_namespace_refuses_to_create_namespaces(kernel, monkeypatch):
    kernel.slave = True
    result = run(monkeypatch, EPS, check_mode=True)
    assert result['failed'] and 'slave mount' in result['msg'] and 'nsenter' in result['msg']
    result = run(monkeypatch, EPS)
    assert result['failed'] and kernel.writes() == []


def test_netns_change_recreates_the_pair(kernel, monkeypatch):
    run(monkeypatch, EPS[:1])
    result = run(monkeypatch, [dict(EPS[0], netns='calico-other')])
    assert result['updated'] == ['web-1']
    assert result['drift']['web-1'] == ['recreated: netns changed from calico-web-1']
    assert 'calico-web-1' not in kernel.netns and 'eth0' in kernel.netns['calico-other'].links
    assert kernel.host.links[ifname('web-1')]['ifalias'] == 'netfleet:ep:web-1:calico-other:own'
    assert run(monkeypatch, [dict(EPS[0], netns='calico-other')])['changed'] is False


def test_deleted_workload_namespace_is_recreated(kernel, monkeypatch):
    run(monkeypatch, EPS[:1])
    # the host side survives only if something else still holds it; simulate a lost namespace file
    del kernel.netns['calico-web-1']
    os.unlink(kernel.run_dir + '/calico-web-1')
    result = run(monkeypatch, EPS[:1])
    assert result['drift']['web-1'] == ['recreated: namespace calico-web-1 missing']
    assert 'calico-web-1' in kernel.netns


def test_mtu_drift_on_workload_side(kernel, monkeypatch):
    run(monkeypatch, EPS)
    kernel.netns['calico-db-1'].links['eth0']['mtu'] = 1500
    result = run(monkeypatch, EPS)
    assert result['drift'] == {'db-1': ['eth0 mtu 1500 (want 1400)']}
    assert kernel.netns['calico-db-1'].links['eth0']['mtu'] == 1400


def test_kernel_error_is_reported(kernel, monkeypatch):
    original = kernel.link_add

    def failing(ns, rest, opts):
        if ifname('web-2') in rest:
            raise FakeError('RTNETLINK answers: Operation not permitted')
        return original(ns, rest, opts)

    monkeypatch.setattr(kernel, 'link_add', failing)
    result = run(monkeypatch, EPS)
    assert result['failed']
    assert 'Operation not permitted' in result['msg'] and 'link add name %s' % ifname('web-2') in result['msg']
    assert result['failures'][0]['command'].startswith('link add name %s' % ifname('web-2'))


@pytest.mark.parametrize('endpoints, params, message', [
    ([{'name': 'a', 'ip': '172.17.8.2'}, {'name': 'a', 'ip': '172.17.8.3'}], {}, "duplicate endpoint name 'a'"),
    ([{'name': 'a', 'ip': '172.17.8.2'}, {'name': 'b', 'ip': '172.17.8.2'}], {},
     "endpoints 'a' and 'b' have the same ip 172.17.8.2"),
    ([{'name': 'a', 'ip': '172.17.8.300'}], {}, "endpoint 'a': invalid ip '172.17.8.300'"),
    ([{'name': 'a', 'ip': '172.17.8.0/24'}], {}, "endpoint 'a': ip 172.17.8.0/24 must be a single IPv4 address"),
    ([{'name': 'a', 'ip': 'fd00::1'}], {}, "endpoint 'a': ip fd00::1 must be IPv4"),
    ([{'name': 'a', 'ip': '169.254.1.1'}], {}, "endpoint 'a': ip 169.254.1.1 cannot be used for a workload"),
    ([{'name': 'ns/pod', 'ip': '172.17.8.2'}], {}, "'calico-ns/pod' is not a valid namespace name"),
    ([{'name': 'a', 'ip': '172.17.8.2', 'netns': 'calico-x y'}], {}, "'calico-x y' is not a valid namespace name"),
    ([{'name': 'a', 'ip': '172.17.8.2', 'netns_path': 'relative/path'}], {}, 'must be an absolute path'),
    ([{'name': 'a', 'ip': '172.17.8.2', 'netns': 'calico-n'}, {'name': 'b', 'ip': '172.17.8.3', 'netns': 'calico-n'}],
     {},
     "endpoints 'a' and 'b' use the same namespace calico-n"),
    ([{'name': 'a', 'ip': '172.17.8.2', 'mtu': 20}], {}, "endpoint 'a': mtu 20 out of range 68-65535"),
    ([], {'interface_prefix': 'calico'}, "interface_prefix 'calico' must be 1-4 characters"),
    ([], {'protocol': 3}, 'protocol 3 is not allowed'),
    ([], {'mac': '01:00:5e:00:00:01'}, 'is a multicast address'),
    ([], {'mac': 'zz'}, "invalid MAC address 'zz'"),
    ([], {'gateway': 'fe80::1'}, 'gateway fe80::1 must be an IPv4 address'),
    ([{'name': 'a', 'ip': '172.17.8.2', 'netns': 'n', 'netns_path': '/proc/1/ns/net'}], {}, 'mutually exclusive'),
    ([{'ip': '172.17.8.2'}], {}, 'name'),
])
def test_bad_input_fails_with_one_line(kernel, monkeypatch, endpoints, params, message):
    result = run(monkeypatch, endpoints, **params)
    assert result.get('failed'), result
    assert message in result['msg'] and '\n' not in result['msg']
    assert kernel.writes() == []


def test_build_endpoints_defaults():
    params = dict(endpoints=[{'name': 'web-1', 'ip': '172.17.8.2', 'netns': None, 'netns_path': None, 'mtu': None}],
                  netns_prefix='calico-', interface_prefix='cali', protocol=80, mac='EE-EE-EE-EE-EE-EE',
                  gateway='169.254.1.1', mtu=1450)
    endpoints, settings = mod.build_endpoints(params)
    assert settings == {'prefix': 'cali', 'protocol': 80, 'mac': 'ee:ee:ee:ee:ee:ee', 'gateway': '169.254.1.1',
                        'gateway6': 'fe80::ecee:eeff:feee:eeee'}
    ep = endpoints[0]
    assert (ep.ifname, ep.netns, ep.nsref, ep.mtu, ep.default_netns, ep.cidr) == (
        iproute.workload_ifname('web-1'), 'calico-web-1', 'calico-web-1', 1450, True, '172.17.8.2/32')
