# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.lab_spec -- the lab's wiring spec from the inventory (docs: lab_spec.yml)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

WHO = 'netfleet.calico.lab_spec'
GROUP_NODES = 'calico_nodes'
GROUP_RACKS = 'calico_racks'
GROUP_REFLECTORS = 'calico_route_reflectors'


class LabSpecError(AnsibleFilterError):
    """One line: ``netfleet.calico.lab_spec: <subject>: <problem> — <fix>``."""

    def __init__(self, subject, problem, fix):
        super().__init__(f'{WHO}: {subject}: {problem} — {fix}', show_content=False)


def _natural_key(name):
    parts = re.split(r'([0-9]+)', str(name))
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), str(name)


def _group(groups, name):
    value = groups.get(name) if isinstance(groups, Mapping) else None
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(h) for h in value]


def _unset(value):
    if value is None:
        return True
    try:
        from jinja2 import Undefined
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Undefined) or (isinstance(value, str) and not value.strip())


class _Vars:
    """Per-host variables over Ansible's HostVars (templated on access) or a plain mapping (tests)."""

    def __init__(self, hostvars):
        self._hostvars = hostvars

    def get(self, host, var):
        try:
            data = self._hostvars[host]
            value = data.get(var) if isinstance(data, Mapping) else None
        except KeyError:
            return None
        except Exception as exc:  # a templating error in the variable's definition
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LabSpecError(f"host '{host}'", f'cannot evaluate {var}: {first}',
                               f'fix the definition of {var}') from None
        return None if _unset(value) else value


def _racks(hostvars, groups, racks):
    """``{rack: (hosts, group vars or {})}`` for the direct child groups of calico_racks."""
    if racks is not None:
        if isinstance(racks, Mapping):
            return {str(r): ([str(h) for h in (hosts or [])], {}) for r, hosts in racks.items()}
        if isinstance(racks, str):
            racks = [racks]
        return {str(r): (_group(groups, r), {}) for r in racks}
    inventory = getattr(hostvars, '_inventory', None)
    if inventory is None:
        if _group(groups, GROUP_RACKS):
            raise LabSpecError(f"group '{GROUP_RACKS}'", 'its child groups (the racks) cannot be seen in a plain '
                               'groups mapping', "pass racks=['rack1', ...] to netfleet.calico.lab_spec")
        return {}
    parent = inventory.groups.get(GROUP_RACKS)
    if parent is None:
        return {}
    return {child.name: ([h.name for h in child.get_hosts()], dict(child.get_vars()))
            for child in parent.child_groups}


def _network(value, subject, var):
    try:
        return ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise LabSpecError(subject, f'{var} {value!r} is not an IPv4 network ({exc})',
                           f'set {var} to the L2 subnet, e.g. 192.168.100.0/24') from None


def lab_spec(hostvars, groups, racks=None, wiring=True):
    """``hostvars | netfleet.calico.lab_spec(groups)``: prefix, state_dir, segments and hosts for lab_fabric."""
    reader = _Vars(hostvars)
    hosts = sorted(set(_group(groups, GROUP_NODES)) | set(_group(groups, GROUP_REFLECTORS)), key=_natural_key)
    if not hosts:
        raise LabSpecError(f"group '{GROUP_NODES}'", 'has no hosts (nor has calico_route_reflectors)',
                           'add the lab hosts to a rack group under calico_racks and to calico_nodes')
    first = hosts[0]
    prefix = reader.get(first, 'lab_prefix')
    state_dir = reader.get(first, 'lab_state_dir')
    if prefix is None or state_dir is None:
        raise LabSpecError(f"host '{first}'", 'lab_prefix or lab_state_dir is not set',
                           'set both in the inventory (see inventories/lab/group_vars/all/lab.yml)')
    spec = {'prefix': str(prefix), 'state_dir': str(state_dir)}
    if not wiring:
        return spec

    members = _racks(hostvars, groups, racks)
    rack_of = {}
    for rack in sorted(members, key=_natural_key):
        for host in members[rack][0]:
            if host in rack_of and host in hosts:
                raise LabSpecError(f"host '{host}'", f"is in two racks ('{rack_of[host]}' and '{rack}')",
                                   'keep each host in exactly one child group of calico_racks')
            rack_of.setdefault(host, rack)

    segments, by_cidr = {}, {}
    for rack in sorted(members, key=_natural_key):
        rack_hosts, group_vars = members[rack]
        lab_hosts = [h for h in rack_hosts if h in hosts]
        values = {}
        for host in lab_hosts:
            value = reader.get(host, 'lab_segment')
            if value is not None:
                values.setdefault(str(value).strip(), host)
        if not values and not _unset(group_vars.get('lab_segment')):
            values[str(group_vars['lab_segment']).strip()] = None
        if not values:
            raise LabSpecError(f"rack '{rack}'", 'has no lab_segment',
                               'set lab_segment (the rack\'s L2 subnet, e.g. 192.168.100.0/24) on the rack group')
        if len(values) > 1:
            (a, ha), (b, hb) = list(values.items())[:2]
            raise LabSpecError(f"rack '{rack}'", f"hosts disagree on lab_segment ({a} on '{ha}', {b} on '{hb}')",
                               'set lab_segment once, on the rack group')
        net = _network(next(iter(values)), f"rack '{rack}'", 'lab_segment')
        gateway = reader.get(lab_hosts[0], 'lab_gateway') if lab_hosts else group_vars.get('lab_gateway')
        segment = {'name': rack, 'cidr': str(net)}
        if not _unset(gateway):
            segment['gateway'] = str(gateway).strip()
        segments[rack] = segment
        by_cidr.setdefault(str(net), rack)

    out_hosts = []
    for host in hosts:
        subject = f"host '{host}'"
        rack = rack_of.get(host)
        if rack is None:
            # a host outside every rack (full_mesh allows it) needs its own lab_segment
            value = reader.get(host, 'lab_segment')
            if value is None:
                raise LabSpecError(subject, 'is in no rack and has no lab_segment',
                                   'add it to a child group of calico_racks (the lab wires hosts by rack)')
            net = _network(value, subject, 'lab_segment')
            rack = by_cidr.get(str(net))
            if rack is None:
                rack = f'{net.network_address}_{net.prefixlen}'
                segments[rack] = {'name': rack, 'cidr': str(net)}
                by_cidr[str(net)] = rack
        net = ipaddress.IPv4Network(segments[rack]['cidr'])
        address = reader.get(host, 'calico_node_ip')
        if address is None:
            address = reader.get(host, 'ansible_host')
        if address is None:
            raise LabSpecError(subject, 'has no calico_node_ip', f'set calico_node_ip to an address inside {net}')
        try:
            ip = ipaddress.IPv4Interface(str(address).strip()).ip
        except ValueError:
            raise LabSpecError(subject, f'calico_node_ip {address!r} is not an IPv4 address',
                               f'set calico_node_ip to an address inside {net}') from None
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            where = f"rack '{rack}'" if rack in members else 'its'
            raise LabSpecError(subject, f'calico_node_ip {ip} is outside {where} lab_segment {net}',
                               f'pick a calico_node_ip inside {net} (not its network or broadcast address) '
                               'or move the host to the right rack')
        netns = reader.get(host, 'ansible_netns')
        if netns is None:  # what the netns connection does without ansible_netns
            netns_prefix = reader.get(host, 'ansible_netns_prefix')
            netns = f"{netns_prefix}{reader.get(host, 'ansible_host') or host}" if netns_prefix else f'{prefix}-{host}'
        out_hosts.append({'name': host, 'netns': str(netns), 'address': str(ip), 'segment': rack})

    spec['segments'] = [segments[r] for r in sorted(segments, key=_natural_key)]
    spec['hosts'] = out_hosts
    return spec


class FilterModule:
    """netfleet.calico lab spec filter."""

    def filters(self):
        return {'lab_spec': lab_spec}
