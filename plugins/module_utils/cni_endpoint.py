# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One container's endpoint, made and removed by the CNI plugin: the same data plane as the
converge's workloads (``cali`` + 11 hex veth, host side ``ee:ee:ee:ee:ee:ee`` with proxy-ARP and
``proxy_delay=0``, the container's /32 with its default route via 169.254.1.1, a host /32 route
of protocol 80; with an IPv6 address also the container's /128 (``nodad``) with its default route via
the host side's link-local ``fe80::ecee:eeff:feee:eeee``, the IPv6 veth sysctls and a host /128 route of
protocol 80), over netlink (:mod:`netlink`): the veth is created on the host with its peer made
straight inside the container's namespace, then each side is configured; no process per step.

The host end carries the alias ``netfleet:cni:<container id>_<ifname>``: the converge never touches a
veth it did not make (its aliases start ``netfleet:ep:``), and the /32 routes on such veths are the
plugin's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes, netlink, procfs

ALIAS_PREFIX = 'netfleet:cni:'
# Link group of host veths on their way out: deleting a group unregisters all its links in one go, so a
# batch of DELs waits for the kernel's RCU grace period once, not once per container (10-30 ms each).
DELETE_GROUP = 0x6e666361


def host_ifname(container_id, ifname, prefix=iproute.DEFAULT_INTERFACE_PREFIX):
    """``cali`` + the first 11 hex digits of sha1 of the workload id (Calico's rule); the workload id of an
    attachment is its container id, plus ``/<ifname>`` for any interface but the usual eth0."""
    workload_id = container_id if ifname == 'eth0' else '%s/%s' % (container_id, ifname)
    return iproute.workload_ifname(workload_id, prefix)


def container_mac(key):
    """A stable, locally administered unicast MAC for the container side."""
    digest = hashlib.sha1(key.encode('utf-8'), usedforsecurity=False).digest()
    return ':'.join('%02x' % b for b in (0x0e,) + tuple(digest[:5]))


class EndpointError(Exception):
    def __init__(self, msg, code=5):
        super().__init__(msg)
        self.msg = msg
        self.code = code


class Kernel(iproute.IpCommand):
    """The kernel as the endpoint code uses it: netlink for every change (a socket in the caller's namespace,
    opened once and reused), ``ip -j`` for the reads of CHECK."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._host = None

    def host(self):
        if self._host is None:
            self._host = netlink.Netlink()
        return self._host

    @contextlib.contextmanager
    def container(self, netns):
        """(netlink socket inside ``netns``, an open descriptor of ``netns``) for the duration of the block."""
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise EndpointError('cannot open the container namespace %s: %s' % (netns, exc.strerror)) from None
        try:
            with netlink.open_in(fd) as sock:
                yield sock, fd
        finally:
            os.close(fd)


def create(kernel, record, settings):
    """Make the endpoint of ``record`` (keys ``key netns ifname host_ifname ip mac``)."""
    gw, ifname, host_if = settings['gateway'], record['ifname'], record['host_ifname']
    host = kernel.host()
    with kernel.container(record['netns']) as (inside, fd):
        try:
            host.add_veth(host_if, ifname, fd, settings.get('mtu'), settings['mac'], record['mac'])
        except netlink.NetlinkError as exc:
            # nothing was made: a failed RTM_NEWLINK creates neither end
            if exc.errno == errno.EEXIST:
                raise EndpointError('container %s already has an interface %s or the host one %s (another network '
                                    'plugin?): %s' % (record['container_id'], ifname, host_if, exc.strerror)) from None
            raise EndpointError('cannot create the endpoint in %s: %s' % (record['netns'], exc.strerror)) from None
        try:
            index = inside.link_index(ifname)
            inside.link_set(inside.link_index('lo'), 'lo', up=True)
            inside.link_set(index, ifname, up=True)
            inside.addr_add(index, record['ip'], 32, ifname)
            inside.route_replace(gw, 32, index, scope=netlink.RT_SCOPE_LINK, name=ifname)
            inside.route_replace('0.0.0.0', 0, index, gateway=gw, name=ifname)
            if record.get('ip6'):
                inside.addr_add(index, record['ip6'], 128, ifname, nodad=True)
                inside.route_replace('::', 0, index, gateway=settings['gateway6'], name=ifname)
        except netlink.NetlinkError as exc:
            delete(kernel, record)
            raise EndpointError('cannot set up %s in %s: %s' % (ifname, record['netns'], exc)) from None
    try:
        for tmpl, value in host_sysctls(record):  # the IPv6 ones before the link is up: its link-local is the gateway
            procfs.write_sysctl(tmpl.format(ifname=host_if), value)
        index = host.link_index(host_if)
        host.link_set(index, host_if, up=True, alias=ALIAS_PREFIX + record['key'])
        host.route_replace(record['ip'], 32, index, scope=netlink.RT_SCOPE_LINK, protocol=settings['protocol'],
                           name=host_if)
        if record.get('ip6'):
            host.route_replace(record['ip6'], 128, index, protocol=settings['protocol'], name=host_if)
    except (netlink.NetlinkError, OSError) as exc:
        delete(kernel, record)
        raise EndpointError('cannot set up the host side %s: %s' % (host_if, exc)) from None


def host_sysctls(record):
    """The sysctls of an attachment's host veth: IPv4's, and IPv6's for one with an IPv6 address."""
    return iproute.WORKLOAD_SYSCTLS + (iproute.WORKLOAD_SYSCTLS6 if record.get('ip6') else ())


def delete(kernel, record):
    """Remove the endpoint (its host /32 and /128 routes go with the link); True if a link was deleted."""
    try:
        return kernel.host().link_del(record['host_ifname'])
    except netlink.NetlinkError as exc:
        raise EndpointError('cannot delete %s: %s' % (record['host_ifname'], exc.strerror)) from None


def delete_many(kernel, records):
    """Remove the endpoints of ``records`` together (each host veth joins DELETE_GROUP, then the group is
    deleted); returns the names of the links deleted (those that existed)."""
    host = kernel.host()
    marked = []
    try:
        for record in records:
            name = record['host_ifname']
            index = host.link_index(name)
            if index is not None:
                host.link_set(index, name, group=DELETE_GROUP)
                marked.append(name)
        if marked:
            host.group_del(DELETE_GROUP)
    except netlink.NetlinkError as exc:
        raise EndpointError('cannot delete %s: %s' % (', '.join(marked) or 'the endpoints', exc)) from None
    return marked


def read_link(ip, ifname):
    """The host link ``ifname`` as ``ip -j -d link show`` prints it, or None when there is none (one process)."""
    rc, out, _err = ip.run(['-j', '-d', 'link', 'show', 'dev', ifname], check=False)
    links = iproute.parse_json_stream(out)[0] if rc == 0 and out.strip() else []
    return links[0] if links else None


def check(ip, record, settings):
    """Problems (list of strings) between ``record`` and the kernel; empty when the endpoint is whole."""
    problems = []
    link = read_link(ip, record['host_ifname'])
    if link is None:
        return ['host interface %s is missing' % record['host_ifname']]
    if link.get('ifalias') != ALIAS_PREFIX + record['key']:
        problems.append('host interface %s has alias %r, not this container\'s' % (record['host_ifname'],
                                                                                   link.get('ifalias')))
    if 'UP' not in (link.get('flags') or []):
        problems.append('host interface %s is down' % record['host_ifname'])
    ip6 = record.get('ip6')
    routes = iproute_routes.read_routes(ip, settings['protocol'], 'main', (4, 6) if ip6 else (4,))
    for cidr in [record['ip'] + '/32'] + ([ip6 + '/128'] if ip6 else []):
        if not any(r.dst == cidr and r.dev == record['host_ifname'] for r in routes):
            problems.append('host route %s dev %s is missing' % (cidr, record['host_ifname']))
    for tmpl, value in host_sysctls(record):
        name = tmpl.format(ifname=record['host_ifname'])
        if procfs.read_sysctl(name) != value:
            problems.append('sysctl %s is not %s' % (name, value))
    # `route show table main` lists IPv4 only; `table all exact ::/0` the IPv6 defaults (main's without a table)
    lines = ['addr show dev %s' % record['ifname'], 'route show table main'] + (
        ['route show table all exact ::/0'] if ip6 else [])
    try:
        addrs, inner, *defaults6 = ip.json_batch(lines, netns=record['netns'])
    except iproute.IprouteError as exc:
        return problems + ['cannot read the container namespace %s: %s' % (record['netns'], exc.msg)]
    have = ['%s/%s' % (a.get('local'), a.get('prefixlen')) for entry in addrs for a in entry.get('addr_info') or []
            if a.get('family') == 'inet']
    if have != [record['ip'] + '/32']:
        problems.append('%s has %s, not %s/32' % (record['ifname'], ', '.join(have) or 'no address', record['ip']))
    if not any(r.get('dst') == 'default' and r.get('gateway') == settings['gateway'] for r in inner):
        problems.append('no default route via %s in the container' % settings['gateway'])
    if ip6:
        problems += _check_inside6(record, settings, addrs, defaults6[0])
    return problems


def _check_inside6(record, settings, addrs, defaults6):
    """CHECK's IPv6 part inside the container: its /128 (global scope; the link-local is the kernel's) and the
    default route via the host side's link-local."""
    problems = []
    have = ['%s/%s' % (a.get('local'), a.get('prefixlen')) for entry in addrs for a in entry.get('addr_info') or []
            if a.get('family') == 'inet6' and a.get('scope') == 'global']
    if have != [record['ip6'] + '/128']:
        problems.append('%s has %s, not %s/128' % (record['ifname'], ', '.join(have) or 'no IPv6 address',
                                                   record['ip6']))
    if not any(r.get('dst') == 'default' and r.get('gateway') == settings['gateway6'] and 'table' not in r
               for r in defaults6):
        problems.append('no IPv6 default route via %s in the container' % settings['gateway6'])
    return problems
