"""lab_sshd: config, known_hosts, /proc/net/tcp parsing and the start/restart/stop logic on a fake system
(the real daemons are tests/integration/test_ssh.py)."""

import os
import signal

import pytest

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_ssh as ls
from ansible_collections.netfleet.calico_lab.plugins.modules import lab_sshd

HOSTS = [{'name': 'host-a', 'netns': 'nf-host-a', 'address': '192.168.100.100', 'port': 22, 'user': 'netfleet-lab'},
         {'name': 'host-b', 'netns': 'nf-host-b', 'address': '192.168.100.101', 'port': 2222, 'user': 'netfleet-lab'}]
NETNS = {'nf-host-a': (4, 1001), 'nf-host-b': (4, 1002)}


def tcp_table(*listens):
    lines = ['  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode']
    for i, (addr, port) in enumerate(listens):
        lines.append(f'   {i}: {ls.listen_key(addr, port)} 00000000:0000 0A 00000000:00000000 00:00000000 00000000'
                     '     0        0 1 1 0000000000000000 100 0 0 10 0')
    return '\n'.join(lines) + '\n'


class FakeSystem:
    """Keys are files written by a fake ssh-keygen; sshd 'starts' by writing its pid file."""

    def __init__(self, users=('netfleet-lab', 'root')):
        self.users = set(users)
        self.procs = {}           # pid -> (cmdline, netns id, tcp table)
        self.next_pid = 5000
        self.started, self.killed, self.checked = [], [], []

    def keygen_run(self, path, comment):
        with open(path, 'w') as f:
            f.write('PRIVATE\n')
        with open(path + '.pub', 'w') as f:
            f.write(f'ssh-ed25519 AAAA{comment} {comment}\n')

    def check_config(self, config):
        self.checked.append(config)

    def start(self, host):
        pid = self.next_pid
        self.next_pid += 1
        self.procs[pid] = (f"sshd: /usr/sbin/sshd -f {host['config']} -E {host['log']} [listener]",
                           NETNS[host['netns']], tcp_table((host['address'], host['port'])))
        with open(host['pidfile'], 'w') as f:
            f.write(f'{pid}\n')
        self.started.append(host['name'])

    def user_exists(self, user):
        return user in self.users

    def netns_id(self, netns):
        return NETNS.get(netns)

    def process(self, pid):
        return self.procs.get(pid)

    def alive(self, pid):
        return pid in self.procs

    def kill(self, pid, sig):
        self.killed.append((pid, sig))
        self.procs.pop(pid, None)

    def sleep(self, seconds):
        pass


class FakeModule:
    def __init__(self, params, check_mode=False):
        self.params = dict({'state': 'present', 'hosts': [], 'stop_timeout': 1, 'start_timeout': 1}, **params)
        self.check_mode = check_mode


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / 'nf'
    d.mkdir()
    monkeypatch.setattr(ls, 'PRIVSEP_DIR', str(tmp_path / 'privsep'))
    return str(d)


def run(state_dir, system, hosts=None, check=False, state='present'):
    hosts = HOSTS if hosts is None else hosts
    module = FakeModule({'prefix': 'nf', 'state_dir': state_dir, 'hosts': [dict(h) for h in hosts], 'state': state},
                        check_mode=check)
    return lab_sshd.run(module, system)


def test_config_and_known_hosts():
    host = dict(HOSTS[0])
    text = ls.render_config(host, '/run/netfleet/nf/ssh/host-a')
    assert 'ListenAddress 192.168.100.100:22\n' in text
    assert 'AllowUsers netfleet-lab\n' in text and 'PermitRootLogin no\n' in text
    assert 'PasswordAuthentication no\n' in text and 'UsePAM no\n' in text
    assert 'PidFile /run/netfleet/nf/ssh/host-a/sshd.pid\n' in text
    assert 'PermitRootLogin prohibit-password' in ls.render_config(dict(host, user='root'), '/x')
    assert ls.known_hosts_line('10.0.0.1', 22, 'ssh-ed25519 AAAAkey nf-a') == '10.0.0.1 ssh-ed25519 AAAAkey'
    assert ls.known_hosts_line('10.0.0.1', 2222, 'ssh-ed25519 AAAAkey') == '[10.0.0.1]:2222 ssh-ed25519 AAAAkey'


def test_listen_key_matches_proc_net_tcp():
    # 192.168.100.1:22 as the kernel prints it (little-endian address, big-endian port in hex)
    assert ls.listen_key('192.168.100.1', 22) == '0164A8C0:0016'
    table = tcp_table(('192.168.100.100', 22))
    assert ls.listening(table, '192.168.100.100', 22)
    assert not ls.listening(table, '192.168.100.100', 2222)
    assert not ls.listening(table.replace(' 0A ', ' 01 '), '192.168.100.100', 22)  # ESTABLISHED is not LISTEN


def test_start_then_idempotent_then_restart_on_change(state_dir):
    system = FakeSystem()
    first = run(state_dir, system)
    assert first['changed'] and system.started == ['host-a', 'host-b']
    assert 'sshd host-a started (nf-host-a 192.168.100.100:22)' in first['updated']
    assert first['private_key'] == f'{state_dir}/ssh/id_ed25519'
    known = open(f'{state_dir}/ssh/known_hosts').read().splitlines()
    assert known == ['192.168.100.100 ssh-ed25519 AAAAnf-host-a', '[192.168.100.101]:2222 ssh-ed25519 AAAAnf-host-b']
    keys = open(f'{state_dir}/ssh/host-a/authorized_keys').read()
    assert keys == 'ssh-ed25519 AAAAnetfleet-lab-nf netfleet-lab-nf\n'
    assert oct(os.stat(f'{state_dir}/ssh/host-a/authorized_keys').st_mode & 0o777) == '0o644'
    pid_a = first['hosts']['host-a']['pid']

    second = run(state_dir, system)
    assert not second['changed'], second
    assert system.started == ['host-a', 'host-b'] and second['hosts']['host-a']['pid'] == pid_a

    # a changed port: sshd -t checks the new config, the old daemon is stopped, a new one started
    moved = [HOSTS[0], dict(HOSTS[1], port=22)]
    third = run(state_dir, system, moved)
    assert 'sshd host-b restarted (nf-host-b 192.168.100.101:22)' in third['updated']
    assert system.started[-1] == 'host-b' and system.checked[-1].endswith('/host-b/sshd_config')
    assert any(sig == signal.SIGTERM for _pid, sig in system.killed)
    assert open(f'{state_dir}/ssh/known_hosts').read().splitlines()[1] == '192.168.100.101 ssh-ed25519 AAAAnf-host-b'


def test_a_dead_or_foreign_pid_is_restarted(state_dir):
    system = FakeSystem()
    run(state_dir, system)
    pid = int(open(f'{state_dir}/ssh/host-a/sshd.pid').read())
    # the pid now belongs to a process of another namespace (the namespace was recreated)
    cmd, _netns, tcp = system.procs[pid]
    system.procs[pid] = (cmd, (4, 999), tcp)
    out = run(state_dir, system)
    assert 'sshd host-a started (nf-host-a 192.168.100.100:22)' in out['updated']
    # alive but no longer listening (its address went away): restarted
    pid = int(open(f'{state_dir}/ssh/host-b/sshd.pid').read())
    system.procs[pid] = (system.procs[pid][0], NETNS['nf-host-b'], tcp_table())
    out = run(state_dir, system)
    assert 'sshd host-b restarted (nf-host-b 192.168.100.101:2222)' in out['updated']


def test_check_mode_changes_nothing(state_dir):
    system = FakeSystem()
    out = run(state_dir, system, check=True)
    assert out['changed'] and system.started == [] and not os.path.exists(f'{state_dir}/ssh')
    assert 'sshd host-a started (nf-host-a 192.168.100.100:22)' in out['updated']
    run(state_dir, system)
    assert not run(state_dir, system, check=True)['changed']


def test_removed_host_and_absent(state_dir):
    system = FakeSystem()
    run(state_dir, system)
    pid_b = int(open(f'{state_dir}/ssh/host-b/sshd.pid').read())
    out = run(state_dir, system, HOSTS[:1])
    assert f'sshd host-b stopped (pid {pid_b})' in out['removed'] and not os.path.exists(f'{state_dir}/ssh/host-b')
    assert (pid_b, signal.SIGTERM) in system.killed
    out = run(state_dir, system, state='absent')
    assert out['removed'][-1] == f'directory {state_dir}/ssh' and not os.path.exists(f'{state_dir}/ssh')
    assert not system.procs
    assert not run(state_dir, system, state='absent')['changed']


@pytest.mark.parametrize('hosts, users, message', [
    ([dict(HOSTS[0], user='nobody-here')], ('root',), "user 'nobody-here' does not exist on this machine"),
    ([dict(HOSTS[0], netns='nf-host-z')], ('netfleet-lab',), "network namespace 'nf-host-z' does not exist"),
    ([dict(HOSTS[0], netns='other-a')], ('netfleet-lab',), "must be a namespace name starting with 'nf-'"),
    ([HOSTS[0], dict(HOSTS[1], address='192.168.100.100', port=22)], ('netfleet-lab',),
     "hosts 'host-a' and 'host-b' both listen on 192.168.100.100:22"),
    ([dict(HOSTS[0], address='192.168.100.300')], ('netfleet-lab',), "address '192.168.100.300' is not an IPv4"),
])
def test_bad_input(state_dir, hosts, users, message):
    with pytest.raises(ls.LabSshError) as err:
        run(state_dir, FakeSystem(users), hosts)
    assert message in str(err.value)


def test_state_dir_must_name_the_prefix(state_dir):
    with pytest.raises(ls.LabSshError) as err:
        lab_sshd.run(FakeModule({'prefix': 'nf', 'state_dir': '/run'}), FakeSystem())
    assert "state_dir '/run' must be an absolute path" in str(err.value)
