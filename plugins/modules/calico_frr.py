#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_frr
short_description: Run and reload FRR daemons tracked by pid files in one directory
version_added: 0.2.0
description:
  - Runs FRR's O(daemons) (C(zebra) first) each with its pid file, vty socket, zserv socket and log in
    O(state_dir), so several FRRs share one machine (spine routers that are network namespaces in the lab).
    Real spines run FRR's systemd unit instead (role spine).
  - C(reloaded) applies O(config) to running daemons with FRR's C(frr-reload.py), which changes only what differs,
    so unchanged BGP sessions stay up. Check the configuration (C(vtysh --dryrun)) before.
author:
  - netfleet.calico contributors (!UNKNOWN)
options:
  state:
    description:
      - C(started) starts the daemons that do not run (and stops running FRR daemons not in O(daemons)).
      - C(reloaded) does the same, then applies O(config) to the daemons that already ran.
      - C(stopped) stops every FRR daemon of O(state_dir).
    type: str
    choices: [started, reloaded, stopped]
    default: started
  state_dir:
    description: Directory of the daemons' pid files and sockets (owned by the FRR user).
    type: path
    required: true
  config:
    description: FRR's integrated configuration file.
    type: path
    required: true
  daemons:
    description: Daemons to run.
    type: list
    elements: str
    choices: [zebra, bgpd, bfdd]
    default: [zebra, bgpd]
  libdir:
    description: Directory of FRR's daemons and C(frr-reload.py).
    type: path
    default: /usr/lib/frr
  vtysh_binary:
    description: Path of C(vtysh) (C(frr-reload.py) runs it from its directory).
    type: path
    default: /usr/bin/vtysh
  timeout:
    description: Seconds to wait for a daemon to start or stop.
    type: int
    default: 15
notes:
  - Supports check mode (reports what it would start, stop or reload).
"""

EXAMPLES = r"""
- name: Run FRR of a lab spine (its own directory for pid files and sockets)
  netfleet.calico.calico_frr:
    state: started
    state_dir: /run/netfleet/nf/sp1
    config: /run/netfleet/nf/sp1/frr.conf
    daemons: [zebra, bgpd]
"""

RETURN = r"""
started:
  description: Daemons started by this run.
  returned: always
  type: list
  elements: str
stopped:
  description: Daemons stopped by this run.
  returned: always
  type: list
  elements: str
reloaded:
  description: Whether frr-reload.py applied the configuration to running daemons.
  returned: always
  type: bool
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import frr


def run(module):
    p = module.params
    state_dir, config = p['state_dir'], p['config']
    wanted = [d for d in frr.ORDER if d in p['daemons'] and p['state'] != 'stopped']
    result = {'changed': False, 'started': [], 'stopped': [], 'reloaded': False}
    for daemon in reversed(frr.ORDER):
        if daemon not in wanted and frr.running_pid(state_dir, daemon):
            result['stopped'].append(daemon)
            if not module.check_mode:
                frr.stop(state_dir, daemon, p['timeout'])
    ran = [d for d in wanted if frr.running_pid(state_dir, d)]
    for daemon in wanted:
        if daemon in ran:
            continue
        result['started'].append(daemon)
        if module.check_mode:
            continue
        rc, out, err = module.run_command(frr.start_command(p['libdir'], state_dir, daemon, config))
        if rc != 0 or not frr.wait_started(state_dir, daemon, p['timeout']):
            module.fail_json(msg=f'{daemon} did not start (rc {rc}): {(err or out).strip()[-500:]}', **result)
    if p['state'] == 'reloaded' and ran:
        result['reloaded'] = True
        if not module.check_mode:
            rc, out, err = module.run_command(frr.reload_command(
                sys.executable, os.path.join(p['libdir'], 'frr-reload.py'), p['vtysh_binary'], state_dir, config))
            if rc != 0:
                module.fail_json(msg=f'frr-reload.py failed (rc {rc}): {(err or out).strip()[-500:]}', **result)
    result['changed'] = bool(result['started'] or result['stopped'] or result['reloaded'])
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            'state': {'type': 'str', 'choices': ['started', 'reloaded', 'stopped'], 'default': 'started'},
            'state_dir': {'type': 'path', 'required': True},
            'config': {'type': 'path', 'required': True},
            'daemons': {'type': 'list', 'elements': 'str', 'choices': ['zebra', 'bgpd', 'bfdd'],
                        'default': ['zebra', 'bgpd']},
            'libdir': {'type': 'path', 'default': '/usr/lib/frr'},
            'vtysh_binary': {'type': 'path', 'default': '/usr/bin/vtysh'},
            'timeout': {'type': 'int', 'default': 15},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == '__main__':
    main()
