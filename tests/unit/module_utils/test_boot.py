"""The boot-time restore (plugins/module_utils/boot.py, boot_install.py): the records the modules write, the
program that applies them (its parts replaced by recorders here; tests/integration/test_boot_restore.py runs it
on a real lab host), and what module calico_boot installs, in a temporary tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from netfleet_imports import assert_closed_under_imports

from ansible_collections.netfleet.calico.plugins.module_utils import boot, boot_install, files, host_state

NODE = {'sysctls': {'net.ipv4.ip_forward': '1'}, 'sysctl_persist_file': '/etc/sysctl.d/x.conf', 'tunnel': None,
        'routes': [{'dest': '172.17.8.0/24', 'type': 'blackhole'}], 'protocol': 80, 'endpoints': [],
        'netns_prefix': 'calico-', 'mtu': None, 'bird': {'config': 'not recorded'}}


def test_record_node_keeps_the_kernel_parts_and_writes_only_changes(tmp_path):
    path = str(tmp_path / 'boot' / 'node.json')
    assert boot.record_node(path, NODE)
    doc = json.load(open(path))
    assert doc['version'] == boot.VERSION and set(doc['node']) == set(host_state.PARTS) - {'sysctl_persist_file'}
    assert 'bird' not in doc['node'] and os.stat(path).st_mode & 0o777 == 0o600
    assert not boot.record_node(path, NODE)
    assert boot.record_node(path, dict(NODE, mtu=1480))


def test_record_chains(tmp_path):
    path = str(tmp_path / 'chains.json')
    desired = {'filter': {'chains': {'cali-FORWARD': ['-j ACCEPT']}, 'jumps': {'FORWARD': ['-j cali-FORWARD']}}}
    assert boot.record_chains(path, 'nft', desired, True, ['cali-INPUT-ipip'], False)
    assert json.load(open(path))['chains'] == {'backend': 'nft', 'desired': desired, 'insert': True,
                                               'ignore': ['cali-INPUT-ipip'], 'cni': False}
    assert not boot.record_chains(path, 'nft', desired, True, ['cali-INPUT-ipip'], False)
    # the IPv6 run keeps the IPv4 record, and the other way round
    desired6 = {'raw': {'chains': {'cali-PREROUTING': ['-i cali+ -m rpfilter --invert -j DROP']},
                        'jumps': {'PREROUTING': ['-j cali-PREROUTING']}}}
    assert boot.record_chains(path, 'legacy', desired6, True, [], False, family=6)
    doc = json.load(open(path))
    assert doc['chains']['desired'] == desired and doc['chains6']['desired'] == desired6
    assert doc['chains6']['backend'] == 'legacy'
    assert not boot.record_chains(path, 'nft', desired, True, ['cali-INPUT-ipip'], False)
    assert not boot.record_chains(path, 'legacy', desired6, True, [], False, family=6)


def test_restore_applies_the_node_record_then_the_chains(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(boot, 'restore_node', lambda node, check=False: calls.append(('node', node, check)) or
                        {'routes': True})
    monkeypatch.setattr(boot, 'restore_chains', lambda doc, check=False, family=4: calls.append(
        ('chains%d' % family, doc, check)) or {boot.CHAINS_KEYS[family]: False})
    assert boot.restore(str(tmp_path)) == {}  # nothing recorded, nothing to do
    boot.record_node(str(tmp_path / 'node.json'), NODE)
    boot.record_chains(str(tmp_path / 'chains.json'), 'legacy', {}, False, [], True)
    assert boot.restore(str(tmp_path), check=True) == {'routes': True, 'chains': False}
    assert [c[0] for c in calls] == ['node', 'chains4'] and calls[0][2] is True
    assert calls[0][1]['routes'] == NODE['routes'] and calls[1][1]['backend'] == 'legacy'
    boot.record_chains(str(tmp_path / 'chains.json'), 'nft', {}, False, [], False, family=6)
    calls.clear()
    assert boot.restore(str(tmp_path)) == {'routes': True, 'chains': False, 'chains6': False}
    assert [(c[0], c[1].get('backend')) for c in calls] == [('node', None), ('chains4', 'legacy'),
                                                            ('chains6', 'nft')]


def test_restore_node_runs_the_converge_parts(monkeypatch):
    seen = []

    def apply(p, check, runners, done):
        seen.append((p, check))
        done('routes', {'changed': True})
        done('sysctl', {'changed': False})

    monkeypatch.setattr(host_state, 'apply', apply)
    assert boot.restore_node(NODE) == {'routes': True, 'sysctl': False}
    assert seen == [(NODE, False)]


@pytest.mark.parametrize('text, message', [('{', 'not valid JSON'), ('{"version": 9}', 'version 1'),
                                           ('[]', 'version 1')])
def test_a_bad_record_is_an_error(tmp_path, text, message):
    (tmp_path / 'node.json').write_text(text)
    with pytest.raises(boot.RestoreError, match=message):
        boot.restore(str(tmp_path))
    assert boot.main(['--state-dir', str(tmp_path)]) == 1


# ------------------------------------------------------------------------------------------ install

def test_the_restore_code_is_closed_under_its_imports():
    assert_closed_under_imports(boot_install.RESTORE_MODULES, files.module_source)


class Systemctl:
    def __init__(self):
        self.calls, self.enabled = [], False

    def __call__(self, argv):
        self.calls.append(argv[1:])
        if argv[1] == 'is-enabled':
            return (0 if self.enabled else 1), '', ''
        if argv[1] == 'enable':
            self.enabled = True
        if argv[1] == 'disable':
            self.enabled = False
        return 0, '', ''


@pytest.fixture
def params(tmp_path):
    return {'state': 'present', 'state_dir': str(tmp_path / 'state'), 'lib_dir': str(tmp_path / 'lib'),
            'python': sys.executable, 'service_manager': 'systemd', 'unit_dir': str(tmp_path / 'units'),
            'bird_service': 'bird'}


def test_install_with_systemd_then_nothing_then_removal(params):
    systemctl = Systemctl()
    first = boot_install.converge(dict(params), False, systemctl)
    assert first['changed'] and first['enabled']
    unit = open(first['unit']).read()
    assert 'Before=bird.service' in unit and 'Type=oneshot' in unit and params['lib_dir'] in unit
    assert systemctl.calls == [['is-enabled', boot_install.UNIT_NAME], ['daemon-reload'],
                               ['enable', boot_install.UNIT_NAME]]
    systemctl.calls.clear()
    again = boot_install.converge(dict(params), False, systemctl)
    assert not again['changed'] and systemctl.calls == [['is-enabled', boot_install.UNIT_NAME]]
    # the installed program runs on its own (no Ansible on the path): nothing recorded yet
    launcher = boot_install.launcher_path(params)
    out = subprocess.run([launcher, '--check'], capture_output=True, text=True, check=True).stdout
    assert 'nothing recorded in %s' % params['state_dir'] in out
    boot.record_node(os.path.join(params['state_dir'], 'node.json'), NODE)
    gone = boot_install.converge(dict(params, state='absent'), False, systemctl)
    assert gone['changed'] and not systemctl.enabled
    assert not os.path.exists(params['lib_dir']) and not os.path.exists(first['unit'])
    assert os.listdir(params['state_dir']) == []
    assert not boot_install.converge(dict(params, state='absent'), False, systemctl)['changed']


def test_check_mode_and_the_lab_manager(params):
    systemctl = Systemctl()
    lab = dict(params, service_manager='pidfile')
    assert boot_install.converge(dict(lab), True, systemctl)['changed']
    assert not os.path.exists(params['lib_dir'])
    result = boot_install.converge(dict(lab), False, systemctl)
    assert result['unit'] is None and not result['enabled'] and systemctl.calls == []
    assert not os.path.exists(params['unit_dir'])


@pytest.mark.parametrize('key, value', [('lib_dir', 'relative'), ('state_dir', '/var/lib/a b'),
                                        ('bird_service', 'bird.service; rm -rf /'), ('bird_service', 'bird\n')])
def test_bad_paths_and_names_are_refused(params, key, value):
    with pytest.raises(files.InstallError, match=key):
        boot_install.converge(dict(params, **{key: value}), False, Systemctl())
