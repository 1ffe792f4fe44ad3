# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""FRR daemons tracked by pid files in one directory (a spine that is a network namespace in the lab): each
daemon's pid file, vty socket, zserv socket and log live there, so several FRRs share one machine."""

from __future__ import annotations

import os
import signal
import time

from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_pid

ORDER = ('zebra', 'bgpd', 'bfdd')  # zebra first: the others connect to its zserv socket


def pidfile(state_dir, daemon):
    return os.path.join(state_dir, f'{daemon}.pid')


def running_pid(state_dir, daemon):
    """The daemon's pid when its pid file names a live process started with that pid file, else None."""
    path = pidfile(state_dir, daemon)
    pid = read_pid(path)
    if pid is None:
        return None
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            args = f.read().decode(errors='replace').split('\0')
    except OSError:
        return None
    return pid if path in args else None


def start_command(libdir, state_dir, daemon, config):
    return [os.path.join(libdir, daemon), '-d', '-f', config, '-i', pidfile(state_dir, daemon),
            '-z', os.path.join(state_dir, 'zserv.api'), '--vty_socket', state_dir, '-P', '0',
            '--log', f'file:{os.path.join(state_dir, daemon + ".log")}']


def reload_command(python, reload_script, vtysh, state_dir, config):
    return [python, reload_script, '--reload', '--vty_socket', state_dir, '--bindir', os.path.dirname(vtysh),
            '--confdir', state_dir, '--rundir', state_dir, config]


def wait_started(state_dir, daemon, timeout):
    """True once the daemon's pid file names it and its vty socket exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(state_dir, daemon) and os.path.exists(os.path.join(state_dir, f'{daemon}.vty')):
            return True
        time.sleep(0.1)
    return False


def stop(state_dir, daemon, timeout):
    """SIGTERM to a running daemon, waiting up to timeout for it to go; True when it ran."""
    pid = running_pid(state_dir, daemon)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(state_dir, daemon) == pid:
        time.sleep(0.1)
    if running_pid(state_dir, daemon) == pid:
        os.kill(pid, signal.SIGKILL)
    return True
