"""Unit tests of plugins/module_utils/iproute.py, iproute_routes.py and procfs.py (no kernel: ip is faked by a
recording runner)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes, procfs
from ansible_collections.netfleet.calico.plugins.module_utils.iproute_routes import Route


class Recorder:
    """runner(argv, data, timeout): answers from a dict keyed by the argv tail; records every call."""

    def __init__(self, answers=None, rc=0, stderr=''):
        self.answers = answers or {}
        self.calls = []
        self.rc = rc
        self.stderr = stderr

    def __call__(self, argv, data=None, timeout=None):
        self.calls.append((argv, data))
        for key, out in self.answers.items():
            if tuple(argv[-len(key):]) == key:
                return 0, out, ''
        return self.rc, '', self.stderr


# ------------------------------------------------------------------------------------------ naming
def test_workload_ifname_is_calicos_rule():
    assert iproute.workload_ifname('a') == 'cali86f7e437faa'           # sha1('a') = 86f7e437faa5...
    name = iproute.workload_ifname('default.nginx-1')
    assert name == 'cali' + hashlib.sha1(b'default.nginx-1').hexdigest()[:11] and len(name) == 15
    assert iproute.workload_ifname('x', prefix='tap') == 'tap' + hashlib.sha1(b'x').hexdigest()[:11]
    with pytest.raises(ValueError, match='too long'):
        iproute.workload_ifname('x', prefix='calic')
    with pytest.raises(ValueError, match='invalid interface prefix'):
        iproute.workload_ifname('x', prefix='a b')


def test_module_utils_import_has_no_ansible_dependency():
    code = ('import sys; import ansible_collections.netfleet.calico.plugins.module_utils.iproute as m; '
            'print(m.workload_ifname("a")); '
            'print(any(k == "ansible" or k.startswith("ansible.") for k in sys.modules))')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ['cali86f7e437faa', 'False']


@pytest.mark.parametrize('name, nsref, owned', [
    ('web-1', 'calico-web-1', True),
    ('k8s:default/pod #1 "x"', '/proc/42/ns/net', False),
    ('ünï', 'ns', True),
])
def test_owner_alias_round_trip_and_batch_safe(name, nsref, owned):
    alias = iproute.encode_owner_alias(name, nsref, owned)
    assert alias.startswith('netfleet:ep:')
    assert iproute.batch_token(alias) == alias
    assert iproute.decode_owner_alias(alias) == {'name': name, 'netns': nsref, 'owned': owned}


def test_owner_alias_rejects_foreign_and_long():
    for alias in (None, '', 'something', 'netfleet:ep:a:b', 'netfleet:ep:a:b:maybe', 'netfleet:ep::b:own'):
        assert iproute.decode_owner_alias(alias) is None
    with pytest.raises(ValueError, match='exceed 255 bytes'):
        iproute.encode_owner_alias('x' * 250, 'ns', True)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize('value', ['', 'a b', 'a#b', 'a"b', "a'b", 'a\\b', 'a\nb', 'a\tb', 'a\x00b'])
def test_batch_token_rejects_what_ip_batch_would_split_or_cut(value):
    with pytest.raises(ValueError, match='cannot be passed to ip'):
        iproute.batch_token(value)


def test_validators():
    assert iproute.valid_ifname('cali0123456789a') and not iproute.valid_ifname('cali0123456789ab')
    assert not iproute.valid_ifname('a/b') and not iproute.valid_ifname('..')
    assert iproute.valid_netns_name('calico-web-1') and not iproute.valid_netns_name('a/b')
    assert iproute.valid_netns_path('/proc/1/ns/net') and not iproute.valid_netns_path('/run/netns/../x')
    assert not iproute.valid_netns_path('relative') and not iproute.valid_netns_path('/a b')
    assert iproute.normalize_table(254) == 'main' and iproute.normalize_table('100') == '100'
    assert iproute.normalize_table(None) == 'main' and iproute.normalize_table('local') == 'local'
    for bad in ('all', '0', 'a b', '4294967296'):
        with pytest.raises(ValueError):
            iproute.normalize_table(bad)
    assert iproute.normalize_protocol('80') == 80
    for bad in (0, 3, 4, 256, 'x'):
        with pytest.raises(ValueError):
            iproute.normalize_protocol(bad)
    assert iproute.normalize_mac('EE-EE-EE-EE-EE-EE') == 'ee:ee:ee:ee:ee:ee'
    assert iproute.parse_cidr('172.17.8.2') == '172.17.8.2/32' and iproute.parse_cidr('default') == '0.0.0.0/0'
    with pytest.raises(ValueError, match='has host bits set'):
        iproute.parse_cidr('172.17.8.1/24')


# ------------------------------------------------------------------------------------------ routes
def test_make_route_normalises():
    assert iproute_routes.make_route('172.17.8.0/24', type='blackhole') == Route('172.17.8.0/24', 'blackhole', None,
                                                                                 None, False, 0, None)
    assert iproute_routes.make_route('fd00::/64', type='unreachable').metric == 1024
    route = iproute_routes.make_route('172.17.9.0/24', via='192.168.100.101', dev='eth0', onlink=True, metric='5')
    assert route == Route('172.17.9.0/24', 'unicast', '192.168.100.101', 'eth0', True, 5, None)


def test_route_from_kernel_shapes():
    assert iproute_routes.route_from_kernel({'dst': 'default', 'gateway': '10.0.0.1', 'dev': 'eth0', 'flags': []}) == \
        Route('0.0.0.0/0', 'unicast', '10.0.0.1', 'eth0', False, 0, 'global')
    assert iproute_routes.route_from_kernel({'dst': '172.17.8.2', 'dev': 'cali1', 'scope': 'link', 'flags': []}) == \
        Route('172.17.8.2/32', 'unicast', None, 'cali1', False, 0, 'link')
    assert iproute_routes.route_from_kernel({'type': 'blackhole', 'dst': 'fd00::/64', 'dev': 'lo', 'metric': 1024,
                                             'flags': [], 'pref': 'medium'}, 6) == \
        Route('fd00::/64', 'blackhole', None, None, False, 1024, 'global')
    assert iproute_routes.route_from_kernel({'dst': '172.17.9.0/24', 'gateway': '192.168.1.2', 'dev': 'tun0',
                                             'flags': ['onlink']}).onlink is True
    assert iproute_routes.route_from_kernel({'dst': 'default', 'via': {'family': 'inet6', 'host': 'fe80::1'},
                                             'dev': 'eth0', 'flags': []}).via == 'fe80::1'


def test_route_matches_ignores_unspecified_dev_and_linkdown():
    want = iproute_routes.make_route('172.17.9.0/24', via='192.168.100.101')
    have = iproute_routes.route_from_kernel({'dst': '172.17.9.0/24', 'gateway': '192.168.100.101', 'dev': 'eth0',
                                             'flags': ['linkdown']})
    assert iproute_routes.route_matches(want, have)
    assert not iproute_routes.route_matches(want._replace(onlink=True, dev='eth0'), have)
    host = Route('172.17.8.2/32', 'unicast', None, 'cali1', False, 0, 'link')
    assert iproute_routes.route_matches(host, iproute_routes.route_from_kernel({'dst': '172.17.8.2', 'dev': 'cali1',
                                                                                'scope': 'link'}))
    assert not iproute_routes.route_matches(host, iproute_routes.route_from_kernel({'dst': '172.17.8.2', 'dev': 'cali2',
                                                                                    'scope': 'link'}))


def test_route_matches_ipv6_has_no_scope():
    """ip prints no scope for IPv6 routes: a /128 dev route (implied scope link for IPv4) still matches."""
    current = iproute_routes.route_from_kernel({'dst': '2001:db8::2', 'dev': 'cali1', 'metric': 1024, 'flags': []}, 6)
    desired = iproute_routes.make_route('2001:db8::2/128', dev='cali1')
    assert current.scope == 'global' and desired.scope is None
    assert iproute_routes.route_matches(desired, current)
    assert iproute_routes.plan_routes([desired], [current]) == ([], [], [])
    # IPv4 keeps comparing the scope
    v4 = iproute_routes.route_from_kernel({'dst': '172.17.8.2', 'dev': 'cali1', 'flags': []}, 4)
    assert not iproute_routes.route_matches(iproute_routes.make_route('172.17.8.2/32', dev='cali1'), v4)


def test_eui64_link_local():
    assert iproute.eui64_link_local('ee:ee:ee:ee:ee:ee') == iproute.CALICO_GATEWAY6 == 'fe80::ecee:eeff:feee:eeee'
    assert iproute.eui64_link_local('52:54:00:12:34:56') == 'fe80::5054:ff:fe12:3456'
    with pytest.raises(ValueError):
        iproute.eui64_link_local('01:00:5e:00:00:01')


def test_plan_routes():
    block = iproute_routes.make_route('172.17.8.0/24', type='blackhole')
    remote = iproute_routes.make_route('172.17.9.0/24', via='10.0.0.2')
    stale = Route('172.17.7.0/24', 'blackhole', None, None, False, 0, 'global')
    wrong = Route('172.17.9.0/24', 'unicast', '10.0.0.3', 'eth0', False, 0, 'global')
    same = Route('172.17.8.0/24', 'blackhole', None, None, False, 0, 'global')
    add, replace, delete = iproute_routes.plan_routes([block, remote], [stale, wrong, same])
    assert (add, replace, delete) == ([], [remote], [stale])
    add, replace, delete = iproute_routes.plan_routes([block], [])
    assert (add, replace, delete) == ([block], [], [])
    # two current routes on one key (ip route append): both go, then a plain add
    dup1 = Route('172.17.9.0/24', 'unicast', '10.0.0.4', 'eth0', False, 0, 'global')
    add, replace, delete = iproute_routes.plan_routes([remote], [wrong, dup1])
    assert (add, replace, delete) == ([remote], [], [wrong, dup1])
    # a duplicate next to a match is deleted, the match kept
    ok = Route('172.17.9.0/24', 'unicast', '10.0.0.2', 'eth0', False, 0, 'global')
    assert iproute_routes.plan_routes([remote], [ok, dup1]) == ([], [], [dup1])
    with pytest.raises(ValueError, match='duplicate route 172.17.8.0/24'):
        iproute_routes.plan_routes([block, block], [])


def test_route_batch_order_frees_keys_first_and_removes_last():
    block = iproute_routes.make_route('172.17.8.0/24', type='blackhole')
    remote = iproute_routes.make_route('172.17.9.0/24', via='10.0.0.2')
    dup1 = Route('172.17.9.0/24', 'unicast', '10.0.0.3', 'eth0', False, 0, 'global')
    dup2 = Route('172.17.9.0/24', 'unicast', '10.0.0.4', 'eth0', False, 0, 'global')
    stale = Route('172.17.7.0/24', 'blackhole', None, None, False, 0, 'global')
    lines = iproute_routes.route_batch_lines([remote], [block], [stale, dup1, dup2], 80)
    assert [' '.join(line.split()[1:3]) for line in lines] == [
        'del 172.17.9.0/24', 'del 172.17.9.0/24', 'add 172.17.9.0/24', 'replace blackhole', 'del blackhole']


def test_batch_without_force_reports_where_it_stopped():
    stderr = 'RTNETLINK answers: File exists\nCommand failed -:2\n'
    rec = Recorder(rc=1, stderr=stderr)
    with pytest.raises(iproute.IprouteError) as info:
        iproute.IpCommand(runner=rec).batch(['route add a', 'route add b', 'route del c'], force=False)
    assert rec.calls[0][0] == ['ip', '-batch', '-']
    assert info.value.msg == 'ip stopped at line 2 of 3: "route add b": RTNETLINK answers: File exists'


def test_route_commands_carry_protocol_and_table():
    block = iproute_routes.make_route('172.17.8.0/24', type='blackhole')
    assert iproute_routes.route_command('add', block, 80) == \
        'route add blackhole 172.17.8.0/24 metric 0 proto 80 table main'
    host = Route('172.17.8.2/32', 'unicast', None, 'cali1', False, 0, 'link')
    assert iproute_routes.route_command('replace', host, 80, '100') == \
        'route replace 172.17.8.2/32 dev cali1 scope link metric 0 proto 80 table 100'
    onlink = iproute_routes.make_route('172.17.9.0/24', via='10.0.0.2', dev='tun0', onlink=True)
    assert iproute_routes.route_command('del', onlink, 80) == \
        'route del 172.17.9.0/24 via 10.0.0.2 dev tun0 metric 0 proto 80 table main'
    assert iproute_routes.format_route(onlink) == '172.17.9.0/24 via 10.0.0.2 dev tun0 onlink'
    assert iproute_routes.format_route(iproute_routes.make_route('fd00::/64', type='blackhole', metric=5)) == \
        'blackhole fd00::/64 metric 5'


def test_reconcile_routes_reads_per_family_and_writes_once():
    v4 = json.dumps([{'type': 'blackhole', 'dst': '172.17.7.0/24', 'flags': []},
                     {'dst': '172.17.8.2', 'dev': 'cali1', 'scope': 'link', 'flags': []}])
    rec = Recorder({('-j', '-4', 'route', 'show', 'table', 'main', 'proto', '80'): v4,
                    ('-j', '-6', 'route', 'show', 'table', 'main', 'proto', '80'): '[]',
                    ('-force', '-batch', '-'): ''})
    ip = iproute.IpCommand(ip_bin='ip', runner=rec)
    block = iproute_routes.make_route('172.17.8.0/24', type='blackhole')
    result = iproute_routes.reconcile_routes(ip, [block], include=lambda r: not (r.dev or '').startswith('cali'),
                                             families=(4, 6))
    assert result['changed'] is True
    assert result['add'] == ['blackhole 172.17.8.0/24'] and result['delete'] == ['blackhole 172.17.7.0/24']
    assert result['before'] == ['blackhole 172.17.7.0/24'] and result['after'] == ['blackhole 172.17.8.0/24']
    writes = [call for call in rec.calls if '-batch' in call[0]]
    assert len(writes) == 1 and writes[0][0] == ['ip', '-batch', '-']
    assert writes[0][1] == ('route add blackhole 172.17.8.0/24 metric 0 proto 80 table main\n'
                            'route del blackhole 172.17.7.0/24 metric 0 proto 80 table main\n')
    # check mode: same answer, no write
    rec.calls.clear()
    result = iproute_routes.reconcile_routes(ip, [block], include=lambda r: not (r.dev or '').startswith('cali'),
                                             families=(4, 6), check_mode=True)
    assert result['changed'] and not [call for call in rec.calls if '-batch' in call[0]]


def test_reconcile_routes_without_change_does_not_write():
    rec = Recorder({('route', 'show', 'table', 'main', 'proto', '80'): json.dumps(
        [{'type': 'blackhole', 'dst': '172.17.8.0/24', 'flags': []}])})
    ip = iproute.IpCommand(ip_bin='ip', runner=rec)
    result = iproute_routes.reconcile_routes(ip, [iproute_routes.make_route('172.17.8.0/24', type='blackhole')],
                                             netns='ns1')
    assert result['changed'] is False and result['commands'] == []
    assert rec.calls == [(['ip', '-n', 'ns1', '-j', '-4', 'route', 'show', 'table', 'main', 'proto', '80'], None)]


# ------------------------------------------------------------------------------------------ running ip
def test_prefix_for_namespaces():
    ip = iproute.IpCommand(ip_bin='/sbin/ip', nsenter_bin='/usr/bin/nsenter', runner=Recorder())
    assert ip.prefix() == ['/sbin/ip']
    assert ip.prefix('web') == ['/sbin/ip', '-n', 'web']
    assert ip.prefix('/run/netns/web') == ['/sbin/ip', '-n', 'web']
    assert ip.prefix('/proc/42/ns/net') == ['/usr/bin/nsenter', '--net=/proc/42/ns/net', '/sbin/ip']


def test_batch_reports_every_failed_line():
    stderr = ('Cannot find device "nope"\nCommand failed -:1\nRTNETLINK answers: File exists\n'
              'Command failed -:3\n')
    ip = iproute.IpCommand(runner=Recorder(rc=1, stderr=stderr))
    lines = ['route add 1.2.3.4 dev nope', 'route add blackhole 5.0.0.0/8', 'route add blackhole 5.0.0.0/8']
    with pytest.raises(iproute.IprouteError) as info:
        ip.batch(lines, netns='ns1')
    err = info.value
    assert err.failures == [{'line': 1, 'command': lines[0], 'error': 'Cannot find device "nope"'},
                            {'line': 3, 'command': lines[2], 'error': 'RTNETLINK answers: File exists'}]
    assert err.msg == '2 of 3 ip commands failed; first: "route add 1.2.3.4 dev nope": Cannot find device "nope"'
    assert err.argv == ['ip', '-n', 'ns1', '-force', '-batch', '-']
    assert err.to_dict()['failures'] == err.failures
    assert iproute.IpCommand(runner=Recorder()).batch([]) == 0


def test_run_failure_and_json_stream():
    ip = iproute.IpCommand(runner=Recorder(rc=255, stderr='Cannot open network namespace "x"\n'))
    with pytest.raises(iproute.IprouteError, match='Cannot open network namespace'):
        ip.json(['link', 'show'], netns='x')
    assert iproute.parse_json_stream('[{"a":1}]\n[]\n\n[{"b":2}]\n') == [[{'a': 1}], [], [{'b': 2}]]
    assert iproute.parse_json_stream('') == []
    rec = Recorder({('-j', '-batch', '-'): '[]\n[]\n'})
    assert iproute.IpCommand(runner=rec).json_batch(['addr show', 'route show']) == [[], []]
    assert rec.calls[0][1] == 'addr show\nroute show\n'
    with pytest.raises(iproute.IprouteError, match='returned 2 documents for 3 commands'):
        iproute.IpCommand(runner=rec).json_batch(['a', 'b', 'c'])


def test_map_keeps_order_and_counts_calls():
    rec = Recorder({('link', 'show'): '[]'})
    ip = iproute.IpCommand(runner=rec, workers=4)
    assert ip.map(lambda ns: (ns, ip.json(['link', 'show'], netns=ns)), ['a', 'b', 'c']) == \
        [('a', []), ('b', []), ('c', [])]
    assert ip.calls == 3


def test_subprocess_runner_uses_argv_and_stdin():
    rc, out, err = iproute.run_process([sys.executable, '-c', 'import sys; print(sys.stdin.read().upper())'],
                                       'hi; rm -rf /\n')
    assert (rc, out) == (0, 'HI; RM -RF /\n\n')


# ------------------------------------------------------------------------------------------ sysctl
def test_sysctl_helpers(tmp_path):
    (tmp_path / 'net/ipv4/conf/eth0.100').mkdir(parents=True)
    (tmp_path / 'net/ipv4/ip_forward').write_text('0\n')
    (tmp_path / 'net/ipv4/conf/eth0.100/forwarding').write_text('0\n')
    root = str(tmp_path)
    assert procfs.sysctl_path('net.ipv4.ip_forward', root) == root + '/net/ipv4/ip_forward'
    assert procfs.sysctl_path('net/ipv4/conf/eth0.100/forwarding', root) == \
        root + '/net/ipv4/conf/eth0.100/forwarding'
    assert procfs.read_sysctl('net.ipv4.ip_forward', root) == '0'
    procfs.write_sysctl('net.ipv4.ip_forward', True, root)
    assert (tmp_path / 'net/ipv4/ip_forward').read_text() == '1'
    procfs.write_sysctl('net/ipv4/conf/eth0.100/forwarding', 1, root)
    assert procfs.read_sysctl('net/ipv4/conf/eth0.100/forwarding', root) == '1'
    assert procfs.read_sysctl('net.ipv4.nope', root) is None
    assert procfs.normalize_sysctl_value('32768\t60999\n') == '32768 60999'
    assert procfs.sysctl_key('net/ipv4/ip_forward') == 'net.ipv4.ip_forward'
    assert procfs.sysctl_key('net/ipv4/conf/eth0.100/rp_filter') == 'net/ipv4/conf/eth0.100/rp_filter'
    for bad in ('', 'net..x', '../etc', 'net/../x', 'a b'):
        with pytest.raises(ValueError, match='invalid sysctl name'):
            procfs.sysctl_path(bad, root)


# ------------------------------------------------------------------------------------------ namespaces
def test_netns_state(tmp_path):
    (tmp_path / 'plain').write_text('')
    dev = os.stat(tmp_path / 'plain').st_dev
    assert procfs.netns_state('missing', str(tmp_path)) == 'absent'
    assert procfs.netns_state('plain', str(tmp_path), nsfs_dev=dev + 1) == 'broken'
    assert procfs.netns_state('plain', str(tmp_path), nsfs_dev=dev) == 'present'


def test_netns_dir_is_slave(tmp_path):
    root_ns = tmp_path / 'root'
    root_ns.write_text('27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n'
                       '42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw\n')
    exec_ns = tmp_path / 'exec'
    exec_ns.write_text('46 45 254:0 / / rw,relatime - ext4 /dev/vda rw\n'
                       '66 46 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw\n')
    remade = tmp_path / 'remade'
    remade.write_text(exec_ns.read_text() + '70 66 0:4 /run/netns /run/netns rw shared:9 master:1 - tmpfs x rw\n')
    assert procfs.netns_dir_is_slave(mountinfo=str(root_ns)) is False
    assert procfs.netns_dir_is_slave(mountinfo=str(exec_ns)) is True
    assert procfs.netns_dir_is_slave(mountinfo=str(remade)) is True
    assert procfs.netns_dir_is_slave(mountinfo=str(tmp_path / 'none')) is False
