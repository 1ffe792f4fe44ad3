"""IPv6 data plane of a host, on the real kernel (root required): the modules, not the planner.

Two namespaces play two hosts joined by a veth, with a static route to each other's IPv6 block (BGP is not
part of this test); each host runs calico_node_state (sysctls, block blackholes, workload endpoints with
``ip6``) and calico_chains for both families. Shown: IPv6 (and IPv4) pings between workloads on one host and
across the hosts; a workload sending from another workload's address (added inside its own namespace) reaches
nobody, for IPv6 (ip6tables rpfilter) as for IPv4 (rp_filter), while its own address works; every second run
changes nothing; removing the endpoints removes their IPv6 routes and addresses. Namespaces are named
``<NETFLEET_LAB_PREFIX or v6>a<hex>`` / ``...b<hex>`` (their workloads ``<host>-<name>``) and deleted at the end.
"""

from __future__ import annotations

import os
import secrets

import pytest
from netfleet_nshost import Host, ipj, namespaces, sh

pytestmark = pytest.mark.lab

GW6 = 'fe80::ecee:eeff:feee:eeee'
SITES = {
    'a': {'link': ('10.254.6.1', '2001:db8:ff::1'), 'block': '172.17.8.0/24', 'block6': '2001:db8:a::/64',
          'endpoints': [{'name': 'a1', 'ip': '172.17.8.2', 'ip6': '2001:db8:a::2'},
                        {'name': 'a2', 'ip6': '2001:db8:a::3'},
                        {'name': 'a3', 'ip': '172.17.8.4', 'ip6': '2001:db8:a::4'}]},
    'b': {'link': ('10.254.6.2', '2001:db8:ff::2'), 'block': '172.17.9.0/24', 'block6': '2001:db8:b::/64',
          'endpoints': [{'name': 'b1', 'ip': '172.17.9.2', 'ip6': '2001:db8:b::2'}]},
}
SYSCTLS = {'net.ipv4.ip_forward': 1, 'net.ipv6.conf.all.forwarding': 1}


def node_state(host, site, endpoints):
    return host.module('calico_node_state', {
        'sysctls': SYSCTLS, 'netns_prefix': host.name + '-', 'endpoints': endpoints,
        'routes': [{'dest': site['block'], 'type': 'blackhole'}, {'dest': site['block6'], 'type': 'blackhole'}]})


def chains(host, endpoints, family):
    return host.module('calico_chains', {'family': family, 'endpoints': endpoints})


def ping(host, workload, dst, src=None):
    """True if ``dst`` answers a ping from ``workload`` (from address ``src``)."""
    argv = ['ip', 'netns', 'exec', '%s-%s' % (host.name, workload), 'ping', '-n', '-c', '3', '-i', '0.2', '-W', '1']
    return sh(argv + (['-I', src] if src else []) + [dst], check=False, timeout=30).returncode == 0


def echo_requests(host, workload, family):
    """ICMP echo requests the workload's kernel received (``/proc/net/snmp`` of its namespace)."""
    netns = '%s-%s' % (host.name, workload)
    if family == 6:
        text = sh(['ip', 'netns', 'exec', netns, 'cat', '/proc/net/snmp6']).stdout
        return int(dict(line.split() for line in text.splitlines() if line.strip())['Icmp6InEchos'])
    lines = [line.split() for line in sh(['ip', 'netns', 'exec', netns, 'cat', '/proc/net/snmp']).stdout.splitlines()
             if line.startswith('Icmp:')]
    return int(dict(zip(lines[0], lines[1]))['InEchos'])


def rpfilter_drops(host):
    save = sh(['ip', 'netns', 'exec', host.name, 'ip6tables-save', '-c', '-t', 'raw']).stdout
    rule = [line for line in save.splitlines() if 'cali-PREROUTING' in line and 'rpfilter' in line]
    assert len(rule) == 1, save
    return int(rule[0].split(']')[0].lstrip('[').split(':')[0])


@pytest.fixture
def hosts(tmp_path):
    prefix = os.environ.get('NETFLEET_LAB_PREFIX', 'v6')
    token = secrets.token_hex(3)
    made = {key: Host('%s%s%s' % (prefix, key, token), tmp_path / key) for key in SITES}
    a, b = made['a'], made['b']
    try:
        for host in made.values():
            host.tmp_path.mkdir()
            sh(['ip', 'netns', 'add', host.name])
        sh(['ip', '-n', a.name, 'link', 'add', 'nfx0', 'type', 'veth', 'peer', 'name', 'nfx1', 'netns', b.name])
        for key, host, dev, other in (('a', a, 'nfx0', 'b'), ('b', b, 'nfx1', 'a')):
            ip4, ip6 = SITES[key]['link']
            sh(['ip', '-n', host.name, '-batch', '-'], input='\n'.join([
                'link set lo up', 'link set %s up' % dev, 'addr add %s/30 dev %s' % (ip4, dev),
                'addr add %s/64 dev %s nodad' % (ip6, dev),
                'route add default via %s dev %s' % (SITES[other]['link'][0], dev),
                'route add %s via %s dev %s' % (SITES[other]['block6'], SITES[other]['link'][1], dev)]) + '\n')
        yield made
    finally:
        for host in made.values():
            host.cleanup()
        left = [ns for ns in namespaces() if any(ns == h.name or ns.startswith(h.name + '-') for h in made.values())]
        assert left == [], 'namespaces left behind: %s' % left


def test_ipv6_workloads_routes_chains_and_anti_spoofing(hosts):
    a, b = hosts['a'], hosts['b']
    results = {}
    for key, host in hosts.items():
        result = node_state(host, SITES[key], SITES[key]['endpoints'])
        assert result.get('failed') is not True, result
        assert not result.get('warnings'), result  # IPv6 forwarding came with the sysctls part
        results[key] = {ep['name']: ep for ep in result['workloads']['endpoints']}
        policy = [{'name': ep['name'], 'ip': ep['ip'], 'ip6': ep['ip6'], 'ifname': ep['ifname']}
                  for ep in results[key].values()]
        results[key + '-policy'] = policy
        for family in (4, 6):
            done = chains(host, policy, family)
            assert done.get('failed') is not True and done['changed'] is True, done

    # the kernel as Calico has it: /128 routes and the IPv6 blackhole proto 80, the gateway link-local usable
    routes6 = ipj(a.name, '-6', 'route', 'show', 'proto', '80')
    got = {(r['dst'], r.get('type', 'unicast'), r.get('dev')) for r in routes6}
    assert got == {('2001:db8:a::/64', 'blackhole', 'lo')} | {
        (ep['ip6'], 'unicast', ep['ifname']) for ep in results['a'].values() if ep['ip6']}
    veth = ipj(a.name, 'addr', 'show', 'dev', results['a']['a2']['ifname'])[0]
    link_local = [i for i in veth['addr_info'] if i['family'] == 'inet6']
    assert [(i['local'], i.get('tentative', False)) for i in link_local] == [(GW6, False)]
    inside = ipj('%s-a2' % a.name, '-6', 'route', 'show', 'default')
    assert [(r['gateway'], r['dev']) for r in inside] == [(GW6, 'eth0')]
    assert not [i for i in ipj('%s-a2' % a.name, 'addr', 'show', 'dev', 'eth0')[0]['addr_info']
                if i['family'] == 'inet']  # IPv6 only

    # IPv6: same host, other host (IPv6-only workload included); IPv4 across the hosts still works
    assert ping(a, 'a1', '2001:db8:a::3')
    assert ping(a, 'a2', '2001:db8:b::2')
    assert ping(b, 'b1', '2001:db8:a::2')
    assert ping(a, 'a1', '172.17.9.2')

    # a3 sends from a1's IPv6 address (added inside its namespace): dropped at the host, reaches nobody
    sh(['ip', '-n', '%s-a3' % a.name, 'addr', 'add', '2001:db8:a::2/128', 'dev', 'eth0', 'nodad'])
    drops, seen_b1, seen_a2 = rpfilter_drops(a), echo_requests(b, 'b1', 6), echo_requests(a, 'a2', 6)
    assert not ping(a, 'a3', '2001:db8:b::2', src='2001:db8:a::2')
    assert not ping(a, 'a3', '2001:db8:a::3', src='2001:db8:a::2')
    assert echo_requests(b, 'b1', 6) == seen_b1 and echo_requests(a, 'a2', 6) == seen_a2
    # dropped by the host's rpfilter rule (later ones may die in a3 itself: its neighbour probes for the
    # gateway leave from the spoofed address too and are dropped the same way)
    assert rpfilter_drops(a) > drops
    assert ping(a, 'a3', '2001:db8:b::2', src='2001:db8:a::4')  # its own address works
    assert echo_requests(b, 'b1', 6) > seen_b1
    # the same for IPv4 (rp_filter=1 on the veth)
    sh(['ip', '-n', '%s-a3' % a.name, 'addr', 'add', '172.17.8.2/32', 'dev', 'eth0'])
    seen_b1 = echo_requests(b, 'b1', 4)
    assert not ping(a, 'a3', '172.17.9.2', src='172.17.8.2')
    assert echo_requests(b, 'b1', 4) == seen_b1
    assert ping(a, 'a3', '172.17.9.2', src='172.17.8.4')
    assert echo_requests(b, 'b1', 4) > seen_b1

    # the facts a later planner keeps addresses stable with
    facts = a.node_facts()
    assert facts['blocks6'] == ['2001:db8:a::/64'] and facts['blocks'] == ['172.17.8.0/24']
    assert facts['workloads6'] == {'a1': '2001:db8:a::2', 'a2': '2001:db8:a::3', 'a3': '2001:db8:a::4'}

    # second runs change nothing (a3's extra addresses are drift, repaired by the first of them)
    repaired = node_state(a, SITES['a'], SITES['a']['endpoints'])
    assert repaired['changed_parts'] == ['workloads'] and repaired['workloads']['updated'] == ['a3']
    for key, host in hosts.items():
        again = node_state(host, SITES[key], SITES[key]['endpoints'])
        assert again['changed'] is False, again
        for family in (4, 6):
            assert chains(host, results[key + '-policy'], family)['changed'] is False

    # dropping a1's IPv6 address, then every endpoint: routes, addresses and namespaces go
    less = node_state(a, SITES['a'], [{'name': 'a1', 'ip': '172.17.8.2'}] + SITES['a']['endpoints'][1:])
    assert less['workloads']['routes']['delete'] == ['2001:db8:a::2/128 dev %s' % results['a']['a1']['ifname']]
    assert [i['family'] for i in ipj('%s-a1' % a.name, 'addr', 'show', 'dev', 'eth0')[0]['addr_info']
            if i.get('scope') != 'link'] == ['inet']
    assert not ipj('%s-a1' % a.name, '-6', 'route', 'show', 'default')
    gone = node_state(a, SITES['a'], [])
    assert gone['workloads']['removed'] == ['a1', 'a2', 'a3']
    assert [r['dst'] for r in ipj(a.name, '-6', 'route', 'show', 'proto', '80')] == ['2001:db8:a::/64']
    assert not [ns for ns in namespaces() if ns.startswith(a.name + '-')]
    assert [link['ifname'] for link in ipj(a.name, 'link', 'show', 'type', 'veth')] == ['nfx0']
