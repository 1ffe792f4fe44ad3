# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IPv6 inventory values (dual stack) as the planner accepts them, and the family-neutral helpers the block
allocation uses for both pools: strict, whole-value patterns (ASCII only, ``fullmatch``) like those of
``inputs`` for IPv4. The workload address steps both families share (explicit, kept, next free) are here too;
workloads.py and v6.py differ only in what they parse and which addresses they hand out automatically."""

from __future__ import annotations

import re

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import BlocksFull, FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    as_int,
    is_unset,
    netaddr,
    network_or_none,
)

DEFAULT_BLOCK_PREFIX_V6 = 122  # Calico's default IPv6 block size: 64 addresses, like the IPv4 /26
MIN_BLOCK_PREFIX_V6 = 116  # Calico's range for IPv6 blocks starts here
MAX_BLOCK_PREFIX_V6 = 127  # a /127 still leaves one automatic address (::0 is the Subnet-Router anycast address)

# hex digits and colons only: no zone (%eth0), no embedded dotted quad, no spaces
ADDRESS6 = re.compile(r'[0-9A-Fa-f:]{2,39}')
CIDR6 = re.compile(r'[0-9A-Fa-f:]{2,39}/[0-9]{1,3}')

# what a pool or a node address may be: global unicast (2000::/3) or unique local (fc00::/7)
_GLOBAL = ('2000::/3', 'fc00::/7')


def address6_or_none(value):
    """IPv6 IPAddress for plain hex-and-colon text (nothing around it), else None."""
    if not isinstance(value, str) or not ADDRESS6.fullmatch(value):
        return None
    try:
        addr = netaddr.IPAddress(value, 6)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return addr


def network6_or_none(value):
    """IPv6 IPNetwork for a CIDR of hex digits and colons (``fd00:10::/48``), else None."""
    if not isinstance(value, str) or not CIDR6.fullmatch(value):
        return None
    try:
        net = netaddr.IPNetwork(value, version=6)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return net if net.prefixlen <= 128 else None


def network_of(value, version):
    """The network of ``version`` (4 or 6) that ``value`` spells, else None (blocks of either pool)."""
    return network_or_none(value) if version == 4 else network6_or_none(value)


def width(net):
    """Address bits of ``net``'s family (32 or 128)."""
    return 32 if net.version == 4 else 128


def is_global(net):
    """Global unicast or unique local: the addresses a pool and a node may have."""
    return any(net in netaddr.IPNetwork(space) for space in _GLOBAL)


def parse_pool_v6(value, subject):
    """``calico_pool_v6``: a strict IPv6 CIDR of global unicast or unique local addresses, no host bits."""
    fix = 'set calico_pool_v6 to a unique local or global IPv6 network like fd00:10::/48, or drop it'
    net = network6_or_none(value)
    if net is None:
        raise FabricError(subject, f'calico_pool_v6 {value!r} is not a valid IPv6 CIDR', fix)
    if net.ip != net.network:
        raise FabricError(subject, f'calico_pool_v6 {value} has host bits set', f'use {net.cidr}')
    if not is_global(net):
        raise FabricError(subject, f'calico_pool_v6 {net} is not a global unicast or unique local network',
                          fix)
    return net.cidr


def parse_block_prefix_v6(value, pool, subject):
    low = max(pool.prefixlen, MIN_BLOCK_PREFIX_V6)
    fix = f'set calico_block_prefix_v6 between {low} and {MAX_BLOCK_PREFIX_V6} (default {DEFAULT_BLOCK_PREFIX_V6})'
    prefix = as_int(value)
    if prefix is None:
        raise FabricError(subject, f'calico_block_prefix_v6 {value!r} is not an integer', fix)
    if prefix < pool.prefixlen:
        raise FabricError(subject, f'calico_block_prefix_v6 {prefix} is shorter than calico_pool_v6 {pool}', fix)
    if prefix < MIN_BLOCK_PREFIX_V6:
        raise FabricError(subject, f'calico_block_prefix_v6 {prefix} makes blocks of more than 4096 addresses', fix)
    if prefix > MAX_BLOCK_PREFIX_V6:
        raise FabricError(subject, f'calico_block_prefix_v6 {prefix} leaves no workload addresses in a block', fix)
    return prefix


def parse_node_ip_v6(reader, name, pool, what="the host's IPv6 address on its fabric network"):
    """A host's ``calico_node_ip_v6`` (required when the fleet has ``calico_pool_v6``): the next hop of its IPv6
    routes, on the host's fabric interface like ``calico_node_ip`` (a spine router's: on the spine segment)."""
    raw = reader.get(name, 'calico_node_ip_v6')
    fix = f'set calico_node_ip_v6 to {what} (unique local or global, outside calico_pool_v6)'
    if is_unset(raw):
        raise FabricError(host_subject(name), 'has no calico_node_ip_v6 but calico_pool_v6 is set', fix)
    addr = address6_or_none(raw)
    if addr is None:
        raise FabricError(host_subject(name), f'calico_node_ip_v6 {raw!r} is not an IPv6 address', fix)
    if not is_global(netaddr.IPNetwork(f'{addr}/128')):
        raise FabricError(host_subject(name), f'calico_node_ip_v6 {addr} is not a global unicast or unique local '
                                              'address', fix)
    if addr in pool:
        raise FabricError(host_subject(name), f'calico_node_ip_v6 {addr} is inside calico_pool_v6 {pool}', fix)
    return addr


# ---------------------------------------------------------------------------------------------
# workload addresses inside a host's blocks (both families)
# ---------------------------------------------------------------------------------------------

def _words(version):
    """The variable of a workload's address and how the messages name the blocks."""
    return ('ip', 'block') if version == 4 else ('ip6', 'IPv6 block')


def reserved_address(addr, net):
    """``(problem, fix)`` when ``addr`` is an address of block ``net`` no workload may have, else None: the network
    and broadcast addresses of an IPv4 block, the Subnet-Router anycast address (the network) of an IPv6 one."""
    if net.version == 6:
        if addr == net.network:
            return (f'the Subnet-Router anycast address of block {net}',
                    'pick another address of the block or drop ip6')
        return None
    if int(addr) in (int(net.first), int(net.last)):
        kind = 'network' if int(addr) == int(net.first) else 'broadcast'
        span = f'{netaddr.IPAddress(int(net.first) + 1, 4)}-{netaddr.IPAddress(int(net.last) - 1, 4)}'
        return f'the {kind} address of block {net}', f'pick an address in {span} or drop ip'
    return None


def block_of(addr, blocks):
    """The block of ``blocks`` that holds ``addr``, else None."""
    return next((b for b in blocks if addr in b), None)


def assign_explicit(entries, values, parse, blocks, used, version, subject):
    """Give each entry the address its workload sets (``values``, one a entry; unset ones are skipped) as ``ip``,
    recorded in ``used`` (``{int: workload name}``). ``parse`` turns a value into an address of the family or None.
    The address must lie in one of ``blocks``, not be reserved (:func:`reserved_address`) and not be taken."""
    var, block = _words(version)
    listing = ', '.join(str(b) for b in blocks)
    where = f"the host's {block}{'s' if len(blocks) > 1 else ''} {listing}"
    for entry, value in zip(entries, values):
        if is_unset(value):
            continue
        name = entry['name']
        addr = parse(value)
        if addr is None:
            raise FabricError(subject, f"workload '{name}' {var} {value!r} is not an IPv{version} address",
                              f'fix {var}, or drop it to get the next free address of the {block}')
        net = block_of(addr, blocks)
        if net is None:
            raise FabricError(subject, f"workload '{name}' {var} {addr} is outside {where}",
                              f'pick an address inside {listing} or drop {var}')
        reserved = reserved_address(addr, net)
        if reserved is not None:
            raise FabricError(subject, f"workload '{name}' {var} {addr} is {reserved[0]}", reserved[1])
        if int(addr) in used:
            raise FabricError(subject, f"workload '{name}' {var} {addr} is also used by workload '{used[int(addr)]}'",
                              f'give each workload its own {var}, or drop {var} to get the next free address')
        used[int(addr)] = name
        entry['ip'] = str(addr)


def keep_running(entries, running, blocks, used):
    """Give each entry still without ``ip`` the address its workload runs with today (``running``: ``{name:
    address}``) when that is a free, unreserved address of one of ``blocks``."""
    for entry in entries:
        if 'ip' in entry:
            continue
        addr = running.get(entry['name'])
        net = None if addr is None else block_of(addr, blocks)
        if net is not None and reserved_address(addr, net) is None and int(addr) not in used:
            used[int(addr)] = entry['name']
            entry['ip'] = str(addr)


def fill_free(entries, free, used, version, subject, full, fix):
    """Give each entry without an ``ip`` the next address of ``free`` (integers, in order) and record it in ``used``
    (``{int: workload name}``); when ``free`` runs out, :class:`BlocksFull` says ``full`` (which blocks) and ``fix``."""
    for entry in entries:
        if 'ip' in entry:
            continue
        cursor = next(free, None)
        if cursor is None:
            raise BlocksFull(subject, f"{full}, no address left for workload '{entry['name']}'", fix)
        used[cursor] = entry['name']
        entry['ip'] = str(netaddr.IPAddress(cursor, version))
    return entries
