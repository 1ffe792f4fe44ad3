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
  - netfleet.calico developers (!UNKNOWN)
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, sysctl
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff
from ansible_collections.netfleet.calico.plugins.module_utils.sysctl import (  # noqa: F401 (re-exported)  # pylint: disable=unused-import
    normalize_sysctls,
    plan,
    read_file,
    render_persist,
)

# Where the running values live (a module attribute so that tests can point it elsewhere).
SYSCTL_ROOT = iproute.PROC_SYS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysctls=dict(type='dict', required=True),
            persist_file=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    try:
        result = sysctl.converge(module.params['sysctls'], module.params['persist_file'], SYSCTL_ROOT,
                                 module.check_mode, module.atomic_move)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except sysctl.SysctlError as exc:
        module.fail_json(msg=str(exc), changed_keys=exc.changed_keys)
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
