# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""BGP sessions of the plan: who peers with whom (full mesh, or racks with route reflectors), which end
dials, and the checks of a peer plan."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject, rack_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    is_unset,
    netaddr,
    same_subnet,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import natural_sorted

# ---------------------------------------------------------------------------------------------
# BGP peers
# ---------------------------------------------------------------------------------------------


def default_cluster_ids(nodes, overrides=None):
    """One route-reflector cluster id per rack, shared by all of the rack's reflectors.

    ``overrides`` (rack -> id, from the rack's ``calico_rr_cluster_id``) wins; otherwise the id is the
    numerically lowest node IP among the rack's reflectors. That is distinct per rack (node IPs are
    unique), readable, and stays put when racks or hosts are added; it changes only if a reflector
    with a lower IP joins the rack or the lowest one leaves.
    """
    overrides = overrides or {}
    out = {}
    for name in natural_sorted(nodes):
        node = nodes[name]
        rack = node.get('rack')
        if rack is None or not node.get('reflector'):
            continue
        ip = netaddr.IPAddress(node['ip'])
        if rack not in out or ip < netaddr.IPAddress(out[rack]):
            out[rack] = str(ip)
    out.update({rack: cid for rack, cid in overrides.items() if rack in out})
    return out


def compute_peers(nodes, topology, cluster_ids=None, spines=None):
    """BGP sessions per host: ``{host: [peer, ...]}`` with peers in natural name order.

    ``nodes``: ``{name: {ip, as_number, rack, reflector, prefixlen?, spine_ip?, spine_prefixlen?}}`` (already
    validated). Each peer is ``{name, ip, local_ip, as_number, type: ibgp|ebgp, direct, passive, rr_client,
    rr_cluster_id}``. ``ip``/``local_ip`` are the two ends of the session: the node IPs, except between
    reflectors of different racks in ``route_reflector`` (eBGP over the spine), where they are the
    reflectors' ``spine_ip`` (default: the node IP). ``direct`` says whether the two ends share a subnet
    (from ``prefixlen`` / ``spine_prefixlen``; None when neither end's is known). Exactly one side
    of every session dials (the other is ``passive``) and waits ``connect_delay_offset`` seconds more
    than the base connect delay: between a reflector and its clients the reflector dials (one SYN per
    client instead of a burst at the reflector); otherwise ``plugin_utils.bgp.session_timing`` decides
    from the two addresses.
    ``rr_client``/``rr_cluster_id`` are set on the reflector's side of a
    session with a same-rack client only.
    ``spines`` (``{name: {ip, prefixlen, as_number}}``, route_reflector only): when given, a reflector peers by
    eBGP with every spine (from its ``spine_ip``, peers marked ``spine: True``, after its rack's peers) instead of
    with other racks' reflectors.
    """
    if cluster_ids is None:
        cluster_ids = default_cluster_ids(nodes)
    order = natural_sorted(nodes)
    addr = {name: netaddr.IPAddress(nodes[name]['ip']) for name in order}

    def end(name, spine):
        node = nodes[name]
        if spine and not is_unset(node.get('spine_ip')):
            return netaddr.IPAddress(node['spine_ip']), node.get('spine_prefixlen')
        return addr[name], node.get('prefixlen')

    def passive(me, other, local, remote):
        # (passive, connect delay offset). A reflector dials its clients and the clients wait: each
        # client's listen queue then sees one SYN, while 60 clients dialling one reflector overflow BIRD's
        # listen backlog of 8 at start-up and wait for SYN retransmits (1 s, 3 s, ...). Other sessions:
        # plugin_utils.bgp.session_timing. Both depend only on the two ends, so adding hosts never
        # changes an existing session.
        if topology == 'route_reflector' and nodes[me]['rack'] == nodes[other]['rack'] \
                and nodes[me]['reflector'] != nodes[other]['reflector']:
            return not nodes[me]['reflector'], 0
        return session_timing(local, remote, spread=topology == 'full_mesh')

    def peer(me, other, client=False):
        spine = (topology == 'route_reflector' and nodes[me]['reflector'] and nodes[other]['reflector']
                 and nodes[me]['rack'] != nodes[other]['rack'])
        local, local_len = end(me, spine)
        remote, remote_len = end(other, spine)
        timing = passive(me, other, local, remote)
        return {
            'name': other,
            'ip': str(remote),
            'local_ip': str(local),
            'as_number': nodes[other]['as_number'],
            'type': 'ibgp' if nodes[other]['as_number'] == nodes[me]['as_number'] else 'ebgp',
            'direct': same_subnet(local, local_len, remote, remote_len),
            'passive': timing[0],
            'connect_delay_offset': timing[1],
            'rr_client': client,
            'rr_cluster_id': cluster_ids.get(nodes[me]['rack']) if client else None,
        }

    def spine_peer(me, name):
        local, local_len = end(me, True)
        remote, remote_len = netaddr.IPAddress(spines[name]['ip']), spines[name].get('prefixlen')
        passive, offset = session_timing(local, remote, spread=False)
        return {'name': name, 'ip': str(remote), 'local_ip': str(local), 'as_number': spines[name]['as_number'],
                'type': 'ebgp', 'direct': same_subnet(local, local_len, remote, remote_len), 'passive': passive,
                'connect_delay_offset': offset, 'rr_client': False, 'rr_cluster_id': None, 'spine': True}

    out = {}
    for me in order:
        mine = nodes[me]
        if topology == 'full_mesh':
            out[me] = [peer(me, other) for other in order if other != me]
            continue
        peers = []
        for other in order:
            theirs = nodes[other]
            if other == me:
                continue
            same_rack = theirs['rack'] == mine['rack']
            if not mine['reflector']:
                if same_rack and theirs['reflector']:
                    peers.append(peer(me, other))
            elif same_rack:
                peers.append(peer(me, other, client=not theirs['reflector']))
            elif theirs['reflector'] and not spines:
                peers.append(peer(me, other))
        if mine['reflector'] and spines:
            peers += [spine_peer(me, name) for name in natural_sorted(spines)]
        out[me] = peers
    return out


def check_peer_plan(nodes, topology):
    """Route-reflector structure checks shared by the fabric and the bgp_peers filter."""
    if topology != 'route_reflector':
        return
    order = natural_sorted(nodes)
    for name in order:
        if nodes[name].get('rack') is None:
            what = 'route reflector' if nodes[name]['reflector'] else 'host'
            raise FabricError(host_subject(name), f'{what} is not in any rack',
                              'add it to a child group of calico_racks (route_reflector topology)')
    by_as = {}
    rack_names = natural_sorted({nodes[n]['rack'] for n in order})
    for rack in rack_names:
        members = [n for n in order if nodes[n]['rack'] == rack]
        number = nodes[members[0]]['as_number']
        if number in by_as:
            raise FabricError(rack_subject(rack), f"calico_as_number {number} is also used by rack '{by_as[number]}'",
                              'give each rack its own calico_as_number (route_reflector: racks peer by eBGP)')
        by_as[number] = rack
    for rack in rack_names:
        members = [n for n in order if nodes[n]['rack'] == rack]
        clients = [n for n in members if not nodes[n]['reflector']]
        if clients and len(clients) == len(members):
            raise FabricError(rack_subject(rack), f"has nodes ({', '.join(clients)}) but no route reflector",
                              f"add a host of rack '{rack}' to calico_route_reflectors")
