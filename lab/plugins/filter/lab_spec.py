# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico_lab.lab_spec -- the lab's wiring spec from the inventory (docs: lab_spec.yml)."""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs, inventory
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError

WHO = 'netfleet.calico_lab.lab_spec'
# What the machines' local apt repository holds: what site.yml installs on hosts and reflectors, and with spine
# routers FRR (frr-pythontools holds frr-reload.py, which `systemctl reload frr` runs)
MACHINE_PACKAGES = ('bird2', 'iproute2', 'iptables')
SPINE_PACKAGES = ['frr', 'frr-pythontools']


class LabSpecError(AnsibleFilterError):
    """One line: ``netfleet.calico_lab.lab_spec: <subject>: <problem> — <fix>``."""

    def __init__(self, subject, problem, fix):
        super().__init__(f'{WHO}: {subject}: {problem} — {fix}', show_content=False)


class _Vars(inventory.VarReader):
    """The fabric plan's variable reader (HostVars, templated on access, or a plain mapping in tests), with
    lab_spec's messages; an unset value (missing, None, blank) reads as None."""

    def get(self, name, var):
        try:
            value = super().get(name, var)
        except FabricError as err:
            raise LabSpecError(err.subject, err.problem, f'fix the definition of {var}') from None
        return None if inputs.is_unset(value) else value


def _racks(hostvars, groups, racks):
    """``{rack: (hosts, group vars or {})}`` for the direct child groups of calico_racks."""
    try:
        return inventory.rack_groups(hostvars, groups, racks)
    except inventory.RackHierarchyUnknown:
        raise LabSpecError(f"group '{inventory.GROUP_RACKS}'", 'its child groups (the racks) cannot be seen in a plain '
                           'groups mapping', "pass racks=['rack1', ...] to netfleet.calico_lab.lab_spec") from None


def _network(value, subject, var, example='192.168.100.0/24', what='the L2 subnet'):
    try:
        return ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise LabSpecError(subject, f'{var} {value!r} is not an IPv4 network ({exc})',
                           f'set {var} to {what}, e.g. {example}') from None


def _address(value):
    try:
        return ipaddress.IPv4Interface(str(value).strip()).ip
    except ValueError:
        return None


def _inside(ip, net):
    return ip in net and ip not in (net.network_address, net.broadcast_address)


def _lab_wide(reader, hosts, var):
    """A lab-wide variable: ``(value, first host that sets it)``; every lab host that sets it must agree."""
    found, source = None, None
    for host in hosts:
        value = reader.get(host, var)
        if value is None:
            continue
        if source is None:
            found, source = str(value).strip(), host
        elif str(value).strip() != found:
            raise LabSpecError(f"host '{host}'", f"{var} {value} differs from {found} on host '{source}'",
                               f'set {var} once, for the whole lab (group_vars/all or calico_racks)')
    return found, source


def _spine(reader, hosts):
    """The spine segment: ``lab_spine_segment`` and the optional ``lab_spine_gateway``, or None."""
    found, source = _lab_wide(reader, hosts, 'lab_spine_segment')
    if source is None:
        return None
    net = _network(found, f"host '{source}'", 'lab_spine_segment', '10.255.0.0/24', "the spine's subnet")
    spine = {'cidr': str(net)}
    gateway, source = _lab_wide(reader, hosts, 'lab_spine_gateway')
    if source is not None:
        ip = _address(gateway)
        if ip is None or not _inside(ip, net):
            raise LabSpecError(f"host '{source}'", f'lab_spine_gateway {gateway!r} is not an address inside '
                               f'lab_spine_segment {net}', f'pick an address inside {net} or drop lab_spine_gateway')
        spine['gateway'] = str(ip)
    return spine


def lab_spec(hostvars, groups, racks=None, wiring=True):
    """``hostvars | netfleet.calico_lab.lab_spec(groups)``: prefix, state_dir, segments, hosts, spine for lab_fabric."""
    reader = _Vars(hostvars)
    reflectors = set(inventory.group(groups, inventory.GROUP_REFLECTORS))
    hosts = inventory.natural_sorted(set(inventory.group(groups, inventory.GROUP_NODES)) | reflectors)
    if not hosts:
        raise LabSpecError(f"group '{inventory.GROUP_NODES}'", 'has no hosts (nor has calico_route_reflectors)',
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
    for rack in inventory.natural_sorted(members):
        for host in members[rack][0]:
            if host in rack_of and host in hosts:
                raise LabSpecError(f"host '{host}'", f"is in two racks ('{rack_of[host]}' and '{rack}')",
                                   'keep each host in exactly one child group of calico_racks')
            rack_of.setdefault(host, rack)

    segments, by_cidr, gateways, mgmt_addresses = {}, {}, {}, {}
    for rack in inventory.natural_sorted(members):
        rack_hosts, group_vars = members[rack]
        lab_hosts = [h for h in rack_hosts if h in hosts]
        values = {}
        for host in lab_hosts:
            value = reader.get(host, 'lab_segment')
            if value is not None:
                values.setdefault(str(value).strip(), host)
        if not values and not inputs.is_unset(group_vars.get('lab_segment')):
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
        mgmt = reader.get(lab_hosts[0], 'lab_mgmt_address') if lab_hosts else group_vars.get('lab_mgmt_address')
        if not inputs.is_unset(mgmt):
            mgmt_addresses[rack] = str(mgmt).strip()
        if not inputs.is_unset(gateway):
            segment['gateway'] = str(gateway).strip()
            gateways[rack] = str(gateway).strip()
        segments[rack] = segment
        by_cidr.setdefault(str(net), rack)

    spine = _spine(reader, hosts)
    spine_net = ipaddress.IPv4Network(spine['cidr']) if spine else None
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
        ip = _address(address)
        if ip is None:
            raise LabSpecError(subject, f'calico_node_ip {address!r} is not an IPv4 address',
                               f'set calico_node_ip to an address inside {net}')
        if not _inside(ip, net):
            where = f"rack '{rack}'" if rack in members else 'its'
            raise LabSpecError(subject, f'calico_node_ip {ip} is outside {where} lab_segment {net}',
                               f'pick a calico_node_ip inside {net} (not its network or broadcast address) '
                               'or move the host to the right rack')
        netns = reader.get(host, 'ansible_netns')
        if netns is None:  # what the netns connection does without ansible_netns
            netns_prefix = reader.get(host, 'ansible_netns_prefix')
            netns = f"{netns_prefix}{reader.get(host, 'ansible_host') or host}" if netns_prefix else f'{prefix}-{host}'
        entry = {'name': host, 'netns': str(netns), 'address': str(ip), 'segment': rack}
        # dual stack: the host's IPv6 address on its segment (the planner checks it; lab_fabric makes it a /64)
        address6 = reader.get(host, 'calico_node_ip_v6')
        if address6 is not None:
            entry['address6'] = str(address6).strip()
        if spine and host in reflectors:
            # a reflector is its rack's gateway (ToR): one leg on the rack segment, one on the spine
            value = reader.get(host, 'calico_rr_spine_ip')
            fix = f"set calico_rr_spine_ip to the reflector's address on the spine, inside {spine_net}"
            edge = ' (not its network or broadcast address)'
            if value is None:
                if not _inside(ip, spine_net):
                    raise LabSpecError(subject, f'route reflector has no calico_rr_spine_ip and its calico_node_ip '
                                       f'{ip} is not inside lab_spine_segment {spine_net}', fix)
                spine_ip = ip
            else:
                spine_ip = _address(value)
                if spine_ip is None or not _inside(spine_ip, spine_net):
                    raise LabSpecError(subject, f'calico_rr_spine_ip {value} is not an address inside '
                                       f'lab_spine_segment {spine_net}', fix + edge)
            entry['spine_address'] = str(spine_ip)
            spine6 = reader.get(host, 'calico_rr_spine_ip_v6')
            if spine6 is not None:
                entry['spine_address6'] = str(spine6).strip()
            segments[rack].setdefault('reflectors', []).append((host, str(ip)))
        out_hosts.append(entry)

    if spine:
        # racks with reflectors: the first reflector (natural order) is the hosts' gateway, no router leg
        for rack, segment in segments.items():
            gates = segment.pop('reflectors', None)
            if not gates:
                continue
            wanted = gateways.get(rack)
            if wanted is not None and wanted.split('/')[0] not in {a for _unused, a in gates}:
                raise LabSpecError(f"rack '{rack}'", f'lab_gateway {wanted} is not the calico_node_ip of one of its '
                                   f"route reflectors ({', '.join(f'{h} {a}' for h, a in gates)})",
                                   'drop lab_gateway (the first reflector is the gateway) or name a reflector\'s '
                                   'calico_node_ip')
            segment['gateway'] = wanted.split('/')[0] if wanted is not None else gates[0][1]
            segment['router'] = False
        spec['spine'] = spine
    routers = inventory.natural_sorted(inventory.group(groups, 'calico_spines'))
    if routers and not spine:
        raise LabSpecError(f"host '{routers[0]}'", 'is a spine router but lab_spine_segment is not set',
                           "set lab_spine_segment to the spine's subnet, e.g. 10.255.0.0/24")
    for router in routers:
        subject = f"host '{router}'"
        address = reader.get(router, 'calico_node_ip')
        if address is None:
            address = reader.get(router, 'ansible_host')
        ip = _address(address) if address is not None else None
        if ip is None or not _inside(ip, spine_net):
            raise LabSpecError(subject, f'spine router address {address!r} is not an address inside '
                               f'lab_spine_segment {spine_net}', f'set calico_node_ip to an address inside {spine_net}')
        netns = reader.get(router, 'ansible_netns')
        if netns is None:
            netns_prefix = reader.get(router, 'ansible_netns_prefix')
            netns = f'{netns_prefix}{router}' if netns_prefix else f'{prefix}-{router}'
        entry = {'name': router, 'netns': str(netns), 'address': str(ip)}
        address6 = reader.get(router, 'calico_node_ip_v6')  # dual stack: its IPv6 address on the spine
        if address6 is not None:
            entry['address6'] = str(address6).strip()
        spine.setdefault('routers', []).append(entry)
    spec['segments'] = [segments[r] for r in inventory.natural_sorted(segments)]
    spec['hosts'] = out_hosts
    machines = _flag(reader, hosts, 'lab_machines')
    if machines or _flag(reader, hosts, 'lab_ssh'):
        spec.update(_ssh_spec(reader, spec, mgmt_addresses))
    if machines:
        spec['machines'] = _machines_spec(reader, spec, spine_net)
    return spec


def _machines_spec(reader, spec, spine_net):
    """The machines: every host and spine router (those run FRR from the lab's repository and get a management
    leg on the spine, the controller's way to them). They run their own sshd (and have their own users): no sshd
    per namespace."""
    daemons = spec.pop('ssh')['hosts']
    routers = (spec.get('spine') or {}).get('routers') or []
    users = sorted({d['user'] for d in daemons} | {str(reader.get(r['name'], 'ansible_user') or 'root').strip()
                                                   for r in routers})
    if len(users) != 1 or users[0] == 'root':
        raise LabSpecError('lab_machines', f"the hosts log in as {', '.join(users)}",
                           'set one ansible_user (not root) for every lab machine (inventories/lab-machines: '
                           'netfleet)')
    packages = list(MACHINE_PACKAGES)
    if routers:
        packages += SPINE_PACKAGES
        spec['mgmt']['spine_address'] = str(spine_net.broadcast_address - 1)
    return {'user': users[0], 'packages': packages,
            'hosts': [{'name': d['name'], 'netns': d['netns']} for d in daemons + routers]}


def _flag(reader, hosts, var):
    """A lab-wide boolean: ``lab_ssh`` (the hosts run sshd and are reached by the standard ssh connection) or
    ``lab_machines`` (the hosts are systemd machines, reached the same way)."""
    found, source = _lab_wide(reader, hosts, var)
    if source is None:
        return False
    try:
        return boolean(found, strict=True)
    except TypeError:
        raise LabSpecError(f"host '{source}'", f'{var} {found!r} is not a boolean', f'set {var} to true or false') \
            from None


def _ssh_spec(reader, spec, mgmt_addresses):
    """The management legs (one per segment: the rack's lab_mgmt_address, else its last usable address) and the
    sshd of every host (listening on its lab address, the one the ssh connection dials)."""
    legs = []
    for segment in spec['segments']:
        net = ipaddress.IPv4Network(segment['cidr'])
        wanted = mgmt_addresses.get(segment['name'])
        if wanted is None:
            ip = net.broadcast_address - 1
        else:
            ip = _address(wanted)
            if ip is None or not _inside(ip, net):
                raise LabSpecError(f"rack '{segment['name']}'", f'lab_mgmt_address {wanted!r} is not an address inside '
                                   f'its lab_segment {net}', f'pick a free address of {net} or drop lab_mgmt_address')
        legs.append({'segment': segment['name'], 'address': str(ip)})
    daemons = []
    for entry in spec['hosts']:
        host, subject = entry['name'], f"host '{entry['name']}'"
        user = str(reader.get(host, 'ansible_user') or 'root').strip()
        if not re.match(r'^[a-z_][a-z0-9_.-]{0,31}$', user):
            raise LabSpecError(subject, f'ansible_user {user!r} is not a user name',
                               'set ansible_user to the lab\'s login user (inventories/lab-ssh: netfleet-lab)')
        target = reader.get(host, 'ansible_host')
        if target is not None and str(target).strip() not in (entry['address'], entry.get('spine_address')):
            raise LabSpecError(subject, f"ansible_host {target} is not the host's lab address {entry['address']}",
                               'set ansible_host to calico_node_ip (the lab\'s sshd listens there)')
        port = reader.get(host, 'ansible_port')
        try:
            port = 22 if port is None else int(str(port).strip())
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise LabSpecError(subject, f"ansible_port {reader.get(host, 'ansible_port')!r} is not a TCP port",
                               'set ansible_port to 1-65535 or drop it (22)')
        daemons.append({'name': host, 'netns': entry['netns'], 'address': entry['address'], 'port': port,
                        'user': user})
    return {'mgmt': {'legs': legs}, 'ssh': {'hosts': daemons}}


class FilterModule:
    """netfleet.calico lab spec filter."""

    def filters(self):
        return {'lab_spec': lab_spec}
