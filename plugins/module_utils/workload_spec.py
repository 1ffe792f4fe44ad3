# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workload endpoints as the modules are given them: argument spec and validation (names, addresses,
namespaces, MTU), shared by the calico_workloads and calico_node_state modules and the boot-time restore."""

from __future__ import annotations

import fnmatch
import os

from ansible_collections.netfleet.calico.plugins.module_utils import iproute

WORKLOAD_IFNAME = 'eth0'

# Argument spec of the endpoint list (calico_workloads' and calico_node_state's endpoints).
ENDPOINTS_SPEC = dict(type='list', elements='dict', options=dict(
    name=dict(type='str', required=True),
    ip=dict(type='str'),
    ip6=dict(type='str'),
    netns=dict(type='str'),
    netns_path=dict(type='path'),
    mtu=dict(type='int'),
), mutually_exclusive=[('netns', 'netns_path')], required_one_of=[('ip', 'ip6')])


class Endpoint:
    """A desired endpoint: IPv4 only, IPv6 only or both (``ip``/``ip6`` None when absent)."""

    __slots__ = ('name', 'ip', 'ip6', 'ifname', 'netns', 'netns_path', 'nsref', 'mtu', 'default_netns')

    def __init__(self, name, ip, ifname, netns, netns_path, mtu, default_netns, ip6=None):
        self.name = name
        self.ip = ip
        self.ip6 = ip6
        self.ifname = ifname
        self.netns = netns
        self.netns_path = netns_path
        self.nsref = netns_path or netns
        self.mtu = mtu
        self.default_netns = default_netns

    @property
    def cidr(self):
        return self.ip + '/32' if self.ip else None

    @property
    def cidr6(self):
        return self.ip6 + '/128' if self.ip6 else None


def build_endpoints(params):
    """Validate the parameters; return (list of Endpoint, settings dict). Raise ValueError (one line)."""
    prefix = params['interface_prefix']
    if not prefix or not iproute.valid_ifname(prefix) or len(prefix) > iproute.IFNAME_MAX - 11:
        raise ValueError('interface_prefix %r must be 1-4 characters usable in an interface name' % (prefix,))
    netns_prefix = params['netns_prefix'] or ''
    if netns_prefix and not iproute.valid_netns_name(netns_prefix):
        raise ValueError('netns_prefix %r may only contain letters, digits and _.@+=-' % (netns_prefix,))
    gateway = iproute.parse_ip(params['gateway'])
    if gateway.version != 4:
        raise ValueError('gateway %s must be an IPv4 address' % params['gateway'])
    mac = iproute.normalize_mac(params['mac'])
    settings = {
        'prefix': prefix,
        'protocol': iproute.normalize_protocol(params['protocol']),
        'mac': mac,
        'gateway': str(gateway),
        'gateway6': iproute.eui64_link_local(mac),
    }
    default_mtu = _check_mtu(params.get('mtu'), 'mtu')
    endpoints, by_name, by_ip, by_ifname, by_ns = [], {}, {}, {}, {}
    for index, raw in enumerate(params['endpoints'] or []):
        name = raw.get('name')
        if name is None or not str(name).strip():
            raise ValueError('endpoints[%d]: name must be a non-empty string' % index)
        name = str(name)
        if name in by_name:
            raise ValueError('duplicate endpoint name %r' % name)
        if raw.get('ip') is None and raw.get('ip6') is None:
            raise ValueError('endpoint %r: ip or ip6 is required' % name)
        ip = _parse_workload_ip(name, raw.get('ip'), gateway) if raw.get('ip') is not None else None
        ip6 = _parse_workload_ip6(name, raw.get('ip6')) if raw.get('ip6') is not None else None
        for addr in (ip, ip6):
            if addr is not None and addr in by_ip:
                raise ValueError('endpoints %r and %r have the same ip %s' % (by_ip[addr], name, addr))
        ifname = iproute.workload_ifname(name, prefix)
        if ifname in by_ifname:
            raise ValueError('endpoints %r and %r hash to the same interface %s; rename one'
                             % (by_ifname[ifname], name, ifname))
        netns, netns_path = raw.get('netns'), raw.get('netns_path')
        if netns and netns_path:
            raise ValueError('endpoint %r: netns and netns_path are mutually exclusive' % name)
        default_netns = False
        if netns_path:
            netns_path = check_netns_path(name, netns_path, params.get('netns_paths') or [])
            netns = None
        else:
            if not netns:
                netns, default_netns = netns_prefix + name, True
            elif not netns.startswith(netns_prefix):
                raise ValueError('endpoint %r: netns %r is not under the workload prefix %r (a workload never gets '
                                 "another namespace of the host's)" % (name, netns, netns_prefix))
            if not iproute.valid_netns_name(netns):
                raise ValueError('endpoint %r: %r is not a valid namespace name (letters, digits and _.@+=- only); '
                                 'set netns or netns_path explicitly' % (name, netns))
        nsref = netns_path or netns
        if nsref in by_ns:
            raise ValueError('endpoints %r and %r use the same namespace %s (each workload needs its own eth0)'
                             % (by_ns[nsref], name, nsref))
        mtu = _check_mtu(raw.get('mtu'), 'endpoint %r: mtu' % name)
        endpoint = Endpoint(name, ip, ifname, netns, netns_path, mtu if mtu is not None else default_mtu,
                            default_netns, ip6)
        iproute.encode_owner_alias(name, nsref, True)  # length check
        by_name[name] = by_ifname[ifname] = by_ns[nsref] = name
        by_ip.update({addr: name for addr in (ip, ip6) if addr is not None})
        endpoints.append(endpoint)
    return endpoints, settings


def _same_file(path, other):
    try:
        a, b = os.stat(path), os.stat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_netns_path(name, path, patterns):
    """An endpoint's own namespace path: plain characters, allowed by one of ``patterns`` (fnmatch), and never
    PID 1's or this process's network namespace (the host's own)."""
    path = os.path.normpath(path)
    if not iproute.valid_netns_path(path):
        raise ValueError('endpoint %r: netns_path %r must be an absolute path without spaces, quotes or "#"'
                         % (name, path))
    if not any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
        raise ValueError('endpoint %r: netns_path %s is not allowed by netns_paths (%s)'
                         % (name, path, ', '.join(patterns) or 'none allowed'))
    if path.startswith('/proc/1/') or _same_file(path, '/proc/1/ns/net'):
        raise ValueError("endpoint %r: netns_path %s is PID 1's network namespace" % (name, path))
    if _same_file(path, '/proc/self/ns/net'):
        raise ValueError("endpoint %r: netns_path %s is this host's own network namespace" % (name, path))
    return path


def _check_mtu(value, what):
    if value is None:
        return None
    if not 68 <= int(value) <= 65535:
        raise ValueError('%s %s out of range 68-65535' % (what, value))
    return int(value)


def _parse_workload_ip(name, value, gateway):
    if not str(value).strip():
        raise ValueError('endpoint %r: ip must not be empty' % name)
    text = str(value).strip()
    if '/' in text:
        text, _sep, plen = text.partition('/')
        if plen != '32':
            raise ValueError('endpoint %r: ip %s must be a single IPv4 address (/32), not a network' % (name, value))
    try:
        addr = iproute.parse_ip(text)
    except ValueError:
        raise ValueError('endpoint %r: invalid ip %r' % (name, value)) from None
    if addr.version != 4:
        raise ValueError('endpoint %r: ip %s must be IPv4' % (name, value))
    if addr == gateway or addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr.is_link_local:
        raise ValueError('endpoint %r: ip %s cannot be used for a workload' % (name, value))
    return str(addr)


def _parse_workload_ip6(name, value):
    """One global IPv6 address (``/128`` accepted), in its canonical (compressed) spelling."""
    text = str(value).strip()
    if '/' in text:
        text, _sep, plen = text.partition('/')
        if plen != '128':
            raise ValueError('endpoint %r: ip6 %s must be a single IPv6 address (/128), not a network' % (name, value))
    try:
        addr = iproute.parse_ip(text)
    except ValueError:
        raise ValueError('endpoint %r: invalid ip6 %r' % (name, value)) from None
    if addr.version != 6:
        raise ValueError('endpoint %r: ip6 %s must be IPv6' % (name, value))
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr.is_link_local \
            or addr.ipv4_mapped is not None:
        raise ValueError('endpoint %r: ip6 %s cannot be used for a workload' % (name, value))
    return str(addr)
