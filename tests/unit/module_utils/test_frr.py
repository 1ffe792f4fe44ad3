"""module_utils.frr: FRR daemons by pid file in one directory (the lab spines of tests/integration/test_spine.py)."""

from __future__ import annotations

import os
import subprocess
import time

from ansible_collections.netfleet.calico.plugins.module_utils import frr


def test_commands_keep_everything_in_the_state_dir():
    cmd = frr.start_command('/usr/lib/frr', '/run/netfleet/nf/sp1', 'bgpd', '/run/netfleet/nf/sp1/frr.conf')
    d = '/run/netfleet/nf/sp1'
    assert cmd == ['/usr/lib/frr/bgpd', '-d', '-f', f'{d}/frr.conf', '-i', f'{d}/bgpd.pid', '-z', f'{d}/zserv.api',
                   '--vty_socket', d, '-P', '0', '--log', f'file:{d}/bgpd.log']
    reload = frr.reload_command('/usr/bin/python3', '/usr/lib/frr/frr-reload.py', '/usr/bin/vtysh', '/d', '/d/f.conf')
    assert reload == [
        '/usr/bin/python3', '/usr/lib/frr/frr-reload.py', '--reload', '--vty_socket', '/d', '--bindir', '/usr/bin',
        '--confdir', '/d', '--rundir', '/d', '/d/f.conf']
    assert frr.ORDER[0] == 'zebra'


def test_a_pid_file_counts_only_for_a_process_started_with_it(tmp_path):
    state = str(tmp_path)
    assert frr.running_pid(state, 'bgpd') is None
    pidfile = frr.pidfile(state, 'bgpd')
    # a live process that does not name the pid file (a reused pid) is not the daemon
    with open(pidfile, 'w') as f:
        f.write(f'{os.getpid()}\n')
    assert frr.running_pid(state, 'bgpd') is None
    proc = subprocess.Popen(['sh', '-c', 'sleep 30; :', 'sh', pidfile])
    try:
        with open(pidfile, 'w') as f:
            f.write(f'{proc.pid}\n')
        deadline = time.monotonic() + 5  # until the child has exec'd (its command line is empty before)
        while frr.running_pid(state, 'bgpd') is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert frr.running_pid(state, 'bgpd') == proc.pid
        assert frr.stop(state, 'bgpd', 5) is True
        proc.wait(5)
        assert frr.running_pid(state, 'bgpd') is None and frr.stop(state, 'bgpd', 1) is False
    finally:
        proc.kill()
        proc.wait()
