# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CNI plugin's host-local store: one JSON record per container attachment, and the IPAM
that hands out addresses from the host's planned ranges.

Layout under the data directory (``/var/lib/netfleet-calico/cni`` by default)::

    lock                      flock(2) taken by every writer: the plugin's ADD/DEL/GC and the converge
    endpoints/<id>_<if>.json  one attachment: container id, interface, namespace, network, address (and IPv6
                              address on a dual-stack host), labels
    next/<network>            where the next allocation in that network starts (round robin)
    next6/<network>           the same for its IPv6 range (dual stack)

Every ADD that a runtime starts at the same time serialises on the lock, so two containers never get
one address; a record is written before the data plane is touched, so an interrupted ADD leaves
something that DEL or GC can find and undo. Standard library only: the plugin runs without Ansible.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import re
import signal
import time

CONTAINER_ID_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}\Z')
IFNAME_RE = re.compile(r'[A-Za-z0-9_.\-]{1,15}\Z')
NETWORK_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}\Z')
# container labels (Kubernetes-like): what a network declares and what a runtime may pass
LABEL_KEY_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_./-]{0,252}\Z')
LABEL_VALUE_RE = re.compile(r'[A-Za-z0-9_.-]{0,63}\Z')


class StoreError(Exception):
    """A store problem; ``code`` is the CNI error code the plugin reports."""

    def __init__(self, msg, code=5, details=''):
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.details = details


class Exhausted(StoreError):
    """No free address left in a network's range."""


def record_key(container_id, ifname):
    if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
        raise StoreError('container id %r is not a valid CNI container id (letters, digits, _ . -)'
                         % (container_id,), code=4)
    if not isinstance(ifname, str) or not IFNAME_RE.match(ifname) or ifname in ('.', '..'):
        raise StoreError('interface name %r is not a valid interface name' % (ifname,), code=4)
    return '%s_%s' % (container_id, ifname)


class _LockTimeout(StoreError):
    def __init__(self):
        super().__init__('the store stayed locked', code=11)


def _expired(_signum, _frame):
    raise _LockTimeout()


def _try_flock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False


def _flock(fd, timeout):
    """Take flock(LOCK_EX) on ``fd`` within ``timeout`` seconds; False if it stayed taken.

    A waiter sleeps in flock(2) and the kernel wakes it as soon as the holder lets go (every ADD and
    DEL of a host queues here when a runtime starts many containers at once); SIGALRM bounds the wait.
    Where that signal is not ours to use (not the main thread, a handler or a timer already set) it
    polls instead."""
    if _try_flock(fd):
        return True
    mine = signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    if mine:
        try:
            signal.signal(signal.SIGALRM, _expired)
        except ValueError:  # not the main thread
            mine = False
    if mine:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        except _LockTimeout:
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
    deadline = time.monotonic() + timeout
    while time.monotonic() <= deadline:
        time.sleep(0.002)
        if _try_flock(fd):
            return True
    return False


class Store:
    """Records and allocations under ``data_dir``; call the mutating methods inside :meth:`locked`."""

    def __init__(self, data_dir):
        self.dir = data_dir
        self.endpoints = os.path.join(data_dir, 'endpoints')
        self.next_dir = os.path.join(data_dir, 'next')
        self.next6_dir = os.path.join(data_dir, 'next6')

    @contextlib.contextmanager
    def locked(self, timeout=60.0):
        for path in (self.dir, self.endpoints, self.next_dir, self.next6_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.dir, 'lock'), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _flock(fd, timeout):
                raise StoreError('the store %s stayed locked for %.0f s' % (self.dir, timeout), code=11)
            yield self
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ records
    def path(self, key):
        return os.path.join(self.endpoints, key + '.json')

    def get(self, key):
        try:
            with open(self.path(key), encoding='utf-8') as handle:
                record = json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            return {'key': key, 'corrupt': True}
        return record if isinstance(record, dict) else {'key': key, 'corrupt': True}

    def records(self):
        """All records by key (a corrupt file is returned as ``{'key', 'corrupt': True}``)."""
        out = {}
        try:
            names = os.listdir(self.endpoints)
        except FileNotFoundError:
            return out
        for name in names:
            if name.endswith('.json'):
                key = name[:-5]
                out[key] = self.get(key)
        return out

    def put(self, record):
        path = self.path(record['key'])
        tmp = path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as handle:
            json.dump(record, handle, sort_keys=True)
        os.replace(tmp, path)

    def remove(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    # ------------------------------------------------------------------ IPAM
    def allocate(self, network, cidr, reserved=(), records=None, family=4):
        """The next free address of ``cidr`` for ``network`` (round robin from the last one handed out),
        skipping ``reserved`` (the host's static workloads) and every address a record holds. ``family`` 6
        hands out the records' ``ip6`` from an IPv6 range, with its own round-robin pointer."""
        net = ipaddress.ip_network(cidr)
        if net.version != family:
            raise ValueError('network %s: range %s is not an IPv%d network' % (network, cidr, family))
        field, directory, zero = ('ip6', self.next6_dir, '::') if family == 6 else ('ip', self.next_dir, '.0')
        records = self.records() if records is None else records
        used = {r.get(field) for r in records.values() if r} | set(reserved)
        first, size = int(net.network_address), net.num_addresses
        pointer_file = os.path.join(directory, network)
        try:
            with open(pointer_file, encoding='ascii') as handle:
                start = int(handle.read().strip() or 0) - first
        except (FileNotFoundError, ValueError):
            start = 0
        if not 0 <= start < size:
            start = 0
        for step in range(size):
            value = first + (start + step) % size
            text = str(ipaddress.IPv6Address(value) if family == 6 else ipaddress.IPv4Address(value))
            if text in used or (size > 1 and value == first and text.endswith(zero)):
                # never the .0 of a range (some stacks still treat it as a network address), nor an IPv6
                # range's all-zeros address (the Subnet-Router anycast address of a block)
                continue
            with open(pointer_file + '.tmp', 'w', encoding='ascii') as handle:
                handle.write(str(value + 1))
            os.replace(pointer_file + '.tmp', pointer_file)
            return text
        raise Exhausted('network %s: no free address left in %s (%d in use)'
                        % (network, net, len([r for r in records.values() if r and r.get('network') == network])),
                        code=100, details='stop containers on this host or give the network a larger range')
