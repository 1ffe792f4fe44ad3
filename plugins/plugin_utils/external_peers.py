# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Routers outside the fleet (``calico_bgp_peers``): each host's BGP sessions to the data centre's routers.

``parse_peers`` checks one host's list on its own (shape, addresses, AS numbers, options; run by the first
preflight step, before any host is contacted); ``plan_external_peers`` checks it against the fleet (the pool,
node and spine addresses, floating IPs) and adds ``external_peers`` to every host of the plan with everything
bird.conf needs. What a router may announce is decided here: nothing by default, the default route with
``import_default``, exactly the prefixes of ``import_prefixes``; never anything inside the pool or a floating
IP, whatever the inventory says."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import KINDS
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.floating import special_address

VAR = 'calico_bgp_peers'
KEYS = ('ip', 'as_number', 'password', 'multihop', 'ttl_security', 'bfd', 'import_default', 'import_prefixes',
        'name')
# A router announces more than the host imports (it keeps the rest as filtered, shown by status.yml): the bound
# leaves room for a router's few own prefixes, not for a full table (filter it on the router).
RECEIVE_LIMIT_BASE = 1024
DEFAULT_ROUTE = '0.0.0.0/0'
PASSWORD_DEFINE = 'CALICO_PEER_PASSWORD_'
EXAMPLE = '[{ip: 192.168.100.1, as_number: 65000}]'


def _peer_subject(index, raw):
    ip = raw.get('ip') if isinstance(raw, Mapping) and isinstance(raw.get('ip'), str) else None
    return f'{VAR} entry {index + 1}' + (f' ({ip})' if ip and inputs.DOTTED_QUAD.fullmatch(ip) else '')


def parse_peers(value, subject):
    """One host's ``calico_bgp_peers`` checked on its own: a list of normalised peers (empty when unset).

    Each is ``{ip, as_number, name, password (bool: one is set), multihop (None, True or a TTL),
    ttl_security, bfd, import_default, import_prefixes}``."""
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


def _parse_one(raw, subject, where):
    ip_raw = raw.get('ip')
    addr = inputs.address_or_none(ip_raw if isinstance(ip_raw, str) else None)
    if addr is None:
        raise FabricError(subject, f'{where} ip {_shown(ip_raw)} is not an IPv4 address',
                          "set ip to the router's IPv4 address, e.g. 192.168.100.1")
    if str(addr) != ip_raw:
        raise FabricError(subject, f'{where} ip {ip_raw!r} is not written plainly', f'write it as {addr}')
    reason = special_address(str(addr), {})
    if reason:
        raise FabricError(subject, f'{where} ip is {reason}', "set ip to the router's unicast address")
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
    prefixes = _parse_prefixes(raw.get('import_prefixes'), subject, where)
    return {
        'ip': str(addr),
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


def _parse_prefixes(value, subject, where):
    if inputs.is_unset(value) or value == []:
        return []
    fix = 'write import_prefixes as a list of CIDRs such as [198.51.100.0/24]'
    if not isinstance(value, (list, tuple)):
        raise FabricError(subject, f'{where} import_prefixes {_shown(value)} is not a list', fix)
    out = []
    for item in value:
        net = inputs.parse_network(item, subject, f'{where} import_prefixes entry', fix)
        if net.prefixlen == 0:
            raise FabricError(subject, f'{where} import_prefixes has {net}', 'use import_default: true for the '
                                                                             'default route')
        if str(net) not in out:
            out.append(str(net))
    return sorted(out, key=_prefix_key)


def plan_external_peers(reader, hosts, plan_hosts, pool_net, floating_ips, fleet_bfd):
    """Add ``external_peers`` (the sessions bird.conf renders) and ``bfd`` (the BFD protocol's timers, or None)
    to every host of ``plan_hosts``. Checks each peer against the fleet: its address is no host's node or spine
    address, not inside the pool, not a floating IP; no import prefix inside the pool or equal to a floating IP."""
    pool = ipaddress.ip_network(str(pool_net))
    floating = set(floating_ips)
    for name in hosts:
        subject = host_subject(name)
        host = plan_hosts[name]
        planned = []
        for index, peer in enumerate(parse_peers(reader.get(name, VAR), subject)):
            where = f"{VAR} entry {index + 1} ({peer['ip']})"
            addr = ipaddress.ip_address(peer['ip'])
            if addr in pool:
                raise FabricError(subject, f'{where} ip is inside calico_pool {pool}',
                                  "set ip to the router's address on the fabric, outside the pool")
            if f"{peer['ip']}/32" in floating:
                raise FabricError(subject, f'{where} ip is a floating IP of a workload',
                                  "set ip to the router's own address")
            reason = special_address(peer['ip'], plan_hosts)
            for other, entry in plan_hosts.items():
                for key, what in (('node_ip', 'node IP'), ('spine_ip', 'spine address')):
                    if entry.get(key) == peer['ip']:
                        reason = f"the {what} of host '{other}'"
            if reason:
                raise FabricError(subject, f'{where} ip is {reason}',
                                  "set ip to the router's own address (a host of the fleet peers with it already)")
            for prefix in peer['import_prefixes']:
                net = ipaddress.ip_network(prefix)
                if net.subnet_of(pool):
                    raise FabricError(subject, f'{where} import_prefixes {prefix} is inside calico_pool {pool}',
                                      "drop it: the fleet's blocks come from the fleet only")
                if prefix in floating:
                    raise FabricError(subject, f'{where} import_prefixes {prefix} is a floating IP of a workload',
                                      'drop it: floating IPs come from the fleet only')
            planned.append(_session(peer, host, _local_address(peer, host, subject, where)))
        host['external_peers'] = planned
        wants_bfd = any(p['bfd'] for p in planned)
        host['bfd'] = fleet_bfd or (dict(inputs.BFD_DEFAULTS) if wants_bfd else None)


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
    imports = ([DEFAULT_ROUTE] if peer['import_default'] else []) + peer['import_prefixes']
    multihop = peer['multihop']
    return {
        'ip': peer['ip'],
        'as_number': peer['as_number'],
        'name': peer['name'] or peer['ip'],
        'protocol': external_protocol(peer['ip']),
        'local_ip': local_ip,
        'type': 'ibgp' if peer['as_number'] == host['as_number'] else 'ebgp',
        'connection': 'direct' if multihop is None else 'multihop' if multihop is True else f'multihop {multihop}',
        'ttl_security': peer['ttl_security'],
        'bfd': peer['bfd'],
        'password_define': PASSWORD_DEFINE + peer['ip'].replace('.', '_') if peer['password'] else None,
        'imports': imports,
        'receive_limit': RECEIVE_LIMIT_BASE + 4 * len(imports),
    }


def external_protocol(ip):
    """BIRD protocol name of the session to a router outside the fleet (status_report reads the prefix back)."""
    return '%s_%s' % (KINDS['external'], str(ip).replace('.', '_'))


def _prefix_key(prefix):
    net = ipaddress.ip_network(prefix)
    return int(net.network_address), net.prefixlen


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'
