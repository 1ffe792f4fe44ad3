"""The machine lab's files and scripts (plugins/module_utils/lab_machine.py); tests/integration/test_machines.py
boots them for real."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine as lm

HOST = {'address': '192.168.111.11/24', 'gateway': '192.168.111.1', 'segment': 'rack1'}
REFLECTOR = {'address': '192.168.111.1/24', 'gateway': None, 'spine_address': '10.255.0.11/24',
             'routes': ['192.168.112.0/24 via 10.255.0.21 dev eth1']}


def test_network_of_a_host_and_of_a_reflector():
    assert lm.network_script(HOST) == [
        'ip link set lo up', 'ip link set eth0 up', 'ip addr replace 192.168.111.11/24 dev eth0',
        'ip route replace default via 192.168.111.1 dev eth0']
    # a reflector: its spine leg, no default route (no router in this lab), the other racks over the spine
    assert lm.network_script(REFLECTOR)[3:] == [
        'ip link set eth1 up', 'ip addr replace 10.255.0.11/24 dev eth1',
        'ip route replace 192.168.112.0/24 via 10.255.0.21 dev eth1 proto static']
    unit = lm.network_unit(HOST)
    # before network.target, which the boot-time restore unit (After=network.target) waits for
    assert 'Before=network.target' in unit and 'Wants=network.target' in unit
    assert 'ExecStart=/sbin/ip route replace default via 192.168.111.1 dev eth0\n' in unit


def test_network_of_a_spine_router_is_its_spine_leg_only():
    router = {'spine_address': '10.255.0.1/24'}
    assert lm.check_network('sp1', router) is router
    assert lm.network_script(router) == ['ip link set lo up', 'ip link set eth1 up',
                                         'ip addr replace 10.255.0.1/24 dev eth1']
    assert lm.legs(router) == ['eth1'] and lm.legs(REFLECTOR) == ['eth0', 'eth1'] and lm.legs(HOST) == ['eth0']


def test_machine_files_give_the_login_user_the_key():
    files = lm.machine_files('m1h1', HOST, ('netfleet', 1000, 1000), 'ssh-ed25519 AAAA lab', 'ab' * 16)
    assert files['/home/netfleet/.ssh/authorized_keys'] == ('ssh-ed25519 AAAA lab\n', 0o600, 1000, 1000)
    assert files['/etc/hostname'][0] == 'm1h1\n'
    assert files['/etc/machine-id'][0] == 'ab' * 16 + '\n'
    assert f'/etc/systemd/system/{lm.NETWORK_UNIT}' in files


def test_login_ids_from_the_base_passwd(tmp_path):
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc/passwd').write_text('root:x:0:0::/root:/bin/sh\nnetfleet:x:1000:1001::/home/netfleet:/bin/bash\n')
    assert lm.login_ids(str(tmp_path), 'netfleet') == ('netfleet', 1000, 1001)
    with pytest.raises(lm.MachineError, match="user 'deploy' is not in the base image"):
        lm.login_ids(str(tmp_path), 'deploy')


def test_repo_closure_keeps_real_package_names(monkeypatch):
    out = ('bird2\n  PreDepends: init-system-helpers\n  Depends: libc6\n  Depends: <debconf-2.0>\n'
           'init-system-helpers\n |Depends: usrmerge\nlibc6\n<debconf-2.0>\n    cdebconf\n')
    monkeypatch.setattr(lm, 'run', lambda argv, **kw: out)
    assert lm.repo_closure(['bird2']) == ['bird2', 'init-system-helpers', 'libc6']


def test_release_file_hashes_the_index():
    index = 'Package: bird2\nVersion: 2.0.12-7\n\n'
    text = lm.release_file(index)
    assert f' {hashlib.sha256(index.encode()).hexdigest()} {len(index)} Packages\n' in text


def test_build_repo_refuses_odd_package_names(tmp_path):
    with pytest.raises(lm.MachineError, match="'bird2; rm' is not a Debian package name"):
        lm.build_repo(str(tmp_path), ['bird2; rm'])


def test_cached_images_are_keyed_by_what_they_hold(tmp_path):
    a = lm.base_path(str(tmp_path), 'bookworm', 'http://deb.debian.org/debian', 'netfleet')
    assert a == lm.base_path(str(tmp_path), 'bookworm', 'http://deb.debian.org/debian', 'netfleet')
    assert a != lm.base_path(str(tmp_path), 'trixie', 'http://deb.debian.org/debian', 'netfleet')
    assert a != lm.base_path(str(tmp_path), 'bookworm', 'http://deb.debian.org/debian', 'deploy')
    assert lm.repo_path(str(tmp_path), ['iptables', 'bird2']) == lm.repo_path(str(tmp_path), ['bird2', 'iptables'])
    # a ready base is not built again
    os.makedirs(a)
    open(os.path.join(a, lm.READY), 'w').close()
    assert lm.build_base(str(tmp_path), 'bookworm', 'http://deb.debian.org/debian', 'netfleet') == (a, False)


def test_supervisor_renews_the_namespace_before_each_boot():
    script = lm.supervisor_script('m1rr', 'tq-m1rr', 'tq-m1rr', '/run/netfleet/tq/machines/m1rr', '/var/cache/b',
                                  '/var/cache/r', ['eth0', 'eth1'])
    assert subprocess.run(['sh', '-n'], input=script, text=True, check=False).returncode == 0
    assert 'for leg in eth0 eth1; do' in script
    assert '--network-namespace-path=/run/netns/tq-m1rr' in script
    assert f'--bind-ro=/var/cache/r:{lm.REPO_MOUNT}' in script
    # a reboot (exit 133) boots again; anything else ends the supervisor
    assert '[ "$rc" -eq 133 ] || break' in script
    # the renewal comes before the boot in the loop
    loop = script[script.index('while :; do'):]
    assert loop.index('fresh_netns') < loop.index('systemd-nspawn')


def test_leader_is_nspawns_child(tmp_path, monkeypatch):
    assert lm.leader(str(tmp_path)) is None          # no pid file
    (tmp_path / 'nspawn.pid').write_text(f'{os.getpid()}\n')
    assert lm.nspawn_pid(str(tmp_path)) is None      # a pid file naming some other process
    assert lm.netns_dir(None, 'm1h1') == '/run/netns'
    assert lm.netns_dir(str(tmp_path), 'm1h1') == '/run/netns'


@pytest.mark.parametrize('net, message', [
    (None, 'no address'),
    ({'address': '192.168.111.11/24; reboot'}, "address '192.168.111.11/24; reboot' is not an IPv4 address with"),
    ({'address': '192.168.111.11/24', 'gateway': '$(id)'}, "gateway '$(id)' is not an IPv4 address"),
    ({'address': '192.168.111.1/24', 'routes': ['10.0.0.0/33 via 10.255.0.21 dev eth1']}, "route '10.0.0.0/33"),
    ({'address': '192.168.111.1/24', 'routes': ['192.168.112.0/24 via 10.255.0.21 dev eth1\nreboot']},
     'is not "<cidr> via <address> dev eth0|eth1"'),
])
def test_network_values_are_checked_before_they_become_commands(net, message):
    with pytest.raises(lm.MachineError, match="host 'm1h1': networks: ") as err:
        lm.check_network('m1h1', net)
    assert message in str(err.value)
    assert lm.check_network('m1rr', REFLECTOR) is REFLECTOR
