"""Unit tests of netfleet.calico.calico_sysctl on a fake /proc/sys tree."""

from __future__ import annotations

import os

import pytest
from calico_fake_kernel import run_module

from ansible_collections.netfleet.calico.plugins.module_utils import procfs
from ansible_collections.netfleet.calico.plugins.modules import calico_sysctl as mod


@pytest.fixture
def proc(tmp_path, monkeypatch):
    root = tmp_path / 'sys'
    for rel, value in {'net/ipv4/ip_forward': '0\n', 'net/ipv4/conf/all/forwarding': '0\n',
                       'net/ipv4/ip_local_port_range': '32768\t60999\n', 'net/ipv4/conf/eth0.100/rp_filter': '2\n',
                       'net/ipv4/neigh/default/gc_thresh3': '1024\n'}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    monkeypatch.setattr(mod, 'SYSCTL_ROOT', str(root))
    return root


def run(monkeypatch, sysctls, check_mode=False, diff=False, **params):
    return run_module(monkeypatch, mod, dict(sysctls=sysctls, **params), check_mode=check_mode, diff=diff)


def test_sets_only_differing_keys_and_is_idempotent(proc, monkeypatch):
    wanted = {'net.ipv4.ip_forward': 1, 'net.ipv4.conf.all.forwarding': True,
              'net.ipv4.ip_local_port_range': '32768 60999'}
    result = run(monkeypatch, wanted, diff=True)
    assert result['changed'] is True
    assert result['changed_keys'] == ['net.ipv4.conf.all.forwarding', 'net.ipv4.ip_forward']
    assert result['previous'] == {'net.ipv4.conf.all.forwarding': '0', 'net.ipv4.ip_forward': '0'}
    assert result['sysctls']['net.ipv4.ip_local_port_range'] == '32768 60999'
    assert (proc / 'net/ipv4/ip_forward').read_text() == '1'
    assert (proc / 'net/ipv4/ip_local_port_range').read_text() == '32768\t60999\n'   # untouched
    assert result['diff'][0]['before'] == ('net.ipv4.conf.all.forwarding = 0\nnet.ipv4.ip_forward = 0\n'
                                           'net.ipv4.ip_local_port_range = 32768 60999\n')
    again = run(monkeypatch, wanted, diff=True)
    assert again['changed'] is False and again['changed_keys'] == []
    assert again['diff'][0]['before'] == again['diff'][0]['after']


def test_check_mode_writes_nothing(proc, monkeypatch, tmp_path):
    persist = tmp_path / 'etc' / '60-netfleet-calico.conf'
    persist.parent.mkdir()
    result = run(monkeypatch, {'net.ipv4.ip_forward': 1}, check_mode=True, persist_file=str(persist))
    assert result['changed'] is True and result['persist_changed'] is True
    assert (proc / 'net/ipv4/ip_forward').read_text() == '0\n' and not persist.exists()


def test_persist_file_holds_exactly_the_keys(proc, monkeypatch, tmp_path):
    persist = tmp_path / '60-netfleet-calico.conf'
    persist.write_text('net.ipv4.old_key = 1\n')
    wanted = {'net.ipv4.ip_forward': 1, 'net/ipv4/conf/eth0.100/rp_filter': 0,
              'net/ipv4/neigh/default/gc_thresh3': 8192}
    result = run(monkeypatch, wanted, persist_file=str(persist), diff=True)
    assert result['persist_changed'] is True
    assert persist.read_text() == (mod.sysctl.PERSIST_HEADER + 'net.ipv4.ip_forward = 1\n'
                                   'net.ipv4.neigh.default.gc_thresh3 = 8192\n'
                                   'net/ipv4/conf/eth0.100/rp_filter = 0\n')
    assert oct(os.stat(persist).st_mode & 0o777) == '0o644'
    assert result['diff'][1]['before'] == 'net.ipv4.old_key = 1\n'
    assert (proc / 'net/ipv4/conf/eth0.100/rp_filter').read_text() == '0'
    again = run(monkeypatch, wanted, persist_file=str(persist))
    assert again['changed'] is False and again['persist_changed'] is False


def test_persist_file_alone_can_change(proc, monkeypatch, tmp_path):
    persist = tmp_path / 'p.conf'
    run(monkeypatch, {'net.ipv4.ip_forward': 1})
    result = run(monkeypatch, {'net.ipv4.ip_forward': 1}, persist_file=str(persist))
    assert result['changed'] is True and result['changed_keys'] == [] and persist.exists()


def test_kernel_refusing_a_value_fails(proc, monkeypatch):
    real_write = procfs.write_sysctl

    def clamp(name, value, root):
        real_write(name, '1', root)

    monkeypatch.setattr(procfs, 'write_sysctl', clamp)
    result = run(monkeypatch, {'net.ipv4.ip_forward': 2})
    assert result['failed'] and result['msg'] == 'sysctl net.ipv4.ip_forward: wrote 2 but the kernel reports 1'


@pytest.mark.parametrize('sysctls, message', [
    ({'net.ipv4.nope': 1}, 'unknown sysctl: net.ipv4.nope'),
    ({'net.ipv4.nope': 1, 'net.ipv4.nada': 1}, 'unknown sysctls: net.ipv4.nada, net.ipv4.nope'),
    ({'net.ipv4.ip_forward': 1, 'net/ipv4/ip_forward': 1}, 'are the same key'),
    ({'net..ipv4': 1}, "invalid sysctl name 'net..ipv4'"),
    ({'net/../../etc/passwd': 1}, 'invalid sysctl name'),
    ({'net.ipv4.ip_forward': '1 # comment'}, 'without "#"'),
    ({'net.ipv4.ip_forward': ''}, 'must be a single non-empty line'),
    ({'net.ipv4.ip_forward': [1]}, 'must be a string or number'),
])
def test_bad_input_fails_with_one_line(proc, monkeypatch, sysctls, message):
    result = run(monkeypatch, sysctls)
    assert result.get('failed'), result
    assert message in result['msg'] and '\n' not in result['msg']
    assert (proc / 'net/ipv4/ip_forward').read_text() == '0\n'
