#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_sysctl
short_description: Set several kernel parameters at once, optionally persisted in one sysctl.d file
version_added: 0.1.0
description:
  - Reads every key under C(/proc/sys), writes only the ones whose value differs, and reads them back.
    Works like M(ansible.posix.sysctl) for a whole dict in one task, without running C(sysctl).
  - Values are compared the way the kernel prints them (whitespace collapsed; C(true)/C(false) are C(1)/C(0)).
  - Keys are per network namespace where the kernel makes them so (C(net.*)); the module acts on the
    namespace it runs in.
  - With I(persist_file), the file is written with exactly these keys (sorted), so the settings survive a reboot.
    The file is replaced atomically and only when its content differs.
  - Used for the host settings of a Calico-style node, such as C(net.ipv4.ip_forward=1).
author:
  - netfleet.calico developers
options:
  sysctls:
    description:
      - Map of sysctl name to value. Names use dots (C(net.ipv4.ip_forward)) or slashes
        (C(net/ipv4/conf/eth0.100/forwarding), needed when a component contains a dot, as with sysctl(8)).
      - Every key must exist in the running kernel; unknown keys fail before anything is written.
    type: dict
    required: true
  persist_file:
    description:
      - Path of a sysctl.d file to write with exactly these keys, for example C(/etc/sysctl.d/60-netfleet-calico.conf).
      - C(null) (default) only sets the running values.
    type: path
attributes:
  check_mode:
    support: full
    description: Reads the current values and reports what would change.
  diff_mode:
    support: full
    description: Running values before and after (C(key = value) lines) and, with I(persist_file), the file content.
  platform:
    support: full
    platforms: posix
    description: Linux (C(/proc/sys)); run as root.
seealso:
  - module: ansible.posix.sysctl
"""

EXAMPLES = r"""
- name: Host settings of a Calico-style router
  netfleet.calico.calico_sysctl:
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv4.conf.all.forwarding: 1
      net.ipv4.neigh.default.gc_thresh3: 8192
    persist_file: /etc/sysctl.d/60-netfleet-calico.conf

- name: Key with a dotted interface name (slash form)
  netfleet.calico.calico_sysctl:
    sysctls:
      net/ipv4/conf/eth0.100/rp_filter: 0
"""

RETURN = r"""
sysctls:
  description: The values after the run (as the kernel prints them), by the names given.
  returned: always
  type: dict
  sample: {net.ipv4.ip_forward: "1"}
changed_keys:
  description: Names whose running value was (or in check mode would be) changed.
  returned: always
  type: list
  elements: str
  sample: [net.ipv4.ip_forward]
previous:
  description: Values before the run, for the changed keys.
  returned: always
  type: dict
  sample: {net.ipv4.ip_forward: "0"}
persist_changed:
  description: Whether I(persist_file) was (or would be) rewritten.
  returned: always
  type: bool
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import iproute

# Where the running values live (a module attribute so that tests can point it elsewhere).
SYSCTL_ROOT = iproute.PROC_SYS
PERSIST_HEADER = '# Managed by netfleet.calico.calico_sysctl; local changes are overwritten.\n'


def normalize_sysctls(raw):
    """Validate names and values; return an ordered list of (name, path-form key, value). Raise ValueError."""
    if not isinstance(raw, dict):
        raise ValueError('sysctls must be a dict of name: value')
    items, seen = [], {}
    for name in sorted(raw, key=lambda key: iproute.sysctl_key(str(key))):
        value = raw[name]
        if value is None or isinstance(value, (dict, list)):
            raise ValueError('sysctl %s: value must be a string or number, got %r' % (name, value))
        text = iproute.normalize_sysctl_value(value)
        if not text or any(ch in str(value) for ch in '#\n\r\x00'):
            raise ValueError('sysctl %s: value %r must be a single non-empty line without "#"' % (name, value))
        path = iproute.sysctl_path(name, '')  # raises ValueError on a bad name
        if path in seen:
            raise ValueError('sysctl %s and %s are the same key' % (seen[path], name))
        seen[path] = name
        items.append((str(name), text))
    return items


def render_persist(items):
    return PERSIST_HEADER + ''.join('%s = %s\n' % (iproute.sysctl_key(name), value) for name, value in items)


def plan(items, root=None):
    """Return (current values dict, names to change). Raise ValueError for keys that do not exist."""
    root = root or SYSCTL_ROOT
    current, missing, unreadable = {}, [], []
    for name, _value in items:
        try:
            current[name] = iproute.read_sysctl(name, root)
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


def read_file(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_file_atomic(module, path, content):
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        raise OSError('directory %s does not exist' % directory)
    fd, tmp = tempfile.mkstemp(prefix='.calico_sysctl.', dir=directory)
    with os.fdopen(fd, 'w') as handle:
        handle.write(content)
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysctls=dict(type='dict', required=True),
            persist_file=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    persist_file = module.params['persist_file']
    try:
        items = normalize_sysctls(module.params['sysctls'])
        current, to_change = plan(items)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    wanted = dict(items)

    persist_before = persist_after = None
    if persist_file:
        persist_before = read_file(persist_file)
        persist_after = render_persist(items)
    persist_changed = bool(persist_file) and persist_before != persist_after

    if not module.check_mode:
        for name in to_change:
            try:
                iproute.write_sysctl(name, wanted[name], SYSCTL_ROOT)
            except OSError as exc:
                module.fail_json(msg='cannot set sysctl %s=%s: %s' % (name, wanted[name], exc.strerror or exc),
                                 changed_keys=to_change[:to_change.index(name)])
            now = iproute.read_sysctl(name, SYSCTL_ROOT)
            if now != wanted[name]:
                module.fail_json(msg='sysctl %s: wrote %s but the kernel reports %s' % (name, wanted[name], now),
                                 changed_keys=to_change[:to_change.index(name) + 1])
        if persist_changed:
            try:
                write_file_atomic(module, persist_file, persist_after)
            except OSError as exc:
                module.fail_json(msg='cannot write %s: %s' % (persist_file, exc), changed_keys=to_change)

    result = {
        'changed': bool(to_change) or persist_changed,
        'sysctls': {name: wanted[name] for name, _value in items},
        'changed_keys': to_change,
        'previous': {name: current[name] for name in to_change},
        'persist_changed': persist_changed,
    }
    if module._diff:
        diffs = [{
            'before_header': 'sysctl (running)', 'after_header': 'sysctl (wanted)',
            'before': ''.join('%s = %s\n' % (name, current[name]) for name, _value in items),
            'after': ''.join('%s = %s\n' % (name, value) for name, value in items),
        }]
        if persist_file:
            diffs.append({'before_header': persist_file, 'after_header': persist_file,
                          'before': persist_before or '', 'after': persist_after})
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
