# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workloads of a host: their names, namespaces and addresses inside the host's blocks (an address is
kept across runs)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.module_utils.iproute import DEFAULT_NETNS_PREFIX
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import assign_explicit, fill_free, keep_running
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    address_or_none,
    is_unset,
    netaddr,
)

# ---------------------------------------------------------------------------------------------
# workload addresses
# ---------------------------------------------------------------------------------------------


def _workload_entries(workloads, subject, namespaces=None):
    """Validate the shape of a calico_workloads list; return a list of dict copies. ``namespaces`` is
    ``(netns_prefix, netns_path patterns)``: where a workload's own ``netns`` / ``netns_path`` may point."""
    fix = 'set calico_workloads to a list of {name, ip?}'
    if is_unset(workloads):
        return []
    if isinstance(workloads, (str, Mapping)) or not hasattr(workloads, '__iter__'):
        raise FabricError(subject, 'calico_workloads is not a list', fix)
    entries = []
    seen = set()
    for pos, item in enumerate(workloads):
        if isinstance(item, str):
            item = {'name': item}
        if not isinstance(item, Mapping):
            raise FabricError(subject, f'calico_workloads[{pos}] is not a mapping', fix)
        name = item.get('name')
        if is_unset(name):
            raise FabricError(subject, f'calico_workloads[{pos}] has no name', 'give every workload a name')
        name = str(name)
        if not inputs.NAME.fullmatch(name):
            raise FabricError(subject, f'workload name {name!r} is not allowed',
                              "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if name in seen:
            raise FabricError(subject, f"workload name '{name}' appears twice in calico_workloads",
                              'give each workload of a host its own name')
        seen.add(name)
        _check_workload_namespace(item, name, subject, namespaces or (DEFAULT_NETNS_PREFIX, ()))
        mtu = item.get('mtu')
        if mtu is not None and not 576 <= (inputs.as_int(mtu) or 0) <= 65535:
            raise FabricError(subject, f"workload '{name}' mtu {mtu!r} is not allowed", 'use an MTU from 576 to 65535')
        entry = dict(item)
        entry['name'] = name
        entries.append(entry)
    return entries


def _check_workload_namespace(item, name, subject, namespaces):
    """A workload's own namespace: a plain name under the host's workload prefix, or a path that one of
    calico_node_workload_netns_paths allows (none by default): never the host's, a lab's or PID 1's namespace."""
    prefix, patterns = namespaces
    netns, path = item.get('netns'), item.get('netns_path')
    if netns is not None and (not inputs.matches(inputs.NAME, netns) or not netns.startswith(prefix)):
        raise FabricError(subject, f"workload '{name}' netns {netns!r} is not allowed",
                          f"use a plain name starting with the host's workload prefix '{prefix}' "
                          '(calico_node_workload_netns_prefix), or drop netns')
    if path is not None and not (inputs.is_path(path) and any(fnmatch.fnmatchcase(path, p) for p in patterns)):
        raise FabricError(subject, f"workload '{name}' netns_path {path!r} is not allowed",
                          'list a pattern that allows it in calico_node_workload_netns_paths (e.g. '
                          "'/run/docker/netns/*'), or use netns")


def workload_namespaces(reader, name):
    """(netns prefix, allowed netns_path patterns) of a host, checked."""
    prefix = reader.get(name, 'calico_node_workload_netns_prefix')
    prefix = DEFAULT_NETNS_PREFIX if prefix is None else prefix
    patterns = reader.get(name, 'calico_node_workload_netns_paths') or []
    if not isinstance(patterns, (list, tuple)) or not all(
            isinstance(p, str) and inputs.PATH_PATTERN.fullmatch(p) and '..' not in p.split('/') for p in patterns):
        raise FabricError(host_subject(name), f'calico_node_workload_netns_paths {patterns!r} is not allowed',
                          "use a list of absolute path patterns such as '/run/docker/netns/*'")
    return prefix, tuple(patterns)


def assign_workload_ips(block, workloads, current=None, subject='input', namespaces=None, first_share=None):
    """Fill ``ip`` for every workload of one host: explicit > current (inside a block, free) > next free.

    ``block`` is the host's block or the list of its blocks (the first block first). Automatic
    addresses start at a block's network + 2 (the article numbers workloads .2, .3), fill the blocks
    in order and never use a block's network or broadcast address. Returns the list in input order,
    each entry a copy of the input mapping with ``name`` and ``ip`` (a plain address, no /32). Full
    blocks raise :class:`BlocksFull` (the planner may then add a block). ``first_share`` (a prefix length)
    keeps automatic addresses of the first block inside its first subnet of that size (a CNI host's slot 0).
    """
    blocks = list(block) if isinstance(block, (list, tuple)) else [block]
    entries = _workload_entries(workloads, subject, namespaces)
    current = normalize_current_workloads(current)
    listing = ', '.join(str(b) for b in blocks)
    used = {}  # int ip -> workload name
    for entry in entries:
        if is_unset(entry.get('ip')):
            entry.pop('ip', None)
    assign_explicit(entries, [entry.get('ip') for entry in entries], _plain4, blocks, used, 4, subject)
    running = {name: address_or_none(ip, allow_slash32=True) for name, ip in current.items()}
    keep_running(entries, running, blocks, used)

    def automatic(pos, net):
        last = int(net.last) - 1
        if pos == 0 and first_share is not None:
            last = min(last, int(net.first) + (1 << (32 - first_share)) - 1)
        return range(int(net.first) + 2, last + 1)

    free = (ip for pos, net in enumerate(blocks) for ip in automatic(pos, net) if ip not in used)
    what = f'block {listing} is full' if len(blocks) == 1 else f'blocks {listing} are full'
    if first_share is not None:
        what += (f' (calico_workloads have {netaddr.IPNetwork(f"{blocks[0].network}/{first_share}")} of '
                 'the first block on a CNI host)')
    return fill_free(entries, free, used, 4, subject, what,
                     'run fewer workloads on this host or use bigger blocks (lower calico_block_prefix)')


def _plain4(value):
    """An IPv4 IPAddress from ``x`` or ``x/32`` text, else None."""
    return address_or_none(value if isinstance(value, str) else None, allow_slash32=True)


def normalize_current_workloads(value):
    """Workload -> IP a host has today: ``{name: ip}``, ``{name: {ip: ...}}`` or ``[{name, ip}]``."""
    if is_unset(value):
        return {}
    out = {}
    if isinstance(value, Mapping):
        pairs = value.items()
    else:
        pairs = [(item.get('name'), item) for item in value if isinstance(item, Mapping)]
    for name, ip in pairs:
        if isinstance(ip, Mapping):
            ip = ip.get('ip') or ip.get('address')
        if isinstance(name, str) and isinstance(ip, str):
            out[name] = ip.strip()
    return out


def current_addresses(value):
    """The valid IPv4 addresses (plain strings) of a host's workloads today (see normalize_current_workloads)."""
    found = (address_or_none(ip, allow_slash32=True) for ip in normalize_current_workloads(value).values())
    return [str(addr) for addr in found if addr is not None]


def explicit_addresses(workloads):
    """``[(workload, 'ip', address)]`` of the ``calico_workloads`` entries whose ``ip`` is a valid IPv4 address (the
    rest is refused by :func:`assign_workload_ips`): a block of the pool one of them lies in may be added to the
    host's (``blocks.grow_blocks``)."""
    if is_unset(workloads) or isinstance(workloads, (str, Mapping)) or not hasattr(workloads, '__iter__'):
        return []
    out = []
    for item in workloads:
        if isinstance(item, Mapping) and not is_unset(item.get('name')):
            addr = address_or_none(item.get('ip'), allow_slash32=True)
            if addr is not None:
                out.append((str(item['name']), 'ip', str(addr)))
    return out
