# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dual stack: the IPv6 part of the plan, added to the IPv4 plan when the fleet sets ``calico_pool_v6``.

Each host holds IPv6 blocks of ``calico_pool_v6`` (``calico_block_prefix_v6``, default /122), allocated like its
IPv4 blocks (kept from its running IPv6 blackholes, else the lowest free one), and each workload gets an ``ip6``
from them (kept from its running address, or given in ``calico_workloads``). BGP sessions stay one per peer over
the IPv4 node addresses and carry an ``ipv6`` channel whose next hop is the host's ``calico_node_ip_v6`` (a
reflector's eBGP sessions from its spine address: ``calico_rr_spine_ip_v6``; a spine router's, its own
``calico_node_ip_v6``). IPv6 blocks are announced one by one everywhere (``calico_rack_block_pool`` shares are of
the IPv4 pool only), each with its rack's origin AS. A fleet without ``calico_pool_v6`` plans exactly as before: no
key of this module appears in its plan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import plan_imports
from ansible_collections.netfleet.calico.plugins.plugin_utils.blocks import (
    allocate_blocks,
    grow_blocks,
    normalize_current_blocks,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import (
    DEFAULT_BLOCK_PREFIX_V6,
    address6_or_none,
    assign_explicit,
    fill_free,
    is_global,
    keep_running,
    network6_or_none,
    parse_block_prefix_v6,
    parse_node_ip_v6,
    parse_pool_v6,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import is_unset, netaddr, parse_bool
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import fleet_setting, natural_sorted

# the variables a fleet without calico_pool_v6 must not set (they would be silently ignored)
_V6_ONLY = ('calico_block_prefix_v6', 'calico_rr_spine_ip_v6')
# a session that may announce any block takes at most this many IPv6 ones (a /48 pool holds 2^74 /122s)
MAX_ANY_BLOCKS_V6 = 1 << 16


# ---------------------------------------------------------------------------------------------
# what the hosts run today (calico_node_facts): IPv6 blocks and workload addresses
# ---------------------------------------------------------------------------------------------

def current_blocks_v6(facts):
    """The IPv6 blackholes a host owns today (calico_node_facts ``blocks6``)."""
    found = normalize_current_blocks(facts.get('blocks6'))
    return [b for b in found if network6_or_none(b) is not None]


def current_ip6(facts):
    """Workload name -> IPv6 address a host runs today (calico_node_facts ``workloads6``, ``{name: ip6}``, and the
    ``ip6`` of ``endpoints``, ``[{name, ip6}]``); anything not an IPv6 address is left out."""
    out = {}
    endpoints = facts.get('endpoints')
    if isinstance(endpoints, list):
        for item in endpoints:
            if isinstance(item, Mapping) and isinstance(item.get('name'), str):
                out[item['name']] = item.get('ip6')
    workloads = facts.get('workloads6')
    if isinstance(workloads, Mapping):
        out.update(workloads)
    plain = {name: _plain6(value) for name, value in out.items()}
    return {name: addr for name, addr in plain.items() if addr is not None}


def _plain6(value, allow_slash128=True):
    """An IPv6 IPAddress from ``x`` or ``x/128``, else None."""
    if allow_slash128 and isinstance(value, str) and value.endswith('/128'):
        value = value[:-4]
    return address6_or_none(value)


# ---------------------------------------------------------------------------------------------
# workload addresses
# ---------------------------------------------------------------------------------------------

def assign_ip6(blocks, workloads, current, subject, first_share=None):
    """``[{name, ip}]`` for every workload of one host, ``ip`` its IPv6 address in ``blocks`` (IPv6 networks, the
    first block first): explicit ``ip6`` > running address (inside a block, free) > next free.

    Automatic addresses start at a block's network + 1 (the network itself is the Subnet-Router anycast address,
    refused as an explicit ``ip6`` too) and fill the blocks in order; full blocks raise :class:`BlocksFull`.
    ``first_share`` (a prefix length) keeps automatic addresses of the first block inside its first subnet of
    that size (a CNI host's slot 0: the other slots are its container networks' IPv6 ranges)."""
    listing = ', '.join(str(b) for b in blocks)
    used = {}
    out = [{'name': w['name']} for w in workloads]
    assign_explicit(out, [w.get('ip6') for w in workloads], _plain6, blocks, used, 6, subject)
    keep_running(out, current, blocks, used)

    def automatic(pos, net):
        last = int(net.last)
        if pos == 0 and first_share is not None:
            last = min(last, int(net.first) + (1 << (128 - first_share)) - 1)
        return range(int(net.first) + 1, last + 1)

    free = (ip for pos, net in enumerate(blocks) for ip in automatic(pos, net) if ip not in used)
    full = f'IPv6 block {listing} is full' if len(blocks) == 1 else f'IPv6 blocks {listing} are full'
    if first_share is not None:
        full += (f' (calico_workloads have {netaddr.IPNetwork(f"{blocks[0].network}/{first_share}")} of '
                 'the first IPv6 block on a CNI host)')
    return fill_free(out, free, used, 6, subject, full,
                     'run fewer workloads on this host or use bigger IPv6 blocks (lower calico_block_prefix_v6)')


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------

def _in_v6_words(err):
    """A block allocation error of the IPv6 pool, naming the IPv6 variables (blocks.py words them for IPv4)."""
    def words(text):
        return re.sub(r'\b(calico_pool|calico_block_prefix)\b', r'\1_v6', text)
    return type(err)(err.subject, words(err.problem), words(err.fix), prefix=err.prefix)


def check_v4_only(reader, hosts, plan_hosts):
    """A fleet without ``calico_pool_v6``: a workload ``ip6`` or an IPv6-only variable would be ignored, refused."""
    for name in hosts:
        for var in _V6_ONLY:
            if not is_unset(reader.get(name, var)):
                raise FabricError(host_subject(name), f'{var} is set but calico_pool_v6 is not',
                                  f'set calico_pool_v6 for a dual-stack fleet, or drop {var}')
        for workload in plan_hosts[name]['workloads']:
            for key in ('ip6', 'floating_ip6'):
                if not is_unset(workload.get(key)):
                    raise FabricError(host_subject(name), f"workload '{workload['name']}' has {key} but "
                                                          'calico_pool_v6 is not set',
                                      f'set calico_pool_v6 for a dual-stack fleet, or drop {key}')


def _node_addresses(reader, hosts, plan_hosts, pool, spines):
    """``{name: (node_ip_v6, spine_ip_v6 or None)}``, each unique in the fleet; each spine router's
    ``calico_node_ip_v6`` (its IPv6 next hop toward the reflectors) as ``spines['routers'][name]['ip_v6']``."""
    out, owner = {}, {}
    for name in hosts:
        node = parse_node_ip_v6(reader, name, pool)
        spine = None
        host = plan_hosts[name]
        raw = reader.get(name, 'calico_rr_spine_ip_v6')
        if host['spine_ip'] is None:
            if not is_unset(raw):
                raise FabricError(host_subject(name), 'calico_rr_spine_ip_v6 is set but the host is not a route '
                                                      'reflector',
                                  'drop calico_rr_spine_ip_v6, or add the host to calico_route_reflectors')
        elif is_unset(raw):
            if host['spine_ip'] != host['node_ip']:
                raise FabricError(host_subject(name), 'has calico_rr_spine_ip but no calico_rr_spine_ip_v6',
                                  "set calico_rr_spine_ip_v6 to the reflector's IPv6 address toward other racks' "
                                  'reflectors')
            spine = node
        else:
            spine = _plain6(raw, allow_slash128=False)
            if spine is None or spine in pool or not is_global(netaddr.IPNetwork(f'{spine}/128')):
                raise FabricError(host_subject(name), f'calico_rr_spine_ip_v6 {raw!r} is not allowed',
                                  "set it to the reflector's IPv6 address toward other racks' reflectors "
                                  '(unique local or global, outside calico_pool_v6)')
        for addr, kind in ((node, 'calico_node_ip_v6'), (spine, 'calico_rr_spine_ip_v6')):
            if addr is None or (kind == 'calico_rr_spine_ip_v6' and addr == node):
                continue
            if addr in owner:
                raise FabricError(host_subject(name), f"{kind} {addr} is also used by host '{owner[addr]}'",
                                  f'give each host its own {kind}')
            owner[addr] = name
        out[name] = (node, spine)
    for name in natural_sorted((spines or {}).get('routers') or {}):
        addr = parse_node_ip_v6(reader, name, pool, "the spine's IPv6 address on the spine segment")
        if addr in owner:
            raise FabricError(host_subject(name), f"calico_node_ip_v6 {addr} is also used by host '{owner[addr]}'",
                              'give each spine its own calico_node_ip_v6')
        owner[addr] = name
        spines['routers'][name]['ip_v6'] = str(addr)
    return out


def _explicit6(workloads):
    """``[(workload, 'ip6', address)]`` of the workloads whose ``ip6`` is a valid address (the rest is refused by
    :func:`assign_ip6`): a block of the pool one of them lies in may be added to the host's."""
    found = ((w['name'], _plain6(w.get('ip6'))) for w in workloads if not is_unset(w.get('ip6')))
    return [(name, 'ip6', str(addr)) for name, addr in found if addr is not None]


def plan_dual_stack(reader, hosts, plan_hosts, facts, topology, max_blocks, spines=None, cni_bits=None):
    """The IPv6 part of the plan, in place: per host ``node_ip_v6``, ``blocks_v6``, ``imports_v6`` (what each
    peer may announce in the ``ipv6`` channel), per peer ``next_hop_v6`` and per workload ``ip6``; a reflector's
    ``spine_ip_v6``; a spine router's ``ip_v6`` (in ``spines``, from :func:`spines.check_spines`). Returns the
    plan's fleet keys (``pool_v6``, ``block_prefix_v6``), or None (IPv4 only). What each peer may announce
    (``imports_v6``) and the origin AS of each rack's IPv6 blocks wait for the floating IPs: :func:`plan_imports_v6`.
    ``cni_bits`` (``{host: bits}``, the CNI hosts): their first IPv6 block is cut like the IPv4 one, into
    2^bits slots; automatic ``ip6`` stay in slot 0."""
    value, where = fleet_setting(reader, hosts, 'calico_bgp_ipv6_sessions', None)
    sessions = parse_bool(value, host_subject(where) if where else 'calico_bgp_ipv6_sessions',
                          'calico_bgp_ipv6_sessions')
    value, source = fleet_setting(reader, hosts, 'calico_pool_v6', None)
    if is_unset(value):
        if sessions:
            raise FabricError(host_subject(where), 'calico_bgp_ipv6_sessions is true but calico_pool_v6 is not set',
                              'set calico_pool_v6 for a dual-stack fleet, or drop calico_bgp_ipv6_sessions')
        check_v4_only(reader, hosts, plan_hosts)
        return None
    if sessions and (spines or {}).get('routers'):
        raise FabricError(host_subject(where), 'calico_bgp_ipv6_sessions is not supported with calico_spines '
                                               '(the spines run IPv6 in the IPv4 sessions)',
                          'drop calico_bgp_ipv6_sessions, or calico_spines')
    pool = parse_pool_v6(value, host_subject(source))
    value, where = fleet_setting(reader, hosts, 'calico_block_prefix_v6', DEFAULT_BLOCK_PREFIX_V6)
    prefix = parse_block_prefix_v6(value, pool, host_subject(where or source))
    addresses = _node_addresses(reader, hosts, plan_hosts, pool, spines)
    for name, bits in sorted((cni_bits or {}).items()):
        if prefix + bits > 128:
            raise FabricError(host_subject(name), f'calico_cni_network_prefix cuts its IPv6 blocks (/{prefix}) into '
                                                  f'{1 << bits} container ranges, longer than /128',
                              'set calico_cni_network_prefix shorter, or calico_block_prefix_v6 shorter')

    nodes = [name for name in hosts if plan_hosts[name]['block'] is not None]
    running = {name: current_ip6(facts[name]) for name in nodes}
    block_hosts = [{'name': name, 'block': None, 'current': current_blocks_v6(facts[name]),
                    'addresses': [str(a) for a in running[name].values()],
                    'explicit': _explicit6(plan_hosts[name]['workloads'])} for name in nodes]

    def fit(name, nets):
        bits = (cni_bits or {}).get(name)
        return assign_ip6(nets, plan_hosts[name]['workloads'], running[name], host_subject(name),
                          first_share=None if bits is None else prefix + bits)

    try:
        first = allocate_blocks(pool, prefix, block_hosts)
        grown = grow_blocks(pool, prefix, block_hosts, first, max_blocks, fit)
    except FabricError as err:
        raise _in_v6_words(err) from None

    owner = {}
    for name in hosts:
        host = plan_hosts[name]
        host['node_ip_v6'] = str(addresses[name][0])
        if host['spine_ip'] is not None:
            host['spine_ip_v6'] = str(addresses[name][1])
        blocks, planned = grown.get(name, ([], []))
        host['blocks_v6'] = blocks
        for workload, entry in zip(host['workloads'], planned):
            if entry['ip'] in owner:
                raise FabricError(host_subject(name), f"workload '{entry['name']}' ip6 {entry['ip']} is also used by "
                                                      f"workload '{owner[entry['ip']][1]}' on host "
                                                      f"'{owner[entry['ip']][0]}'",
                                  'give each workload its own ip6, or drop ip6 to get the next free address')
            owner[entry['ip']] = (name, entry['name'])
            workload['ip6'] = entry['ip']
        for peer in host['peers']:
            from_spine = peer['local_ip'] != host['node_ip']
            peer['next_hop_v6'] = host['spine_ip_v6'] if from_spine else host['node_ip_v6']
    if sessions:
        plan_ipv6_sessions(plan_hosts, addresses)
        return {'pool_v6': str(pool), 'block_prefix_v6': prefix, 'bgp_ipv6_sessions': True}
    return {'pool_v6': str(pool), 'block_prefix_v6': prefix}


def plan_ipv6_sessions(plan_hosts, addresses):
    """``calico_bgp_ipv6_sessions``: per peer ``ip_v6``, the far end of the IPv6 session beside the IPv4 one (the
    peer's ``calico_node_ip_v6``; between reflectors of different racks its ``calico_rr_spine_ip_v6``). The near end
    is the peer's ``next_hop_v6``; the dialing side, GTSM, BFD and ``direct`` are the IPv4 session's
    (plugin_utils.bgp.bgp_sessions names the session and spells it out)."""
    for host in plan_hosts.values():
        for peer in host['peers']:
            node, spine = addresses[peer['name']]
            other = plan_hosts[peer['name']]
            from_spine = peer['local_ip'] != host['node_ip'] or peer['ip'] != other['node_ip']
            peer['ip_v6'] = str(spine if from_spine else node)


def v6_view(plan_hosts):
    """The hosts' plan entries with their IPv6 blocks and floating IPs as ``blocks``, ``block`` and
    ``floating_ips``: what the IPv4 planners read (imports, origins)."""
    return {name: dict(host, blocks=host['blocks_v6'], block=(host['blocks_v6'] or [None])[0],
                       floating_ips=host.get('floating_ips_v6') or [])
            for name, host in plan_hosts.items()}


def plan_imports_v6(plan_hosts, topology, pool, prefix, floating_ips_v6):
    """Per host ``imports_v6``: what each peer may announce in the ipv6 channel, the IPv4 rule applied to the IPv6
    blocks and floating IPs (``floating_ips_v6``, the fleet's ``/128`` prefixes)."""
    view = v6_view(plan_hosts)
    plan_imports(view, topology, pool, prefix, floating_ips_v6)
    for name, host in plan_hosts.items():
        host['imports_v6'] = view[name]['imports']
        for imports in host['imports_v6'].values():
            if imports['any_block']:
                imports['receive_limit'] = min(imports['receive_limit'],
                                               MAX_ANY_BLOCKS_V6 + len(floating_ips_v6) + 64)
