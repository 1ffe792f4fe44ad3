# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host sysctls: validate, compare with /proc/sys, write, persist to a sysctl.d file.
Shared by the calico_sysctl and calico_node_state modules."""

from __future__ import annotations

import os
import tempfile

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, procfs
from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_file

# Where the running values live.
SYSCTL_ROOT = iproute.PROC_SYS
PERSIST_HEADER = '# Managed by netfleet.calico.calico_sysctl; local changes are overwritten.\n'


def normalize_sysctls(raw):
    """Validate names and values; return an ordered list of (name, path-form key, value). Raise ValueError."""
    if not isinstance(raw, dict):
        raise ValueError('sysctls must be a dict of name: value')
    items, seen = [], {}
    for name in sorted(raw, key=lambda key: procfs.sysctl_key(str(key))):
        value = raw[name]
        if value is None or isinstance(value, (dict, list)):
            raise ValueError('sysctl %s: value must be a string or number, got %r' % (name, value))
        text = procfs.normalize_sysctl_value(value)
        if not text or any(ch in str(value) for ch in '#\n\r\x00'):
            raise ValueError('sysctl %s: value %r must be a single non-empty line without "#"' % (name, value))
        path = procfs.sysctl_path(name, '')  # raises ValueError on a bad name
        if path in seen:
            raise ValueError('sysctl %s and %s are the same key' % (seen[path], name))
        seen[path] = name
        items.append((str(name), text))
    return items


def render_persist(items):
    return PERSIST_HEADER + ''.join('%s = %s\n' % (procfs.sysctl_key(name), value) for name, value in items)


def plan(items, root=None):
    """Return (current values dict, names to change). Raise ValueError for keys that do not exist."""
    root = root or SYSCTL_ROOT
    current, missing, unreadable = {}, [], []
    for name, _value in items:
        try:
            current[name] = procfs.read_sysctl(name, root)
        except OSError as exc:
            unreadable.append('%s (%s)' % (name, exc.strerror or exc))
            continue
        if current[name] is None:
            missing.append(name)
    if missing:
        raise ValueError('unknown sysctl%s: %s (no such key under %s)' % ('s' if len(missing) > 1 else '',
                                                                          ', '.join(missing), root))
    if unreadable:
        raise ValueError('cannot read sysctl %s' % ', '.join(unreadable))
    return current, [name for name, value in items if current[name] != value]


def write_file_atomic(atomic_move, path, content):
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        raise OSError('directory %s does not exist' % directory)
    fd, tmp = tempfile.mkstemp(prefix='.calico_sysctl.', dir=directory)
    with os.fdopen(fd, 'w') as handle:
        handle.write(content)
    os.chmod(tmp, 0o644)
    atomic_move(tmp, path)


class SysctlError(Exception):
    """A failed write; ``changed_keys`` lists what was written before it."""

    def __init__(self, msg, changed_keys):
        super().__init__(msg)
        self.changed_keys = changed_keys


def converge(raw, persist_file=None, root=None, check_mode=False, atomic_move=None):
    """Make the running sysctls (and the optional sysctl.d file) match ``raw``.

    Returns the result dict of calico_sysctl (with a ``diff`` list). Raises ValueError for bad input and
    SysctlError when the kernel refuses a value."""
    root = root or SYSCTL_ROOT
    items = normalize_sysctls(raw)
    current, to_change = plan(items, root)
    wanted = dict(items)
    persist_before = persist_after = None
    if persist_file:
        persist_before = read_file(persist_file)
        persist_after = render_persist(items)
    persist_changed = bool(persist_file) and persist_before != persist_after

    if not check_mode:
        for name in to_change:
            try:
                procfs.write_sysctl(name, wanted[name], root)
            except OSError as exc:
                raise SysctlError('cannot set sysctl %s=%s: %s' % (name, wanted[name], exc.strerror or exc),
                                  to_change[:to_change.index(name)]) from None
            now = procfs.read_sysctl(name, root)
            if now != wanted[name]:
                raise SysctlError('sysctl %s: wrote %s but the kernel reports %s' % (name, wanted[name], now),
                                  to_change[:to_change.index(name) + 1])
        if persist_changed:
            try:
                write_file_atomic(atomic_move, persist_file, persist_after)
            except OSError as exc:
                raise SysctlError('cannot write %s: %s' % (persist_file, exc), to_change) from None

    diffs = [{
        'before_header': 'sysctl (running)', 'after_header': 'sysctl (wanted)',
        'before': ''.join('%s = %s\n' % (name, current[name]) for name, _value in items),
        'after': ''.join('%s = %s\n' % (name, value) for name, value in items),
    }]
    if persist_file:
        diffs.append({'before_header': persist_file, 'after_header': persist_file,
                      'before': persist_before or '', 'after': persist_after})
    return {
        'changed': bool(to_change) or persist_changed,
        'sysctls': {name: wanted[name] for name, _value in items},
        'changed_keys': to_change,
        'previous': {name: current[name] for name in to_change},
        'persist_changed': persist_changed,
        'diff': diffs,
    }
