# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One aggregate per rack (``calico_rack_block_pool``, route_reflector topology) and which rack may originate what.

With ``calico_rack_block_pool`` every rack gets a contiguous share of the pool (e.g. a /20 of a /16 of /24 blocks),
its hosts' new blocks come from it, and its reflectors announce the share as one route to other racks, spines and
routers outside the fleet instead of one route per block (BIRD 2.0 has no aggregation protocol: a static blackhole
of the share, also installed in the reflector's kernel so that unused space of the share is dropped at the rack
edge). Inside the rack routes stay per block. A block a running host holds outside its rack's share (a fleet that
turns the variable on) is kept and announced on its own: an exception.

Steps, called by ``fabric.build_fabric``: :func:`parse_rack_block_pool` (fleet-wide settings),
:func:`check_racks` (after the racks are known), :func:`assign_shares` and :func:`block_regions` (before the
blocks are allocated), :func:`plan_aggregates` (after every host's blocks are known), and :func:`plan_origins`
(with or without shares: which AS must be a prefix's origin when it comes from a spine or another rack)."""

from __future__ import annotations

import ipaddress

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import announced
from ansible_collections.netfleet.calico.plugins.plugin_utils.blocks import normalize_current_blocks
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject, rack_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import as_int, is_unset, network_or_none
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import natural_sorted

VAR = 'calico_rack_block_pool'
AGGREGATE_PROTOCOL = 'calico_aggregate'  # the BIRD static protocol of a reflector's share (status reads it back)


def parse_rack_block_pool(value, pool, block_prefix, subject):
    """The share's prefix length (longer than the pool's, shorter than a block's), or None when unset."""
    if is_unset(value):
        return None
    low, high = pool.prefixlen + 1, block_prefix - 1
    length = as_int(value)
    fix = (f'set {VAR} to a prefix length from {low} to {high} (a share of calico_pool {pool} holding several '
           f'/{block_prefix} blocks), or drop it')
    if low > high:
        fix = f'drop {VAR}: calico_pool {pool} and calico_block_prefix {block_prefix} leave no room for rack shares'
    if length is None:
        raise FabricError(subject, f'{VAR} {value!r} is not an integer', fix)
    if not low <= length <= high:
        raise FabricError(subject, f'{VAR} {length} is not between calico_pool /{pool.prefixlen} and '
                                   f'calico_block_prefix /{block_prefix}', fix)
    return length


def check_racks(share_len, topology, source, rack_names):
    """Shares need racks with reflectors: the route_reflector topology and at least one rack."""
    if share_len is None:
        return
    subject = host_subject(source) if source else f'{VAR} (filter argument)'
    if topology != 'route_reflector':
        raise FabricError(subject, f'{VAR} is set but calico_bgp_topology is {topology} (no racks to aggregate)',
                          f'drop {VAR}, or set calico_bgp_topology: route_reflector with racks')
    if not rack_names:
        raise FabricError(subject, f'{VAR} is set but calico_racks has no racks',
                          f'drop {VAR}, or add racks as child groups of calico_racks')


def assign_shares(pool, block_prefix, share_len, racks, block_hosts):
    """``{rack: share network}`` for ``racks`` (``{rack: [node names]}``, natural order of racks).

    A rack keeps the share most of its hosts' running (or pinned) blocks are in; racks are visited in natural
    order, a share goes to one rack. A rack with none takes the lowest share that no rack holds and no running
    block is in, else the lowest one no rack holds. Adding a host or a rack therefore moves no block."""
    per_share = 1 << (block_prefix - share_len)
    count = 1 << (share_len - pool.prefixlen)
    order = natural_sorted(racks)
    if len(order) > count:
        raise FabricError(rack_subject(order[count]), f'is one rack too many: {VAR} /{share_len} splits calico_pool '
                                                      f'{pool} into {count} shares',
                          f'set a longer {VAR} (more, smaller shares), enlarge calico_pool, or merge racks')
    size = 1 << (32 - block_prefix)
    base = int(pool.first)
    entry_of = {entry['name']: entry for entry in block_hosts}

    def index(cidr):
        net = network_or_none(cidr)
        if net is None or net.prefixlen != block_prefix or net.ip != net.network:
            return None
        if net.first < pool.first or net.last > pool.last:
            return None
        return (int(net.first) - base) // size

    evidence = {}
    for rack in order:
        idxs = []
        for name in racks[rack]:
            entry = entry_of.get(name) or {}
            found = [index(b) for b in normalize_current_blocks(entry.get('current'))]
            pin = entry.get('block')
            if isinstance(pin, str):
                found.append(index(pin.strip()))
            idxs += [i for i in found if i is not None]
        evidence[rack] = idxs
    used = {i // per_share for idxs in evidence.values() for i in idxs}
    owner = {}
    for rack in order:
        votes = {}
        for i in evidence[rack]:
            votes[i // per_share] = votes.get(i // per_share, 0) + 1
        best = sorted((s for s in votes if s not in owner), key=lambda s: (-votes[s], s))
        if best:
            owner[best[0]] = rack
    taken = {rack: s for s, rack in owner.items()}
    for rack in order:
        if rack in taken:
            continue
        free = [s for s in range(count) if s not in owner]
        share = next((s for s in free if s not in used), free[0])
        owner[share] = rack
        taken[rack] = share
    share_size = 1 << (32 - share_len)
    return {rack: ipaddress.ip_network(f'{ipaddress.ip_address(base + taken[rack] * share_size)}/{share_len}')
            for rack in order}


def block_regions(pool, block_prefix, shares, rack_of, block_hosts):
    """Where each node's new blocks come from: ``{name: (first index, end index, full)}`` (block indexes of the
    pool, ``full()`` the error when the share has none left), for ``blocks.allocate_blocks``/``grow_blocks``.

    A pin outside the rack's share that is not the host's running block is an error (a running one is kept, as
    an exception)."""
    size = 1 << (32 - block_prefix)
    base = int(pool.first)
    out = {}
    for entry in block_hosts:
        name = entry['name']
        rack = rack_of.get(name)
        share = shares.get(rack)
        if share is None:
            continue
        first = (int(share.network_address) - base) // size
        end = first + (1 << (block_prefix - share.prefixlen))
        pin = entry.get('block')
        pinned = network_or_none(pin.strip()) if isinstance(pin, str) else None
        if pinned is not None and not ipaddress.ip_network(str(pinned.cidr)).subnet_of(share) \
                and str(pinned.cidr) not in normalize_current_blocks(entry.get('current')):
            raise FabricError(host_subject(name), f"calico_block {pinned.cidr} is outside the share {share} of rack "
                                                  f"'{rack}' ({VAR})",
                              f'pin a block inside {share}, or drop calico_block')

        def full(rack=rack, share=share):
            return FabricError(rack_subject(rack), f'its hosts need more /{block_prefix} blocks than its share '
                                                   f'{share} holds ({1 << (block_prefix - share.prefixlen)})',
                               f'set a shorter {VAR} (larger shares), or move hosts to another rack')
        out[name] = (first, end, full)
    return out


def plan_aggregates(plan_hosts, plan_racks, shares):
    """Per rack ``share`` and ``exceptions`` (its hosts' blocks outside the share); per reflector
    ``aggregate``: ``{share, inside, outward}`` (``inside`` the BIRD pattern of everything more specific than the
    share, kept inside the rack; ``outward`` the sessions that get the aggregate instead: spines and other racks'
    reflectors). Nothing is added without shares."""
    if not shares:
        return
    for rack, info in plan_racks.items():
        share = shares[rack]
        outside = []
        for name in info['hosts']:
            outside += [b for b in plan_hosts[name].get('blocks') or []
                        if not ipaddress.ip_network(b).subnet_of(share)]
        info['share'] = str(share)
        info['exceptions'] = _sorted(outside)
    for host in plan_hosts.values():
        if host['role'] != 'reflector':
            continue
        share = shares[host['rack']]
        host['aggregate'] = {
            'share': str(share),
            'inside': f'{share}{{{share.prefixlen + 1},32}}',
            'outward': [p['name'] for p in host['peers'] if p.get('spine') or plan_hosts[p['name']]['rack']
                        != host['rack']],
        }


def plan_origins(plan_hosts, plan_racks, shares):
    """Which rack's AS must be the origin (``bgp_path.last``) of a prefix a reflector takes from a spine or another
    rack: ``[{rack, as_number, prefixes}]`` in the order BIRD tries them (first match decides). Exact prefixes
    first (a rack's floating IPs, and its blocks: all of them without shares, its exceptions with shares), then
    each rack's share with everything inside it."""
    exact, wide = [], []
    for rack, info in plan_racks.items():
        own = []
        for name in info['hosts']:
            own += announced(plan_hosts[name])
        if shares:
            share = shares[rack]
            own = [p for p in own if not ipaddress.ip_network(p).subnet_of(share)]
            wide.append({'rack': rack, 'as_number': info['as_number'], 'prefixes': [f'{share}+']})
        if own:
            exact.append({'rack': rack, 'as_number': info['as_number'], 'prefixes': _sorted(own)})
    return exact + wide


def _sorted(prefixes):
    def key(prefix):
        net = ipaddress.ip_network(prefix)
        return int(net.network_address), net.prefixlen
    return sorted(set(prefixes), key=key)


def plan_shares(share_len, pool, block_prefix, rack_hosts, rack_of, block_hosts):
    """Shares and block regions in one step (``({}, {})`` without ``calico_rack_block_pool``): see
    :func:`assign_shares` and :func:`block_regions`. ``rack_hosts``: ``{rack: [hosts]}``."""
    if share_len is None:
        return {}, {}
    nodes = {entry['name'] for entry in block_hosts}
    shares = assign_shares(pool, block_prefix, share_len,
                           {rack: [h for h in hosts if h in nodes] for rack, hosts in rack_hosts.items()}, block_hosts)
    return shares, block_regions(pool, block_prefix, shares, rack_of, block_hosts)
