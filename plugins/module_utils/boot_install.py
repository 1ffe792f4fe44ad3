# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Installing the boot-time restore (module calico_boot): its code, its entry point and, with systemd,
the unit ``netfleet-calico-restore.service`` that runs it before ``bird.service`` at every boot."""

from __future__ import annotations

import os
import re

from ansible_collections.netfleet.calico.plugins.module_utils import (
    boot,
    chains,
    chains_restore,
    files,
    host_state,
    iproute,
    iproute_routes,
    procfs,
    procs,
    routes,
    sysctl,
    tunnel,
    workload_spec,
    workloads,
)

RESTORE_MODULES = (boot, chains, chains_restore, host_state, iproute, iproute_routes, procfs, procs, routes, sysctl,
                   tunnel, workload_spec, workloads)
UNIT_NAME = 'netfleet-calico-restore.service'
UNIT_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9@_.:-]{0,200}\Z')
LAUNCHER = """#!{python} -IS
# netfleet-calico boot-time restore, installed by the netfleet.calico collection (role calico_node):
# applies this host's last converged state ({state_dir}) at boot, before BIRD starts.
import sys
sys.path.insert(0, {lib_dir!r})
from ansible_collections.netfleet.calico.plugins.module_utils.boot import main
sys.exit(main(['--state-dir', {state_dir!r}] + sys.argv[1:]))
"""
UNIT = """[Unit]
Description=netfleet-calico: this host's last converged fabric state (routes, chains, tunnel, workloads)
After=network.target
Before={bird_service}
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={python} -IS {launcher}

[Install]
WantedBy=multi-user.target
"""


# The install's options: module calico_boot's, and calico_node_state's ``boot`` part.
OPTIONS = dict(
    state=dict(type='str', default='present', choices=['present', 'absent']),
    state_dir=dict(type='path', default='/var/lib/netfleet-calico/boot'),
    lib_dir=dict(type='path', default='/usr/lib/netfleet-calico-restore'),
    python=dict(type='path', default='/usr/bin/python3'),
    service_manager=dict(type='str', default='systemd', choices=['systemd', 'pidfile']),
    unit_dir=dict(type='path', default='/etc/systemd/system'),
    bird_service=dict(type='str', default='bird'),
)


def launcher_path(params):
    return os.path.join(params['lib_dir'], 'netfleet-calico-restore.py')


def unit_path(params):
    return os.path.join(params['unit_dir'], UNIT_NAME)


def desired_files(params):
    want = files.code_files(params['lib_dir'], RESTORE_MODULES)
    want[launcher_path(params)] = (LAUNCHER.format(python=params['python'], lib_dir=params['lib_dir'],
                                                   state_dir=params['state_dir']), 0o755)
    if params['service_manager'] == 'systemd':
        want[unit_path(params)] = (UNIT.format(python=params['python'], launcher=launcher_path(params),
                                               bird_service=params['bird_service'] + '.service'), 0o644)
    return want


def installed_files(params):
    """Every file this installer may have written (for removal)."""
    pkg = os.path.join(params['lib_dir'], *files.PACKAGE_PATH)
    return [os.path.join(pkg, m.__name__.rsplit('.', 1)[-1] + '.py') for m in RESTORE_MODULES] + [
        launcher_path(params), unit_path(params)]


def records(params):
    """The modules' records, removed with the restore (nothing else reads them)."""
    return [os.path.join(params['state_dir'], name) for name in (boot.NODE_FILE, boot.CHAINS_FILE)]


def converge(params, check_mode, run):
    """Bring the installation to ``params``; ``run(argv) -> (rc, out, err)`` runs systemctl."""
    for key in ('lib_dir', 'state_dir', 'python', 'unit_dir'):
        params[key] = files.check_path(params[key], key)
    if not isinstance(params['bird_service'], str) or not UNIT_RE.match(params['bird_service']):
        raise files.InstallError('bird_service %r is not a unit name' % (params['bird_service'],))
    present = params['state'] == 'present'
    want = desired_files(params) if present else {}
    stale = [p for p in installed_files(params) + ([] if present else records(params)) if p not in want]
    writes, removes, before, after = files.plan_files(want, stale)
    systemd = params['service_manager'] == 'systemd'
    unit = unit_path(params)
    enable = None
    if systemd and present:
        enabled = run(['systemctl', 'is-enabled', UNIT_NAME])[0] == 0
        enable = 'enable' if not enabled else None
    elif (unit in removes or (not present and os.path.exists(unit))):
        enable = 'disable'
    if not check_mode:
        for path in writes:
            files.write(path, want[path][0], want[path][1])
        if enable == 'disable':
            run(['systemctl', 'disable', UNIT_NAME])
        for path in removes:
            os.unlink(path)
        if systemd and (unit in writes or unit in removes):
            _systemctl(run, 'daemon-reload')
        if enable == 'enable':
            _systemctl(run, 'enable', UNIT_NAME)
        if not present:
            files.remove_package_dirs(params['lib_dir'])
    return {
        'changed': bool(writes or removes or enable),
        'files_changed': writes + removes,
        'unit': unit if systemd and present else None,
        'enabled': bool(systemd and present),
        'diff': {'before_header': 'boot-time restore', 'after_header': 'boot-time restore (wanted)',
                 'before': before + ('unit enabled\n' if enable == 'disable' else ''),
                 'after': after + ('unit enabled\n' if enable == 'enable' else '')},
    }


def _systemctl(run, *args):
    rc, out, err = run(['systemctl'] + list(args))
    if rc != 0:
        raise files.InstallError('systemctl %s failed: %s' % (' '.join(args), (err or out).strip()))


def converge_with_record(params, node_params, check_mode, run):
    """calico_node_state's ``boot`` part: the installation, then (outside check mode, when present) the
    record of the kernel parts it just converged (``node_params``: the module's arguments)."""
    result = converge(params, check_mode, run)
    if params['state'] == 'present' and not check_mode:
        path = os.path.join(params['state_dir'], boot.NODE_FILE)
        if boot.record_node(path, node_params):
            result['changed'] = True
            result['files_changed'].append(path)
    return result
