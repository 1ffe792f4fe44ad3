#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_boot
short_description: Install the boot-time restore of a host's last converged fabric state
version_added: 0.1.0
description:
  - A reboot empties the kernel - the block's blackhole and the other owned routes, the C(cali-*) chains, the IPIP
    tunnel, the workloads' veths - and BIRD, started by its unit, would announce the block before anything is in
    place. M(netfleet.calico.calico_node_state) (its O(netfleet.calico.calico_node_state#module:boot) part, which
    also does what this module does, in the converge's one run) and M(netfleet.calico.calico_chains) (its
    O(netfleet.calico.calico_chains#module:boot_state)) record what they converged in O(state_dir); this module
    installs the program that applies those records again (the same code the modules run), and with
    O(service_manager=systemd) the unit C(netfleet-calico-restore.service) that runs it at every boot, after
    C(network.target) and before BIRD's unit. The next site.yml then finds nothing to change.
  - The program is C(<lib_dir>/netfleet-calico-restore.py) (standard library and this collection's module_utils
    only); run it by hand with C(--check) to see what a reboot would restore.
author:
  - netfleet.calico developers (!UNKNOWN)
options:
  state:
    description: Whether the restore is installed (and its unit enabled).
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description: Where the modules record the converged state (C(node.json), C(chains.json)).
    type: path
    default: /var/lib/netfleet-calico/boot
  lib_dir:
    description: Where the program and its code are installed.
    type: path
    default: /usr/lib/netfleet-calico-restore
  python:
    description: Interpreter of the program (started with C(-I -S)).
    type: path
    default: /usr/bin/python3
  service_manager:
    description:
      - V(systemd) installs and enables C(netfleet-calico-restore.service) in O(unit_dir); V(pidfile) (hosts without
        an init of their own, such as the lab's) installs the program only.
    type: str
    choices: [systemd, pidfile]
    default: systemd
  unit_dir:
    description: Where the unit is written.
    type: path
    default: /etc/systemd/system
  bird_service:
    description: BIRD's unit; the restore runs before it.
    type: str
    default: bird
attributes:
  check_mode:
    support: full
    description: Reports the files and the unit that would change.
  diff_mode:
    support: full
    description: The files (code by its size) and the unit's enablement.
  platform:
    support: full
    platforms: posix
    description: Linux; run as root.
seealso:
  - module: netfleet.calico.calico_node_state
  - module: netfleet.calico.calico_chains
"""

EXAMPLES = r"""
- name: Restore the fabric state at boot, before BIRD
  netfleet.calico.calico_boot:

- name: Remove it
  netfleet.calico.calico_boot:
    state: absent
"""

RETURN = r"""
files_changed:
  description: Files written or removed (or that would be).
  returned: always
  type: list
  elements: str
unit:
  description: The unit file, with O(service_manager=systemd).
  returned: always
  type: str
  sample: /etc/systemd/system/netfleet-calico-restore.service
enabled:
  description: Whether the unit is enabled.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import boot_install, files
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff


def main():
    module = AnsibleModule(
        argument_spec=dict(boot_install.OPTIONS),
        supports_check_mode=True,
    )
    try:
        result = boot_install.converge(dict(module.params), module.check_mode, module.run_command)
    except (files.InstallError, OSError) as exc:
        module.fail_json(msg='calico_boot: %s' % (getattr(exc, 'strerror', None) or exc))
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
