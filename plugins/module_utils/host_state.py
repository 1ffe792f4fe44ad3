# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernel parts of a host's converge: sysctls, the IPIP tunnel, the owned routes (block blackhole,
floating IPs) and the workload endpoints, in that order (the workloads take the tunnel's MTU).

Applied by module calico_node_state on every run, and at boot by the restore unit (:mod:`boot`) from
the arguments the last converge recorded, so both always apply a host's state the same way. Raises
:class:`PartError` (with the part and details for ``fail_json``) on the first part that fails.
"""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, routes, sysctl, tunnel
from ansible_collections.netfleet.calico.plugins.module_utils.workloads import build_endpoints

PARTS = ('sysctls', 'sysctl_persist_file', 'tunnel', 'routes', 'protocol', 'endpoints', 'netns_prefix', 'netns_paths',
         'mtu')


class PartError(Exception):
    """``msg`` for ``fail_json``, with ``details`` (more ``fail_json`` keys, never ``msg``)."""

    def __init__(self, msg, details=None):
        super().__init__(msg)
        self.msg = msg
        self.details = {k: v for k, v in (details or {}).items() if k != 'msg'}


class Runners:
    """How the parts reach the kernel (the module and the unit tests put in their own)."""

    def __init__(self, make_ip, make_reconciler, tunnel_runner, tunnel_bins, atomic_move=None,
                 sysctl_root=iproute.PROC_SYS):
        self.make_ip = make_ip
        self.make_reconciler = make_reconciler
        self.tunnel_runner = tunnel_runner
        self.tunnel_bins = tunnel_bins
        self.atomic_move = atomic_move
        self.sysctl_root = sysctl_root


def apply(p, check, runners, done):
    """Converge the parts present in ``p`` (the module's arguments); ``done(part, result)`` gets each part's
    result. Returns the workload MTU in effect (the tunnel's while one is planned)."""
    if p.get('sysctls') is not None:
        try:
            done('sysctl', sysctl.converge(p['sysctls'], p.get('sysctl_persist_file'), runners.sysctl_root, check,
                                           runners.atomic_move))
        except ValueError as exc:
            raise PartError('sysctls: %s' % exc) from None
        except sysctl.SysctlError as exc:
            raise PartError(str(exc), {'changed_keys': exc.changed_keys}) from None

    mtu = p.get('mtu')
    if p.get('tunnel') is not None:
        try:
            result = tunnel.reconcile(p['tunnel'], check, runners.tunnel_runner,
                                      runners.tunnel_bins(p['tunnel']['firewall']))
        except tunnel.TunnelError as exc:
            raise PartError('tunnel: %s' % tunnel.explain(exc)) from None
        done('tunnel', result)
        if p['tunnel'].get('workload_mtu', True) and result['workload_mtu'] is not None:
            mtu = result['workload_mtu']

    ip = None
    if p.get('routes') is not None:
        ip = runners.make_ip()
        try:
            owned, protocol, table, ignore = routes.build_routes(dict(
                routes=p['routes'], protocol=p['protocol'], table='main',
                ignore_device_prefixes=[iproute.DEFAULT_INTERFACE_PREFIX]))
            done('routes', routes.reconcile(ip, owned, protocol, table, ignore, check_mode=check))
        except ValueError as exc:
            raise PartError('routes: %s' % exc) from None
        except iproute.IprouteError as exc:
            raise PartError(routes.explain_failure(exc), exc.to_dict()) from None

    if p.get('endpoints') is not None:
        ip = ip or runners.make_ip()
        try:
            endpoints, settings = build_endpoints(dict(
                endpoints=p['endpoints'], netns_prefix=p['netns_prefix'], netns_paths=p.get('netns_paths') or [],
                interface_prefix=iproute.DEFAULT_INTERFACE_PREFIX, protocol=p['protocol'], mac=iproute.CALICO_MAC,
                gateway=iproute.CALICO_GATEWAY, mtu=mtu))
            done('workloads', runners.make_reconciler(ip, settings).run(endpoints, check_mode=check))
        except ValueError as exc:
            raise PartError('endpoints: %s' % exc) from None
        except iproute.IprouteError as exc:
            details = exc.to_dict()
            raise PartError(details.get('msg') or str(exc), details) from None
        except OSError as exc:
            raise PartError('cannot write sysctl: %s' % exc) from None
    return mtu
