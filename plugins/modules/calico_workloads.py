#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_workloads
short_description: Reconcile the workload endpoints of a host (Calico-style /32 veths with proxy-ARP)
version_added: 0.1.0
description:
  - Makes the workload endpoints of one host exactly the given list, in one call. Each endpoint is a
    network namespace connected to the host by a veth pair, routed as a C(/32) with no bridge and no
    layer-2 adjacency, the way Calico's Felix and CNI plugin wire a workload.
  - Host side of each veth is named I(interface_prefix) plus the first 11 hex characters of the SHA-1 of
    the endpoint name (Calico's rule, 15 characters with C(cali)), has MAC I(mac) (C(ee:ee:ee:ee:ee:ee)),
    is up, carries an ownership alias C(netfleet:ep:<name>:<netns>:<own|ext>), and gets the per-interface
    sysctls C(net.ipv4.conf.<if>.proxy_arp=1), C(net.ipv4.neigh.<if>.proxy_delay=0),
    C(net.ipv4.conf.<if>.forwarding=1), C(net.ipv4.conf.<if>.route_localnet=1) and strict reverse-path
    filtering C(net.ipv4.conf.<if>.rp_filter=1) (a workload cannot send from an address that is not its own),
    written directly under C(/proc/sys); on a host with IPv6 also C(net.ipv6.conf.<if>.accept_ra=0). The host
    routes C(<ip>/32 dev <if> scope link proto <protocol>).
  - Workload side is C(eth0) with C(<ip>/32), up, C(lo) up, the routes C(<gateway> dev eth0 scope link) and
    C(default via <gateway> dev eth0). Nothing owns I(gateway); the host answers ARP for it by proxy-ARP.
    The host needs a route to I(gateway) (normally its default route) for proxy-ARP to answer.
  - Endpoints that are no longer listed (veths with the I(interface_prefix) and this module's alias) are
    removed, together with their namespace if the module created it. Drift is repaired (wrong address,
    missing route, wrong MAC or MTU, link down, missing sysctl); a broken pair is recreated.
  - "Kernel work is batched: one C(ip -batch) for all host-side link work, one for all host routes, and one
    C(ip -n NS -batch) per new or drifted endpoint (run in parallel). A run without changes reads each
    endpoint's namespace once (C(ip -n NS -j -batch), in parallel)."
  - The module must run in the host's network namespace without a private mount namespace. Under
    C(ip netns exec) a namespace made by C(ip netns add) is bind-mounted in a private mount namespace and
    vanishes when the module exits; the module detects this and fails instead of creating namespaces
    (use C(nsenter --net=/run/netns/HOST), or pre-created namespaces through I(netns_path)). The
    P(netfleet.calico_lab.netns#connection) connection keeps mount propagation and works.
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output (C(-j)); C(nsenter) from util-linux for I(netns_path) outside C(/run/netns).
options:
  endpoints:
    description:
      - The complete list of workload endpoints of this host. Endpoints not listed are removed.
      - An empty list removes every endpoint this module made on the host.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Workload id. Determines the host interface name and, by default, the namespace name.
        type: str
        required: true
      ip:
        description:
          - IPv4 address of the workload (C(172.17.8.2) or C(172.17.8.2/32)); it always becomes a C(/32).
          - An endpoint has I(ip), I(ip6) or both (dual stack).
        type: str
      ip6:
        description:
          - IPv6 address of the workload (C(2001:db8:8::2) or C(2001:db8:8::2/128)); it becomes a C(/128) on
            C(eth0) (without duplicate address detection) with C(default via <link-local of mac> dev eth0), and the
            host routes C(<ip6>/128 dev <if> proto <protocol>).
          - "The host side gets the sysctls C(net.ipv6.conf.<if>.disable_ipv6=0), C(addr_gen_mode=0) (its
            link-local, the workload's gateway, is derived from I(mac): C(fe80::ecee:eeff:feee:eeee)),
            C(accept_dad=0), C(accept_ra=0), C(forwarding=1) and C(proxy_ndp=1), as Felix does."
          - The host needs C(net.ipv6.conf.all.forwarding=1) (M(netfleet.calico.calico_sysctl)); the module warns
            when it is not set.
        type: str
        version_added: 0.1.0
      netns:
        description:
          - Name of the network namespace (under C(/run/netns)). Default I(netns_prefix) + I(name).
          - Created with C(ip netns add) if missing; then it is deleted with the endpoint. A namespace with the
            default name is considered the module's even if it already existed.
          - Mutually exclusive with I(netns_path).
        type: str
      netns_path:
        description:
          - Path of an existing network namespace, such as C(/proc/PID/ns/net) of a container or
            C(/run/netns/NAME). The module never creates or deletes it.
          - Mutually exclusive with I(netns).
        type: path
      mtu:
        description:
          - MTU of both ends of the veth; overrides the module-level I(mtu).
        type: int
  mac:
    description: MAC address of the host side of every veth.
    type: str
    default: ee:ee:ee:ee:ee:ee
  gateway:
    description: Link-local IPv4 address the workloads use as their gateway (answered by proxy-ARP).
    type: str
    default: 169.254.1.1
  mtu:
    description:
      - MTU of every veth (both ends). Default C(null) keeps the kernel default and does not manage the MTU.
    type: int
extends_documentation_fragment:
  - netfleet.calico.route_protocol
  - netfleet.calico.workloads
  - netfleet.calico.workloads.netns
attributes:
  check_mode:
    support: full
    description: Reads the kernel and reports the changes it would make, without making them.
  diff_mode:
    support: full
    description: One line per endpoint (address, interface, namespace, MAC, MTU and any drift) before and after.
  platform:
    support: full
    platforms: posix
    description: Linux with iproute2; run as root in the host's network namespace.
notes:
  - Endpoint namespaces are normal named namespaces, for example C(ip netns exec calico-web-1 ping 172.17.8.3).
  - Use M(netfleet.calico.calico_routes) for the host's block blackhole and other owned routes; it ignores the
    routes on I(interface_prefix) interfaces that this module manages.
seealso:
  - module: netfleet.calico.calico_routes
  - module: netfleet.calico.calico_node_facts
"""

EXAMPLES = r"""
- name: Wire the workloads of this host
  netfleet.calico.calico_workloads:
    endpoints:
      - name: web-1
        ip: 172.17.8.2
      - name: web-2
        ip: 172.17.8.3
        mtu: 1480

- name: A dual-stack and an IPv6-only workload
  netfleet.calico.calico_workloads:
    endpoints:
      - {name: web-1, ip: 172.17.8.2, ip6: "2001:db8:8::2"}
      - {name: web-6, ip6: "2001:db8:8::6"}

- name: Attach a running container's namespace (never created or deleted by the module)
  netfleet.calico.calico_workloads:
    endpoints:
      - name: db-1
        ip: 172.17.8.10
        netns_path: /proc/4242/ns/net

- name: Remove every workload endpoint this module made
  netfleet.calico.calico_workloads:
    endpoints: []
"""

RETURN = r"""
endpoints:
  description: The desired endpoints, sorted by name, as the kernel has them after the run.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Workload id., type: str, returned: always}
    ip: {description: 'Workload IPv4 address (no prefix length), null for an IPv6-only endpoint.', type: str,
         returned: always}
    ip6: {description: 'Workload IPv6 address (no prefix length), null without one.', type: str, returned: always,
          version_added: 0.1.0}
    ifname: {description: Host-side interface name., type: str, returned: always}
    netns: {description: 'Namespace name, or null when O(endpoints[].netns_path) is set.', type: str, returned: always}
    netns_path: {description: Namespace path (C(/run/netns/NAME) for named namespaces)., type: str, returned: always}
    mac: {description: Host-side MAC address., type: str, returned: always}
    mtu: {description: 'Managed MTU, or null if not managed.', type: int, returned: always}
  sample:
    - {name: web-1, ip: 172.17.8.2, ip6: "2001:db8:8::2", ifname: cali1c6e7b6ce3b, netns: calico-web-1,
       netns_path: /run/netns/calico-web-1, mac: "ee:ee:ee:ee:ee:ee", mtu: null}
created:
  description: Names of the endpoints created.
  returned: always
  type: list
  elements: str
  sample: [web-1]
updated:
  description: Names of existing endpoints whose drift was repaired (or which were recreated).
  returned: always
  type: list
  elements: str
removed:
  description: Names of the endpoints removed (from the ownership alias of their veth).
  returned: always
  type: list
  elements: str
drift:
  description: Per updated endpoint, what was wrong.
  returned: always
  type: dict
  sample: {web-2: ["eth0 address 172.17.8.9/32 (want 172.17.8.3/32)", "sysctl proxy_arp=0"]}
routes:
  description: Host route changes (formatted like C(ip route)).
  returned: always
  type: dict
  contains:
    add: {description: Routes added., type: list, elements: str, returned: always}
    replace: {description: Routes replaced., type: list, elements: str, returned: always}
    delete: {description: Routes deleted., type: list, elements: str, returned: always}
commands:
  description: Host-side C(ip -batch) lines (links, then routes). Namespace-side lines are not listed.
  returned: always
  type: list
  elements: str
warnings:
  description: Problems of the host the module does not fix (also shown as warnings).
  returned: always
  type: list
  elements: str
  version_added: 0.1.0
stats:
  description: Counters of the run.
  returned: always
  type: dict
  sample: {endpoints: 3, ip_calls: 5, sysctl_writes: 12}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff
from ansible_collections.netfleet.calico.plugins.module_utils.workloads import (  # noqa: F401 (re-exported)  # pylint: disable=unused-import
    ENDPOINTS_SPEC,
    WORKLOAD_IFNAME,
    Endpoint,
    WorkloadReconciler,
    build_endpoints,
)


def make_reconciler(module, settings):
    """The reconciler with the real kernel (unit tests replace this function)."""
    ip = iproute.IpCommand(ip_bin=module.get_bin_path('ip', required=True),
                           nsenter_bin=module.get_bin_path('nsenter') or 'nsenter')
    return WorkloadReconciler(ip, settings)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(ENDPOINTS_SPEC, required=True),
            netns_prefix=dict(type='str', default=iproute.DEFAULT_NETNS_PREFIX),
            netns_paths=dict(type='list', elements='str', default=[]),
            interface_prefix=dict(type='str', default=iproute.DEFAULT_INTERFACE_PREFIX),
            protocol=dict(type='int', default=iproute.CALICO_PROTOCOL),
            mac=dict(type='str', default=iproute.CALICO_MAC),
            gateway=dict(type='str', default=iproute.CALICO_GATEWAY),
            mtu=dict(type='int'),
        ),
        supports_check_mode=True,
    )
    try:
        endpoints, settings = build_endpoints(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    reconciler = make_reconciler(module, settings)
    try:
        result = reconciler.run(endpoints, check_mode=module.check_mode)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except iproute.IprouteError as exc:
        module.fail_json(**exc.to_dict())
    except OSError as exc:
        module.fail_json(msg='cannot write sysctl: %s' % exc)
    for warning in result['warnings']:
        module.warn(warning)
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
