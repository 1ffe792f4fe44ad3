"""Unit tests of netfleet.calico.calico_node_state: the parts on the FakeKernel, BIRD through a fake driver."""

from __future__ import annotations

import json
import os

import pytest
from calico_fake_kernel import FakeKernel, FakeTunnelHost, run_module

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.modules import calico_node_state as mod

BLOCK = [{'dest': '172.17.8.0/24', 'type': 'blackhole'}]
EPS = [{'name': 'web-1', 'ip': '172.17.8.2'}, {'name': 'web-2', 'ip': '172.17.8.3'}]
CONF = 'router id 192.168.100.100;\nprotocol device {}\n'


class FakeBird:
    """Records what the module asks of BIRD; ``rejects`` makes `bird -p` fail on files containing it."""

    def __init__(self, module, params, world):
        self.m, self.p, self.w = module, params, world

    def running_pid(self):
        return self.w['pid']

    def validate(self, path=None, shown_as=None):
        path = path or self.p['config']
        with open(path) as handle:
            text = handle.read()
        self.w['validated'].append(text)
        if self.w['rejects'] and self.w['rejects'] in text:
            self.m.fail_json(msg='BIRD rejects %s: syntax error' % (shown_as or path))

    def start(self):
        self.w['actions'].append('start')
        self.w['pid'] = 4242

    def reload(self):
        with open(self.p['config']) as handle:
            self.w['actions'].append(('reload', handle.read()))
        return 'Reconfigured'

    def wait_established(self, names, timeout):
        self.w['actions'].append(('wait', tuple(names)))
        return sorted(self.w['never_up'] & set(names))

    def wait_covered(self, old, timeout):
        self.w['actions'].append(('covered', tuple(old)))
        return self.w['uncovered']


@pytest.fixture
def world(tmp_path, monkeypatch):
    fake = FakeKernel(tmp_path)
    proc = tmp_path / 'proc_sys'
    (proc / 'net/ipv4').mkdir(parents=True, exist_ok=True)
    (proc / 'net/ipv4/ip_forward').write_text('0\n')
    state = {'kernel': fake, 'pid': None, 'validated': [], 'actions': [], 'rejects': None, 'never_up': set(),
             'uncovered': [], 'dir': tmp_path / 'bird'}
    monkeypatch.setattr(mod, 'SYSCTL_ROOT', str(proc))
    monkeypatch.setattr(mod, 'make_ip', lambda module: iproute.IpCommand(
        ip_bin='/sbin/ip', nsenter_bin='/usr/bin/nsenter', runner=fake.runner, workers=1))
    monkeypatch.setattr(mod, 'make_reconciler', lambda ip, settings: mod.WorkloadReconciler(
        ip, settings, sysctl_root=fake.sysctl_root, run_dir=fake.run_dir, netns_state=fake.netns_state,
        path_exists=fake.path_exists, netns_dir_is_slave=lambda: False))
    monkeypatch.setattr(mod, 'make_bird', lambda module, params: FakeBird(
        module, dict(params, config=params['config_path']), state))
    state['tunnel_host'] = FakeTunnelHost()
    monkeypatch.setattr(mod, 'make_tunnel_runner', lambda module: state['tunnel_host'])
    monkeypatch.setattr(mod.AnsibleModule, 'get_bin_path', lambda self, name, required=False, opt_dirs=None: name)
    return state


def args(world, config=CONF, **bird):
    return dict(sysctls={'net.ipv4.ip_forward': 1}, routes=BLOCK, endpoints=EPS, bird=dict(
        config=config, config_path=str(world['dir'] / 'bird.conf'), manager='pidfile',
        pidfile=str(world['dir'] / 'bird.pid'), socket=str(world['dir'] / 'bird.ctl'), **bird))


def run(monkeypatch, params, check_mode=False, diff=False):
    return run_module(monkeypatch, mod, params, check_mode=check_mode, diff=diff)


def test_converges_every_part_then_changes_nothing(world, monkeypatch):
    result = run(monkeypatch, args(world), diff=True)
    assert result['changed'] is True, result
    assert result['changed_parts'] == ['sysctl', 'routes', 'workloads', 'bird']
    assert result['bird']['action'] == 'start' and world['actions'] == ['start']
    conf = world['dir'] / 'bird.conf'
    assert conf.read_text() == CONF and oct(os.stat(conf).st_mode & 0o777) == '0o640'
    assert world['validated'][0] == CONF  # checked by `bird -p` before it was installed
    assert sorted(result['workloads']['created']) == ['web-1', 'web-2']
    assert any(r['type'] == 'blackhole' and r['dst'] == '172.17.8.0/24' for r in world['kernel'].host.routes)
    headers = [d.get('before_header') for d in result['diff']]
    assert str(conf) in headers and 'sysctl (running)' in headers

    again = run(monkeypatch, args(world))
    assert again['changed'] is False and again['changed_parts'] == []
    assert again['bird']['action'] == 'none' and world['actions'] == ['start']


def test_changed_config_is_reloaded_not_restarted(world, monkeypatch):
    run(monkeypatch, args(world))
    new = CONF + 'protocol static s { ipv4; }\n'
    result = run(monkeypatch, args(world, config=new))
    assert result['changed_parts'] == ['bird'] and result['bird']['action'] == 'reload'
    assert world['actions'] == ['start', ('reload', new)]


def test_rejected_config_never_replaces_the_installed_one(world, monkeypatch):
    run(monkeypatch, args(world))
    world['rejects'] = 'broken'
    result = run(monkeypatch, args(world, config=CONF + 'broken;\n'))
    assert result['failed'] is True and 'BIRD rejects the new' in result['msg']
    assert (world['dir'] / 'bird.conf').read_text() == CONF
    assert world['actions'] == ['start']
    assert [p.name for p in world['dir'].iterdir() if p.name.startswith('.')] == []  # no scratch file left


def test_rejected_config_on_a_fresh_host_changes_no_part(world, monkeypatch):
    world['rejects'] = 'broken'
    result = run(monkeypatch, args(world, config=CONF + 'broken;\n'))
    assert result['failed'] is True and 'BIRD rejects the new' in result['msg']
    assert not (world['dir'] / 'bird.conf').exists() and world['actions'] == []
    assert not any(r['type'] == 'blackhole' for r in world['kernel'].host.routes)  # no block, no workload
    assert not [n for n in world['kernel'].host.links if n.startswith('cali')]


def test_check_mode_validates_and_changes_nothing(world, monkeypatch):
    result = run(monkeypatch, args(world), check_mode=True)
    assert result['changed'] is True and result['bird']['action'] == 'start'
    assert world['validated'] == [CONF] and world['actions'] == []
    assert not (world['dir'] / 'bird.conf').exists()
    assert (world['kernel'].host.routes and
            not any(r['type'] == 'blackhole' for r in world['kernel'].host.routes))


def test_make_before_break_runs_both_sessions_until_the_new_are_up(world, monkeypatch):
    run(monkeypatch, args(world))
    both, final = CONF + '# old and new\n', CONF + '# new only\n'
    result = run(monkeypatch, args(world, config=final, transition_config=both, wait_for=['RR_10_0_0_1']))
    assert result['bird']['transition'] is True
    assert world['actions'][1:] == [('reload', both), ('wait', ('RR_10_0_0_1',)), ('covered', ()), ('reload', final)]


def test_make_before_break_can_stop_with_both_sessions_for_the_batch(world, monkeypatch):
    """transition_only: the host keeps old and new sessions; the next run (after every host of the batch got
    there) drops the old ones without a second wait for anything but what is still missing."""
    run(monkeypatch, args(world))
    both, final = CONF + '# old and new\n', CONF + '# new only\n'
    step = dict(config=final, transition_config=both, wait_for=['Global_10_255_0_1'], lingering=['Global_10_255_0_21'])
    result = run(monkeypatch, args(world, transition_only=True, **step))
    assert result['changed'] is True and result['bird']['transition'] is True
    assert result['bird']['old_sessions_kept'] is True     # what the task that drops them runs on
    assert (world['dir'] / 'bird.conf').read_text() == both
    wait, covered = ('wait', ('Global_10_255_0_1',)), ('covered', ('Global_10_255_0_21',))
    assert world['actions'][1:] == [('reload', both), wait, covered]
    world['actions'].clear()
    result = run(monkeypatch, args(world, **step))
    assert world['actions'] == [wait, covered, ('reload', final)]
    assert 'old_sessions_kept' not in result['bird']
    assert (world['dir'] / 'bird.conf').read_text() == final


def test_make_before_break_warns_when_the_new_sessions_never_bring_a_prefix(world, monkeypatch):
    run(monkeypatch, args(world))
    world['uncovered'] = ['172.17.48.0/24']
    result = run(monkeypatch, args(world, config=CONF + '# new\n', transition_config=CONF + '# both\n',
                                   wait_for=['Global_10_255_0_1'], lingering=['Global_10_255_0_21'], wait_timeout=0))
    assert result['bird']['uncovered'] == ['172.17.48.0/24']
    assert any('172.17.48.0/24' in w and 'old sessions go anyway' in w for w in result['bird']['warnings']), result
    assert (world['dir'] / 'bird.conf').read_text() == CONF + '# new\n'


def test_make_before_break_stops_when_new_sessions_stay_down(world, monkeypatch):
    run(monkeypatch, args(world))
    world['never_up'] = {'RR_10_0_0_1'}
    both = CONF + '# old and new\n'
    result = run(monkeypatch, args(world, config=CONF + '# new\n', transition_config=both,
                                   wait_for=['RR_10_0_0_1'], wait_timeout=0))
    assert result['failed'] is True and 'RR_10_0_0_1' in result['msg'] and 'old sessions' in result['msg']
    assert (world['dir'] / 'bird.conf').read_text() == both  # the old sessions are still configured


def test_secrets_file_is_private_and_never_returned(world, monkeypatch):
    secret = 'define CALICO_BGP_PASSWORD = "s3cret";\n'
    path = world['dir'] / 'bird-secrets.conf'
    result = run(monkeypatch, args(world, secrets=secret, secrets_path=str(path)), diff=True)
    assert path.read_text() == secret and oct(os.stat(path).st_mode & 0o777) == '0o640'
    assert 's3cret' not in repr(result)
    world['actions'].clear()
    rotated = run(monkeypatch, args(world, secrets=secret.replace('s3cret', 'n3w'), secrets_path=str(path)))
    assert rotated['bird']['secrets_changed'] is True and rotated['bird']['action'] == 'reload'


def test_parts_left_out_are_not_touched(world, monkeypatch):
    result = run(monkeypatch, {'sysctls': {'net.ipv4.ip_forward': 1}})
    assert result['changed_parts'] == ['sysctl'] and world['kernel'].calls == []
    assert 'bird' not in result and 'workloads' not in result


def test_bad_part_input_names_the_part(world, monkeypatch):
    params = args(world)
    params['endpoints'] = [{'name': 'a', 'ip': '172.17.8.2'}, {'name': 'b', 'ip': '172.17.8.2'}]
    result = run(monkeypatch, params)
    assert result['failed'] is True and result['msg'].startswith('endpoints: ')


TUNNEL = {'local': '192.168.100.100', 'allow_from': ['192.168.200.101']}


def veth_mtus(world):
    return sorted({link['mtu'] for name, link in world['kernel'].host.links.items() if name.startswith('cali')})


def test_tunnel_comes_first_and_workloads_take_its_mtu(world, monkeypatch):
    result = run(monkeypatch, dict(args(world), tunnel=TUNNEL), diff=True)
    assert result['changed_parts'] == ['sysctl', 'tunnel', 'routes', 'workloads', 'bird'], result
    host = world['tunnel_host']
    assert host.links['tun0']['data']['local'] == '192.168.100.100' and host.links['tun0']['mtu'] == 1480
    assert 'cali-INPUT-ipip' in host.chains and result['tunnel']['workload_mtu'] == 1480
    assert veth_mtus(world) == [1480]
    headers = [d.get('before_header') for d in result['diff']]
    assert 'link tun0' in headers and 'iptables filter cali-INPUT-ipip' in headers

    again = run(monkeypatch, dict(args(world), tunnel=TUNNEL))
    assert again['changed'] is False, again


def test_tunnel_removed_gives_workloads_the_parent_mtu_back(world, monkeypatch):
    run(monkeypatch, dict(args(world), tunnel=TUNNEL))
    result = run(monkeypatch, dict(args(world), tunnel=dict(TUNNEL, state='absent')))
    assert result['changed_parts'] == ['tunnel', 'workloads'], result
    assert 'tun0' not in world['tunnel_host'].links and 'cali-INPUT-ipip' not in world['tunnel_host'].chains
    assert veth_mtus(world) == [1500]


def test_tunnel_mtu_left_to_the_caller(world, monkeypatch):
    run(monkeypatch, dict(args(world), mtu=1400, tunnel=dict(TUNNEL, workload_mtu=False)))
    assert veth_mtus(world) == [1400] and world['tunnel_host'].links['tun0']['mtu'] == 1480


def test_tunnel_check_mode_plans_the_mtu_and_changes_nothing(world, monkeypatch):
    result = run(monkeypatch, dict(args(world), tunnel=TUNNEL), check_mode=True)
    assert result['changed'] is True and result['tunnel']['workload_mtu'] == 1480
    assert 'tun0' not in world['tunnel_host'].links and veth_mtus(world) == []


def test_tunnel_error_is_one_line_before_later_parts(world, monkeypatch):
    result = run(monkeypatch, dict(args(world), tunnel=dict(TUNNEL, local='10.9.9.9')))
    assert result['failed'] is True and result['msg'].startswith('tunnel: node IP 10.9.9.9 is not on any interface')
    assert result['changed_parts'] == ['sysctl'] and veth_mtus(world) == [] and world['actions'] == []


def test_boot_part_installs_the_restore_and_records_the_kernel_parts(world, monkeypatch, tmp_path):
    boot = {'state_dir': str(tmp_path / 'boot'), 'lib_dir': str(tmp_path / 'lib'), 'service_manager': 'pidfile',
            'unit_dir': str(tmp_path / 'units')}
    params = dict(args(world), boot=boot)
    check = run(monkeypatch, params, check_mode=True)
    assert 'boot' in check['changed_parts'] and not (tmp_path / 'lib').exists()  # check mode records nothing
    assert not (tmp_path / 'boot').exists()
    first = run(monkeypatch, params)
    assert 'boot' in first['changed_parts']
    record = tmp_path / 'boot' / 'node.json'
    assert str(record) in first['boot']['files_changed']
    node = json.loads(record.read_text())['node']
    assert [(r['dest'], r['type']) for r in node['routes']] == [(r['dest'], r['type']) for r in BLOCK]
    assert [e['name'] for e in node['endpoints']] == [e['name'] for e in EPS] and 'bird' not in node
    assert (tmp_path / 'lib' / 'netfleet-calico-restore.py').exists() and not (tmp_path / 'units').exists()
    again = run(monkeypatch, params)
    assert again['changed'] is False and 'boot' not in again['changed_parts']
    gone = run(monkeypatch, dict(params, boot=dict(boot, state='absent')))
    assert gone['changed_parts'] == ['boot'] and not record.exists() and not (tmp_path / 'lib').exists()


def test_a_rejected_bird_config_leaves_the_boot_part_alone(world, monkeypatch, tmp_path):
    world['rejects'] = 'broken'
    boot = {'state_dir': str(tmp_path / 'boot'), 'lib_dir': str(tmp_path / 'lib'), 'service_manager': 'pidfile'}
    result = run(monkeypatch, dict(args(world, config=CONF + 'broken;\n'), boot=boot))
    assert result['failed'] and not (tmp_path / 'lib').exists() and not (tmp_path / 'boot').exists()
