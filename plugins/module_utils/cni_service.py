# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Running the CNI plugin's agent (:mod:`cni_agent`) on a host, for module calico_cni.

Two service managers, as for BIRD: ``systemd`` (a unit ``netfleet-calico-agent.service``, restarted by
systemd if it dies) and ``pidfile`` (started detached, found again by its pid file whose process must
name the agent's script; the lab's hosts, which share one init). The agent is (re)started when it is not
running or when the plugin's code was rewritten in this run, so it always runs the installed version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ansible_collections.netfleet.calico.plugins.module_utils import cni_agent
from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_pid

UNIT_NAME = 'netfleet-calico-agent.service'
UNIT = """[Unit]
Description=netfleet-calico CNI agent (containers' endpoints, addresses and policy)
After=network.target
Before=containerd.service crio.service kubelet.service podman.service

[Service]
Type=simple
ExecStart={python} -IS {script} --socket {socket}
Restart=always
RestartSec=1
KillMode=mixed

[Install]
WantedBy=multi-user.target
"""


class ServiceError(Exception):
    pass


def command(params):
    argv = [params['python'], '-IS', params['agent_script'], '--socket', params['agent_socket']]
    if params['service_manager'] == 'pidfile':
        argv += ['--pidfile', params['agent_pidfile']]
    return argv


def unit_text(params):
    return UNIT.format(python=params['python'], script=params['agent_script'], socket=params['agent_socket'])


def running_pid(params):
    """The pid of the agent started by pid file, or None (the process must name the agent's script)."""
    pid = read_pid(params['agent_pidfile'])
    if pid is None:
        return None
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            args = handle.read().decode('utf-8', 'replace').split('\0')
    except OSError:
        return None
    return pid if params['agent_script'] in args else None


def wait_answering(params, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not cni_agent.answers(params['agent_socket'], timeout=0.5):
        if time.monotonic() > deadline:
            raise ServiceError('the agent does not answer on %s after %.0f s' % (params['agent_socket'], timeout))
        time.sleep(0.05)


def start_pidfile(params):
    os.makedirs(os.path.dirname(params['agent_pidfile']), mode=0o755, exist_ok=True)
    with open(os.devnull, 'rb') as null_in, open(os.devnull, 'wb') as null_out:
        # its own session, no descriptor of Ansible's: the module returns while the agent keeps running
        subprocess.Popen(command(params), stdin=null_in, stdout=null_out, stderr=null_out, close_fds=True,
                         start_new_session=True, cwd='/')
    wait_answering(params)


def alive(pid):
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as handle:
            return handle.read().rsplit(')', 1)[-1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def stop_pidfile(pid, timeout=15.0):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.02)


def systemctl(run, *args):
    rc, out, err = run(['systemctl'] + list(args))
    if rc != 0:
        raise ServiceError('systemctl %s failed: %s' % (' '.join(args), (err or out).strip()))
    return out


def unit_path(params):
    return os.path.join(params['unit_dir'], UNIT_NAME)


def converge(params, want_running, code_changed, check_mode, run):
    """Bring the agent to ``want_running`` (restarted if ``code_changed``); return (changed, facts)."""
    if params['service_manager'] == 'systemd':
        return _converge_systemd(params, want_running, code_changed, check_mode, run)
    pid = running_pid(params)
    facts = {'manager': 'pidfile', 'socket': params['agent_socket'], 'pidfile': params['agent_pidfile']}
    if not want_running:
        if pid and not check_mode:
            stop_pidfile(pid)
        return bool(pid), dict(facts, running=False, action='stopped' if pid else None)
    if pid and not code_changed:
        if not check_mode:
            wait_answering(params)
        return False, dict(facts, running=True, pid=pid, action=None)
    action = 'restarted' if pid else 'started'
    if not check_mode:
        if pid:
            stop_pidfile(pid)
        start_pidfile(params)
        pid = running_pid(params)
    return True, dict(facts, running=True, pid=pid, action=action)


def _converge_systemd(params, want_running, code_changed, check_mode, run):
    path = unit_path(params)
    facts = {'manager': 'systemd', 'socket': params['agent_socket'], 'unit': path}
    try:
        with open(path, encoding='utf-8') as handle:
            have = handle.read()
    except FileNotFoundError:
        have = None
    active = run(['systemctl', 'is-active', UNIT_NAME])[0] == 0
    if not want_running:
        if check_mode:
            return bool(have is not None or active), dict(facts, running=False, action='removed' if have else None)
        if have is not None or active:
            run(['systemctl', 'disable', '--now', UNIT_NAME])
            if have is not None:
                os.unlink(path)
            systemctl(run, 'daemon-reload')
            return True, dict(facts, running=False, action='removed')
        return False, dict(facts, running=False, action=None)
    want = unit_text(params)
    enabled = run(['systemctl', 'is-enabled', UNIT_NAME])[0] == 0
    action = None
    if have != want:
        action = 'installed'
    elif not active or not enabled:
        action = 'started'
    elif code_changed:
        action = 'restarted'
    if action and not check_mode:
        if have != want:
            os.makedirs(params['unit_dir'], exist_ok=True)
            tmp = path + '.tmp'
            with open(tmp, 'w', encoding='utf-8') as handle:
                handle.write(want)
            os.replace(tmp, path)
            systemctl(run, 'daemon-reload')
        systemctl(run, 'enable', UNIT_NAME)
        systemctl(run, 'restart' if active else 'start', UNIT_NAME)
        wait_answering(params)
    return bool(action), dict(facts, running=True, action=action, unit_before=have, unit_after=want)
