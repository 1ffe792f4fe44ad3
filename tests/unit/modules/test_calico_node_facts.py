"""Unit tests of netfleet.calico.calico_node_facts: the shell command that reads a host (plugin_utils/node_facts.py),
run for real by /bin/sh against fake tools (an ``ip`` answering from the in-memory FakeKernel, ``bird``,
``iptables``... printing fixed text), the parsing of its answer, and the action plugin's host checks."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleConnectionFailure
from calico_fake_kernel import FakeKernel

from ansible_collections.netfleet.calico.plugins.action import calico_node_facts as action
from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.plugin_utils import node_facts


class FakeHost:
    """A directory of fake tools on PATH: ``ip`` answers the batch from the FakeKernel (prepared before the
    script runs), the others print what ``tools`` holds for them (a missing key: the tool is not installed)."""

    def __init__(self, tmp_path, kernel):
        self.bin = tmp_path / 'bin'
        self.bin.mkdir()
        self.kernel = kernel
        self.tools = {'bird': 'BIRD version 2.0.12\n', 'iptables': 'iptables v1.8.9 (nf_tables)\n'}
        self.ip = True

    def _tool(self, name, text, rc=0):
        path = self.bin / name
        (self.bin / (name + '.out')).write_text(text)
        path.write_text('#!/bin/sh\n/bin/cat "%s.out"\nexit %d\n' % (path, rc))
        path.chmod(0o755)

    def run(self, command):
        """Run ``command`` as a host's shell would (``/bin/sh -c``) with only the fake tools on PATH."""
        for path in self.bin.iterdir():
            path.unlink()
        if self.ip:
            protocol = int(command.split('proto ', 1)[1].split('\\', 1)[0])
            rc, out, err = self.kernel.runner(['/sbin/ip', '-j', '-batch', '-'],
                                              ''.join(q + '\n' for q in node_facts.ip_queries(protocol)))
            self._tool('ip', out, rc)
            (self.bin / 'ip').write_text('#!/bin/sh\n/bin/cat >/dev/null\n/bin/cat "%s/ip.out"\nprintf %%s %s >&2\n'
                                         'exit %d\n' % (self.bin, _sq(err), rc))
        for name, text in self.tools.items():
            if name.startswith('/'):
                continue
            self._tool(name, text)
        proc = subprocess.run(['/bin/sh', '-c', command], capture_output=True, text=True, check=False,
                              env={'PATH': str(self.bin)})
        return {'rc': proc.returncode, 'stdout': proc.stdout, 'stderr': proc.stderr}


def _sq(text):
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(node_facts, 'SBIN_PATH', '')
    return FakeKernel(tmp_path)


@pytest.fixture
def host(tmp_path, kernel):
    return FakeHost(tmp_path, kernel)


def read(host, protocol=80, **params):
    marker, command = node_facts.script(protocol, **params)
    answer = host.run(command)
    keep = {k: v for k, v in params.items() if k in ('bird_socket', 'cni_data_dir', 'prefix')}
    return node_facts.parse(marker, answer['stdout'], protocol, **keep)


def add_endpoint(kernel, name, ip, owned=True, route=True):
    ifname = iproute.workload_ifname(name)
    kernel.host.links[ifname] = {'ifname': ifname, 'ifindex': 200 + len(kernel.host.links), 'flags': ['UP'],
                                 'mtu': 1500, 'address': 'ee:ee:ee:ee:ee:ee', 'kind': 'veth', 'addrs': [],
                                 'group': 'default',
                                 'ifalias': iproute.encode_owner_alias(name, 'calico-' + name, owned)}
    if route:
        kernel.add_route(dst=ip + '/32', dev=ifname, proto='80')
    return ifname


def test_facts(kernel, host):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    kernel.add_route(dst='172.17.200.0/26', rtype='blackhole', proto='80')
    kernel.add_route(dst='172.17.9.0/24', rtype='blackhole', proto='bird')      # not ours
    web = add_endpoint(kernel, 'web-1', '172.17.8.2')
    add_endpoint(kernel, 'idle', '172.17.8.3', owned=False, route=False)
    kernel.host.links['cali_foreign01'] = dict(kernel.host.links[web], ifname='cali_foreign01', ifindex=300,
                                               ifalias='not ours')
    assert read(host) == {
        'blocks': ['172.17.8.0/24', '172.17.200.0/26'],
        'blocks6': [],
        'workloads6': {},
        'addresses6': [],
        'ipip_devices': [],
        'cali_chains': {},
        'cali_chains6': {},
        'workloads': {'web-1': '172.17.8.2'},
        'endpoints': [{'name': 'idle', 'ifname': iproute.workload_ifname('idle'), 'ip': None, 'ip6': None,
                       'netns': 'calico-idle', 'owned_netns': False},
                      {'name': 'web-1', 'ifname': web, 'ip': '172.17.8.2', 'ip6': None, 'netns': 'calico-web-1',
                       'owned_netns': True}],
        'addresses': [{'ifname': 'lo', 'address': '127.0.0.1', 'prefixlen': 8},
                      {'ifname': 'eth1', 'address': '192.168.100.100', 'prefixlen': 24}],
        'default_route': True,
        'bird_version': '2.0.12',
        'iptables_backend': 'nft',
        'iptables_rules': {'nft': None, 'legacy': None},
    }


def test_empty_host(kernel, host):
    kernel.host.routes = []
    host.tools.clear()
    facts = read(host)
    assert facts['blocks'] == [] and facts['workloads'] == {} and facts['default_route'] is False
    assert facts['bird_version'] is None and facts['iptables_backend'] is None


def test_protocol_is_the_one_read(kernel, host):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='99')
    assert read(host, protocol=99)['blocks'] == ['172.17.8.0/24']
    assert read(host, protocol=80)['blocks'] == []


def test_no_ip_or_a_failing_ip_is_an_error(kernel, host):
    host.ip = False
    with pytest.raises(node_facts.NodeFactsError, match=r'ip \(iproute2\) is not installed'):
        read(host)
    host.ip = True
    kernel.runner = lambda argv, data=None, timeout=None: (1, '', 'Option "-j" is unknown\n')
    with pytest.raises(node_facts.NodeFactsError, match=r'ip -j -batch failed \(rc=1.*Option "-j" is unknown'):
        read(host)
    with pytest.raises(node_facts.NodeFactsError, match='no answer'):
        node_facts.parse('@@m', 'sh: 1: syntax error\n', 80)


@pytest.mark.parametrize('text, expected', [
    ('BIRD version 2.0.12\n', '2.0.12'),
    ('BIRD version v3.0.0-beta\n', 'v3.0.0-beta'),
    ('bird: unknown option\n', None),
])
def test_parse_bird_version(text, expected):
    assert node_facts.parse_bird_version(text) == expected


@pytest.mark.parametrize('text, expected', [
    ('iptables v1.8.9 (nf_tables)\n', 'nft'),
    ('iptables v1.8.9 (legacy)\n', 'legacy'),
    ('iptables v1.6.1\n', 'legacy'),
    ('something else', None),
])
def test_parse_iptables_backend(text, expected):
    assert node_facts.parse_iptables_backend(text) == expected


def test_owned_chains_from_iptables_save():
    save = ('# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:cali-fip-dnat - [0:0]\nCOMMIT\n'
            '*filter\n:INPUT ACCEPT [0:0]\n:cali-INPUT-ipip - [0:0]\n:cali-FORWARD - [0:0]\n:KUBE-x - [0:0]\n'
            '-A INPUT -j cali-INPUT-ipip\nCOMMIT\n')
    assert node_facts.parse_owned_chains(save) == {'nat': ['cali-fip-dnat'],
                                                   'filter': ['cali-FORWARD', 'cali-INPUT-ipip']}
    assert node_facts.parse_owned_chains('') == {}


def test_bird_binary_and_rule_counts(kernel, host, tmp_path):
    old = tmp_path / 'opt' / 'bird'
    old.parent.mkdir()
    old.write_text('#!/bin/sh\nprintf "BIRD version 2.0.8\\n" >&2\n')
    old.chmod(0o755)
    host.tools.update({'iptables-nft-save': '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n',
                       'iptables-legacy-save': '*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n'})
    facts = read(host, bird_binary=str(old))
    assert facts['bird_version'] == '2.0.8'
    assert facts['iptables_rules'] == {'nft': 1, 'legacy': 0}
    assert read(host, bird_binary='/nonexistent/bird')['bird_version'] is None


def test_chains_of_both_backends_and_the_plain_save(kernel, host):
    host.tools.update({'iptables-save': '*nat\n:cali-fip-dnat - [0:0]\nCOMMIT\n',
                       'ip6tables-nft-save': '*filter\n:INPUT ACCEPT [0:0]\n:cali-INPUT - [0:0]\nCOMMIT\n',
                       'ip6tables-legacy-save': '*raw\n:PREROUTING ACCEPT [0:0]\n:cali-PREROUTING - [0:0]\n'
                                                'COMMIT\n'})
    facts = read(host)
    assert facts['cali_chains6'] == {'filter': ['cali-INPUT'], 'raw': ['cali-PREROUTING']}
    # the plain iptables-save stands in only when neither backend's tool is installed
    assert facts['cali_chains'] == {'nat': ['cali-fip-dnat']}
    host.tools['iptables-legacy-save'] = '*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n'
    assert read(host)['cali_chains'] == {}
    for name in ('ip6tables-nft-save', 'ip6tables-legacy-save'):
        del host.tools[name]
    host.tools['ip6tables-save'] = '*filter\n:FORWARD ACCEPT [0:0]\n:cali-FORWARD - [0:0]\nCOMMIT\n'
    assert read(host)['cali_chains6'] == {'filter': ['cali-FORWARD']}


def test_output_that_looks_like_a_marker_or_lacks_a_newline(kernel, host):
    host.tools['iptables'] = 'iptables v1.8.9 (legacy)'            # no newline at the end
    host.tools['iptables-nft-save'] = '@@calico_node_facts begin bird\n-A INPUT -j ACCEPT\n'
    facts = read(host)
    assert facts['iptables_backend'] == 'legacy' and facts['bird_version'] == '2.0.12'
    assert facts['iptables_rules']['nft'] == 1


def test_an_answer_through_a_terminal(kernel, host):
    """ssh -tt (become with sudo) turns every line end into CR LF."""
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    marker, command = node_facts.script(80)
    answer = host.run(command)['stdout'].replace('\n', '\r\n')
    facts = node_facts.parse(marker, answer, 80)
    assert facts['blocks'] == ['172.17.8.0/24'] and facts['bird_version'] == '2.0.12'
    assert facts['iptables_backend'] == 'nft'


def test_cni_attachments(kernel, host, tmp_path):
    store = tmp_path / "it's a store"
    assert read(host, cni_data_dir=str(store))['cni_attachments'] == 0
    (store / 'endpoints').mkdir(parents=True)
    for name in ('a_eth0.json', 'b_eth0.json', 'c_eth0.json.tmp'):
        (store / 'endpoints' / name).write_text('{}')
    assert read(host, cni_data_dir=str(store))['cni_attachments'] == 2
    assert 'cni_attachments' not in read(host)


PROTOCOLS = '''BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
Mesh_10_0_0_2 BGP        ---        up     12:00:00.000  Established
  BGP state:          Established
    Neighbor address: 10.0.0.2
'''


def test_bird_sessions(kernel, host, tmp_path):
    socket = tmp_path / 'bird.ctl'
    assert read(host, bird_socket=str(socket))['bgp'] == {'socket': str(socket), 'bird_running': False,
                                                          'sessions': []}
    socket.write_text('')
    host.tools['birdc'] = PROTOCOLS
    bgp = read(host, bird_socket=str(socket))['bgp']
    assert bgp['bird_running'] is True and [s['name'] for s in bgp['sessions']] == ['Mesh_10_0_0_2']
    host.tools['birdc'] = 'Unable to connect to server control socket\n'
    assert read(host, bird_socket=str(socket))['bgp']['bird_running'] is False
    del host.tools['birdc']
    assert read(host, bird_socket=str(socket))['bgp']['bird_running'] is False


def test_facts_ipv6(kernel, host):
    """IPv6 blocks, /128 workload routes and global addresses are read by the same one ip process."""
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    kernel.add_route(dst='2001:db8:8::/122', rtype='blackhole', proto='80')
    kernel.add_route(dst='2001:db8:9::/122', rtype='blackhole', proto='bird')      # not ours
    kernel.add_route(dst='2001:db8:7::/122', rtype='blackhole', proto='80', table='100')  # not the main table
    dual = add_endpoint(kernel, 'dual', '172.17.8.2')
    kernel.add_route(dst='2001:db8:8::2/128', dev=dual, proto='80')
    six = add_endpoint(kernel, 'six', '172.17.8.3', route=False)
    kernel.add_route(dst='2001:db8:8::3/128', dev=six, proto='80')
    kernel.host.links['eth1']['addrs'] += ['2001:db8:100::100/64', 'fe80::1/64']
    facts = read(host)
    assert facts['blocks'] == ['172.17.8.0/24'] and facts['blocks6'] == ['2001:db8:8::/122']
    assert facts['workloads'] == {'dual': '172.17.8.2'}
    assert facts['workloads6'] == {'dual': '2001:db8:8::2', 'six': '2001:db8:8::3'}
    assert [(e['name'], e['ip'], e['ip6']) for e in facts['endpoints']] == [
        ('dual', '172.17.8.2', '2001:db8:8::2'), ('six', None, '2001:db8:8::3')]
    assert facts['addresses6'] == [{'ifname': 'eth1', 'address': '2001:db8:100::100', 'prefixlen': 64}]
    assert len(kernel.calls) == 1     # one ip process for all kernel state


# ------------------------------------------------------------------------------------------ the action


def run_action(host, args, check_mode=False, unreachable=None):
    task = SimpleNamespace(args=args, async_val=0, check_mode=check_mode, action='netfleet.calico.calico_node_facts',
                           get_name=lambda: 'facts')
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))
    plugin = action.ActionModule(task, connection, None, None, None, None)

    def execute(command, sudoable=True):
        assert sudoable
        if unreachable:
            raise AnsibleConnectionFailure(unreachable)
        return host.run(command)

    plugin._low_level_execute_command = execute
    return plugin.run(task_vars={'inventory_hostname': 'r1h1'})


def test_action_sets_the_fact_and_is_read_only_in_check_mode(kernel, host):
    kernel.add_route(dst='172.17.8.0/24', rtype='blackhole', proto='80')
    result = run_action(host, {})
    assert result['changed'] is False and 'failed' not in result
    assert result['ansible_facts'] == {'calico_node_facts': result['calico_node_facts']}
    assert result['calico_node_facts']['blocks'] == ['172.17.8.0/24']
    assert run_action(host, {}, check_mode=True) == result


def test_action_refuses_bad_parameters(host):
    assert 'invalid interface_prefix' in run_action(host, {'interface_prefix': 'a b'})['msg']
    assert run_action(host, {'protocol': 2})['failed']


@pytest.mark.parametrize('tools, checks, problem', [
    ({'bird': 'BIRD version 2.0.8\n'}, {}, "host 'r1h1': BIRD 2.0.8 is too old (onlink routes need 2.0.12)"),
    ({}, {'install_packages': False}, "host 'r1h1': BIRD is not installed (bird not found)"),
    ({'iptables-nft-save': '-A INPUT -j ACCEPT\n', 'iptables-legacy-save': '-A INPUT -j DROP\n'}, {},
     "has iptables rules in both backends (iptables-nft: 1, iptables-legacy: 1)"),
])
def test_action_host_checks(kernel, host, tools, checks, problem):
    host.tools = dict({'iptables': 'iptables v1.8.9 (nf_tables)\n'}, **tools)
    result = run_action(host, {'host_checks': checks})
    assert result['failed'] and problem in result['msg'] and result['problems'][0] == result['msg']
    assert result['msg'].startswith('netfleet.calico preflight: ') and '\n' not in result['msg']
    assert 'calico_node_facts' in result     # the facts are still returned


def test_action_host_checks_backend_only_when_iptables_are_written_or_chains_are_left(kernel, host):
    host.tools.update({'iptables-nft-save': '-A INPUT -j ACCEPT\n', 'iptables-legacy-save': '-A INPUT -j DROP\n'})
    assert 'failed' not in run_action(host, {'host_checks': {'iptables': False}})
    host.tools['iptables-legacy-save'] = '*filter\n:cali-INPUT - [0:0]\n-A INPUT -j cali-INPUT\nCOMMIT\n'
    assert 'both backends' in run_action(host, {'host_checks': {'iptables': False}})['msg']
    host.tools['iptables-legacy-save'] = '-A INPUT -j DROP\n'
    assert 'both backends' in run_action(host, {'host_checks': {}})['msg']
    assert 'failed' not in run_action(host, {'host_checks': {'iptables_backend': 'nft', 'iptables': False}})


def test_action_unreachable_host_fails_with_one_line_only_when_checked(host):
    result = run_action(host, {'host_checks': {}}, unreachable='ssh: connect to host 10.0.0.9 port 22: timed out')
    assert result['failed'] and "host 'r1h1': is unreachable (ssh: connect to host" in result['msg']
    with pytest.raises(AnsibleConnectionFailure):
        run_action(host, {}, unreachable='timed out')


def test_action_unreadable_host(kernel, host):
    host.ip = False
    result = run_action(host, {'host_checks': {}})
    assert result['failed'] and "host 'r1h1': its facts could not be read (ip (iproute2) is not installed" in \
        result['msg']
    assert 'is not installed on the host: install iproute2' in run_action(host, {})['msg']


def test_the_command_quotes_every_value():
    marker, command = node_facts.script(80, bird_binary='bird; touch /x', birdc_binary="b'c",
                                        bird_socket='/run/a b.ctl', cni_data_dir='/var/$HOME')
    assert "'bird; touch /x' --version" in command and "'/run/a b.ctl'" in command
    assert "'/var/$HOME/endpoints'/*.json" in command and "'b'\"'\"'c'" in command
    assert marker in command and os.sep not in marker
