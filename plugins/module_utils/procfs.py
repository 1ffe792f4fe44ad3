# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Kernel state read and written as files, without a subprocess (standard library only, like iproute):
sysctls under /proc/sys (per network namespace of the calling process) and the named network namespaces
under /run/netns."""

from __future__ import annotations

import os

from ansible_collections.netfleet.calico.plugins.module_utils.iproute import NETNS_RUN_DIR, PROC_SYS, UNSAFE_CHARS

# --------------------------------------------------------------------------------------------
# sysctl
# --------------------------------------------------------------------------------------------


def sysctl_path(name, root=PROC_SYS):
    """'net.ipv4.ip_forward' or 'net/ipv4/conf/eth0.100/forwarding' -> path under /proc/sys.

    As with sysctl(8), a name containing '/' is split on '/' only (needed for interface names
    with dots); otherwise '.' separates components."""
    text = str(name).strip()
    parts = text.strip('/').split('/') if '/' in text else text.split('.')
    if not text or any(part in ('', '.', '..') for part in parts) or any(UNSAFE_CHARS.search(p) for p in parts):
        raise ValueError('invalid sysctl name %r' % (name,))
    return os.path.join(root, *parts)


def sysctl_key(name):
    """Canonical dotted form of a sysctl name (slash form kept if a component contains a dot)."""
    text = str(name).strip()
    if '/' not in text:
        return text
    parts = text.strip('/').split('/')
    return '/'.join(parts) if any('.' in part for part in parts) else '.'.join(parts)


def normalize_sysctl_value(value):
    """Compare values the way the kernel prints them: booleans as 1/0, whitespace collapsed."""
    if isinstance(value, bool):
        return '1' if value else '0'
    return ' '.join(str(value).split())


def read_sysctl(name, root=PROC_SYS):
    """Current value (normalised), or None if the key does not exist."""
    try:
        with open(sysctl_path(name, root)) as handle:
            return normalize_sysctl_value(handle.read())
    except FileNotFoundError:
        return None


def write_sysctl(name, value, root=PROC_SYS):
    with open(sysctl_path(name, root), 'w') as handle:
        handle.write(normalize_sysctl_value(value))


# --------------------------------------------------------------------------------------------
# namespaces
# --------------------------------------------------------------------------------------------

def _nsfs_dev():
    try:
        return os.stat('/proc/self/ns/net').st_dev
    except OSError:  # pragma: no cover
        return None


def netns_state(name, run_dir=NETNS_RUN_DIR, nsfs_dev=None):
    """'present' (a mounted namespace), 'broken' (a bare file, e.g. left by `ip netns add` run in
    a private mount namespace) or 'absent'."""
    path = os.path.join(run_dir, name)
    try:
        st = os.stat(path)
    except OSError:
        return 'absent'
    if nsfs_dev is None:
        nsfs_dev = _nsfs_dev()
    if nsfs_dev is not None and st.st_dev != nsfs_dev:
        return 'broken'
    return 'present'


def netns_dir_is_slave(run_dir=NETNS_RUN_DIR, mountinfo='/proc/self/mountinfo'):
    """True if ``run_dir`` is a slave mount in this mount namespace.

    That is the case under ``ip netns exec`` (it unshares the mount namespace and makes "/"
    rslave): a namespace created there with ``ip netns add`` is bind-mounted in the private
    mount namespace only, so it disappears for everyone else when the process exits. Callers
    must refuse to create namespaces then (``nsenter --net=...`` keeps the mount namespace)."""
    try:
        with open(mountinfo) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    slave = False
    for line in lines:  # the last entry for a mount point is the one on top
        fields = line.split()
        if len(fields) < 7 or fields[4] != run_dir:
            continue
        optional = fields[6:fields.index('-')] if '-' in fields else fields[6:]
        slave = any(opt.startswith('master:') for opt in optional)
    return slave
