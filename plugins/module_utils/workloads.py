# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workload endpoints (Calico-style /32 veths with proxy-ARP): validation, observe/plan/apply.
Shared by the calico_workloads and calico_node_state modules."""

from __future__ import annotations

import os
import random

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes, procfs
from ansible_collections.netfleet.calico.plugins.module_utils.workload_spec import (  # noqa: F401 (re-exported)  # pylint: disable=unused-import
    ENDPOINTS_SPEC,
    WORKLOAD_IFNAME,
    Endpoint,
    build_endpoints,
    check_netns_path,
)


class WorkloadReconciler:
    """Observe, plan and apply. Kernel access goes through ``ip`` (an iproute.IpCommand) and the
    injectable ``sysctl_root``/``run_dir``/``netns_state``/``path_exists``/``netns_dir_is_slave``."""

    def __init__(self, ip, settings, sysctl_root=iproute.PROC_SYS, run_dir=iproute.NETNS_RUN_DIR,
                 netns_state=None, path_exists=os.path.exists, netns_dir_is_slave=None):
        self.ip = ip
        self.settings = settings
        self.prefix = settings['prefix']
        self.protocol = settings['protocol']
        self.mac = settings['mac']
        self.gateway = settings['gateway']
        self.gateway6 = settings.get('gateway6') or iproute.eui64_link_local(self.mac)
        self.sysctl_root = sysctl_root
        self.run_dir = run_dir
        self.netns_state = netns_state or (lambda name: procfs.netns_state(name, run_dir))
        self.path_exists = path_exists
        self.netns_dir_is_slave = netns_dir_is_slave or (lambda: procfs.netns_dir_is_slave(run_dir))
        self.sysctl_writes = 0
        self.groups_in_use = set()
        self.warnings = []
        # a host without IPv6 (ipv6.disable=1) has no net/ipv6 sysctls and never gets IPv6 endpoints
        self.host_ipv6 = os.path.isdir(os.path.join(sysctl_root, 'net', 'ipv6'))

    # ------------------------------------------------------------------ observe
    def _ns_available(self, endpoint):
        if endpoint.netns_path:
            return self.path_exists(endpoint.netns_path)
        return self.netns_state(endpoint.netns) == 'present'

    def _read_workload(self, nsref):
        """(links by name, routes list) inside a namespace, or an IprouteError."""
        try:
            addrs, routes, defaults6 = self.ip.json_batch(
                ['addr show', 'route show table main', 'route show table all exact ::/0'], netns=nsref)
        except iproute.IprouteError as exc:
            return exc
        # `route show table main` lists IPv4 only, `table all` both families: its IPv6 defaults of the main
        # table are those printed without a table
        routes = routes + [dict(r, family=6) for r in defaults6 if 'table' not in r and ':' in r.get('gateway', ':')]
        return {link.get('ifname'): link for link in addrs}, routes

    def observe(self, endpoints):
        links = self.ip.json(['-d', 'link', 'show'])
        host = {link['ifname']: link for link in links if link.get('ifname', '').startswith(self.prefix)
                and (link.get('linkinfo') or {}).get('info_kind') == 'veth'}
        self.groups_in_use = {str(link.get('group', 'default')) for link in links}
        # only routes on endpoints of this module (listed, or ours by their alias): the /32 routes of
        # veths made by others with the same prefix (the CNI plugin's containers) are theirs
        ours = {ep.ifname for ep in endpoints} | {name for name, link in host.items()
                                                  if iproute.decode_owner_alias(link.get('ifalias')) is not None}
        routes = iproute_routes.read_routes(self.ip, self.protocol, 'main', (4, 6) if self.host_ipv6 else (4,))
        routes = [r for r in routes if r.dev and r.dev in ours]
        ns_ok = {ep.name: self._ns_available(ep) for ep in endpoints}
        to_read = [ep for ep in endpoints if ns_ok[ep.name]]
        results = self.ip.map(lambda ep: self._read_workload(ep.nsref), to_read)
        workload = dict(zip([ep.name for ep in to_read], results))
        sysctls = {}
        for ep in endpoints:
            if ep.ifname in host:
                sysctls[ep.ifname] = {tmpl: procfs.read_sysctl(tmpl.format(ifname=ep.ifname), self.sysctl_root)
                                      for tmpl, _value in self.endpoint_sysctls(ep)}
        if any(ep.ip6 for ep in endpoints):
            self._check_ipv6_host()
        return {'host': host, 'routes': routes, 'ns_ok': ns_ok, 'workload': workload, 'sysctls': sysctls}

    def endpoint_sysctls(self, ep):
        """(name template, value) of the host-side sysctls of an endpoint's veth."""
        if ep.ip6:
            return iproute.WORKLOAD_SYSCTLS + iproute.WORKLOAD_SYSCTLS6
        return iproute.WORKLOAD_SYSCTLS + (iproute.WORKLOAD_SYSCTLS_RA if self.host_ipv6 else ())

    def _check_ipv6_host(self):
        if not self.host_ipv6:
            raise ValueError('endpoints with ip6 need IPv6 on the host (%s/net/ipv6 is missing: ipv6.disable=1?)'
                             % self.sysctl_root)
        if procfs.read_sysctl('net/ipv6/conf/all/forwarding', self.sysctl_root) != '1':
            # not set here: forwarding on every interface stops the host's own uplinks accepting router
            # advertisements, a decision for the host's sysctls (calico_sysctl), not for its workloads
            self.warnings.append('net.ipv6.conf.all.forwarding is not 1: IPv6 workloads cannot be routed '
                                 'beyond this host until it is set')

    # ------------------------------------------------------------------ plan
    def plan(self, endpoints, state):
        host, workload = state['host'], state['workload']
        plan = {
            'pre': {},            # nsref -> lines run inside the namespace before the host batch
            'link_del': [], 'netns_del': [], 'netns_add': [], 'link_add': [], 'link_set': [],
            'sysctl': [],         # (sysctl name, value)
            'workload': [],       # (endpoint name, nsref, lines)
            'created': [], 'recreated': [], 'updated': [], 'removed': [], 'drift': {},
            'gone_links': set(),  # host links deleted in this run (their routes go with them)
        }
        desired_ns = {ep.nsref for ep in endpoints}
        desired_names = {ep.name for ep in endpoints}
        desired_ifnames = {ep.ifname for ep in endpoints}
        before, after, errors = {}, {}, []

        # endpoints no longer listed: our alias on a veth that is not a desired interface
        removed_lines = []
        for ifname, link in sorted(host.items()):
            owner = iproute.decode_owner_alias(link.get('ifalias'))
            if owner is None or ifname in desired_ifnames:
                continue
            plan['link_del'].append(iproute.batch_token(ifname, 'interface'))
            plan['gone_links'].add(ifname)
            if owner['owned'] and iproute.valid_netns_name(owner['netns']) and owner['netns'] not in desired_ns:
                plan['netns_del'].append('netns del %s' % owner['netns'])
            if owner['name'] not in desired_names:
                plan['removed'].append(owner['name'])
            ips = sorted(r.dst for r in state['routes'] if r.dev == ifname)
            removed_lines.append(self._render(owner['name'], ','.join(ips) or '-', ifname, owner['netns'],
                                              link.get('address'), None))

        for ep in endpoints:
            link = host.get(ep.ifname)
            owner = iproute.decode_owner_alias(link.get('ifalias')) if link else None
            wl = workload.get(ep.name)
            if isinstance(wl, iproute.IprouteError):
                if link is not None:
                    errors.append('endpoint %r: cannot read namespace %s: %s' % (ep.name, ep.nsref, wl.msg))
                    continue
                wl = None
            eth0 = wl[0].get(WORKLOAD_IFNAME) if wl else None
            if link is None:
                action, why = 'create', None
            elif owner is not None and owner['netns'] != ep.nsref:
                action, why = 'recreate', 'netns changed from %s' % owner['netns']
            elif not state['ns_ok'][ep.name]:
                action, why = 'recreate', 'namespace %s missing' % ep.nsref
            elif eth0 is None or eth0.get('link_index') != link.get('ifindex'):
                action, why = 'recreate', 'veth peer not found as eth0 in %s' % ep.nsref
            else:
                action, why = 'update', None
            if link is not None:
                before[ep.name] = self._render_current(ep, link, owner, wl)
            after[ep.name] = self._render(ep.name, ','.join(c for c in (ep.cidr, ep.cidr6) if c), ep.ifname,
                                          ep.nsref, self.mac, ep.mtu)
            if action == 'update':
                owned = owner['owned'] if owner else ep.default_netns
                reasons = self._plan_update(ep, link, owned, wl, state['sysctls'].get(ep.ifname, {}), plan)
                if reasons:
                    plan['drift'][ep.name] = reasons
            elif self._plan_create(ep, link, owner, eth0, plan, desired_ns, host, errors):
                if action == 'recreate':
                    plan['recreated'].append(ep.name)
                    plan['drift'][ep.name] = ['recreated: ' + why]
                else:
                    plan['created'].append(ep.name)
        if plan['netns_add'] and self.netns_dir_is_slave():
            errors.append(
                'cannot create namespace %s: %s is a slave mount here (the module runs in a private mount namespace, '
                'e.g. under `ip netns exec`), so a new namespace would vanish when the module exits; run the module '
                'with `nsenter --net=/run/netns/HOST` instead, or pass pre-created namespaces as netns_path'
                % (plan['netns_add'][0].split()[-1], self.run_dir))
        if errors:
            raise ValueError(errors[0] if len(errors) == 1 else '%d errors; first: %s' % (len(errors), errors[0]))

        # host routes: one /32 per endpoint; routes on deleted links vanish with them
        desired_routes = [iproute_routes.Route(ep.cidr, 'unicast', None, ep.ifname, False, 0, 'link')
                          for ep in endpoints if ep.ip]
        desired_routes += [iproute_routes.Route(ep.cidr6, 'unicast', None, ep.ifname, False, 1024, None)
                           for ep in endpoints if ep.ip6]
        current = [r for r in state['routes'] if r.dev not in plan['gone_links']]
        add, replace, delete = iproute_routes.plan_routes(desired_routes, current)
        plan['routes'] = (add, replace, delete)
        fresh = set(plan['created']) | set(plan['recreated'])
        by_if = {ep.ifname: ep.name for ep in endpoints}
        for route in add + replace:
            name = by_if.get(route.dev)
            if name is not None and name not in fresh:
                plan['drift'].setdefault(name, []).append(
                    'host route %s %s' % (route.dst, 'missing' if route in add else 'differs'))
        plan['updated'] = sorted(plan['drift'])
        for name, line in before.items():
            if plan['drift'].get(name):
                before[name] = line + ' drift=' + '; '.join(plan['drift'][name])
        plan['before'] = sorted(list(before.values()) + removed_lines)
        plan['after'] = sorted(after.values())
        return plan

    def _plan_create(self, ep, link, owner, eth0, plan, desired_ns, host, errors):
        """Add the lines that (re)create an endpoint to ``plan``; False on error."""
        if link is not None:
            plan['link_del'].append(ep.ifname)
            plan['gone_links'].add(ep.ifname)
            old = owner['netns'] if owner else None
            if old and owner['owned'] and old != ep.nsref and '/' not in old and old not in desired_ns \
                    and iproute.valid_netns_name(old):
                plan['netns_del'].append('netns del %s' % old)
        if ep.netns_path:
            if not self.path_exists(ep.netns_path):
                errors.append('endpoint %r: netns_path %s does not exist' % (ep.name, ep.netns_path))
                return False
            owned = False
        else:
            status = self.netns_state(ep.netns)
            if status == 'present':
                owned = owner['owned'] if owner and owner['netns'] == ep.nsref else ep.default_netns
            else:
                if status == 'broken':
                    plan['netns_del'].append('netns del %s' % ep.netns)
                plan['netns_add'].append('netns add %s' % ep.netns)
                owned = True
        # An eth0 already in the namespace goes away with its host peer if that is deleted in this
        # run; any other eth0 is stale: removed if the namespace is ours, an error otherwise.
        gone = {host[name].get('ifindex') for name in plan['gone_links'] if name in host}
        if eth0 is not None and eth0.get('link_index') not in gone:
            if not owned:
                errors.append('endpoint %r: namespace %s already has an eth0 that is not this endpoint\'s veth; '
                              'remove it or use another namespace' % (ep.name, ep.nsref))
                return False
            plan['pre'][ep.nsref] = ['link del dev %s' % WORKLOAD_IFNAME]
        alias = iproute.encode_owner_alias(ep.name, ep.nsref, owned)
        mtu = ['mtu', str(ep.mtu)] if ep.mtu else []
        plan['link_add'].append(' '.join(
            ['link', 'add', 'name', ep.ifname] + mtu + ['address', self.mac, 'type', 'veth', 'peer', 'name',
                                                        WORKLOAD_IFNAME] + mtu + ['netns', ep.nsref]))
        plan['link_set'].append('link set dev %s alias %s up' % (ep.ifname, alias))
        plan['sysctl'].extend((tmpl.format(ifname=ep.ifname), value) for tmpl, value in self.endpoint_sysctls(ep))
        plan['workload'].append((ep.name, ep.nsref, self._workload_lines(ep, [], [])))
        return True

    def _plan_update(self, ep, link, owned, wl, sysctls, plan):
        reasons = []
        words = []
        if (link.get('address') or '').lower() != self.mac:
            reasons.append('mac %s (want %s)' % (link.get('address'), self.mac))
            words += ['address', self.mac]
        if ep.mtu and link.get('mtu') != ep.mtu:
            reasons.append('host mtu %s (want %s)' % (link.get('mtu'), ep.mtu))
            words += ['mtu', str(ep.mtu)]
        alias = iproute.encode_owner_alias(ep.name, ep.nsref, owned)
        if link.get('ifalias') != alias:
            reasons.append('ownership alias %r' % (link.get('ifalias') or ''))
            words += ['alias', alias]
        if 'UP' not in (link.get('flags') or []):
            reasons.append('host link down')
        if words or 'UP' not in (link.get('flags') or []):
            plan['link_set'].append(' '.join(['link', 'set', 'dev', ep.ifname] + words + ['up']))
        for tmpl, value in self.endpoint_sysctls(ep):
            current = sysctls.get(tmpl)
            if current != value:
                reasons.append('sysctl %s=%s' % (tmpl.rsplit('/', 1)[-1], current))
                plan['sysctl'].append((tmpl.format(ifname=ep.ifname), value))
        links_in_ns, routes = wl
        wl_reasons, extra, stale = self._workload_drift(ep, links_in_ns, routes)
        if wl_reasons:
            reasons.extend(wl_reasons)
            plan['workload'].append((ep.name, ep.nsref, self._workload_lines(ep, extra, stale)))
        return reasons

    def _workload_drift(self, ep, links_in_ns, routes):
        """(reasons, addresses to remove, stale routes to remove) inside the workload's namespace."""
        reasons = []
        lo = links_in_ns.get('lo') or {}
        if 'UP' not in (lo.get('flags') or []):
            reasons.append('lo down')
        eth0 = links_in_ns[WORKLOAD_IFNAME]
        if 'UP' not in (eth0.get('flags') or []):
            reasons.append('eth0 down')
        if ep.mtu and eth0.get('mtu') != ep.mtu:
            reasons.append('eth0 mtu %s (want %s)' % (eth0.get('mtu'), ep.mtu))
        extra = []
        for family, want in (('inet', ep.cidr), ('inet6', ep.cidr6)):
            have = _addresses(eth0, family)
            extra += [cidr for cidr in have if cidr != want]
            if have != ([want] if want else []):
                reasons.append('eth0 address %s (want %s)' % (','.join(have) or 'none', want or 'none'))
        default = [r for r in routes if r.get('dst') == 'default' and not r.get('metric')
                   and r.get('family') != 6]
        default6 = [r for r in routes if r.get('dst') == 'default' and r.get('family') == 6]
        stale = []
        if ep.ip:
            gw_route = any(r.get('dst') == self.gateway and r.get('dev') == WORKLOAD_IFNAME and not r.get('gateway')
                           and r.get('scope') == 'link' for r in routes)
            if not gw_route:
                reasons.append('route %s dev eth0 scope link missing' % self.gateway)
            if not any(r.get('gateway') == self.gateway and r.get('dev') == WORKLOAD_IFNAME for r in default):
                reasons.append('default route via %s dev eth0 missing' % self.gateway)
        elif any(r.get('gateway') == self.gateway for r in default):
            reasons.append('IPv4 default route of an IPv6-only endpoint')
            stale.append('route del default via %s dev %s' % (self.gateway, WORKLOAD_IFNAME))
        if ep.ip6:
            if not any(r.get('gateway') == self.gateway6 and r.get('dev') == WORKLOAD_IFNAME
                       and r.get('metric') == 1024 for r in default6):
                reasons.append('default route via %s dev eth0 missing' % self.gateway6)
        elif any(r.get('gateway') == self.gateway6 for r in default6):
            reasons.append('IPv6 default route of an IPv4-only endpoint')
            stale.append('route del ::/0 via %s dev %s' % (self.gateway6, WORKLOAD_IFNAME))
        return reasons, extra, stale

    def _workload_lines(self, ep, extra, stale):
        mtu = ['mtu', str(ep.mtu)] if ep.mtu else []
        lines = ['link set dev lo up', ' '.join(['link', 'set', 'dev', WORKLOAD_IFNAME] + mtu + ['up'])]
        lines += ['addr del %s dev %s' % (iproute.batch_token(cidr), WORKLOAD_IFNAME) for cidr in extra]
        lines += stale
        if ep.ip:
            lines += ['addr replace %s dev %s' % (ep.cidr, WORKLOAD_IFNAME),
                      'route replace %s dev %s scope link' % (self.gateway, WORKLOAD_IFNAME),
                      'route replace default via %s dev %s' % (self.gateway, WORKLOAD_IFNAME)]
        if ep.ip6:
            # nodad: usable at once (the address is the workload's alone: the host routes it to this veth)
            lines += ['addr replace %s dev %s nodad' % (ep.cidr6, WORKLOAD_IFNAME),
                      'route replace ::/0 via %s dev %s metric 1024' % (self.gateway6, WORKLOAD_IFNAME)]
        return lines

    def _render(self, name, ip, ifname, nsref, mac, mtu):
        text = '%s: ip=%s if=%s netns=%s mac=%s' % (name, ip, ifname, nsref, mac)
        return text + (' mtu=%s' % mtu if mtu else '')

    def _render_current(self, ep, link, owner, wl):
        if wl:
            eth0 = wl[0].get(WORKLOAD_IFNAME) or {}
            ip = ','.join(_addresses(eth0, 'inet') + _addresses(eth0, 'inet6')) or '-'
        else:
            ip = '-'
        nsref = owner['netns'] if owner else '-'
        return self._render(ep.name, ip, ep.ifname, nsref, link.get('address'), link.get('mtu') if ep.mtu else None)

    # ------------------------------------------------------------------ apply
    def delete_lines(self, ifnames):
        """Lines deleting host links. Each ``link del`` waits for its own RCU grace periods (~17 ms for a
        veth whose peer is in another namespace), so two or more links are moved into a device group
        that no link in this namespace uses and deleted with one ``link del group`` request, which the
        kernel unregisters as one batch (200 veths: 74 ms instead of 3.5 s)."""
        if len(ifnames) < 2:
            return ['link del dev %s' % name for name in ifnames]
        group = self.delete_group()
        return ['link set dev %s group %d' % (name, group) for name in ifnames] + ['link del group %d' % group]

    def delete_group(self):
        rng = random.SystemRandom()
        while True:
            group = rng.randint(0x10000000, 0x7FFFFFFF)
            if str(group) not in self.groups_in_use:
                return group

    def host_lines(self, plan):
        return (self.delete_lines(plan['link_del']) + plan['netns_del'] + plan['netns_add'] + plan['link_add']
                + plan['link_set'])

    def apply(self, plan, host_lines):
        errors = []
        if plan['pre']:
            for result in self.ip.map(lambda item: self._batch(item[0], item[1]), sorted(plan['pre'].items())):
                if result:
                    errors.append(result)
        if errors:
            raise iproute.IprouteError(errors[0].msg, failures=[f for e in errors for f in e.failures])
        self.ip.batch(host_lines)
        for name, value in plan['sysctl']:
            procfs.write_sysctl(name, value, self.sysctl_root)
            self.sysctl_writes += 1
        results = self.ip.map(lambda item: self._batch(item[1], item[2]), plan['workload'])
        for (name, nsref, _lines), result in zip(plan['workload'], results):
            if result:
                result.msg = 'endpoint %r (namespace %s): %s' % (name, nsref, result.msg)
                errors.append(result)
        if errors:
            raise iproute.IprouteError(errors[0].msg if len(errors) == 1 else '%d endpoints failed; first: %s'
                                       % (len(errors), errors[0].msg),
                                       failures=[f for e in errors for f in e.failures])
        add, replace, delete = plan['routes']
        self.ip.batch(iproute_routes.route_batch_lines(add, replace, delete, self.protocol, 'main'), force=False)

    def _batch(self, nsref, lines):
        try:
            self.ip.batch(lines, netns=nsref)
        except iproute.IprouteError as exc:
            return exc
        return None

    def run(self, endpoints, check_mode=False):
        state = self.observe(endpoints)
        plan = self.plan(endpoints, state)
        add, replace, delete = plan['routes']
        route_lines = iproute_routes.route_batch_lines(add, replace, delete, self.protocol, 'main')
        host_lines = self.host_lines(plan)
        changed = bool(host_lines or route_lines or plan['sysctl'] or plan['workload'] or plan['pre'])
        if changed and not check_mode:
            self.apply(plan, host_lines)
        fmt = iproute_routes.format_route
        return {
            'changed': changed,
            'endpoints': [{'name': ep.name, 'ip': ep.ip, 'ip6': ep.ip6, 'ifname': ep.ifname, 'netns': ep.netns,
                           'netns_path': ep.netns_path or os.path.join(self.run_dir, ep.netns),
                           'mac': self.mac, 'mtu': ep.mtu} for ep in sorted(endpoints, key=lambda e: e.name)],
            'created': sorted(plan['created']),
            'updated': plan['updated'],
            'removed': sorted(plan['removed']),
            'drift': plan['drift'],
            'routes': {'add': [fmt(r) for r in add], 'replace': [fmt(r) for r in replace],
                       'delete': [fmt(r) for r in delete]},
            'commands': host_lines + route_lines,
            'warnings': list(self.warnings),
            'stats': {'endpoints': len(endpoints), 'ip_calls': self.ip.calls, 'sysctl_writes': self.sysctl_writes},
            'diff': {'before': ''.join(line + '\n' for line in sorted(plan['before'])),
                     'after': ''.join(line + '\n' for line in sorted(plan['after'])),
                     'before_header': 'workload endpoints (kernel)', 'after_header': 'workload endpoints (wanted)'},
        }


def _addresses(link, family):
    """``addr/len`` of a link's addresses of ``family`` ('inet' or 'inet6'; link-local IPv6 left out)."""
    return ['%s/%s' % (a.get('local'), a.get('prefixlen')) for a in link.get('addr_info') or []
            if a.get('family') == family and not (family == 'inet6' and a.get('scope') == 'link')]
