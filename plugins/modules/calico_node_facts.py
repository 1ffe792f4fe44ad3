#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_node_facts
short_description: Read what a Calico-style node currently has (blocks, workloads, addresses, tools)
version_added: 0.1.0
description:
  - Read-only. Returns the host's current block(s) (the blackhole routes tagged with I(protocol), IPv4 and IPv6),
    its workload endpoints (from the ownership alias of the veths made by M(netfleet.calico.calico_workloads) and
    their C(/32) and C(/128) routes), its IPv4 and global IPv6 addresses, whether it has a default route, and
    the BIRD version and iptables backend installed.
  - The fabric is the datastore; these facts let the controller keep block and workload address allocations
    stable across runs.
  - One C(ip -j -batch) process reads all kernel state.
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output (C(-j)).
options:
  bird_socket:
    description:
      - Also read BIRD's BGP sessions from this control socket (C(birdc show protocols all)), so a play
        does not need a separate M(netfleet.calico.calico_bgp_status) run before it changes peers.
      - Omitted, BIRD is not asked.
    type: path
  bird_binary:
    description:
      - Name or path of the C(bird) binary whose version is read (C(bird --version)).
      - Role calico_node passes C(calico_node_bird_binary), the binary it later runs and validates configurations with.
    type: str
    default: bird
  cni_data_dir:
    description:
      - Also count the containers attached through the CNI plugin (its store's records in this directory), so
        site.yml's preflight can refuse to remove the plugin from a host that still serves containers.
      - Omitted, the store is not read.
    type: path
    version_added: 0.1.0
extends_documentation_fragment:
  - netfleet.calico.route_protocol
  - netfleet.calico.workloads
  - netfleet.calico.birdc
attributes:
  check_mode:
    support: full
    description: Identical behaviour in check mode; never changes anything.
  diff_mode:
    support: none
    description: Read-only; there is nothing to diff.
  facts:
    support: full
    description: Sets C(ansible_facts.calico_node_facts).
  platform:
    support: full
    platforms: posix
    description: Linux with iproute2.
seealso:
  - module: netfleet.calico.calico_workloads
  - module: netfleet.calico.calico_routes
"""

EXAMPLES = r"""
- name: Read the node state
  netfleet.calico.calico_node_facts:

- name: Keep the current block if the host already has one
  ansible.builtin.debug:
    msg: "{{ calico_node_facts.blocks | first | default('none yet') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: dict
  contains:
    calico_node_facts:
      description: Same value as the top-level C(calico_node_facts).
      type: dict
      returned: always
calico_node_facts:
  description: The node state.
  returned: always
  type: dict
  contains:
    blocks:
      description: CIDRs of the blackhole routes tagged with I(protocol) in the main table (the host's blocks), sorted.
      type: list
      elements: str
      returned: always
      sample: [172.17.8.0/24]
    blocks6:
      description: The IPv6 blackhole routes tagged with I(protocol) in the main table (the host's IPv6 blocks), sorted.
      type: list
      elements: str
      returned: always
      sample: ["2001:db8:8::/122"]
      version_added: 0.1.0
    workloads:
      description: Workload name to IPv4 address, for endpoints that have both the ownership alias and a C(/32) route.
      type: dict
      returned: always
      sample: {web-1: 172.17.8.2}
    workloads6:
      description: Workload name to IPv6 address, for endpoints that have both the ownership alias and a C(/128) route.
      type: dict
      returned: always
      sample: {web-1: "2001:db8:8::2"}
      version_added: 0.1.0
    endpoints:
      description:
        - Every endpoint veth with the ownership alias (also those without a route, ip null); C(ip6) is the address of
          its C(/128) route (null without one).
      type: list
      elements: dict
      returned: always
      sample: [{name: web-1, ifname: cali1c6e7b6ce3b, ip: 172.17.8.2, ip6: "2001:db8:8::2", netns: calico-web-1,
                owned_netns: true}]
    addresses:
      description: Every IPv4 address on the host.
      type: list
      elements: dict
      returned: always
      sample: [{ifname: eth0, address: 192.168.100.100, prefixlen: 24}]
    addresses6:
      description: Every global IPv6 address on the host.
      type: list
      elements: dict
      returned: always
      sample: [{ifname: eth0, address: "2001:db8:100::100", prefixlen: 64}]
      version_added: 0.1.0
    default_route:
      description: Whether the main table has an IPv4 default route (proxy-ARP for the workloads' gateway needs one).
      type: bool
      returned: always
    bird_version:
      description: Version from C(bird --version), or null if BIRD is not installed.
      type: str
      returned: always
      sample: 2.0.12
    iptables_rules:
      description:
        - Number of rules (C(-A) lines of C(iptables-save)) per backend, C(nft) and C(legacy); null for a backend
          whose tools are not installed.
        - A host whose rules live in both backends, or in the other one than C(calico_iptables_backend) forces,
          is refused by site.yml's checks (the kernel runs both rule sets).
      type: dict
      returned: always
      sample: {nft: 12, legacy: 0}
    iptables_backend:
      description: C(nft) or C(legacy) from C(iptables --version), or null if iptables is not installed.
      type: str
      returned: always
      sample: nft
    ipip_devices:
      description: Names of the IPIP tunnel devices on the host.
      type: list
      elements: str
      returned: always
      sample: [tun0]
    cni_attachments:
      description: Containers attached through the CNI plugin (records in O(cni_data_dir)); 0 without a store.
      type: int
      returned: when O(cni_data_dir) is given
      sample: 3
    cali_chains:
      description: The C(cali-*) iptables chains on the host per table (from C(iptables-save)); empty without any.
      type: dict
      returned: always
      sample: {filter: [cali-FORWARD, cali-INPUT], nat: [cali-fip-dnat]}
    cali_chains6:
      description:
        - The C(cali-*) ip6tables chains on the host per table (from C(ip6tables-save) of both backends), like
          RV(calico_node_facts.cali_chains); empty without any.
      type: dict
      returned: always
      sample: {filter: [cali-FORWARD, cali-INPUT], raw: [cali-PREROUTING]}
    bgp:
      description:
        - BIRD's sessions, in the shape of M(netfleet.calico.calico_bgp_status)'s result (C(bird_running),
          C(sessions)), plus the C(socket) that was read.
      type: dict
      returned: when O(bird_socket) is given
      sample:
        socket: /run/bird/bird.ctl
        bird_running: true
        sessions: [{name: Mesh_192_168_100_101, established: true}]
"""

import ipaddress
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes
from ansible_collections.netfleet.calico.plugins.module_utils.bird import read_sessions


def collect(ip, protocol, prefix):
    """Kernel part of the facts, from one ``ip -j -batch`` call."""
    routes, routes6, addrs, defaults, links, tunnels = ip.json_batch([
        'route show table main proto %d' % protocol,
        # "table main" lists IPv4 only; "table all" prints a table for every route outside main
        'route show table all root ::/0 proto %d' % protocol,
        'addr show',
        'route show table main exact 0.0.0.0/0',
        'link show type veth',
        'link show type ipip',
    ])
    owned = [iproute_routes.route_from_kernel(entry, 4) for entry in routes]
    owned6 = [iproute_routes.route_from_kernel(entry, 6) for entry in routes6 if 'table' not in entry]
    blocks = sorted({r.dst for r in owned if r.type == 'blackhole'}, key=_net_key)
    blocks6 = sorted({r.dst for r in owned6 if r.type == 'blackhole'}, key=_net_key)
    host_routes, host_routes6 = {}, {}
    for route in owned + owned6:
        if route.type == 'unicast' and route.dev and not route.via:
            if route.dst.endswith('/32'):
                host_routes.setdefault(route.dev, route.dst[:-3])
            elif route.dst.endswith('/128'):
                host_routes6.setdefault(route.dev, route.dst[:-4])
    endpoints, workloads, workloads6 = [], {}, {}
    for link in sorted(links, key=lambda item: item.get('ifname', '')):
        ifname = link.get('ifname', '')
        owner = iproute.decode_owner_alias(link.get('ifalias')) if ifname.startswith(prefix) else None
        if owner is None:
            continue
        ip_addr, ip6 = host_routes.get(ifname), host_routes6.get(ifname)
        endpoints.append({'name': owner['name'], 'ifname': ifname, 'ip': ip_addr, 'ip6': ip6, 'netns': owner['netns'],
                          'owned_netns': owner['owned']})
        if ip_addr:
            workloads[owner['name']] = ip_addr
        if ip6:
            workloads6[owner['name']] = ip6
    addresses = [{'ifname': link.get('ifname'), 'address': info.get('local'), 'prefixlen': info.get('prefixlen')}
                 for link in addrs for info in link.get('addr_info') or [] if info.get('family') == 'inet']
    addresses6 = [{'ifname': link.get('ifname'), 'address': info.get('local'), 'prefixlen': info.get('prefixlen')}
                  for link in addrs for info in link.get('addr_info') or []
                  if info.get('family') == 'inet6' and info.get('scope') == 'global']
    return {
        'blocks': blocks,
        'blocks6': blocks6,
        'workloads': workloads,
        'workloads6': workloads6,
        'addresses6': addresses6,
        'endpoints': endpoints,
        'addresses': addresses,
        'default_route': bool(defaults),
        'ipip_devices': sorted(link['ifname'] for link in tunnels if link.get('ifname')),
    }


def _net_key(cidr):
    return ipaddress.ip_network(cidr)


def parse_bird_version(text):
    match = re.search(r'BIRD version\s+(\S+)', text or '')
    return match.group(1) if match else None


def parse_iptables_backend(text):
    match = re.search(r'iptables v\S+(?:\s+\(([^)]+)\))?', text or '')
    if not match:
        return None
    flavour = (match.group(1) or 'legacy').lower()
    if 'nf_tables' in flavour or flavour == 'nft':
        return 'nft'
    return 'legacy' if 'legacy' in flavour else flavour


def tool_output(module, name, args):
    path = module.get_bin_path(name)
    if not path:
        return None
    rc, out, err = module.run_command([path] + args, environ_update={'LC_ALL': 'C'})
    return (out or '') + (err or '')


def count_rules(save):
    """Rules in `iptables-save` output (its `-A` lines); None when the save tool is missing."""
    if save is None:
        return None
    return sum(1 for line in save.splitlines() if line.startswith('-A '))


def count_attachments(data_dir):
    """Records in the CNI plugin's store (``<data_dir>/endpoints/*.json``); 0 when there is no store."""
    try:
        return sum(1 for name in os.listdir(os.path.join(data_dir, 'endpoints')) if name.endswith('.json'))
    except FileNotFoundError:
        return 0


def parse_owned_chains(save):
    """{table: [cali-* chain names]} from `iptables-save` output (tables without one are left out)."""
    chains, table = {}, None
    for line in save.splitlines():
        if line.startswith('*'):
            table = line[1:].strip()
        elif line.startswith(':cali-') and table:
            chains.setdefault(table, []).append(line[1:].split()[0])
    return {name: sorted(names) for name, names in chains.items()}


def read_bgp(module, socket, birdc='birdc'):
    """BIRD's sessions, shaped like calico_bgp_status's result (bird_running, sessions)."""
    state = {'socket': socket, 'bird_running': False, 'sessions': []}
    if os.path.exists(socket):
        state.update(read_sessions(module.run_command, module.get_bin_path(birdc), socket))
        state.pop('bird_error', None)
    return state


def make_ip(module):
    """The ip runner (unit tests replace this function)."""
    return iproute.IpCommand(ip_bin=module.get_bin_path('ip', required=True))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            protocol=dict(type='int', default=iproute.CALICO_PROTOCOL),
            interface_prefix=dict(type='str', default=iproute.DEFAULT_INTERFACE_PREFIX),
            bird_socket=dict(type='path'),
            bird_binary=dict(type='str', default='bird'),
            birdc_binary=dict(type='str', default='birdc'),
            cni_data_dir=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    prefix = module.params['interface_prefix']
    try:
        protocol = iproute.normalize_protocol(module.params['protocol'])
        if not prefix or not iproute.valid_ifname(prefix):
            raise ValueError('invalid interface_prefix %r' % (prefix,))
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    ip = make_ip(module)
    try:
        facts = collect(ip, protocol, prefix)
    except iproute.IprouteError as exc:
        module.fail_json(**exc.to_dict())
    bird = tool_output(module, module.params['bird_binary'], ['--version'])
    facts['bird_version'] = parse_bird_version(bird) if bird is not None else None
    iptables = tool_output(module, 'iptables', ['--version'])
    facts['iptables_backend'] = parse_iptables_backend(iptables) if iptables is not None else None
    # both backends: calico_chains uses whichever holds rules, and a host may hold them in either
    saves = [tool_output(module, name, []) for name in ('iptables-nft-save', 'iptables-legacy-save')]
    facts['iptables_rules'] = {'nft': count_rules(saves[0]), 'legacy': count_rules(saves[1])}
    if not any(saves):
        saves = [tool_output(module, 'iptables-save', [])]
    facts['cali_chains'] = parse_owned_chains(''.join(s for s in saves if s))
    saves6 = [tool_output(module, name, []) for name in ('ip6tables-nft-save', 'ip6tables-legacy-save')]
    if not any(saves6):
        saves6 = [tool_output(module, 'ip6tables-save', [])]
    facts['cali_chains6'] = parse_owned_chains(''.join(s for s in saves6 if s))
    if module.params['cni_data_dir']:
        facts['cni_attachments'] = count_attachments(module.params['cni_data_dir'])
    if module.params['bird_socket']:
        facts['bgp'] = read_bgp(module, module.params['bird_socket'], module.params['birdc_binary'])
    module.exit_json(changed=False, calico_node_facts=facts, ansible_facts={'calico_node_facts': facts})


if __name__ == '__main__':
    main()
