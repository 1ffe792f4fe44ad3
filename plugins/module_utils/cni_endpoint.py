# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One container's endpoint, made and removed by the CNI plugin: the same data plane as the
converge's workloads (``cali`` + 11 hex veth, host side ``ee:ee:ee:ee:ee:ee`` with proxy-ARP and
``proxy_delay=0``, the container's /32 with its default route via 169.254.1.1, a host /32 route
of protocol 80), in two ``ip -batch`` runs: one inside the container's namespace, which creates the
veth and moves its host end out to this process's namespace, and one on the host.

The host end carries the alias ``netfleet:cni:<container id>_<ifname>``: the converge never touches a
veth it did not make (its aliases start ``netfleet:ep:``), and the /32 routes on such veths are the
plugin's.
"""

from __future__ import annotations

import hashlib
import os

from ansible_collections.netfleet.calico.plugins.module_utils import iproute

ALIAS_PREFIX = 'netfleet:cni:'


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


def create(ip, record, settings):
    """Make the endpoint of ``record`` (keys ``key netns ifname host_ifname ip mac``)."""
    mtu = ['mtu', str(settings['mtu'])] if settings.get('mtu') else []
    gw, ifname, host_if = settings['gateway'], record['ifname'], record['host_ifname']
    inside = [
        ' '.join(['link', 'add', 'name', ifname] + mtu + ['address', record['mac'], 'type', 'veth', 'peer', 'name',
                                                          host_if] + mtu
                 + ['address', settings['mac'], 'netns', str(os.getpid())]),
        'link set dev lo up',
        'link set dev %s up' % ifname,
        'addr add %s/32 dev %s' % (record['ip'], ifname),
        'route add %s dev %s scope link' % (gw, ifname),
        'route add default via %s dev %s' % (gw, ifname),
    ]
    try:
        ip.batch(inside, netns=record['netns'], force=False)
    except iproute.IprouteError as exc:
        # past the first line the veth exists (its host end here): deleting it undoes the rest; a failing
        # first line made nothing, and a host interface of that name would be somebody else's
        if not exc.failures or exc.failures[0].get('line') != 1:
            delete(ip, record)
        if 'exists' in exc.msg:
            raise EndpointError('container %s already has an interface %s or %s (another network plugin?): %s'
                                % (record['container_id'], ifname, host_if, exc.msg), code=5) from None
        raise EndpointError('cannot create the endpoint in %s: %s' % (record['netns'], exc.msg)) from None
    for tmpl, value in iproute.WORKLOAD_SYSCTLS:
        iproute.write_sysctl(tmpl.format(ifname=host_if), value)
    try:
        ip.batch(['link set dev %s alias %s up' % (host_if, ALIAS_PREFIX + record['key']),
                  'route replace %s/32 dev %s proto %d scope link' % (record['ip'], host_if, settings['protocol'])],
                 force=False)
    except iproute.IprouteError as exc:
        delete(ip, record)
        raise EndpointError('cannot set up the host side %s: %s' % (host_if, exc.msg)) from None


def delete(ip, record):
    """Remove the endpoint (its host /32 route goes with the link); True if a link was deleted."""
    rc, _out, err = ip.run(['link', 'del', 'dev', record['host_ifname']], check=False)
    if rc != 0 and 'Cannot find device' not in err and 'does not exist' not in err:
        raise EndpointError('cannot delete %s: %s' % (record['host_ifname'], err.strip()))
    return rc == 0


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
    routes = iproute.read_routes(ip, settings['protocol'], 'main', (4,))
    if not any(r.dst == record['ip'] + '/32' and r.dev == record['host_ifname'] for r in routes):
        problems.append('host route %s/32 dev %s is missing' % (record['ip'], record['host_ifname']))
    for tmpl, value in iproute.WORKLOAD_SYSCTLS:
        name = tmpl.format(ifname=record['host_ifname'])
        if iproute.read_sysctl(name) != value:
            problems.append('sysctl %s is not %s' % (name, value))
    try:
        addrs, inner = ip.json_batch(['addr show dev %s' % record['ifname'], 'route show table main'],
                                     netns=record['netns'])
    except iproute.IprouteError as exc:
        return problems + ['cannot read the container namespace %s: %s' % (record['netns'], exc.msg)]
    have = ['%s/%s' % (a.get('local'), a.get('prefixlen')) for entry in addrs for a in entry.get('addr_info') or []
            if a.get('family') == 'inet']
    if have != [record['ip'] + '/32']:
        problems.append('%s has %s, not %s/32' % (record['ifname'], ', '.join(have) or 'no address', record['ip']))
    if not any(r.get('dst') == 'default' and r.get('gateway') == settings['gateway'] for r in inner):
        problems.append('no default route via %s in the container' % settings['gateway'])
    return problems
