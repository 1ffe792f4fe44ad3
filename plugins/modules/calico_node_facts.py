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
  - The host is read by one shell command (one C(ip -j -batch) process for all kernel state, the tools' versions,
    C(iptables-save) of both backends, BIRD's sessions) whose answer is parsed on the controller. No Python
    runs on the host for this read, so it costs the host a few processes and no interpreter start-up.
  - With O(host_checks), it also fails the host, with one line naming it and the fix, when the host cannot take
    the fabric (unreachable, BIRD missing or too old, or iptables rules in the other backend or in both).
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output (C(-j)) and a POSIX shell on the host.
options:
  host_checks:
    description:
      - Fail when the host cannot take the fabric; role calico_node passes its settings here in site.yml's first play.
      - An unreachable host then fails this task (with the reason and the fix) instead of being unreachable.
      - Omitted, the facts are returned whatever they say.
    type: dict
    version_added: 0.1.0
    suboptions:
      install_packages:
        description: The role installs BIRD itself, so a missing BIRD is not a problem.
        type: bool
        default: true
      onlink:
        description: The configuration uses C(onlink) routes, which need BIRD 2.0.12 or later.
        type: bool
        default: true
      ipip_mode:
        description: The fleet's IPIP mode (C(never), C(always), C(cross_subnet)); tunnel routes need BIRD 2.0.12 too.
        type: str
        default: never
      iptables_backend:
        description:
          - C(auto), C(nft) or C(legacy) (C(calico_iptables_backend)). Rules in both backends are refused with
            C(auto), rules only in the other backend with a forced one.
        type: str
        default: auto
      iptables:
        description:
          - Whether the run writes iptables rules (policy, floating IPs, NAT, IPIP's protection, the CNI plugin).
            The backend is checked only then, or when C(cali-*) chains are left on the host.
        type: bool
        default: true
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
  action:
    support: full
    description: Runs on the controller; the host only runs the shell command that reads it.
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

- name: Read the node state and BIRD's sessions; fail a host that cannot take the fabric
  netfleet.calico.calico_node_facts:
    bird_socket: /run/bird/bird.ctl
    host_checks:
      install_packages: false
      ipip_mode: cross_subnet

- name: Keep the current block if the host already has one
  ansible.builtin.debug:
    msg: "{{ calico_node_facts.blocks | first | default('none yet') }}"
"""

RETURN = r"""
problems:
  description: Every problem O(host_checks) found, one line each naming the host and the fix; the task fails with the
    first.
  returned: when O(host_checks) finds a problem
  type: list
  elements: str
  sample:
    - "netfleet.calico preflight: host 'r1h1': BIRD 2.0.8 is too old (onlink routes need 2.0.12) — install
      BIRD >= 2.0.12 (Debian bookworm's bird2)"
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
