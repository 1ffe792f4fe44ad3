"""Real-kernel tests of the netfleet.calico kernel modules (root required).

Every test gets its own network namespace ``nfut-<hex>`` playing the host; workload namespaces
are named ``nfut-<hex>-<name>`` through the module's ``netns_prefix``. Modules run inside the
host namespace with ``nsenter --net=`` (the network namespace only: ``ip netns exec`` would put
them in a private mount namespace, see test_private_mount_namespace_is_refused). A finalizer
deletes the test's namespaces, also when the test fails. Nothing is created in the root
namespace and no process is ever killed by name.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest
from netfleet_nshost import ANSIBLE, PYTHON, REPO, UPLINK_HOST, UPLINK_PEER, Host, ipj, namespaces, sh

pytestmark = pytest.mark.lab


@pytest.fixture
def host(tmp_path):
    h = Host('nfut-' + secrets.token_hex(4), tmp_path)
    try:
        h.setup()
        yield h
    finally:
        h.cleanup()
        left = [ns for ns in namespaces() if ns == h.name or ns.startswith(h.name + '-')]
        assert left == [], 'namespaces left behind: %s' % left


EPS = [{'name': 'web-1', 'ip': '172.17.8.2'}, {'name': 'web-2', 'ip': '172.17.8.3'},
       {'name': 'db-1', 'ip': '172.17.8.4', 'mtu': 1400}]


def test_workload_endpoints_end_to_end(host):
    prefix = host.name + '-'
    result = host.workloads(EPS)
    assert result.get('failed') is not True, result
    assert result['changed'] is True and result['created'] == ['db-1', 'web-1', 'web-2']
    assert {prefix + ep['name'] for ep in EPS} <= namespaces()
    by_name = {ep['name']: ep for ep in result['endpoints']}

    # host side: MAC, alias, sysctls, /32 routes tagged proto 80
    links = {link['ifname']: link for link in ipj(host.name, 'link', 'show', 'type', 'veth')}
    for name, ep in by_name.items():
        link = links[ep['ifname']]
        assert link['address'] == 'ee:ee:ee:ee:ee:ee' and 'UP' in link['flags']
        assert link['ifalias'] == 'netfleet:ep:%s:%s:own' % (name, prefix + name)
        for key, want in (('conf/%s/proxy_arp', '1'), ('neigh/%s/proxy_delay', '0'), ('conf/%s/forwarding', '1'),
                          ('conf/%s/route_localnet', '1')):
            value = sh(['nsenter', '--net=/run/netns/' + host.name, 'cat',
                        '/proc/sys/net/ipv4/' + key % ep['ifname']]).stdout.strip()
            assert value == want, (key, ep['ifname'])
    assert links[by_name['db-1']['ifname']]['mtu'] == 1400
    routes = {(r['dst'], r.get('dev'), r.get('scope')) for r in ipj(host.name, 'route', 'show', 'proto', '80')}
    assert routes == {(ep['ip'], ep['ifname'], 'link') for ep in result['endpoints']}

    # workload side, exactly the article's table
    w1 = prefix + 'web-1'
    wroutes = {(r['dst'], r.get('gateway'), r['dev'], r.get('scope')) for r in ipj(w1, 'route', 'show')}
    assert wroutes == {('default', '169.254.1.1', 'eth0', None), ('169.254.1.1', None, 'eth0', 'link')}
    addrs = [(a['local'], a['prefixlen']) for link in ipj(w1, 'addr', 'show', 'dev', 'eth0')
             for a in link['addr_info'] if a['family'] == 'inet']
    assert addrs == [('172.17.8.2', 32)]

    # traffic: host -> every workload, workload -> workload (routed by the host, no L2 between them)
    for ep in EPS:
        sh(['ip', 'netns', 'exec', host.name, 'ping', '-c', '1', '-W', '2', ep['ip']], timeout=30)
    sh(['ip', 'netns', 'exec', w1, 'ping', '-c', '1', '-W', '2', '172.17.8.3'], timeout=30)
    neigh = ipj(w1, 'neigh', 'show', 'dev', 'eth0')
    gateway = [n for n in neigh if n['dst'] == '169.254.1.1']
    assert gateway and gateway[0]['lladdr'] == 'ee:ee:ee:ee:ee:ee', neigh

    # idempotent
    again = host.workloads(EPS)
    assert again['changed'] is False and again['commands'] == [], again
    assert again['diff']['before'] == again['diff']['after']

    # check mode: reports, changes nothing
    before = (namespaces(), ipj(host.name, 'link', 'show'), ipj(host.name, 'route', 'show'))
    checked = host.workloads(EPS[:2] + [{'name': 'new-1', 'ip': '172.17.8.9'}], check_mode=True)
    assert checked['changed'] is True and checked['created'] == ['new-1'] and checked['removed'] == ['db-1']
    after = (namespaces(), ipj(host.name, 'link', 'show'), ipj(host.name, 'route', 'show'))
    assert before == after

    # drift is repaired: address flushed in the workload, sysctl reset on the host
    sh(['ip', '-n', w1, 'addr', 'flush', 'dev', 'eth0'])
    sh(['nsenter', '--net=/run/netns/' + host.name, 'sh', '-c',
        'echo 0 > /proc/sys/net/ipv4/conf/%s/proxy_arp' % by_name['web-2']['ifname']])
    fixed = host.workloads(EPS)
    assert fixed['updated'] == ['web-1', 'web-2'], fixed
    assert 'sysctl proxy_arp=0' in fixed['drift']['web-2']
    assert host.workloads(EPS)['changed'] is False
    sh(['ip', 'netns', 'exec', host.name, 'ping', '-c', '1', '-W', '2', '172.17.8.2'], timeout=30)

    # removing one endpoint removes its veth, its route and its namespace
    removed = host.workloads(EPS[:2])
    assert removed['changed'] is True and removed['removed'] == ['db-1']
    assert prefix + 'db-1' not in namespaces()
    assert by_name['db-1']['ifname'] not in {link['ifname'] for link in ipj(host.name, 'link', 'show')}
    assert '172.17.8.4' not in {r['dst'] for r in ipj(host.name, 'route', 'show')}
    assert host.workloads(EPS[:2])['changed'] is False


def test_routes_module_never_touches_other_protocols(host):
    sh(['ip', '-n', host.name, 'route', 'add', '10.0.0.0/8', 'via', UPLINK_PEER, 'proto', 'static'])
    sh(['ip', '-n', host.name, 'route', 'add', 'blackhole', '172.16.0.0/16', 'proto', 'static'])
    sh(['ip', '-n', host.name, 'route', 'add', 'blackhole', '172.17.99.0/24', 'proto', '80'])   # stale, ours
    others_before = sh(['ip', '-n', host.name, 'route', 'show']).stdout.splitlines()
    others_before = sorted(line for line in others_before if 'proto 80' not in line)

    routes = [{'dest': '172.17.8.0/24', 'type': 'blackhole'},
              {'dest': '172.17.9.0/24', 'via': UPLINK_PEER, 'dev': 'nfup0', 'onlink': True}]
    result = host.module('calico_routes', {'routes': routes})
    assert result['changed'] is True, result
    assert result['added'] == ['blackhole 172.17.8.0/24', '172.17.9.0/24 via %s dev nfup0 onlink' % UPLINK_PEER]
    assert result['deleted'] == ['blackhole 172.17.99.0/24']
    owned = sh(['ip', '-n', host.name, 'route', 'show', 'proto', '80']).stdout
    assert 'blackhole 172.17.8.0/24' in owned and '172.17.9.0/24 via %s dev nfup0 onlink' % UPLINK_PEER in owned
    assert host.module('calico_routes', {'routes': routes})['changed'] is False

    # a route whose key belongs to another protocol is refused, not overwritten
    clash = host.module('calico_routes', {'routes': [{'dest': '10.0.0.0/8', 'type': 'blackhole'}]})
    assert clash['failed'] and 'another protocol' in clash['msg']
    owned = sh(['ip', '-n', host.name, 'route', 'show', 'proto', '80']).stdout
    assert 'blackhole 172.17.8.0/24' in owned, 'a failed add must stop the batch before removals'
    # empty list: every owned route goes, every other route stays
    assert host.module('calico_routes', {'routes': []})['changed'] is True
    assert sh(['ip', '-n', host.name, 'route', 'show', 'proto', '80']).stdout.strip() == ''
    others_after = sorted(line for line in sh(['ip', '-n', host.name, 'route', 'show']).stdout.splitlines()
                          if 'proto 80' not in line)
    assert others_after == others_before
    assert '10.0.0.0/8 via %s dev nfup0 proto static' % UPLINK_PEER in '\n'.join(others_after)


def test_routes_module_leaves_workload_routes_alone(host):
    host.workloads(EPS[:1])
    result = host.module('calico_routes', {'routes': [{'dest': '172.17.8.0/24', 'type': 'blackhole'}]})
    assert result['deleted'] == []
    assert '172.17.8.2' in {r['dst'] for r in ipj(host.name, 'route', 'show', 'proto', '80')}
    # and the workloads module leaves the block alone
    assert host.workloads(EPS[:1])['changed'] is False
    host.workloads([])
    assert [r['dst'] for r in ipj(host.name, 'route', 'show', 'proto', '80')] == ['172.17.8.0/24']


def test_sysctl_module_and_node_facts(host, tmp_path):
    persist = tmp_path / '60-netfleet-calico.conf'
    wanted = {'net.ipv4.ip_forward': 1, 'net.ipv4.conf.all.forwarding': 1, 'net.ipv4.conf.default.rp_filter': 0}
    checked = host.module('calico_sysctl', {'sysctls': wanted, 'persist_file': str(persist)}, check_mode=True)
    assert checked['changed'] is True and not persist.exists()
    result = host.module('calico_sysctl', {'sysctls': wanted, 'persist_file': str(persist)})
    assert result['changed'] is True and result['sysctls']['net.ipv4.ip_forward'] == '1'
    assert 'net.ipv4.ip_forward = 1\n' in persist.read_text()
    assert sh(['ip', 'netns', 'exec', host.name, 'sysctl', '-n', 'net.ipv4.ip_forward']).stdout.strip() == '1'
    assert host.module('calico_sysctl', {'sysctls': wanted, 'persist_file': str(persist)})['changed'] is False

    host.workloads(EPS)
    host.module('calico_routes', {'routes': [{'dest': '172.17.8.0/24', 'type': 'blackhole'}]})
    node = host.node_facts()
    assert node['blocks'] == ['172.17.8.0/24']
    assert node['workloads'] == {'web-1': '172.17.8.2', 'web-2': '172.17.8.3', 'db-1': '172.17.8.4'}
    assert {'ifname': 'nfup0', 'address': UPLINK_HOST, 'prefixlen': 30} in node['addresses']
    assert node['default_route'] is True
    assert node['bird_version'] is None or node['bird_version'][0].isdigit()
    assert node['iptables_backend'] in ('nft', 'legacy', None)


def test_netns_path_endpoint_is_not_created_or_deleted(host):
    external = host.name + '-ext'
    sh(['ip', 'netns', 'add', external])
    eps = [{'name': 'ctr', 'ip': '172.17.8.50', 'netns_path': '/run/netns/' + external}]
    # a path is used only where netns_paths allows it; PID 1's and the host's own namespace never
    refused = host.workloads(eps)
    assert refused.get('failed') and 'is not allowed by netns_paths (none allowed)' in refused['msg'], refused
    for path, what in (('/proc/1/ns/net', "PID 1's"), ('/run/netns/' + host.name, "this host's own")):
        refused = host.workloads([{'name': 'x', 'ip': '172.17.8.51', 'netns_path': path}], netns_paths=['/*'])
        assert refused.get('failed') and f'is {what} network namespace' in refused['msg'], refused
    allowed = ['/run/netns/*-ext']
    result = host.workloads(eps, allowed)
    assert result['created'] == ['ctr'] and not any(c.startswith('netns ') for c in result['commands'])
    sh(['ip', 'netns', 'exec', host.name, 'ping', '-c', '1', '-W', '2', '172.17.8.50'], timeout=30)
    assert host.workloads(eps, allowed)['changed'] is False
    assert host.workloads([], allowed)['removed'] == ['ctr']
    assert external in namespaces()
    assert 'eth0' not in {link['ifname'] for link in ipj(external, 'link', 'show')}


def test_private_mount_namespace_is_refused(host):
    """Under `ip netns exec` a new namespace would only exist in a private mount namespace."""
    result = host.workloads(EPS[:1], via='ip-netns-exec')
    assert result.get('failed') is True and 'slave mount' in result['msg'], result
    assert host.name + '-web-1' not in namespaces()
    assert [link for link in ipj(host.name, 'link', 'show', 'type', 'veth') if link['ifname'].startswith('cali')] == []


def test_ansible_adhoc_check_diff_then_apply(host):
    """The collection as users run it: ansible with check mode and diff, then for real."""
    args = json.dumps({'routes': [{'dest': '172.17.8.0/24', 'type': 'blackhole'}]})
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_CALLBACK_RESULT_FORMAT='json',
               ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')

    def adhoc(*extra):
        proc = sh(['nsenter', '--net=/run/netns/' + host.name, str(ANSIBLE), 'localhost', '-i', 'localhost,',
                   '-c', 'local', '-e', 'ansible_python_interpreter=%s' % PYTHON,
                   '-m', 'netfleet.calico.calico_routes', '-a', args] + list(extra),
                  env=env, cwd=str(REPO), timeout=180)
        head, _sep, body = proc.stdout.partition('localhost | ')
        status, _sep, result = body.partition(' => ')
        return head, status, json.loads(result)

    diff, status, result = adhoc('--check', '--diff')
    assert status == 'CHANGED' and result['added'] == ['blackhole 172.17.8.0/24']
    assert '+blackhole 172.17.8.0/24' in diff and 'routes proto 80 table main' in diff
    assert sh(['ip', '-n', host.name, 'route', 'show', 'proto', '80']).stdout.strip() == ''
    assert adhoc()[1] == 'CHANGED'
    assert 'blackhole 172.17.8.0/24' in sh(['ip', '-n', host.name, 'route', 'show', 'proto', '80']).stdout
    diff, status, result = adhoc('--diff')
    assert status == 'SUCCESS' and result['changed'] is False
