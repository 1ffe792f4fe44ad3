# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller-side plan of the CNI plugin: container networks, their address ranges, and the
host-side policy document the plugin resolves new containers against.

Inputs (inventory):

- ``calico_cni`` (per host, default false): install the plugin on this host;
- ``calico_cni_networks`` (fleet-wide): ``[{name, labels?, slot?}]``; a container started on network
  ``web`` carries the network's labels, so ``podman run --network web`` is ``app == 'web'``;
  default one network ``netfleet`` without labels;
- ``calico_cni_network_prefix`` (fleet-wide, default block prefix + 2): the size of a network's range.

Each host's first block is cut into ranges of that size: slot 0 keeps the host's ``calico_workloads``
(their automatic addresses start there), slot N belongs to one network on every host. Further blocks
of a host (``calico_max_blocks_per_host``) hold ``calico_workloads`` only: the container ranges stay where
they are when a host grows. Because a
container's network, and so its labels, follows from its address, every host can match containers
of every other host by range: a selector's ipset holds the ranges of the networks whose labels
match, fleet-wide, and no container start has to be announced to other hosts.

With dual stack (``calico_pool_v6``) each host's first IPv6 block is cut the same way, into as many ranges
(``calico_block_prefix_v6`` + the same number of bits): slot 0 keeps the ``ip6`` of ``calico_workloads``, slot N
is network N's IPv6 range (``range6``), and a container gets an address from each of its network's ranges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.module_utils import cni_store
from ansible_collections.netfleet.calico.plugins.module_utils.selector import canonical
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs, inventory
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject

DEFAULT_NETWORK = 'netfleet'
NETWORK_KEYS = {'name', 'labels', 'slot'}
SET_PREFIX = 'cali-s-'


def set_name(tree):
    """The ipset of a peer selector: ``cali-s-`` + 16 hex digits of sha1 of its canonical text (23 chars)."""
    return SET_PREFIX + hashlib.sha1(canonical(tree).encode('utf-8')).hexdigest()[:16]


def parse_networks(value, slots, subject='calico_cni_networks'):
    """Validate ``calico_cni_networks``; return ``[{name, labels, slot}]`` (slots 1 .. slots-1)."""
    if inputs.is_unset(value):
        value = [{'name': DEFAULT_NETWORK}]
    if not isinstance(value, list) or not value:
        raise FabricError(subject, 'is not a non-empty list',
                          'set it to a list like [{name: web, labels: {app: web}}]')
    out, names, used = [], set(), {}
    for index, raw in enumerate(value):
        where = f'calico_cni_networks[{index}]'
        name = raw.get('name') if isinstance(raw, Mapping) else None
        if not isinstance(name, str) or not cni_store.NETWORK_RE.match(name):
            raise FabricError(subject, f'{where} has no valid name',
                              'give every network a name of letters, digits, _ . - (at most 63)')
        unknown = sorted(str(k) for k in set(raw) - NETWORK_KEYS)
        if unknown:
            raise FabricError(subject, f"network '{name}' has unknown key(s) {', '.join(unknown)}",
                              'use name, labels and slot')
        if name in names:
            raise FabricError(subject, f"network '{name}' is listed twice", 'give each network its own name')
        names.add(name)
        slot = raw.get('slot', index + 1)
        slot_int = inputs.as_int(slot)
        if slot_int is None or not 1 <= slot_int < slots:
            raise FabricError(subject, f"network '{name}' slot {slot!r} is outside 1-{slots - 1}",
                              'blocks are cut into 2^(calico_cni_network_prefix - calico_block_prefix) '
                              'ranges and slot 0 is for calico_workloads: raise calico_cni_network_prefix '
                              'or use fewer networks')
        if slot_int in used:
            raise FabricError(subject, f"networks '{used[slot_int]}' and '{name}' share slot {slot_int}",
                              'give each network its own slot')
        used[slot_int] = name
        out.append({'name': name, 'labels': inputs.parse_labels(raw.get('labels'), subject, f"network '{name}'"),
                    'slot': slot_int})
    return out


def workload_shares(reader, hosts, block_prefix):
    """``{host: prefix length}`` of slot 0, the part of the first block left to ``calico_workloads``, on the hosts
    that run the plugin: their automatic addresses stay in it and go on in the host's further blocks. Bad
    settings give ``{}`` here; :func:`plan_cni` refuses them with its own line."""
    try:
        enabled = [name for name in hosts
                   if inputs.parse_bool(reader.get(name, 'calico_cni'), host_subject(name), 'calico_cni')]
        raw, _source = inventory.fleet_setting(reader, hosts, 'calico_cni_network_prefix', None)
    except FabricError:
        return {}
    prefix = min(block_prefix + 2, 32) if raw is None else inputs.as_int(raw)
    if prefix is None or not block_prefix < prefix <= 32:
        return {}
    return dict.fromkeys(enabled, prefix)


def plan_cni(reader, hosts, plan_hosts, block_prefix, facts=None, block_prefix_v6=None):
    """Add ``cni`` to every host of ``plan_hosts`` that runs workloads; return the fleet's container ranges as
    ``[(host, cidr, labels)]`` (the selector members the policy planner adds; IPv6 ranges too on a dual-stack
    fleet, ``block_prefix_v6`` set). ``facts`` (per host, from calico_node_facts) may say how many containers a
    host's plugin serves now."""
    enabled = {}
    for name in hosts:
        enabled[name] = inputs.parse_bool(reader.get(name, 'calico_cni'), host_subject(name), 'calico_cni')
        attached = ((facts or {}).get(name) or {}).get('cni_attachments')
        if not enabled[name] and isinstance(attached, int) and attached > 0:
            raise FabricError(host_subject(name), f'calico_cni is off but {attached} container(s) '
                              'are attached through its CNI plugin',
                              'stop them first (the plugin is removed with calico_cni off), or keep '
                              'calico_cni: true')
        if enabled[name] and not plan_hosts[name].get('block'):
            raise FabricError(host_subject(name), 'has calico_cni but no block (it is not in '
                              'calico_nodes)',
                              'add it to calico_nodes or drop calico_cni')
    if not any(enabled.values()):
        for name in hosts:
            plan_hosts[name]['cni'] = {'enabled': False}
        return []
    raw_prefix, source = inventory.fleet_setting(reader, hosts, 'calico_cni_network_prefix', None)
    subject = host_subject(source) if source else 'calico_cni_network_prefix'
    prefix = min(block_prefix + 2, 32) if raw_prefix is None else inputs.as_int(raw_prefix)
    if prefix is None or not block_prefix < prefix <= 32:
        raise FabricError(subject, f'calico_cni_network_prefix {raw_prefix!r} is not a prefix length '
                          f'{block_prefix + 1}-32',
                          'set it longer than calico_block_prefix (e.g. block /24, networks /26)')
    slots = 1 << (prefix - block_prefix)
    prefix6 = None if block_prefix_v6 is None else block_prefix_v6 + prefix - block_prefix  # <= 128: v6.py
    value, source = inventory.fleet_setting(reader, hosts, 'calico_cni_networks', None)
    networks = parse_networks(value, slots, host_subject(source) if source else 'calico_cni_networks')

    members = []
    for name in hosts:
        if not enabled[name]:
            plan_hosts[name]['cni'] = {'enabled': False}
            continue
        block = inputs.netaddr.IPNetwork(plan_hosts[name]['block'])
        ranges = list(block.subnet(prefix))
        static = ranges[0]
        for entry in plan_hosts[name]['workloads']:
            addr = inputs.netaddr.IPAddress(entry['ip'])
            if addr in block and addr not in static:  # further blocks of the host are all calico_workloads'
                raise FabricError(host_subject(name),
                                  f"workload '{entry['name']}' ip {entry['ip']} is outside {static}, the part "
                                  'of the block kept for calico_workloads on a CNI host',
                                  f'give it an address in {static} (or raise calico_cni_network_prefix)')
        ranges6 = _ranges_v6(name, plan_hosts[name], prefix6)
        nets = {}
        for net in networks:
            cidr = str(ranges[net['slot']])
            nets[net['name']] = {'range': cidr, 'labels': net['labels']}
            members.append((name, cidr, net['labels']))
            if ranges6:
                nets[net['name']]['range6'] = str(ranges6[net['slot']])
                members.append((name, nets[net['name']]['range6'], net['labels']))
        plan_hosts[name]['cni'] = {
            'enabled': True,
            'block': plan_hosts[name]['block'],
            'networks': nets,
            'static_range': str(static),
            'reserved': sorted((e['ip'] for e in plan_hosts[name]['workloads']),
                               key=lambda ip: int(inputs.netaddr.IPAddress(ip))),
        }
        if ranges6:
            plan_hosts[name]['cni'].update(
                block6=plan_hosts[name]['blocks_v6'][0], static_range6=str(ranges6[0]),
                reserved6=sorted((e['ip6'] for e in plan_hosts[name]['workloads'] if e.get('ip6')),
                                 key=lambda ip: int(inputs.netaddr.IPAddress(ip))))
    return members


def _ranges_v6(name, host, prefix6):
    """The host's first IPv6 block cut into ranges of ``prefix6`` (slot 0 first), or [] (IPv4 only); every
    ``ip6`` of its workloads in that block must be in slot 0."""
    if prefix6 is None or not host.get('blocks_v6'):
        return []
    block = inputs.netaddr.IPNetwork(host['blocks_v6'][0])
    ranges = list(block.subnet(prefix6))
    for entry in host['workloads']:
        addr = inputs.netaddr.IPAddress(entry['ip6']) if entry.get('ip6') else None
        if addr is not None and addr in block and addr not in ranges[0]:
            raise FabricError(host_subject(name),
                              f"workload '{entry['name']}' ip6 {entry['ip6']} is outside {ranges[0]}, the part "
                              'of the IPv6 block kept for calico_workloads on a CNI host',
                              f'give it an address in {ranges[0]} (or raise calico_cni_network_prefix)')
    return ranges
