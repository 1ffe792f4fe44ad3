# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A host's last converged state, recorded by the converge and applied again at boot without the controller.

A reboot empties the kernel: routes (the block's blackhole, floating IPs), the ``cali-*`` chains, the IPIP
tunnel and the workloads' veths are gone until the next site.yml, and BIRD (started by its unit) would
announce the block meanwhile. So every converge records its arguments next to it::

    <state_dir>/node.json     calico_node_state's kernel parts: sysctls, tunnel, routes, endpoints, MTU
    <state_dir>/chains.json   calico_chains' rendered chains per table, backend, insert mode (``chains``
                              for iptables, ``chains6`` for ip6tables)

and ``netfleet-calico-restore`` (unit ``netfleet-calico-restore.service``, ordered before ``bird.service``)
applies them at boot with the same code the modules run (:mod:`host_state`, :func:`chains_restore.converge`),
so the next site.yml finds nothing to change. Standard library and this collection's module_utils only: the
host has no Ansible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from ansible_collections.netfleet.calico.plugins.module_utils import chains_restore, host_state, iproute, tunnel
from ansible_collections.netfleet.calico.plugins.module_utils.workloads import WorkloadReconciler

VERSION = 1
NODE_FILE, CHAINS_FILE = 'node.json', 'chains.json'
CHAINS_KEYS = {4: 'chains', 6: 'chains6'}
SBIN = ('/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin')


class RestoreError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# recording (the modules, after a run that converged)
# ---------------------------------------------------------------------------------------------

def write_if_changed(path, doc):
    """Write ``doc`` as JSON to ``path`` atomically, only when it differs; True when written."""
    text = json.dumps(doc, indent=1, sort_keys=True) + '\n'
    try:
        with open(path, encoding='utf-8') as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or '.'
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def record_node(path, params):
    """calico_node_state's record: its kernel parts' arguments (a persisted sysctl file is already on disk)."""
    node = {key: params.get(key) for key in host_state.PARTS if key != 'sysctl_persist_file'}
    return write_if_changed(path, {'version': VERSION, 'node': node})


def record_chains(path, backend, desired, insert, ignore, cni, family=4):
    """calico_chains' record: the rendered chains of every table and how they are applied, per address family
    (the IPv4 and IPv6 runs share the file; each one replaces its own part)."""
    try:
        doc = read(path) or {'version': VERSION}
    except RestoreError:
        doc = {'version': VERSION}
    doc = {key: doc[key] for key in ('version', 'chains', 'chains6') if key in doc}
    doc[CHAINS_KEYS[family]] = {'backend': backend, 'desired': desired, 'insert': bool(insert),
                                'ignore': sorted(ignore), 'cni': bool(cni)}
    return write_if_changed(path, doc)


# ---------------------------------------------------------------------------------------------
# restoring (at boot)
# ---------------------------------------------------------------------------------------------

def which(name):
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _bin_path(name, required=False):
    path = which(name)
    if path is None and required:
        raise RestoreError('%s not found' % name)
    return path


def read(path):
    try:
        with open(path, encoding='utf-8') as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RestoreError('%s is not valid JSON: %s' % (path, exc)) from None
    if not isinstance(doc, dict) or doc.get('version') != VERSION:
        raise RestoreError('%s is not a netfleet-calico state of version %d' % (path, VERSION))
    return doc


def restore_node(node, check=False):
    """Apply calico_node_state's recorded parts; returns {part: changed}."""
    runners = host_state.Runners(
        make_ip=lambda: iproute.IpCommand(ip_bin=_bin_path('ip', True), nsenter_bin=which('nsenter') or 'nsenter'),
        make_reconciler=lambda ip, settings: WorkloadReconciler(ip, settings, sysctl_root=iproute.PROC_SYS),
        tunnel_runner=tunnel.default_runner,
        tunnel_bins=lambda firewall: tunnel.binaries(_bin_path, firewall))
    parts = {}
    try:
        host_state.apply(node, check, runners, lambda part, result: parts.__setitem__(part, bool(result['changed'])))
    except host_state.PartError as exc:
        raise RestoreError(exc.msg) from None
    return parts


def restore_chains(doc, check=False, family=4):
    key = CHAINS_KEYS[family]
    try:
        ipt = chains_restore.Iptables(doc['backend'], tunnel.default_runner, _bin_path, family=family)
        result = chains_restore.converge(ipt, ipt.save(), doc['desired'], check,
                                         insert=doc['insert'], ignore=frozenset(doc['ignore']), cni=doc['cni'])
    except RuntimeError as exc:
        raise RestoreError('%s: %s' % (key, exc)) from None
    return {key: result['changed']}


def _restore_chains_file(doc, check):
    parts = {}
    for family, key in sorted(CHAINS_KEYS.items()):
        if key in doc:
            parts.update(restore_chains(doc[key], check, family) if family == 6 else restore_chains(doc[key], check))
    return parts


def restore(state_dir, check=False):
    """Apply every record under ``state_dir``; returns {part: changed}. Nothing recorded: nothing to do. The
    chains are restored even when a kernel part failed (a workload whose namespace path is gone, say), and
    the first failure is raised at the end."""
    parts, errors = {}, []
    for name, apply in ((NODE_FILE, lambda doc, check: restore_node(doc['node'], check)),
                        (CHAINS_FILE, _restore_chains_file)):
        try:
            doc = read(os.path.join(state_dir, name))
            if doc is not None:
                parts.update(apply(doc, check))
        except (RestoreError, KeyError, TypeError) as exc:
            errors.append('%s: %s' % (name, exc))
    if errors:
        raise RestoreError('; '.join(errors))
    return parts


def main(argv=None):
    parser = argparse.ArgumentParser(prog='netfleet-calico-restore',
                                     description="Apply this host's last converged netfleet-calico state.")
    parser.add_argument('--state-dir', default='/var/lib/netfleet-calico/boot')
    parser.add_argument('--check', action='store_true', help='report what would change, change nothing')
    args = parser.parse_args(argv)
    try:
        parts = restore(args.state_dir, args.check)
    except (RestoreError, OSError) as exc:
        sys.stderr.write('netfleet-calico-restore: %s\n' % exc)
        return 1
    if not parts:
        sys.stdout.write('netfleet-calico-restore: nothing recorded in %s\n' % args.state_dir)
    for part, changed in sorted(parts.items()):
        state = ('would change' if args.check else 'restored') if changed else 'as recorded'
        sys.stdout.write('netfleet-calico-restore: %s %s\n' % (part, state))
    return 0
