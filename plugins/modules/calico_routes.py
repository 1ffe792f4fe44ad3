#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_routes
short_description: Declare the complete set of routes a host owns under one route protocol number
version_added: 0.1.0
description:
  - Makes the routes tagged with I(protocol) in I(table) exactly the given list, the way Calico's Felix owns
    the routes it programs (protocol 80). Owned routes that are not listed are deleted.
  - Routes of any other protocol (C(kernel), C(boot), C(static), C(bird), ...) are never read into the plan,
    replaced or deleted. A listed route whose destination and metric are already taken by a route of
    another protocol makes the module fail instead of overwriting it.
  - Owned routes on interfaces whose names start with one of I(ignore_device_prefixes) belong to the
    workload endpoints (M(netfleet.calico.calico_workloads)) and are left alone.
  - All changes are applied with one C(ip -batch) process (deletions, additions, then atomic replacements).
  - "Typical use is the host's block blackhole, C([{dest: 172.17.8.0/24, type: blackhole}]), so that unknown
    addresses of the block are dropped instead of leaking to the default route, and BIRD exports the block."
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output (C(-j)).
options:
  routes:
    description:
      - The complete list of owned routes. An empty list deletes every owned route (except those on ignored
        devices).
      - Routes are identified by I(dest) and I(metric), as in the kernel; listing the same pair twice is an error.
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Destination network in CIDR notation (host bits must be zero); IPv4 or IPv6.
        type: str
        required: true
      type:
        description: Route type. C(blackhole), C(unreachable) and C(prohibit) take no I(via) or I(dev).
        type: str
        choices: [unicast, blackhole, unreachable, prohibit]
        default: unicast
      via:
        description: Gateway address (same family as I(dest)).
        type: str
      dev:
        description: Output interface. A unicast route needs I(via) or I(dev).
        type: str
      onlink:
        description:
          - Pretend the gateway is directly attached on I(dev) (needs I(via) and I(dev)), as BIRD does for IPIP routes.
        type: bool
        default: false
      metric:
        description: Route metric (priority). Default 0 for IPv4, 1024 for IPv6, like the kernel.
        type: int
  table:
    description: Routing table (C(main), a number, or a name from C(/etc/iproute2/rt_tables)).
    type: str
    default: main
  ignore_device_prefixes:
    description:
      - Owned routes on devices starting with these prefixes are neither deleted nor reported.
    type: list
    elements: str
    default: [cali]
extends_documentation_fragment:
  - netfleet.calico.route_protocol
attributes:
  check_mode:
    support: full
    description: Reads the routes and reports the changes it would make, without making them.
  diff_mode:
    support: full
    description: The owned routes before and after, one per line, in C(ip route) notation.
  platform:
    support: full
    platforms: posix
    description: Linux with iproute2; run as root.
notes:
  - Both IPv4 and IPv6 owned routes are read (two C(ip -j) calls) and reconciled.
seealso:
  - module: netfleet.calico.calico_workloads
  - module: netfleet.calico.calico_node_facts
"""

EXAMPLES = r"""
- name: Own the host's block as a blackhole (exported by BIRD, drops unknown /32s)
  netfleet.calico.calico_routes:
    routes:
      - dest: 172.17.8.0/24
        type: blackhole

- name: A remote block through an IPIP tunnel, next to the own block
  netfleet.calico.calico_routes:
    routes:
      - {dest: 172.17.8.0/24, type: blackhole}
      - {dest: 172.17.9.0/24, via: 192.168.200.101, dev: tun0, onlink: true}

- name: Remove every route this module owns (workload routes on cali* stay)
  netfleet.calico.calico_routes:
    routes: []
"""

RETURN = r"""
added:
  description: Routes added (C(ip route) notation).
  returned: always
  type: list
  elements: str
  sample: [blackhole 172.17.8.0/24]
replaced:
  description: Routes replaced in place because an attribute differed.
  returned: always
  type: list
  elements: str
deleted:
  description: Owned routes deleted.
  returned: always
  type: list
  elements: str
routes:
  description: The owned routes after the run (C(ip route) notation, sorted).
  returned: always
  type: list
  elements: str
  sample: [blackhole 172.17.8.0/24]
commands:
  description: The C(ip -batch) lines applied (or that would be applied in check mode).
  returned: always
  type: list
  elements: str
  sample: [route add blackhole 172.17.8.0/24 metric 0 proto 80 table main]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff
from ansible_collections.netfleet.calico.plugins.module_utils.routes import (  # noqa: F401 (re-exported)
    ROUTE_OPTIONS,
    build_routes,
    explain_failure,
    reconcile,
)


def make_ip(module):
    """The ip runner (unit tests replace this function)."""
    return iproute.IpCommand(ip_bin=module.get_bin_path('ip', required=True))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            routes=dict(type='list', elements='dict', required=True, options=ROUTE_OPTIONS),
            protocol=dict(type='int', default=iproute.CALICO_PROTOCOL),
            table=dict(type='str', default='main'),
            ignore_device_prefixes=dict(type='list', elements='str', default=[iproute.DEFAULT_INTERFACE_PREFIX]),
        ),
        supports_check_mode=True,
    )
    try:
        routes, protocol, table, ignore = build_routes(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    ip = make_ip(module)
    try:
        result = reconcile(ip, routes, protocol, table, ignore, check_mode=module.check_mode)
    except iproute.IprouteError as exc:
        details = exc.to_dict()
        details['msg'] = explain_failure(exc)
        module.fail_json(**details)
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
