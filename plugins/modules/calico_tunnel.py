#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_tunnel
short_description: Reconcile the IPIP tunnel device (tun0) of a Calico-style node and its host-protection chain
version_added: 0.1.0
description:
  - Creates or reconciles an IPIP device (default C(tun0)) with C(local) = the node IP and no fixed remote,
    MTU = MTU of the interface holding the node IP minus 20 (the outer IPv4 header), administratively up.
    A device of the wrong type or with another C(local) is replaced; MTU and state are changed in place.
  - With I(state=absent) the device is removed (the kernel drops every route through it).
  - "Host protection (I(firewall)): IP protocol 4 is accepted into the host only from I(allow_from) (the fabric's
    node IPs). A C(cali-*) chain (I(chain)) returns for those sources and drops every other IPIP packet; one jump
    C(-p 4) from C(INPUT) leads to it. Applied with one atomic C(iptables-restore --noflush), read back with
    C(iptables-save); only this chain and its jump are touched. With I(state=absent) both are removed."
  - Reads the state first and acts only when it differs, and never in check mode.
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output; a kernel with IPIP (module C(ipip)).
  - iptables (C(iptables-save), C(iptables-restore)) when I(firewall=true).
options:
  name:
    description: Name of the tunnel device (at most 15 characters).
    type: str
    default: tun0
  state:
    description: C(present) creates/reconciles the device and the chain, C(absent) removes both.
    type: str
    choices: [present, absent]
    default: present
  local:
    description: The node IP, the tunnel's local end; must be an address of an interface of the host. Required
      with I(state=present); with I(state=absent) it only serves to report RV(workload_mtu).
    type: str
  mtu:
    description: Tunnel MTU. Default (null) is the MTU of the interface holding I(local) minus 20.
    type: int
  firewall:
    description: Manage the host-protection chain for IP protocol 4.
    type: bool
    default: true
  allow_from:
    description: Addresses allowed to send IPIP (protocol 4) packets to this host (the other nodes' IPs).
    type: list
    elements: str
    default: []
  chain:
    description: Name of the host-protection chain; must start with C(cali-) (at most 28 characters).
    type: str
    default: cali-INPUT-ipip
attributes:
  check_mode:
    support: full
    description: Reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Shows the device (type, local, remote, MTU, state) and the chain's rules before and after.
  platform:
    support: full
    platforms: posix
    description: Linux.
notes:
  - Routes through the tunnel are programmed by BIRD's kernel export (C(ifname)/C(onlink)), see role
    C(netfleet.calico.calico_node); this module only owns the device and the chain.
seealso:
  - module: netfleet.calico.calico_workloads
"""

EXAMPLES = r"""
- name: IPIP device for cross-subnet peers, IPIP only from fabric hosts
  netfleet.calico.calico_tunnel:
    local: 192.168.100.100
    allow_from: [192.168.100.101, 192.168.200.101, 192.168.200.102]

- name: Mode never - remove tun0 and the chain
  netfleet.calico.calico_tunnel:
    state: absent
"""

RETURN = r"""
device:
  description: The tunnel device after the run (null when absent).
  returned: always
  type: dict
  sample: {kind: ipip, local: 192.168.100.100, remote: any, mtu: 1480, up: true}
mtu:
  description: Tunnel MTU (null when absent).
  returned: always
  type: int
  sample: 1480
parent:
  description: The interface holding I(local) and its MTU (null when absent).
  returned: always
  type: dict
  sample: {ifname: eth0, mtu: 1500}
workload_mtu:
  description: MTU workload veths should use - the tunnel MTU when present, else the MTU of the interface holding
    I(local) (null when I(local) is not given).
  returned: always
  type: int
  sample: 1480
commands:
  description: ip batch lines run (or that would run in check mode).
  returned: always
  type: list
  elements: str
iptables:
  description: The iptables-restore input applied (or that would be), null when the chain was already right.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff


def main():
    module = AnsibleModule(
        argument_spec=tunnel.OPTIONS,
        required_if=[('state', 'present', ['local'])],
        supports_check_mode=True,
    )
    bins = tunnel.binaries(module.get_bin_path, module.params['firewall'])
    try:
        result = tunnel.reconcile(module.params, module.check_mode, tunnel.default_runner, bins)
    except tunnel.TunnelError as exc:
        module.fail_json(msg=tunnel.explain(exc))
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
