# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The L3 spine of the route_reflector topology: routers of group ``calico_spines`` (FRR, role ``spine``), one AS
for all of them (``calico_spine_as_number``). With spines, every rack's reflectors peer by eBGP with every spine
instead of with other racks' reflectors.

Two steps, both called by ``fabric.build_fabric``: :func:`check_spines` (preflight: identity, addresses, AS,
password, before any peer is planned) and :func:`plan_spines` (per spine: neighbors, what each may announce and
what the spine sends back)."""

from __future__ import annotations

import ipaddress

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import announced, session_timing
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    as_int,
    is_unset,
    network_or_none,
    parse_as_number,
    parse_bool,
    parse_router_id,
    same_subnet,
    speaker_address,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import fleet_setting, natural_sorted

GROUP_SPINES = 'calico_spines'
PREFIX_LIST_OUT = 'calico-out'
# A spine session runs the timers of the reflector at its other end, as every other session of the fleet does:
# that reflector's calico_node_bgp_hold_time (unset: BIRD's 240 s, keepalives every third of it) and
# calico_node_bgp_connect_retry (role calico_node's default 5 s). FRR's `datacenter` profile alone would
# hold these sessions to 9 s (the smaller hold time wins), and retry a refused connection after 10 s.
BIRD_HOLD_TIME = 240
CONNECT_RETRY = 5


def prefix_list_in(rack):
    """Name of the FRR prefix list of what a rack's reflectors may announce to a spine."""
    return f'calico-in-{rack}'


def _password(reader, name, var):
    """The BGP password a host uses (its ``var``, else the fleet's ``calico_bgp_password``), '' for none."""
    for key in (var, 'calico_bgp_password'):
        value = reader.get(name, key)
        if not is_unset(value):
            return str(value)
    return ''


def _prefixlen(reader, name):
    subject = host_subject(name)
    raw = reader.get(name, 'calico_node_prefixlen')
    if not is_unset(raw):
        length = as_int(raw)
        if length is None or not 0 <= length <= 32:
            raise FabricError(subject, f'calico_node_prefixlen {raw!r} is not a prefix length 0-32',
                              "set it to the prefix length of the spine's subnet, or drop it")
        return length
    segment = reader.get(name, 'lab_spine_segment')
    if is_unset(segment):
        return None
    net = network_or_none(segment if isinstance(segment, str) else None)
    if net is None:
        raise FabricError(subject, f'lab_spine_segment {segment!r} is not a valid IPv4 CIDR',
                          "set lab_spine_segment to the spine's subnet, e.g. 10.255.0.0/24")
    return net.prefixlen


def check_spine_group(spines, hosts):
    """A spine is a router of its own, never a Calico host or reflector (preflight step 1, after the names)."""
    for name in spines:
        if name in hosts:
            raise FabricError(host_subject(name), 'is in calico_spines and is a Calico host or reflector too',
                              'a spine is a router of its own: take it out of calico_nodes/calico_route_reflectors')


def check_spines(reader, spines, hosts, topology, rack_as, node_ip, spine_ip, router_id):
    """Preflight of the spines (after the hosts' addresses and the racks' AS numbers).

    ``spines``: the members of ``calico_spines``; ``hosts``: the fleet's BGP speakers; ``rack_as``: rack -> AS;
    ``node_ip``/``spine_ip``/``router_id``: per host. Returns ``None`` without spines, else
    ``{'as_number': n, 'routers': {spine: {ip, prefixlen, router_id, password}}}`` (password a bool)."""
    if not spines:
        return None
    first = spines[0]
    if topology != 'route_reflector':
        raise FabricError(host_subject(first), f'calico_spines has hosts but calico_bgp_topology is {topology}',
                          'set calico_bgp_topology: route_reflector (spines join racks), or empty calico_spines')
    value, source = fleet_setting(reader, spines, 'calico_spine_as_number', None)
    if source is None:
        raise FabricError(host_subject(first), 'calico_spine_as_number is not set',
                          'set calico_spine_as_number (one AS for every spine) in group_vars/all or calico_spines')
    as_number = parse_as_number(value, host_subject(source), 'calico_spine_as_number')
    for rack in natural_sorted(rack_as):
        if rack_as[rack] == as_number:
            raise FabricError(host_subject(source), f"calico_spine_as_number {as_number} is also the AS of rack "
                                                    f"'{rack}'", 'give the spines an AS of their own')
    owner = {}
    for name in hosts:
        owner[str(node_ip[name])] = (name, 'node IP')
        if spine_ip[name] is not None:
            owner.setdefault(str(spine_ip[name]), (name, 'spine IP'))
    rids = {str(router_id[name]): name for name in hosts}
    routers = {}
    for name in spines:
        subject = host_subject(name)
        addr = speaker_address(reader, name, 'spine has no address', "the spine's IPv4 address on the spine segment",
                               nonzero=True)
        if str(addr) in owner:
            other, kind = owner[str(addr)]
            raise FabricError(subject, f"address {addr} is also the {kind} of host '{other}'",
                              'give each spine an address no other host uses')
        owner[str(addr)] = (name, 'spine address')
        rid = parse_router_id(reader, name, addr, 'address')
        if str(rid) in rids:
            raise FabricError(subject, f"router id {rid} is also used by host '{rids[str(rid)]}'",
                              'set a unique calico_router_id (it defaults to the address)')
        rids[str(rid)] = name
        password = _password(reader, name, 'spine_bgp_password')
        if password and any(c.isspace() for c in password):
            raise FabricError(subject, 'the BGP password has a space (FRR takes one word)',
                              'use a calico_bgp_password without spaces')
        routers[name] = {'ip': str(addr), 'prefixlen': _prefixlen(reader, name), 'router_id': str(rid),
                         'password': password}
    return {'as_number': as_number, 'routers': routers}


def check_passwords(reader, spines, reflectors):
    """Both ends of a spine session need one password: each reflector's and each spine's must agree."""
    if not spines:
        return
    for spine, router in spines['routers'].items():
        for name in reflectors:
            if _password(reader, name, 'calico_node_bgp_password') != router['password']:
                raise FabricError(host_subject(name), f"its BGP password is not spine '{spine}''s",
                                  'set calico_bgp_password once in group_vars/all (spines and reflectors share it)')


def spine_speakers(spines):
    """The spines as ``peers.compute_peers`` takes them: ``{name: {ip, prefixlen, as_number}}``."""
    if not spines:
        return {}
    return {name: {'ip': r['ip'], 'prefixlen': r['prefixlen'], 'as_number': spines['as_number']}
            for name, r in spines['routers'].items()}


def session_timers(reader, name):
    """``(keepalive, hold, connect_retry)`` in seconds of a spine's session to reflector ``name`` (its own timers,
    checked by the preflight's role variables)."""
    raw = reader.get(name, 'calico_node_bgp_hold_time')
    hold = BIRD_HOLD_TIME if is_unset(raw) else as_int(raw)
    raw = reader.get(name, 'calico_node_bgp_connect_retry')
    retry = CONNECT_RETRY if is_unset(raw) else as_int(raw)
    return max(hold // 3, 1), hold, retry


def bfd_multihop(direct, gtsm):
    """Whether FRR's bgpd asks bfdd for a multihop BFD session (UDP 4784) on a spine's session: across a router
    (``ebgp-multihop``), and with GTSM too (``ttl-security hops 1`` sets the peer's TTL to 255, so bgpd counts it as
    multihop). BIRD runs single-hop BFD (UDP 3784) on a ``direct`` session, and neither end would ever come up: the
    reflector's side of such a session is rendered ``multihop 1`` (GTSM still wants TTL 255 there)."""
    return direct is False or bool(gtsm)


def plan_spines(reader, spines, plan_hosts, plan_racks, pool, block_prefix, floating_ips, bfd, dual_stack=None):
    """Per spine: what role ``spine`` writes into frr.conf, ``{}`` without spines.

    ``{router_id, as_number, ip, prefixlen, maximum_paths, bfd, password, prefix_lists, neighbors}``:
    ``prefix_lists`` maps a name to its entries ``{seq, action, prefix, ge?, le?}``: per rack what its
    reflectors announce (its blocks and floating IPs, exact prefixes), and ``calico-out``, what the spine sends
    (any block of the pool at block length, and the fleet's floating IPs). With ``calico_rack_block_pool`` (racks
    with ``share``/``exceptions``) a rack announces its share (aggregate), its exceptions and floating IPs, and
    the spine sends every rack's share, the exceptions and the floating IPs. ``neighbors``: every reflector of every
    rack at its spine address ``{name, ip, local_ip, as_number, rack, direct, ttl_security, bfd, bfd_multihop,
    password, passive, keepalive_time, hold_time, connect_retry, prefix_list_in, prefix_list_out}`` (timers: the
    reflector's, :func:`session_timers`; ``bfd_multihop``: :func:`bfd_multihop`). ``maximum_paths``: ECMP over a
    rack's reflectors.

    Dual stack (``dual_stack``: the plan's ``pool_v6`` and ``block_prefix_v6``): also ``ipv6``, ``{ip,
    prefix_lists}``: the spine's IPv6 next hop toward the reflectors (its ``calico_node_ip_v6``) and the same
    prefix lists for the ``ipv6 unicast`` family of the same sessions: a rack's IPv6 blocks one by one (no shares
    in the IPv6 pool) and IPv6 floating IPs; any IPv6 block of the pool and the IPv6 floating IPs out.

    With BFD, a reflector's session to a spine whose BFD FRR runs multihop on a shared subnet gets
    ``bfd_multihop: True`` in ``plan_hosts`` (its BIRD runs that session as multihop, one hop), and the reflector
    ``spine_bfd_multihop: True`` (BIRD then resolves those routes' next hops through its spine leg's subnet)."""
    if not spines:
        return {}
    lists = _prefix_lists(plan_hosts, plan_racks, pool, block_prefix, floating_ips, announced, '0.0.0.0/0', 32)
    lists6 = None
    if dual_stack:
        def blocks6(host):
            return list(host.get('blocks_v6') or []) + list(host.get('floating_ips_v6') or [])
        lists6 = _prefix_lists(plan_hosts, {rack: {'hosts': info['hosts']} for rack, info in plan_racks.items()},
                               dual_stack['pool_v6'], dual_stack['block_prefix_v6'],
                               dual_stack.get('floating_ips_v6') or [], blocks6, '::/0', 128)
    widest = max([len(info['reflectors']) for info in plan_racks.values()] + [1])
    out = {}
    for spine in natural_sorted(spines['routers']):
        router = spines['routers'][spine]
        neighbors = []
        for rack, info in plan_racks.items():
            for name in info['reflectors']:
                host = plan_hosts[name]
                direct = same_subnet(router['ip'], router['prefixlen'], host['spine_ip'], host['spine_prefixlen'])
                # GTSM as the reflector's BIRD renders it (calico_node_bgp_ttl_security, default on)
                raw = reader.get(name, 'calico_node_bgp_ttl_security')
                gtsm = is_unset(raw) or parse_bool(raw, host_subject(name), 'calico_node_bgp_ttl_security')
                gtsm = gtsm and direct is not False
                keepalive, hold, retry = session_timers(reader, name)
                neighbors.append({
                    'name': name,
                    'ip': host['spine_ip'],
                    'local_ip': router['ip'],
                    'as_number': info['as_number'],
                    'rack': rack,
                    'direct': direct,
                    'ttl_security': gtsm,
                    'bfd': bool(bfd),
                    'bfd_multihop': bool(bfd) and bfd_multihop(direct, gtsm),
                    'password': bool(router['password']),
                    'passive': session_timing(router['ip'], host['spine_ip'], spread=False)[0],
                    'keepalive_time': keepalive,
                    'hold_time': hold,
                    'connect_retry': retry,
                    'prefix_list_in': prefix_list_in(rack),
                    'prefix_list_out': PREFIX_LIST_OUT,
                })
        for n in neighbors:
            if n['bfd_multihop'] and n['direct'] is not False:
                host = plan_hosts[n['name']]
                next(p for p in host['peers'] if p.get('spine') and p['name'] == spine)['bfd_multihop'] = True
                host['spine_bfd_multihop'] = True
        out[spine] = {
            'router_id': router['router_id'],
            'as_number': spines['as_number'],
            'ip': router['ip'],
            'prefixlen': router['prefixlen'],
            'maximum_paths': widest,
            'bfd': bfd,
            'password': bool(router['password']),
            'prefix_lists': lists,
            'neighbors': neighbors,
        }
        if lists6 is not None:
            out[spine]['ipv6'] = {'ip': router['ip_v6'], 'prefix_lists': lists6}
    return out


def _prefix_lists(plan_hosts, plan_racks, pool, block_prefix, floating_ips, announced_by, everything, width):
    """``{name: [entries]}`` of one family: per rack what its reflectors may announce (``announced_by(host)`` of
    its hosts, or with shares its share, exceptions and floating IPs), and ``calico-out``; each list ends with a
    deny of ``everything`` (``le width``)."""
    net = ipaddress.ip_network(pool)
    aggregated = any('share' in info for info in plan_racks.values())
    if aggregated:  # calico_rack_block_pool: every rack's aggregate and exceptions, no block inside a share
        out_list = [{'action': 'permit', 'prefix': p} for p in _sorted(
            [info['share'] for info in plan_racks.values()]
            + [p for info in plan_racks.values() for p in info['exceptions']] + list(floating_ips))]
    else:
        out_list = [{'action': 'permit', 'prefix': str(net), 'ge': block_prefix, 'le': block_prefix}]
        out_list += [{'action': 'permit', 'prefix': p} for p in floating_ips]
    lists = {PREFIX_LIST_OUT: out_list}
    for rack, info in plan_racks.items():
        own = []
        for name in info['hosts']:
            own += announced_by(plan_hosts[name])
        if aggregated:
            share = ipaddress.ip_network(info['share'])
            own = [info['share']] + [p for p in own if not ipaddress.ip_network(p).subnet_of(share)]
        lists[prefix_list_in(rack)] = [{'action': 'permit', 'prefix': p} for p in _sorted(own)]
    for name, entries in lists.items():
        entries.append({'action': 'deny', 'prefix': everything, 'le': width})  # nothing else, even when empty
        lists[name] = [dict(e, seq=5 * (i + 1)) for i, e in enumerate(entries)]
    return lists


def _sorted(prefixes):
    def key(prefix):
        net = ipaddress.ip_network(prefix)
        return int(net.network_address), net.prefixlen
    return sorted(set(prefixes), key=key)
