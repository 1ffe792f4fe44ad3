# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.bgp_peers -- the BGP sessions of every host for a topology (docs: bgp_peers.yml)."""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred, inventory, values
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject, rack_subject


def _prefixlen(node, key, subject):
    inputs = deferred.load('inputs')
    raw = node.get(key)
    if inputs.is_unset(raw):
        return None
    length = inputs.as_int(raw)
    if length is None or not 0 <= length <= 32:
        raise FabricError(subject, f'{key} {raw!r} is not a prefix length 0-32',
                          f'set {key} to the prefix length of the subnet, or drop it')
    return length


def _peers(nodes, topology, cluster_ids, host):
    inputs, peers = deferred.load('inputs'), deferred.load('peers')
    topology = inputs.parse_topology(topology)
    if not isinstance(nodes, Mapping):
        raise FabricError('input', 'nodes is not a mapping',
                          'pipe {host: {ip, as_number, rack?, role?}} into bgp_peers')
    speakers = {}
    for name in inventory.natural_sorted(nodes):
        node = nodes[name]
        subject = host_subject(name)
        if not isinstance(node, Mapping):
            raise FabricError(subject, 'entry is not a mapping', 'give {ip, as_number, rack?, role?}')
        ip = inputs.address_or_none(node.get('ip') if isinstance(node.get('ip'), str) else None)
        if ip is None:
            raise FabricError(subject, f"ip {node.get('ip')!r} is not an IPv4 address",
                              "set ip to the host's node IPv4 address")
        reflector = bool(node.get('reflector')) or node.get('role') == 'reflector'
        rack = node.get('rack')
        prefixlen = _prefixlen(node, 'prefixlen', subject)
        spine_ip, spine_prefixlen = None, None
        if not inputs.is_unset(node.get('spine_ip')):
            if not reflector:
                raise FabricError(subject, f"spine_ip {node.get('spine_ip')} is set but the host is not a "
                                  'route reflector', "drop spine_ip, or give the host role reflector")
            spine = inputs.address_or_none(node['spine_ip'] if isinstance(node['spine_ip'], str) else None)
            if spine is None or int(spine) == 0:
                raise FabricError(subject, f"spine_ip {node['spine_ip']!r} is not an IPv4 address",
                                  "set spine_ip to the reflector's address toward other racks' reflectors, "
                                  'or drop it (defaults to ip)')
            spine_ip = str(spine)
            spine_prefixlen = prefixlen if spine == ip else _prefixlen(node, 'spine_prefixlen', subject)
        speakers[str(name)] = {
            'ip': str(ip),
            'as_number': inputs.parse_as_number(node.get('as_number', values.DEFAULT_AS_NUMBER), subject,
                                                var='as_number'),
            'rack': None if inputs.is_unset(rack) else str(rack),
            'reflector': reflector,
            'prefixlen': prefixlen,
            'spine_ip': spine_ip,
            'spine_prefixlen': spine_prefixlen,
        }
    seen = {}
    for name, node in speakers.items():
        if node['ip'] in seen:
            raise FabricError(host_subject(name), f"ip {node['ip']} is also used by host "
                              f"'{seen[node['ip']][0]}'",
                              'give each host its own node IP')
        seen[node['ip']] = (name, 'ip')
    for name, node in speakers.items():
        if node['spine_ip'] is None or node['spine_ip'] == node['ip']:
            continue
        if node['spine_ip'] in seen:
            other, kind = seen[node['spine_ip']]
            raise FabricError(host_subject(name), f"spine_ip {node['spine_ip']} is also the {kind} "
                              f"of host '{other}'",
                              'give each reflector a spine_ip that no other host uses')
        seen[node['spine_ip']] = (name, 'spine_ip')
    peers.check_peer_plan(speakers, topology)
    overrides = {}
    for rack, value in (cluster_ids or {}).items():
        overrides[str(rack)] = inputs.parse_cluster_id(value, rack_subject(rack))
    ids = peers.default_cluster_ids(speakers, overrides) if topology == 'route_reflector' else {}
    plan = peers.compute_peers(speakers, topology, ids)
    if host is not None:
        if host not in plan:
            raise FabricError(host_subject(host), 'is not among the nodes',
                              'pass the name of one of the piped nodes as host')
        return plan[host]
    return plan


def bgp_peers(nodes, topology=values.DEFAULT_TOPOLOGY, cluster_ids=None, host=None):
    """Return ``{host: [peer, ...]}`` (or one host's list with ``host=``)."""
    return deferred.load('fabric').run_filter('bgp_peers', _peers, nodes, topology, cluster_ids, host)


class FilterModule:
    """netfleet.calico BGP peer filter."""

    def filters(self):
        return {'bgp_peers': bgp_peers}
