"""What module calico_cni installs (plugins/module_utils/cni_install.py), in a temporary tree; the chains and
ipsets part (cni_policy.sync) is replaced by a recorder here and tested in test_cni_policy.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from netfleet_imports import assert_closed_under_imports

from ansible_collections.netfleet.calico.plugins.module_utils import cni_install, cni_policy, cni_service, cni_store

PLAN = {'enabled': True, 'block': '172.17.8.0/24', 'static_range': '172.17.8.0/26', 'reserved': ['172.17.8.2'],
        'networks': {'web': {'range': '172.17.8.64/26', 'labels': {'app': 'web'}},
                     'db': {'range': '172.17.8.128/26', 'labels': {'app': 'db'}}},
        'policy': {'policies': [], 'sets': {}}}


@pytest.fixture
def params(tmp_path):
    return {'state': 'present', 'plan': json.loads(json.dumps(PLAN)), 'chains': True, 'backend': 'nft', 'mtu': 1480,
            'protocol': '80', 'cni_version': '1.0.0', 'bin_dir': str(tmp_path / 'bin'),
            'conf_dir': str(tmp_path / 'net.d'), 'config_path': str(tmp_path / 'etc' / 'cni.json'),
            'data_dir': str(tmp_path / 'data'), 'lib_dir': str(tmp_path / 'lib'), 'log_file': str(tmp_path / 'cni.log'),
            'python': sys.executable, 'agent': False, 'agent_socket': str(tmp_path / 'run' / 'agent.sock'),
            'agent_pidfile': str(tmp_path / 'run' / 'agent.pid'), 'service_manager': 'pidfile',
            'unit_dir': str(tmp_path / 'units')}


@pytest.fixture(autouse=True)
def syncs(monkeypatch):
    calls = []

    def sync(records, policy, check_mode=False):
        calls.append((sorted(r['key'] for r in records if r), policy.get('enabled'), check_mode))
        return {'changed': False, 'sets': [], 'chains': [], 'commands': {}, 'diff': {'before': '', 'after': ''}}

    monkeypatch.setattr(cni_policy, 'sync', sync)
    return calls


def test_the_plugin_code_is_closed_under_its_imports():
    """Every module_utils module the installed plugin imports is installed with it."""
    assert_closed_under_imports(cni_install.PLUGIN_MODULES, cni_install.module_source)


def test_install_writes_code_launcher_plan_and_one_conflist_per_network(params, syncs):
    result = cni_install.converge(dict(params), check_mode=False)
    assert result['changed'] and result['networks'] == ['db', 'web']
    launcher = os.path.join(params['bin_dir'], 'netfleet-calico')
    assert os.stat(launcher).st_mode & 0o777 == 0o755
    config = json.load(open(params['config_path']))
    assert config['networks'] == PLAN['networks'] and config['mtu'] == 1480 and config['protocol'] == 80
    assert config['policy']['enabled'] is True and config['policy']['iptables'] == 'nft'
    conflist = json.load(open(os.path.join(params['conf_dir'], '10-netfleet-web.conflist')))
    assert conflist == {'cniVersion': '1.0.0', 'name': 'web', 'plugins': [
        {'type': 'netfleet-calico', 'config_file': params['config_path'], 'log_file': params['log_file']}]}
    assert syncs == [([], True, False)]
    # the installed executable runs on its own (no Ansible on the path): VERSION
    out = subprocess.run([launcher], input='{"cniVersion": "1.0.0"}', env={'CNI_COMMAND': 'VERSION'},
                         capture_output=True, text=True, check=True).stdout
    assert '1.1.0' in json.loads(out)['supportedVersions']


def test_a_dual_stack_plan_turns_on_the_ipv6_policy(params):
    config = cni_install.host_config(params)
    assert 'ipv6' not in config['policy'] and config['reserved6'] == []
    params['plan']['networks']['web']['range6'] = 'fd00:10::10/124'
    params['plan']['reserved6'] = ['fd00:10::1']
    config = cni_install.host_config(params)
    assert config['policy']['ipv6'] is True and config['reserved6'] == ['fd00:10::1']
    assert config['gateway6'] == 'fe80::ecee:eeff:feee:eeee'


def test_second_run_changes_nothing_and_check_mode_writes_nothing(params):
    first = cni_install.converge(dict(params), check_mode=True)
    assert first['changed'] and not os.path.exists(params['config_path'])
    cni_install.converge(dict(params), check_mode=False)
    again = cni_install.converge(dict(params), check_mode=False)
    assert not again['changed'] and again['files_changed'] == []


def test_a_network_dropped_from_the_plan_loses_its_conflist_only(params, tmp_path):
    cni_install.converge(dict(params), check_mode=False)
    foreign = os.path.join(params['conf_dir'], '99-other.conflist')
    open(foreign, 'w').write('{}')
    params['plan']['networks'].pop('db')
    result = cni_install.converge(dict(params), check_mode=False)
    dropped = os.path.join(params['conf_dir'], '10-netfleet-db.conflist')
    assert result['files_changed'] == [params['config_path'], dropped]
    assert sorted(os.listdir(params['conf_dir'])) == ['10-netfleet-web.conflist', '99-other.conflist']


def test_absent_refuses_while_containers_are_attached_then_removes_everything(params, syncs):
    cni_install.converge(dict(params), check_mode=False)
    store = cni_store.Store(params['data_dir'])
    with store.locked():
        store.put({'key': 'c1_eth0', 'container_id': 'c1', 'ifname': 'eth0', 'ip': '172.17.8.64'})
    gone = dict(params, state='absent', plan=None)
    with pytest.raises(cni_install.InstallError, match='1 container'):
        cni_install.converge(dict(gone), check_mode=False)
    store.remove('c1_eth0')
    result = cni_install.converge(dict(gone), check_mode=False)
    assert result['changed']
    assert syncs[-1] == ([], False, False)  # chains and sets emptied before calico_chains drops the jumps
    assert not os.path.exists(params['lib_dir']) and not os.path.exists(params['data_dir'])
    assert os.listdir(params['conf_dir']) == [] and os.listdir(params['bin_dir']) == []
    assert not cni_install.converge(dict(gone), check_mode=False)['changed']


def call(launcher, command, stdin, **env):
    proc = subprocess.run([launcher], input=stdin, env=dict(env, CNI_COMMAND=command, PATH=os.environ['PATH']),
                          capture_output=True, text=True, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_the_agent_runs_the_installed_code_and_the_executable_falls_back_without_it(params):
    params['agent'] = True
    launcher = os.path.join(params['bin_dir'], 'netfleet-calico')
    try:
        first = cni_install.converge(dict(params), check_mode=False)
        assert first['changed'] and first['agent']['action'] == 'started' and first['agent']['running']
        pid = first['agent']['pid']
        assert os.stat(params['agent_socket']).st_mode & 0o777 == 0o600
        # served by the agent: a call's environment travels with the calling process, the answer and status back
        rc, out = call(launcher, 'VERSION', '{"cniVersion": "1.0.0"}')
        assert rc == 0 and '1.1.0' in out['supportedVersions']
        rc, out = call(launcher, 'ADD', '{"cniVersion": "1.0.0", "name": "nope", "config_file": "%s"}'
                       % params['config_path'], CNI_CONTAINERID='c1', CNI_IFNAME='eth0', CNI_NETNS='/run/netns/x')
        assert rc == 1 and out['code'] == 7 and "network 'nope'" in out['msg']
        log = open(params['log_file']).read() if os.path.exists(params['log_file']) else ''
        assert log == ''  # the call named no log file
        again = cni_install.converge(dict(params), check_mode=False)
        assert not again['changed'] and again['agent']['pid'] == pid and again['agent']['action'] is None
        # new plugin code: the agent is restarted
        with open(os.path.join(params['lib_dir'], 'netfleet-calico.py'), 'a') as handle:
            handle.write('# edited\n')
        check = cni_install.converge(dict(params), check_mode=True)
        assert check['changed'] and check['agent']['action'] == 'restarted' and check['agent']['pid'] == pid
        restarted = cni_install.converge(dict(params), check_mode=False)
        assert restarted['agent']['action'] == 'restarted' and restarted['agent']['pid'] != pid
        assert not cni_service.alive(pid)
        # no agent: the executable runs the plugin in-process, same answers
        gone = cni_install.converge(dict(params, agent=False), check_mode=False)
        assert gone['changed'] and gone['agent']['action'] == 'stopped' and not os.path.exists(params['agent_socket'])
        rc, out = call(launcher, 'VERSION', '{"cniVersion": "1.0.0"}')
        assert rc == 0 and '1.1.0' in out['supportedVersions']
    finally:
        cni_install.converge(dict(params, state='absent', plan=None), check_mode=False)
    assert not os.path.exists(params['agent_pidfile'])


@pytest.mark.parametrize('key, value', [('lib_dir', 'relative/lib'), ('config_path', '/etc/a b.json'),
                                        ('data_dir', '/var/lib/../../etc'), ('python', '/usr/bin/python3;id')])
def test_paths_are_validated(params, key, value):
    params[key] = value
    with pytest.raises(cni_install.InstallError, match=key):
        cni_install.converge(dict(params), check_mode=False)


def test_invalid_plan_values_are_refused(params):
    params['plan']['policy'] = {'policies': [], 'sets': {'evil set': {}}}
    with pytest.raises(cni_install.InstallError, match='ipset name'):
        cni_install.converge(dict(params), check_mode=False)
    params['plan'] = dict(PLAN, networks={'../x': {'range': '172.17.8.64/26', 'labels': {}}})
    with pytest.raises(cni_install.InstallError, match='network name'):
        cni_install.converge(dict(params), check_mode=False)


class Systemd:
    """systemctl as cni_service calls it: is-active / is-enabled answers from the recorded state."""

    def __init__(self):
        self.calls, self.active, self.enabled = [], False, False

    def __call__(self, argv):
        verb = argv[1]
        self.calls.append(argv[1:])
        if verb == 'is-active':
            return (0 if self.active else 3), '', ''
        if verb == 'is-enabled':
            return (0 if self.enabled else 1), '', ''
        if verb in ('start', 'restart'):
            self.active = True
        elif verb == 'enable':
            self.enabled = True
        elif verb == 'disable':
            self.enabled = False
            self.active = self.active and '--now' not in argv
        return 0, '', ''


def test_the_agent_under_systemd(params, monkeypatch):
    systemd = Systemd()
    monkeypatch.setattr(cni_service, 'wait_answering', lambda params, timeout=15.0: None)
    params.update(agent=True, service_manager='systemd')
    first = cni_install.converge(dict(params), check_mode=False, run=systemd)
    unit = os.path.join(params['unit_dir'], cni_service.UNIT_NAME)
    assert first['agent']['action'] == 'installed' and first['agent']['unit'] == unit
    text = open(unit).read()
    assert 'Restart=always' in text and '--socket %s' % params['agent_socket'] in text and '--pidfile' not in text
    assert ['daemon-reload'] in systemd.calls and ['enable', cni_service.UNIT_NAME] in systemd.calls
    assert ['start', cni_service.UNIT_NAME] in systemd.calls and systemd.active
    systemd.calls.clear()
    again = cni_install.converge(dict(params), check_mode=False, run=systemd)
    assert not again['changed'] and again['agent']['action'] is None
    assert [c for c in systemd.calls if c[0] not in ('is-active', 'is-enabled')] == []
    with open(os.path.join(params['lib_dir'], 'netfleet-calico.py'), 'a') as handle:
        handle.write('# edited\n')
    assert cni_install.converge(dict(params), check_mode=False, run=systemd)['agent']['action'] == 'restarted'
    assert ['restart', cni_service.UNIT_NAME] in systemd.calls
    gone = cni_install.converge(dict(params, state='absent', plan=None), check_mode=False, run=systemd)
    assert gone['agent']['action'] == 'removed' and not os.path.exists(unit) and not systemd.active
