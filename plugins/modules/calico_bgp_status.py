#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_bgp_status
short_description: Read a host's BGP sessions and routes, like calicoctl node status
version_added: 0.1.0
description:
  - Asks the host's BIRD (C(birdc show protocols all)) for every BGP session with its state, the time of
    its last state change and its route counts, and reads the kernel's routing table for the routes BIRD
    installed (C(proto bird)), the workload routes and the blackholed blocks this collection owns, in both
    families (IPv6 in RV(routes6)).
  - Read-only; never reports a change.
author:
  - netfleet.calico contributors (!UNKNOWN)
options:
  socket:
    description: BIRD control socket.
    type: path
    default: /run/bird/bird.ctl
extends_documentation_fragment:
  - netfleet.calico.route_protocol
  - netfleet.calico.workloads
  - netfleet.calico.birdc
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Read-only; there is nothing to diff.
  platform:
    platforms: linux
    support: full
    description: Linux hosts running BIRD 2 (talks to its control socket).
"""

EXAMPLES = r"""
- name: Read BGP status
  netfleet.calico.calico_bgp_status:
    socket: /run/bird/bird.ctl
  register: bgp

- name: Fail unless every session is up
  ansible.builtin.assert:
    that: bgp.sessions | rejectattr('established') | list | length == 0
"""

RETURN = r"""
bird_running:
  description: Whether BIRD answered on its socket.
  returned: always
  type: bool
sessions:
  description:
    - One entry per BGP protocol. C(filtered) counts the routes the peer announces now that the session's import
      filter refused (prefixes the plan does not let that peer announce).
  returned: always
  type: list
  elements: dict
  sample:
    - name: mesh_192_168_100_101
      description: host-b
      peer_ip: 192.168.100.101
      peer_as: 64512
      local_as: 64512
      type: ibgp
      state: up
      since: "2026-11-25 11:50:47"
      info: Established
      established: true
      imported: 1
      exported: 1
      filtered: 0
routes:
  description: Kernel routes by owner.
  returned: always
  type: dict
  sample:
    bird: [{dest: 172.17.9.0/24, gateway: 192.168.100.101, dev: eth0}]
    workloads: [{dest: 172.17.8.2, dev: cali1a2b3c4d5e6}]
    blackholes: [172.17.8.0/24]
routes6:
  description:
    - The IPv6 kernel routes by owner, in the shape of RV(routes) (dual stack); empty lists on a host without
      IPv6 routes or with IPv6 disabled.
  returned: always
  type: dict
  sample:
    bird: [{dest: "fd00:17::40/122", gateway: "fd00:101::12", dev: eth0}]
    workloads: [{dest: "fd00:17::1", dev: cali1a2b3c4d5e6}]
    blackholes: ["fd00:17::/122"]
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils.bird import read_sessions


def read_routes(module, protocol, prefix, family=4):
    ip = module.get_bin_path("ip", required=True)
    rc, out, err = module.run_command([ip, "-j", "-%d" % family, "route", "show", "table", "main"])
    routes = {"bird": [], "workloads": [], "blackholes": [], "owned": []}
    if rc != 0:
        if family == 6 and "not supported" in err:  # IPv6 disabled on this host: it holds no IPv6 route
            return routes
        module.fail_json(msg="ip -%d route show failed: %s" % (family, err.strip()))
    for r in json.loads(out or "[]"):
        proto = str(r.get("protocol", ""))
        entry = {"dest": r.get("dst"), "gateway": r.get("gateway"), "dev": r.get("dev")}
        if proto == "bird":
            routes["bird"].append(entry)
        elif proto == str(protocol):
            if r.get("type") == "blackhole":
                routes["blackholes"].append(r.get("dst"))
            elif (r.get("dev") or "").startswith(prefix):
                routes["workloads"].append(entry)
            else:
                routes["owned"].append(entry)
    return routes


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", default="/run/bird/bird.ctl"),
            birdc_binary=dict(type="str", default="birdc"),
            protocol=dict(type="int", default=80),
            interface_prefix=dict(type="str", default="cali"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, **read_sessions(module.run_command, module.get_bin_path(p["birdc_binary"]),
                                                 p["socket"]))
    result["routes"] = read_routes(module, p["protocol"], p["interface_prefix"])
    result["routes6"] = read_routes(module, p["protocol"], p["interface_prefix"], family=6)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
