# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Routes of one table as the modules own them: read with ``ip -j route show``, compared with the
wanted ones, and changed in one ``ip -batch`` call (standard library only, like iproute).

Only routes tagged with the caller's protocol number are read, replaced or deleted; ``del`` lines
carry that number too, so a stale plan can never remove somebody else's route.
"""

from __future__ import annotations

import ipaddress
from collections import namedtuple

from ansible_collections.netfleet.calico.plugins.module_utils.iproute import (
    CALICO_PROTOCOL,
    batch_token,
    cidr_family,
    normalize_protocol,
    normalize_table,
    parse_cidr,
    parse_ip,
    valid_ifname,
)

# socket is imported where it is used (sorting results): the CNI plugin imports this module on every call
# a runtime makes and never sorts routes.

ROUTE_TYPES = ('unicast', 'blackhole', 'unreachable', 'prohibit')

#: A normalised route. ``dst`` canonical CIDR; ``type`` one of ROUTE_TYPES; ``via`` gateway
#: address or None; ``dev`` or None (= any device, for desired routes); ``onlink`` bool;
#: ``metric`` int (IPv4 default 0, IPv6 1024); ``scope`` 'link'/'global'/... or None (= implied).
Route = namedtuple('Route', 'dst type via dev onlink metric scope')

_KERNEL_TYPE_NAMES = {'unicast', 'blackhole', 'unreachable', 'prohibit', 'local', 'broadcast', 'anycast',
                      'multicast', 'throw', 'nat', 'xresolve'}


def default_metric(dst):
    return 1024 if cidr_family(dst) == 6 else 0


def make_route(dst, type='unicast', via=None, dev=None, onlink=False, metric=None, scope=None):  # noqa: A002
    """Build and validate a desired Route; raise ValueError with a one-line message."""
    cidr = parse_cidr(dst)
    rtype = (type or 'unicast').lower()
    if rtype not in ROUTE_TYPES:
        raise ValueError('route %s: type must be one of %s, got %r' % (cidr, ', '.join(ROUTE_TYPES), type))
    gw = None
    if via not in (None, ''):
        addr = parse_ip(via)
        if addr.version != cidr_family(cidr):
            raise ValueError('route %s: gateway %s is not of the same address family' % (cidr, via))
        gw = str(addr)
    if dev in ('',):
        dev = None
    if dev is not None:
        if not valid_ifname(str(dev)):
            raise ValueError('route %s: invalid device name %r' % (cidr, dev))
        dev = str(dev)
    if rtype != 'unicast' and (gw or dev or onlink):
        raise ValueError('route %s: a %s route takes no via, dev or onlink' % (cidr, rtype))
    if rtype == 'unicast' and not gw and not dev:
        raise ValueError('route %s: a unicast route needs via or dev' % cidr)
    if onlink and not (gw and dev):
        raise ValueError('route %s: onlink needs via and dev' % cidr)
    if metric is None:
        metric = default_metric(cidr)
    try:
        metric = int(metric)
    except (TypeError, ValueError):
        raise ValueError('route %s: metric must be an integer, got %r' % (cidr, metric)) from None
    if not 0 <= metric <= 0xFFFFFFFF:
        raise ValueError('route %s: metric %d out of range 0-4294967295' % (cidr, metric))
    if scope is not None:
        scope = batch_token(scope, 'scope')
    return Route(cidr, rtype, gw, dev, bool(onlink), metric, scope)


def _kernel_dst(dst, family):
    """Canonical CIDR of a ``dst`` printed by ip. IPv4 is printed canonically by the kernel, so only a
    missing prefix length is added (no ipaddress parsing: 10,000 routes would cost ~0.3 s)."""
    if dst == 'default':
        return '::/0' if family == 6 else '0.0.0.0/0'
    if ':' not in dst:
        return dst if '/' in dst else dst + '/32'
    return parse_cidr(dst if '/' in dst else dst + '/128', strict=False)


def route_from_kernel(entry, family=4):
    """Normalise one element of ``ip -j route show`` output."""
    dst = _kernel_dst(entry.get('dst', 'default'), family)
    rtype = entry.get('type') or 'unicast'
    via = entry.get('gateway')
    if via is None and isinstance(entry.get('via'), dict):
        via = entry['via'].get('host')
    if via is not None and ':' in via:
        via = str(ipaddress.ip_address(via))
    dev = entry.get('dev') if rtype == 'unicast' else None
    flags = entry.get('flags') or []
    metric = entry.get('metric')
    if metric is None:
        metric = 1024 if ':' in dst else 0
    scope = entry.get('scope') or 'global'
    return Route(dst, rtype if rtype in _KERNEL_TYPE_NAMES else str(rtype), via, dev, 'onlink' in flags,
                 int(metric), scope)


def route_key(route):
    """Kernel identity of a route within one table: destination and metric (priority)."""
    return (route.dst, route.metric)


def _implied_scope(route):
    if route.scope:
        return route.scope
    if route.type == 'unicast' and not route.via:
        return 'link'
    return 'global'


def route_matches(desired, current):
    """True if ``current`` (from the kernel) satisfies ``desired`` (dev/scope None = any)."""
    if route_key(desired) != route_key(current):
        return False
    if desired.type != current.type or desired.via != current.via or desired.onlink != current.onlink:
        return False
    if desired.dev is not None and desired.dev != current.dev:
        return False
    # IPv6 routes have no scope (ip prints none), so it is compared for IPv4 only
    if desired.type == 'unicast' and ':' not in desired.dst and _implied_scope(desired) != (current.scope or 'global'):
        return False
    return True


def format_route(route):
    """Human/`ip route`-like one-line rendering used in diffs and results."""
    words = [] if route.type == 'unicast' else [route.type]
    words.append(route.dst)
    if route.via:
        words += ['via', route.via]
    if route.dev:
        words += ['dev', route.dev]
    if route.scope and route.scope != 'global' and not (route.type == 'unicast' and not route.via
                                                        and route.scope == 'link'):
        words += ['scope', route.scope]
    if route.metric != default_metric(route.dst):
        words += ['metric', str(route.metric)]
    if route.onlink:
        words.append('onlink')
    return ' '.join(words)


def route_command(verb, route, protocol, table='main', exact=True):
    """One ``ip -batch`` line: ``route add|replace|del`` for ``route`` tagged with ``protocol``.

    ``del`` lines always carry ``proto N``: the kernel then only deletes a route of that
    protocol, so even a stale plan can never remove somebody else's route."""
    words = ['route', verb]
    if route.type != 'unicast':
        words.append(route.type)
    words.append(batch_token(route.dst, 'destination'))
    if route.via:
        words += ['via', batch_token(route.via, 'gateway')]
    if route.dev and (verb != 'del' or exact):
        words += ['dev', batch_token(route.dev, 'device')]
    if route.onlink and verb != 'del':
        words.append('onlink')
    if route.scope and verb != 'del':
        words += ['scope', batch_token(route.scope, 'scope')]
    words += ['metric', str(int(route.metric)), 'proto', str(int(protocol)),
              'table', batch_token(table, 'table')]
    return ' '.join(words)


def read_routes(ip, protocol=CALICO_PROTOCOL, table='main', families=(4,), netns=None):
    """Current routes of ``protocol`` in ``table`` as a list of Route (one ``ip -j`` call per family)."""
    table = normalize_table(table)
    routes = []
    for family in families:
        entries = ip.json(['-%d' % family, 'route', 'show', 'table', table, 'proto', str(int(protocol))],
                          netns=netns)
        routes.extend(route_from_kernel(entry, family) for entry in entries)
    return routes


def plan_routes(desired, current):
    """Compare desired and current (owned) routes.

    Returns ``(add, replace, delete)`` lists of Route. ``add``: key absent; ``replace``: the
    key exists once with other attributes (atomic ``ip route replace``); ``delete``: owned
    routes not wanted, plus extra routes sharing a wanted key. Raise ValueError on a duplicate
    desired key."""
    wanted = {}
    for route in desired:
        key = route_key(route)
        if key in wanted:
            raise ValueError('duplicate route %s (metric %d) in the desired list' % key)
        wanted[key] = route
    by_key = {}
    for route in current:
        by_key.setdefault(route_key(route), []).append(route)
    add, replace, delete = [], [], []
    for key, route in wanted.items():
        have = by_key.get(key, [])
        if not have:
            add.append(route)
            continue
        if len(have) == 1:  # the common case, without a generator
            match = have[0] if route_matches(route, have[0]) else None
        else:
            match = next((cur for cur in have if route_matches(route, cur)), None)
        if match is not None:
            delete.extend(cur for cur in have if cur is not match)
        elif len(have) == 1:
            replace.append(route)
        else:
            delete.extend(have)
            add.append(route)
    for key, have in by_key.items():
        if key not in wanted:
            delete.extend(have)
    return add, replace, delete


def route_batch_lines(add, replace, delete, protocol, table='main'):
    """Batch lines for a plan, in a fail-safe order: deletions that free a key about to be added,
    then additions, replacements, and last the removals of routes no longer wanted. Applied
    without ``-force``, a rejected line stops the batch before any unwanted route is removed."""
    table = normalize_table(table)
    adding = {route_key(route) for route in add}
    freeing = [route for route in delete if route_key(route) in adding]
    removing = [route for route in delete if route_key(route) not in adding]
    lines = [route_command('del', route, protocol, table) for route in freeing]
    lines += [route_command('add', route, protocol, table) for route in add]
    lines += [route_command('replace', route, protocol, table) for route in replace]
    lines += [route_command('del', route, protocol, table) for route in removing]
    return lines


def _net_sort_key(cidr):
    """Sort key of a canonical CIDR: IPv4 before IPv6, then numerically (inet_pton is C, fast)."""
    import socket

    addr, _sep, plen = cidr.partition('/')
    if ':' in addr:
        return (6, socket.inet_pton(socket.AF_INET6, addr), int(plen or 128))
    return (4, socket.inet_aton(addr), int(plen or 32))


def _sorted_routes(routes):
    return sorted(routes, key=lambda r: (_net_sort_key(r.dst), r.metric))


def reconcile_routes(ip, desired, protocol=CALICO_PROTOCOL, table='main', include=None, families=(4,),
                     netns=None, check_mode=False, current=None):
    """Make the owned routes equal ``desired`` in one ``ip -batch`` call (stopping at the first error).

    Owned routes are those of ``protocol`` in ``table`` for which ``include(route)`` is true
    (all when None); ``current`` may be passed pre-read. Routes of other protocols are never
    read, replaced or deleted. Returns a dict: changed, add/replace/delete (formatted route
    strings), commands (batch lines), before/after (sorted formatted lists)."""
    protocol = normalize_protocol(protocol)
    table = normalize_table(table)
    if current is None:
        current = read_routes(ip, protocol, table, families, netns)
    if include is not None:
        current = [route for route in current if include(route)]
    add, replace, delete = plan_routes(desired, current)
    lines = route_batch_lines(add, replace, delete, protocol, table)
    if lines and not check_mode:
        ip.batch(lines, netns=netns, force=False)
    before = [format_route(r) for r in _sorted_routes(current)]
    if lines:
        gone = {id(r) for r in delete}
        replaced = {route_key(r) for r in replace}
        after_routes = [r for r in current if id(r) not in gone and route_key(r) not in replaced]
        after = [format_route(r) for r in _sorted_routes(after_routes + list(add) + list(replace))]
    else:
        after = before
    return {
        'changed': bool(lines),
        'add': [format_route(r) for r in _sorted_routes(add)],
        'replace': [format_route(r) for r in _sorted_routes(replace)],
        'delete': [format_route(r) for r in _sorted_routes(delete)],
        'commands': lines,
        'before': before,
        'after': after,
    }
