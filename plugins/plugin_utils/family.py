# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IPv6 inventory values (dual stack) as the planner accepts them, and the family-neutral helpers the block
allocation uses for both pools: strict, whole-value patterns (ASCII only, ``fullmatch``) like those of
``inputs`` for IPv4."""

from __future__ import annotations

import re

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
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
