"""Unit tests of the IPv6 side of netfleet.calico.calico_workloads (ip6: v6-only and dual-stack endpoints)
against the in-memory FakeKernel."""

from __future__ import annotations

import pytest
from calico_fake_kernel import FakeKernel, run_module

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.modules import calico_workloads as mod

GW6 = 'fe80::ecee:eeff:feee:eeee'
EPS = [{'name': 'dual', 'ip': '172.17.8.2', 'ip6': '2001:DB8:8::0002'},
       {'name': 'six', 'ip6': '2001:db8:8::3/128'},
       {'name': 'four', 'ip': '172.17.8.4'}]


def make_kernel(tmp_path, monkeypatch, ipv6=True):
    fake = FakeKernel(tmp_path, ipv6=ipv6)

    def make_reconciler(module, settings):
        ip = iproute.IpCommand(ip_bin='/sbin/ip', nsenter_bin='/usr/bin/nsenter', runner=fake.runner, workers=1)
        return mod.WorkloadReconciler(ip, settings, sysctl_root=fake.sysctl_root, run_dir=fake.run_dir,
                                      netns_state=fake.netns_state, path_exists=fake.path_exists,
                                      netns_dir_is_slave=lambda: False)

    monkeypatch.setattr(mod, 'make_reconciler', make_reconciler)
    return fake


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    fake = make_kernel(tmp_path, monkeypatch)
    fake.set_sysctl6('all', 'forwarding', '1')
    return fake


def run(monkeypatch, endpoints, check_mode=False, diff=False, **params):
    return run_module(monkeypatch, mod, dict(endpoints=endpoints, **params), check_mode=check_mode, diff=diff)


def ifname(name):
    return iproute.workload_ifname(name)


def owned_routes(kernel):
    return {(r['dst'], r['dev'], r['metric']) for r in kernel.host.routes if r['proto'] == '80'}


def test_dual_and_v6_only_endpoints_are_wired(kernel, monkeypatch):
    result = run(monkeypatch, EPS, diff=True)
    assert not result.get('failed'), result
    assert result['created'] == ['dual', 'four', 'six'] and result['warnings'] == []
    assert owned_routes(kernel) == {('172.17.8.2/32', ifname('dual'), 0), ('2001:db8:8::2/128', ifname('dual'), 1024),
                                    ('2001:db8:8::3/128', ifname('six'), 1024), ('172.17.8.4/32', ifname('four'), 0)}
    for name in ('dual', 'six'):
        for key, value in (('disable_ipv6', '0'), ('addr_gen_mode', '0'), ('accept_dad', '0'), ('accept_ra', '0'),
                           ('forwarding', '1'), ('proxy_ndp', '1')):
            assert kernel.sysctl6(ifname(name), key) == value, (name, key)
        assert kernel.sysctl(ifname(name), 'conf', 'rp_filter') == '1'
    # an IPv4-only veth still refuses router advertisements, and keeps the rest of IPv6 as the kernel made it
    assert kernel.sysctl6(ifname('four'), 'accept_ra') == '0'
    assert kernel.sysctl6(ifname('four'), 'forwarding') == '0'
    six = kernel.netns['calico-six']
    assert six.links['eth0']['addrs'] == ['2001:db8:8::3/128']
    assert {(r['dst'], r['gateway'], r['dev'], r['metric']) for r in six.routes} == {('::/0', GW6, 'eth0', 1024)}
    dual = kernel.netns['calico-dual']
    assert sorted(dual.links['eth0']['addrs']) == ['172.17.8.2/32', '2001:db8:8::2/128']
    assert ('::/0', GW6) in {(r['dst'], r['gateway']) for r in dual.routes}
    assert ('0.0.0.0/0', '169.254.1.1') in {(r['dst'], r['gateway']) for r in dual.routes}
    lines = [line for _argv, data in kernel.writes() for line in (data or '').splitlines()]
    assert 'addr replace 2001:db8:8::3/128 dev eth0 nodad' in lines
    assert [e['ip6'] for e in result['endpoints']] == ['2001:db8:8::2', None, '2001:db8:8::3']
    assert 'six: ip=2001:db8:8::3/128 if=%s' % ifname('six') in result['diff']['after']
    assert 'dual: ip=172.17.8.2/32,2001:db8:8::2/128 if=' in result['diff']['after']


def test_second_run_changes_nothing(kernel, monkeypatch):
    run(monkeypatch, EPS)
    writes = len(kernel.writes())
    result = run(monkeypatch, EPS, check_mode=True)
    assert result['changed'] is False, result['drift']
    result = run(monkeypatch, EPS)
    assert result['changed'] is False, result['drift']
    assert len(kernel.writes()) == writes


def test_v6_drift_is_repaired(kernel, monkeypatch):
    run(monkeypatch, EPS)
    six = kernel.netns['calico-six']
    six.links['eth0']['addrs'].append('2001:db8:8::99/128')
    six.routes = []
    kernel.set_sysctl6(ifname('six'), 'accept_ra', '1')
    kernel.host.routes = [r for r in kernel.host.routes if r['dst'] != '2001:db8:8::3/128']
    result = run(monkeypatch, EPS)
    assert result['updated'] == ['six']
    assert result['drift']['six'] == [
        'sysctl accept_ra=1', 'eth0 address 2001:db8:8::3/128,2001:db8:8::99/128 (want 2001:db8:8::3/128)',
        'default route via %s dev eth0 missing' % GW6, 'host route 2001:db8:8::3/128 missing']
    assert six.links['eth0']['addrs'] == ['2001:db8:8::3/128']
    assert kernel.sysctl6(ifname('six'), 'accept_ra') == '0'
    assert ('2001:db8:8::3/128', ifname('six'), 1024) in owned_routes(kernel)
    assert run(monkeypatch, EPS)['changed'] is False


def test_dropping_ip6_removes_address_default_route_and_host_route(kernel, monkeypatch):
    run(monkeypatch, EPS)
    result = run(monkeypatch, [{'name': 'dual', 'ip': '172.17.8.2'}, EPS[1], EPS[2]])
    assert result['updated'] == ['dual']
    assert result['routes']['delete'] == ['2001:db8:8::2/128 dev %s' % ifname('dual')]
    dual = kernel.netns['calico-dual']
    assert dual.links['eth0']['addrs'] == ['172.17.8.2/32']
    assert '::/0' not in {r['dst'] for r in dual.routes}
    # and the other way: an IPv6-only endpoint loses its IPv4 address and routes
    result = run(monkeypatch, [{'name': 'dual', 'ip6': '2001:db8:8::2'}, EPS[1], EPS[2]])
    assert result['updated'] == ['dual']
    assert dual.links['eth0']['addrs'] == ['2001:db8:8::2/128']
    assert {r['dst'] for r in dual.routes} >= {'::/0'} and '0.0.0.0/0' not in {r['dst'] for r in dual.routes}
    assert ('172.17.8.2/32', ifname('dual'), 0) not in owned_routes(kernel)
    assert run(monkeypatch, [{'name': 'dual', 'ip6': '2001:db8:8::2'}, EPS[1], EPS[2]])['changed'] is False


def test_removal_deletes_v6_routes_with_the_veth(kernel, monkeypatch):
    run(monkeypatch, EPS)
    result = run(monkeypatch, [], diff=True)
    assert result['removed'] == ['dual', 'four', 'six']
    assert owned_routes(kernel) == set() and not kernel.netns
    assert 'six: ip=2001:db8:8::3/128 if=' in result['diff']['before']


def test_warns_without_ipv6_forwarding(tmp_path, monkeypatch):
    make_kernel(tmp_path, monkeypatch)
    result = run(monkeypatch, EPS[:1])
    assert result['warnings'] == ['net.ipv6.conf.all.forwarding is not 1: IPv6 workloads cannot be routed beyond '
                                  'this host until it is set']


def test_host_without_ipv6(tmp_path, monkeypatch):
    kernel = make_kernel(tmp_path, monkeypatch, ipv6=False)
    result = run(monkeypatch, EPS[2:])
    assert not result.get('failed') and result['changed'] is True  # IPv4 only: no net/ipv6 sysctl is touched
    assert not [argv for argv, _data in kernel.calls if '-6' in argv]
    result = run(monkeypatch, EPS[1:])
    assert result['failed'] and 'endpoints with ip6 need IPv6 on the host' in result['msg']


@pytest.mark.parametrize('endpoints, message', [
    ([{'name': 'a'}], 'one of the following is required: ip, ip6'),
    ([{'name': 'a', 'ip6': '2001:db8::/64'}], "endpoint 'a': ip6 2001:db8::/64 must be a single IPv6 address"),
    ([{'name': 'a', 'ip6': '172.17.8.2'}], "endpoint 'a': ip6 172.17.8.2 must be IPv6"),
    ([{'name': 'a', 'ip6': 'fe80::1'}], "endpoint 'a': ip6 fe80::1 cannot be used for a workload"),
    ([{'name': 'a', 'ip6': '::ffff:172.17.8.2'}], 'cannot be used for a workload'),
    ([{'name': 'a', 'ip6': 'nope'}], "endpoint 'a': invalid ip6 'nope'"),
    ([{'name': 'a', 'ip6': '2001:db8::1'}, {'name': 'b', 'ip6': '2001:db8:0::1'}],
     "endpoints 'a' and 'b' have the same ip 2001:db8::1"),
    ([{'name': 'a', 'ip': '172.17.8.2/32', 'ip6': '2001:db8::1/128 '}], None),
])
def test_ip6_validation(kernel, monkeypatch, endpoints, message):
    result = run(monkeypatch, endpoints, check_mode=True)
    if message is None:
        assert not result.get('failed'), result
    else:
        assert result['failed'] and message in result['msg'], result['msg']


def test_build_endpoints_without_the_module_spec_needs_an_address():
    params = dict(endpoints=[{'name': 'a'}], netns_prefix='calico-', interface_prefix='cali', protocol=80,
                  mac=iproute.CALICO_MAC, gateway=iproute.CALICO_GATEWAY)
    with pytest.raises(ValueError, match="endpoint 'a': ip or ip6 is required"):
        mod.build_endpoints(params)


def test_gateway6_follows_the_mac():
    assert iproute.eui64_link_local('ee:ee:ee:ee:ee:ee') == iproute.CALICO_GATEWAY6
    assert iproute.eui64_link_local('02:00:00:00:00:01') == 'fe80::ff:fe00:1'
