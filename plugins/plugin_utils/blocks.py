# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blocks of a pool per host (``calico_pool``, and ``calico_pool_v6`` of a dual-stack fleet): pinned, running
and new ones, allocated so that growing the fleet (or a host outgrowing its block) moves no existing block."""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import BlocksFull, FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import network_of, width
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    is_unset,
    netaddr,
    parse_network,
)

# ---------------------------------------------------------------------------------------------
# facts coming back from the hosts (calico_node_facts): accept a few shapes, ignore junk
# ---------------------------------------------------------------------------------------------


def normalize_current_blocks(value):
    """Blocks a host owns today (its proto-80 blackhole routes): a CIDR string, a list of them,
    or a list of dicts with ``block``/``cidr``/``dst``. Unparseable entries are dropped."""
    if is_unset(value):
        return []
    items = [value] if isinstance(value, (str, Mapping)) else list(value)
    out = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get('block') or item.get('cidr') or item.get('dst')
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
    return out


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------

def allocate_blocks(pool, block_prefix, hosts, regions=None):
    """Give every host one block of ``pool``; return ``{name: (block_cidr_str, source)}`` in input order.

    ``hosts`` is a list (in a stable order) of ``{name, block?, current?}``: ``block`` the pinned
    ``calico_block``, ``current`` the block(s) the host owns now (from its kernel). ``source`` is
    ``pinned``, ``current`` or ``allocated``.

    Priority: pinned > current (inside the pool, right size, not pinned by another host) > lowest
    free block, handed out in list order. Blocks any host still owns are never handed to a new host
    in the same run (unless the pool has nothing else left). A pin on the running block of an
    unpinned host is an overlap error: that host's block would have to move.

    ``regions`` (``{name: (first, end, full)}``, block indexes of the pool: a rack's share) confines a host's
    new block to ``range(first, end)``; ``full()`` is the error when nothing there is free.
    """
    regions = regions or {}
    size = 1 << (width(pool) - block_prefix)
    count = 1 << (block_prefix - pool.prefixlen)
    base = int(pool.first)

    def to_cidr(idx):
        return f'{netaddr.IPAddress(base + idx * size, pool.version)}/{block_prefix}'

    def index_of(net):
        if net is None or net.prefixlen != block_prefix or net.ip != net.network:
            return None
        if net.first < pool.first or net.last > pool.last:
            return None
        return (int(net.first) - base) // size

    names = []
    for entry in hosts:
        name = entry['name']
        if name in names:
            raise FabricError(host_subject(name), 'appears twice in the host list', 'list each host once')
        names.append(name)

    result = {}
    owner = {}  # block index -> host name
    fix_pin = 'pick a block inside the pool or drop calico_block'

    # 1. pins
    for entry in hosts:
        name, pin = entry['name'], entry.get('block')
        if is_unset(pin):
            continue
        subject = host_subject(name)
        net = parse_network(pin, subject, 'calico_block', f'set calico_block to a /{block_prefix} inside {pool} '
                                                          'or drop calico_block')
        if net.first < pool.first or net.last > pool.last:
            raise FabricError(subject, f'calico_block {net} is outside calico_pool {pool}', fix_pin)
        if net.prefixlen != block_prefix:
            raise FabricError(subject, f'calico_block {net} is not a /{block_prefix} (calico_block_prefix)',
                              f'pin a /{block_prefix} inside {pool} or drop calico_block')
        idx = index_of(net)
        if idx in owner:
            raise FabricError(subject, f"calico_block {net} overlaps the block of host '{owner[idx]}'",
                              'pin a different block or drop calico_block')
        owner[idx] = name
        result[name] = (idx, 'pinned')

    # 2. running blocks
    current = {}
    everything_current = set()
    for entry in hosts:
        found = (index_of(network_of(b, pool.version)) for b in normalize_current_blocks(entry.get('current')))
        idxs = sorted({i for i in found if i is not None})
        current[entry['name']] = idxs
        everything_current.update(idxs)
    for entry in hosts:
        name = entry['name']
        if name in result or not current[name]:
            continue
        free = [i for i in current[name] if i not in owner]
        if not free:
            pinned_by = owner[current[name][0]]
            if result[pinned_by][1] == 'pinned' and current[name][0] not in current[pinned_by]:
                raise FabricError(
                    host_subject(pinned_by),
                    f"calico_block {to_cidr(current[name][0])} is the running block of host '{name}'",
                    f"pin a free block for '{pinned_by}', or pin another block for '{name}' too")
            continue  # claimed by an earlier host's running block: split brain, this one moves
        owner[free[0]] = name
        result[name] = (free[0], 'current')

    # 3. new hosts: lowest free block, in list order
    cursors = {}  # per region (the whole pool: 0): the lowest block that may still be free
    for entry in hosts:
        name = entry['name']
        if name in result:
            continue
        first, end, full = regions.get(name, (0, count, None))
        cursor = cursors.get(first, first)
        while cursor < end and (cursor in owner or cursor in everything_current):
            cursor += 1
        cursors[first] = cursor
        idx = cursor
        if idx >= end:  # nothing left but blocks some host still holds: take the lowest unowned one
            idx = next((i for i in sorted(everything_current) if first <= i < end and i not in owner), None)
        if idx is None and full is not None:
            raise full()
        if idx is None:
            raise FabricError(host_subject(name),
                              f'no free /{block_prefix} left in calico_pool {pool} ({count} blocks, all in use)',
                              'enlarge calico_pool or raise calico_block_prefix')
        owner[idx] = name
        result[name] = (idx, 'allocated')

    return {name: (to_cidr(result[name][0]), result[name][1]) for name in names}


def grow_blocks(pool, block_prefix, hosts, first, max_blocks, fit, regions=None):
    """Give a host whose workloads do not fit in its first block further blocks, up to ``max_blocks``.

    ``hosts`` is the list :func:`allocate_blocks` took (``addresses``: the current workload addresses of a
    host, checked IPv4 strings), ``first`` its result. ``fit(name, blocks)`` plans
    the host's workloads in ``blocks`` (a list of networks, the first block first) and returns them, or
    raises ``errors.BlocksFull``. Returns ``{name: (blocks, workloads)}``, ``blocks`` a list of CIDR
    strings starting with the first block.

    A host keeps its running blocks (the first one of ``first`` and every other block of ``current`` that
    no other host holds; none when a pin it does not run yet moves it), then takes the lowest free block
    above its first block until its workloads fit: blocks are listed by address after the first one, so
    the running blocks read back from the kernel give the same list. A block any host still holds is
    never taken. A block of the pool that a workload's explicit address (``explicit``: ``[(workload, var,
    address)]``) lies in is added first when it is free and the host has room (see :func:`_claim_explicit`).
    Then trailing blocks that hold no workload address are released (never the first one,
    never a block before one in use: a running workload is never renumbered). Hosts are visited in list
    order; no other host's block moves. ``regions`` (see :func:`allocate_blocks`) confines further blocks to a
    host's region (still above its first block).
    """
    regions = regions or {}
    size = 1 << (width(pool) - block_prefix)
    count = 1 << (block_prefix - pool.prefixlen)
    base = int(pool.first)

    def net_of(idx):
        return netaddr.IPNetwork(f'{netaddr.IPAddress(base + idx * size, pool.version)}/{block_prefix}')

    def index_of(value):
        net = network_of(value, pool.version)
        if net is None or net.prefixlen != block_prefix or net.ip != net.network:
            return None
        if net.first < pool.first or net.last > pool.last:
            return None
        return (int(net.first) - base) // size

    owner = {index_of(cidr): name for name, (cidr, _source) in first.items()}
    running = {}
    for entry in hosts:
        found = (index_of(b) for b in normalize_current_blocks(entry.get('current')))
        running[entry['name']] = sorted({i for i in found if i is not None})
    everything_running = {i for idxs in running.values() for i in idxs}

    # 1. every host's running blocks besides its first, before any host grows
    extras = {}
    for entry in hosts:
        name = entry['name']
        if name not in first:
            continue
        extras[name] = []
        if first[name][1] == 'pinned' and index_of(first[name][0]) not in running[name]:
            continue  # a new pin moves the host: its workloads are renumbered into the pinned block and on
        for idx in running[name]:
            holder = owner.get(idx)
            if holder == name:
                continue
            if holder is not None:
                if first[holder][1] == 'pinned' and idx not in running[holder]:
                    raise FabricError(host_subject(holder),
                                      f"calico_block {net_of(idx)} is a running block of host '{name}'",
                                      f"pin a free block for '{holder}'")
                in_use = [a for a in entry.get('addresses') or () if netaddr.IPAddress(a) in net_of(idx)]
                if first[holder][1] == 'allocated' and in_use:  # a new host took it: the pool had nothing else
                    raise FabricError(host_subject(holder), f'no free /{block_prefix} left in calico_pool {pool} '
                                                            f"({net_of(idx)} still holds workloads of host '{name}')",
                                      'enlarge calico_pool or raise calico_block_prefix')
                continue  # held by an earlier host too: split brain, the earlier host keeps it
            owner[idx] = name
            extras[name].append(idx)

    # 1b. blocks named by a workload's explicit address, before any host grows (see _claim_explicit)
    for entry in hosts:
        if entry['name'] in first:
            _claim_explicit(entry, first, extras, owner, running, max_blocks, regions, (pool, block_prefix, net_of))

    # 2. grow until the workloads fit, then release trailing empty blocks
    out = {}
    for entry in hosts:
        name = entry['name']
        if name not in first:
            continue
        start = index_of(first[name][0])
        idxs = [start] + sorted(extras[name])
        while True:
            try:
                planned = fit(name, [net_of(i) for i in idxs])
                break
            except BlocksFull as err:
                if len(idxs) >= max_blocks:
                    raise FabricError(err.subject, f'{err.problem} (calico_max_blocks_per_host {max_blocks})',
                                      'raise calico_max_blocks_per_host, lower calico_block_prefix, or move '
                                      'workloads to another host') from None
                low, end, full = regions.get(name, (0, count, None))
                idx = next((i for i in range(max(start + 1, low), end)
                            if i not in owner and i not in everything_running), None)
                if idx is None and full is not None:
                    raise full() from None
                if idx is None:
                    raise FabricError(host_subject(name), f'needs another /{block_prefix} for its workloads but '
                                                          f'calico_pool {pool} has none free above its first block '
                                                          f'{net_of(start)}',
                                      'enlarge calico_pool, lower calico_block_prefix, or move workloads to '
                                      'another host') from None
                owner[idx] = name
                idxs = [start] + sorted(idxs[1:] + [idx])
        addresses = [netaddr.IPAddress(w['ip']) for w in planned]
        while len(idxs) > 1 and not any(a in net_of(idxs[-1]) for a in addresses):
            owner.pop(idxs.pop())
        if len(idxs) > max_blocks:
            raise FabricError(host_subject(name), f'has workloads in {len(idxs)} blocks but '
                                                  f'calico_max_blocks_per_host is {max_blocks}',
                              'raise calico_max_blocks_per_host, or move the workloads of its last blocks to '
                              'another host')
        out[name] = ([str(net_of(i)) for i in idxs], planned)
    return out


def _claim_explicit(entry, first, extras, owner, running, max_blocks, regions, pool_of):
    """Add to a host's blocks (``extras``) each block of the pool that one of its workloads' explicit addresses
    lies in, before any host grows, so that no automatic growth takes it first. The block must be free (no host
    holds or runs it), above the host's first block (blocks after the first are listed by address, as the kernel
    gives them back) and inside its region, and the host must have room (``calico_max_blocks_per_host``);
    otherwise the one-line error says which and the fix. An address outside the pool is left to the host's
    ``fit``, which refuses it."""
    pool, block_prefix, net_of = pool_of
    name = entry['name']
    size = 1 << (width(pool) - block_prefix)
    start = (int(netaddr.IPNetwork(first[name][0]).first) - int(pool.first)) // size
    kind = 'IPv6 block' if pool.version == 6 else 'block'
    for workload, var, value in entry.get('explicit') or ():
        held = [start] + sorted(extras[name])
        addr = netaddr.IPAddress(value)
        if addr not in pool:
            continue
        idx = (int(addr) - int(pool.first)) // size
        if idx in held:
            continue
        listing = ', '.join(str(net_of(i)) for i in held)
        where = (f"workload '{workload}' {var} {addr} is outside the host's {kind}{'s' if len(held) > 1 else ''} "
                 f'{listing} (in {net_of(idx)}')
        keep = f'pick an address inside {listing} or drop {var}'
        holder = owner.get(idx) or next((n for n, idxs in running.items() if idx in idxs and n != name), None)
        low, end, _full = regions.get(name, (0, 1 << (block_prefix - pool.prefixlen), None))
        if holder is not None:
            raise FabricError(host_subject(name), f"{where}, a block of host '{holder}')", keep)
        if idx < start:
            raise FabricError(host_subject(name), f"{where}, below the host's first {kind}: further blocks are "
                                                  'taken above it)', keep)
        if not low <= idx < end:
            raise FabricError(host_subject(name), f"{where}, outside its rack's share)", keep)
        if len(held) >= max_blocks:
            raise FabricError(host_subject(name), f'{where}, free, but the host holds {len(held)} '
                                                  f'{kind}{"s" if len(held) > 1 else ""} already: '
                                                  f'calico_max_blocks_per_host {max_blocks})',
                              f'raise calico_max_blocks_per_host to {len(held) + 1} to give the host {net_of(idx)}, '
                              f'or {keep}')
        owner[idx] = name
        extras[name].append(idx)
