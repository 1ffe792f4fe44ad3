# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Routes owned by one protocol number: validation and reconcile (one ip -batch).
Shared by the calico_routes and calico_node_state modules."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes

# Argument spec of one owned route (calico_routes' routes, calico_node_state's routes).
ROUTE_OPTIONS = dict(
    dest=dict(type='str', required=True),
    type=dict(type='str', default='unicast', choices=list(iproute_routes.ROUTE_TYPES)),
    via=dict(type='str'),
    dev=dict(type='str'),
    onlink=dict(type='bool', default=False),
    metric=dict(type='int'),
)


def build_routes(params):
    """Validate parameters; return (routes, protocol, table, ignore prefixes). Raise ValueError."""
    protocol = iproute.normalize_protocol(params['protocol'])
    table = iproute.normalize_table(params['table'])
    ignore = []
    for prefix in params['ignore_device_prefixes'] or []:
        if not prefix or not iproute.valid_ifname(prefix):
            raise ValueError('ignore_device_prefixes: invalid interface prefix %r' % (prefix,))
        ignore.append(prefix)
    routes, seen = [], {}
    for index, spec in enumerate(params['routes'] or []):
        try:
            route = iproute_routes.make_route(spec.get('dest'), type=spec.get('type'), via=spec.get('via'),
                                              dev=spec.get('dev'), onlink=spec.get('onlink'), metric=spec.get('metric'))
        except ValueError as exc:
            raise ValueError('routes[%d]: %s' % (index, exc)) from None
        if route.dev and any(route.dev.startswith(prefix) for prefix in ignore):
            raise ValueError('routes[%d]: route %s uses device %s, which matches ignore_device_prefixes; routes on '
                             'those devices belong to calico_workloads' % (index, route.dst, route.dev))
        key = iproute_routes.route_key(route)
        if key in seen:
            raise ValueError('routes[%d]: %s metric %d is already listed as routes[%d]' % (
                index, key[0], key[1], seen[key]))
        seen[key] = index
        routes.append(route)
    return routes, protocol, table, ignore


def reconcile(ip, routes, protocol, table, ignore, check_mode=False):
    def include(route):
        return not (route.dev and any(route.dev.startswith(prefix) for prefix in ignore))

    result = iproute_routes.reconcile_routes(ip, routes, protocol=protocol, table=table, include=include,
                                             families=(4, 6), check_mode=check_mode)
    return {
        'changed': result['changed'],
        'added': result['add'],
        'replaced': result['replace'],
        'deleted': result['delete'],
        'routes': result['after'],
        'commands': result['commands'],
        'diff': {'before': ''.join(r + '\n' for r in result['before']),
                 'after': ''.join(r + '\n' for r in result['after']),
                 'before_header': 'routes proto %d table %s (kernel)' % (protocol, table),
                 'after_header': 'routes proto %d table %s (wanted)' % (protocol, table)},
    }


def explain_failure(exc):
    """Turn 'File exists' on an add into the likely cause: the key belongs to another protocol."""
    for failure in exc.failures:
        if 'File exists' in (failure.get('error') or '') and ' add ' in ' %s ' % (failure.get('command') or ''):
            return ('route %r: destination and metric are taken by a route of another protocol, which this module '
                    'never overwrites; remove that route or use another metric' % failure['command'])
    return exc.msg
