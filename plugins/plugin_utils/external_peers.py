# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Routers outside the fleet (``calico_bgp_peers``): each host's BGP sessions to the data centre's routers.

``parse_peers`` checks one host's list on its own (shape, addresses, AS numbers, options; run by the first
preflight step, before any host is contacted); ``plan_external_peers`` checks it against the fleet (the pool,
node and spine addresses, floating IPs) and adds ``external_peers`` to every host of the plan with everything
bird.conf needs. What a router may announce is decided here: nothing by default, the default route with
``import_default``, exactly the prefixes of ``import_prefixes``; never anything inside the pool or a floating
IP, whatever the inventory says.

A router with an IPv6 ``ip`` (a dual-stack fleet, as Calico's BGPPeer with an IPv6 peerIP) gets a session over
IPv6 from the host's ``calico_node_ip_v6`` that carries the ``ipv6`` channel only: the host's IPv6 blocks out, and
in ``::/0`` (``import_default``) and IPv6 ``import_prefixes``, never anything inside ``calico_pool_v6``. An IPv4
router's session carries IPv4 only, as before."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import KINDS
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import (
    ADDRESS6,
    address6_or_none,
    is_global,
    network6_or_none,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.floating import special_address

VAR = 'calico_bgp_peers'
KEYS = ('ip', 'as_number', 'password', 'multihop', 'ttl_security', 'bfd', 'import_default', 'import_prefixes',
        'name')
# A router announces more than the host imports (it keeps the rest as filtered, shown by status.yml): the bound
# leaves room for a router's few own prefixes, not for a full table (filter it on the router).
RECEIVE_LIMIT_BASE = 1024
DEFAULT_ROUTE = '0.0.0.0/0'
DEFAULT_ROUTE_V6 = '::/0'
PASSWORD_DEFINE = 'CALICO_PEER_PASSWORD_'
EXAMPLE = '[{ip: 192.168.100.1, as_number: 65000}]'


def _peer_subject(index, raw):
    ip = raw.get('ip') if isinstance(raw, Mapping) and isinstance(raw.get('ip'), str) else None
    shown = ip and (inputs.DOTTED_QUAD.fullmatch(ip) or ADDRESS6.fullmatch(ip))
    return f'{VAR} entry {index + 1}' + (f' ({ip})' if shown else '')


def parse_peers(value, subject):
    """One host's ``calico_bgp_peers`` checked on its own: a list of normalised peers (empty when unset).

    Each is ``{ip, family (4 or 6), as_number, name, password (bool: one is set), multihop (None, True or a TTL),
    ttl_security, bfd, import_default, import_prefixes}`` (prefixes of the peer's family)."""
    if inputs.is_unset(value) or value == []:
        return []
    if not isinstance(value, (list, tuple)):
        raise FabricError(subject, f'{VAR} {_shown(value)} is not a list', f'write it as a list, e.g. {EXAMPLE}')
    out, seen = [], {}
    for index, raw in enumerate(value):
        where = _peer_subject(index, raw)
        if not isinstance(raw, Mapping):
            raise FabricError(subject, f'{where} {_shown(raw)} is not a mapping', f'write each peer as {EXAMPLE[1:-1]}')
        unknown = sorted(str(k) for k in raw if k not in KEYS)
        if unknown:
            raise FabricError(subject, f'{where} has unknown key {_shown(unknown[0])}', f"use only {', '.join(KEYS)}")
        peer = _parse_one(raw, subject, where)
        if peer['ip'] in seen:
            raise FabricError(subject, f"{where}: peer {peer['ip']} is already entry {seen[peer['ip']] + 1}",
                              'list each router once')
        seen[peer['ip']] = index
        out.append(peer)
    return out


def _parse_ip(ip_raw, subject, where):
    """``(address text, family)`` of a peer's ``ip``: a plain IPv4 address, or a global/unique local IPv6 one."""
    text = ip_raw if isinstance(ip_raw, str) else None
    addr = inputs.address_or_none(text)
    family = 4
    if addr is None:
        addr, family = address6_or_none(text), 6
    if addr is None:
        raise FabricError(subject, f'{where} ip {_shown(ip_raw)} is not an IPv4 or IPv6 address',
                          "set ip to the router's address, e.g. 192.168.100.1 or fd00:100::1")
    if str(addr) != ip_raw:
        raise FabricError(subject, f'{where} ip {ip_raw!r} is not written plainly', f'write it as {addr}')
    if family == 6:
        if not is_global(inputs.netaddr.IPNetwork(f'{addr}/128')):
            raise FabricError(subject, f'{where} ip {addr} is not a global unicast or unique local IPv6 address',
                              "set ip to the router's global or unique local address (no link-local peers)")
        return str(addr), family
    reason = special_address(str(addr), {})
    if reason:
        raise FabricError(subject, f'{where} ip is {reason}', "set ip to the router's unicast address")
    return str(addr), family


def _parse_one(raw, subject, where):
    ip, family = _parse_ip(raw.get('ip'), subject, where)
    if 'as_number' not in raw or inputs.is_unset(raw.get('as_number')):
        raise FabricError(subject, f'{where} has no as_number', "set as_number to the router's AS, e.g. 65000")
    as_number = inputs.parse_as_number(raw['as_number'], subject, var=f'{where} as_number')
    name = raw.get('name')
    if not inputs.is_unset(name):
        inputs.check_name(name, subject, f'{where} name')
    password = raw.get('password')
    if not inputs.is_unset(password) and not inputs.matches(inputs.PASSWORD, password):
        raise FabricError(subject, f'{where} password is not allowed',
                          'use 1-80 printable ASCII characters without " or \\')
    multihop = _parse_multihop(raw.get('multihop'), subject, where)
    ttl_security = _bool(raw, 'ttl_security', subject, where)
    if ttl_security and multihop:
        raise FabricError(subject, f'{where} sets both ttl_security and multihop',
                          'TTL security (GTSM) needs a directly connected router: drop one of them')
    prefixes = _parse_prefixes(raw.get('import_prefixes'), subject, where, family)
    return {
        'ip': ip,
        'family': family,
        'as_number': as_number,
        'name': None if inputs.is_unset(name) else name,
        'password': not inputs.is_unset(password),
        'multihop': multihop,
        'ttl_security': ttl_security,
        'bfd': _bool(raw, 'bfd', subject, where),
        'import_default': _bool(raw, 'import_default', subject, where),
        'import_prefixes': prefixes,
    }


def _bool(raw, key, subject, where):
    try:
        return inputs.parse_bool(raw.get(key), subject, key)
    except FabricError:
        raise FabricError(subject, f'{where} {key} {_shown(raw.get(key))} is not a boolean',
                          f'set {key}: true or false') from None


def _parse_multihop(value, subject, where):
    """None (a directly connected router), True (BIRD's default TTL) or a TTL 1-255."""
    fix = 'use true, false or a TTL from 1 to 255'
    if inputs.is_unset(value) or value is False:
        return None
    if value is True:
        return True
    number = inputs.as_int(value)
    if number is None:
        try:
            return True if inputs.parse_bool(value, subject, 'multihop') else None
        except FabricError:
            raise FabricError(subject, f'{where} multihop {_shown(value)} is not valid', fix) from None
    if not 1 <= number <= 255:
        raise FabricError(subject, f'{where} multihop {number} is not valid', fix)
    return number


def _parse_prefixes(value, subject, where, family=4):
    """A peer's ``import_prefixes``: CIDRs of its own family (an IPv6 router's session carries IPv6 only)."""
    if inputs.is_unset(value) or value == []:
        return []
    example = '[198.51.100.0/24]' if family == 4 else '[2001:db8:100::/48]'
    fix = f'write import_prefixes as a list of CIDRs such as {example}'
    if not isinstance(value, (list, tuple)):
        raise FabricError(subject, f'{where} import_prefixes {_shown(value)} is not a list', fix)
    out = []
    for item in value:
        if family == 4:
            net = inputs.parse_network(item, subject, f'{where} import_prefixes entry', fix)
        else:
            net = network6_or_none(item)
            if net is None:
                raise FabricError(subject, f'{where} import_prefixes entry {_shown(item)} is not an IPv6 CIDR '
                                           '(an IPv6 router carries IPv6 routes only)', fix)
            if net.ip != net.network:
                raise FabricError(subject, f'{where} import_prefixes entry {item} has host bits set',
                                  f'use {net.cidr}')
            net = net.cidr
        if net.prefixlen == 0:
            raise FabricError(subject, f'{where} import_prefixes has {net}', 'use import_default: true for the '
                                                                             'default route')
        if str(net) not in out:
            out.append(str(net))
    return sorted(out, key=_prefix_key)


def plan_external_peers(reader, hosts, plan_hosts, pool_net, floating_ips, fleet_bfd, pool_v6=None):
    """Add ``external_peers`` (the sessions bird.conf renders) and ``bfd`` (the BFD protocol's timers, or None)
    to every host of ``plan_hosts``. Checks each peer against the fleet: its address is no host's node or spine
    address, not inside the pool, not a floating IP; no import prefix inside the pool or equal to a floating IP.
    An IPv6 router needs a dual-stack fleet (``pool_v6``) and is checked against its IPv6 pool and addresses."""
    pool = ipaddress.ip_network(str(pool_net))
    floating = set(floating_ips)
    for name in hosts:
        subject = host_subject(name)
        host = plan_hosts[name]
        planned = []
        for index, peer in enumerate(parse_peers(reader.get(name, VAR), subject)):
            where = f"{VAR} entry {index + 1} ({peer['ip']})"
            if peer['family'] == 6:
                if pool_v6 is None:
                    raise FabricError(subject, f'{where} ip is IPv6 but calico_pool_v6 is not set (the fleet routes '
                                      'IPv4 only)', "set calico_pool_v6 for a dual-stack fleet, or give the router's "
                                      'IPv4 address')
                _check_router(peer, plan_hosts, ipaddress.ip_network(str(pool_v6)), floating, subject, where)
                planned.append(_session(peer, host, host['node_ip_v6']))
            else:
                _check_router(peer, plan_hosts, pool, floating, subject, where)
                planned.append(_session(peer, host, _local_address(peer, host, subject, where)))
        host['external_peers'] = planned
        wants_bfd = any(p['bfd'] for p in planned)
        host['bfd'] = fleet_bfd or (dict(inputs.BFD_DEFAULTS) if wants_bfd else None)


# the fleet's own addresses, per family: (plan key, what a message calls it)
_OWN_ADDRESSES = {4: (('node_ip', 'node IP'), ('spine_ip', 'spine address')),
                  6: (('node_ip_v6', 'calico_node_ip_v6'), ('spine_ip_v6', 'calico_rr_spine_ip_v6'))}


def _check_router(peer, plan_hosts, pool, floating, subject, where):
    """A router's address and import prefixes against the fleet, in the family of ``pool`` (calico_pool or
    calico_pool_v6): outside the pool, not a workload's floating IP, not an address of the fleet's hosts."""
    pool_var = 'calico_pool' if pool.version == 4 else 'calico_pool_v6'
    if ipaddress.ip_address(peer['ip']) in pool:
        raise FabricError(subject, f'{where} ip is inside {pool_var} {pool}',
                          "set ip to the router's address on the fabric, outside the pool")
    if f"{peer['ip']}/{pool.max_prefixlen}" in floating:
        raise FabricError(subject, f'{where} ip is a floating IP of a workload', "set ip to the router's own address")
    reason = special_address(peer['ip'], plan_hosts) if pool.version == 4 else None
    for other, entry in plan_hosts.items():
        for key, what in _OWN_ADDRESSES[pool.version]:
            if entry.get(key) == peer['ip']:
                reason = f"the {what} of host '{other}'"
    if reason:
        raise FabricError(subject, f'{where} ip is {reason}',
                          "set ip to the router's own address (a host of the fleet peers with it already)")
    for prefix in peer['import_prefixes']:
        if ipaddress.ip_network(prefix).subnet_of(pool):
            raise FabricError(subject, f'{where} import_prefixes {prefix} is inside {pool_var} {pool}',
                              "drop it: the fleet's blocks come from the fleet only")
        if prefix in floating:
            raise FabricError(subject, f'{where} import_prefixes {prefix} is a floating IP of a workload',
                              'drop it: floating IPs come from the fleet only')


def _local_address(peer, host, subject, where):
    """The host's end of the session: its spine address for a router on a reflector's spine subnet, else its node
    IP. A router not on the host's subnets (when their prefix lengths are known) needs ``multihop``."""
    ends = [(host['node_ip'], host.get('node_prefixlen'))]
    if host.get('spine_ip') and host['spine_ip'] != host['node_ip']:
        ends.insert(0, (host['spine_ip'], host.get('spine_prefixlen')))
    for local, length in ends:
        if length is not None and inputs.same_subnet(local, length, peer['ip'], None):
            return local
    if peer['multihop'] is None and all(length is not None for _local, length in ends):
        subnets = ', '.join(str(ipaddress.ip_network(f'{local}/{length}', strict=False)) for local, length in ends)
        raise FabricError(subject, f'{where} ip is not on the host\'s subnet ({subnets})',
                          'set multihop: true (or a TTL) for a router further away, or peer with one on that subnet')
    return host['node_ip']


def _session(peer, host, local_ip):
    default = DEFAULT_ROUTE if peer['family'] == 4 else DEFAULT_ROUTE_V6
    imports = ([default] if peer['import_default'] else []) + peer['import_prefixes']
    multihop = peer['multihop']
    return {
        'ip': peer['ip'],
        'family': peer['family'],
        'as_number': peer['as_number'],
        'name': peer['name'] or peer['ip'],
        'protocol': external_protocol(peer['ip']),
        'local_ip': local_ip,
        'type': 'ibgp' if peer['as_number'] == host['as_number'] else 'ebgp',
        'connection': 'direct' if multihop is None else 'multihop' if multihop is True else f'multihop {multihop}',
        'ttl_security': peer['ttl_security'],
        'bfd': peer['bfd'],
        'password_define': PASSWORD_DEFINE + _symbol(peer['ip']) if peer['password'] else None,
        'imports': imports,
        'receive_limit': RECEIVE_LIMIT_BASE + 4 * len(imports),
    }


def external_protocol(ip):
    """BIRD protocol name of the session to a router outside the fleet (status_report reads the prefix back)."""
    return '%s_%s' % (KINDS['external'], _symbol(ip))


def _symbol(ip):
    """An address as part of a BIRD symbol (letters, digits and underscores)."""
    return str(ip).replace('.', '_').replace(':', '_')


def _prefix_key(prefix):
    net = ipaddress.ip_network(prefix)
    return int(net.network_address), net.prefixlen


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'
