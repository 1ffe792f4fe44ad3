# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab fabric's desired state: module lab_fabric's arguments read and checked whole (names, networks,
addresses, gateways, the spine, the management namespace), with the interface names every object gets."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re

IFNAMSIZ = 15
# lab names, shared by every lab module (\Z: '$' would let a trailing newline through)
PREFIX_RE = re.compile(r'[A-Za-z0-9_]{1,16}\Z')
NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z')
NETNS_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\Z')
KIND_BRIDGE = 'br-'
KIND_ROUTER = 'gw-'
KIND_HOST = 'h-'
KIND_SPINE = 's-'            # a reflector's port on the spine bridge
KIND_MGMT = 'mg-'            # the management namespace's leg on a segment (same name on both ends)
SPINE_BRIDGE = 'spine'       # no '-': never the name of a kind-prefixed interface
SPINE_ROUTER_PORT = 'rt-spine'


class LabError(Exception):
    """A one-line error for fail_json."""


def ifname(kind, name):
    """Interface name `<kind><name>`, or `<kind><sha1 of name>` when that exceeds IFNAMSIZ."""
    if len(kind) + len(name) <= IFNAMSIZ and re.fullmatch(r'[A-Za-z0-9_.-]+', name):
        return kind + name
    return kind + hashlib.sha1(name.encode()).hexdigest()[:IFNAMSIZ - len(kind)]


class Spec:
    """Validated desired state."""

    def __init__(self, params, state):
        self.prefix = params['prefix']
        if not PREFIX_RE.match(self.prefix or ''):
            raise LabError(f"prefix {self.prefix!r} is invalid: use 1-16 letters, digits or underscores "
                           "(no '-', which separates the lab's namespace names)")
        self.fabric = f'{self.prefix}-fabric'
        self.router = f'{self.prefix}-router'
        self.mgmt_netns = f'{self.prefix}-mgmt'
        state_dir = params['state_dir'] or ''
        norm = os.path.normpath(state_dir)
        if not os.path.isabs(norm) or self.prefix not in os.path.basename(norm) or norm.count('/') < 2:
            raise LabError(f"state_dir {state_dir!r} must be an absolute path below a top-level directory whose last "
                           f"component contains the prefix {self.prefix!r} (e.g. /run/netfleet/{self.prefix})")
        self.state_dir = norm
        gc = params['neigh_gc_thresh']
        if len(gc) != 3 or any(v < 1 for v in gc):
            raise LabError('neigh_gc_thresh must be three positive integers (gc_thresh1, gc_thresh2, gc_thresh3)')
        self.gc_thresh = list(gc)
        self.segments = {}
        self.hosts = {}
        self.spine = None
        self.router_wanted = True
        self.router_routes = []
        self.mgmt = None          # {segment: {'address', 'port', 'bridge'}}: the controller's legs (SSH labs)
        if state == 'present':
            self._segments(params['segments'])
            self._spine(params.get('spine'))
            self._hosts(params['hosts'])
            self._gateways()
            self._mgmt(params.get('mgmt'))
            self._check_names()

    def _segments(self, segments):
        for seg in segments:
            name = seg['name']
            if not NAME_RE.match(name):
                raise LabError(f'segment {name!r}: name must be letters, digits, ".", "_" or "-"')
            if name in self.segments:
                raise LabError(f'segment {name!r} is listed twice')
            try:
                net = ipaddress.IPv4Network(seg['cidr'], strict=True)
            except ValueError as ex:
                raise LabError(f"segment {name!r}: cidr {seg['cidr']!r} is not an IPv4 network ({ex})") from None
            if net.prefixlen > 30:
                raise LabError(f'segment {name!r}: {net} is too small for a gateway and hosts (use /30 or shorter)')
            if seg.get('gateway'):
                gw = self._address(f'segment {name!r}: gateway', seg['gateway'], net)
            else:
                gw = ipaddress.IPv4Interface(f'{net.network_address + 1}/{net.prefixlen}')
            for other, data in self.segments.items():
                if data['cidr'].overlaps(net):
                    raise LabError(f"segments {other!r} ({data['cidr']}) and {name!r} ({net}) overlap")
            self.segments[name] = {
                'cidr': net, 'gateway': gw, 'router': seg.get('router') is not False,
                'bridge': ifname(KIND_BRIDGE, name), 'router_port': ifname(KIND_ROUTER, name),
            }

    def _spine(self, spine):
        """The spine segment (optional): a bridge joining the reflectors' eth1, plus a router leg if a router exists."""
        routed = [name for name, seg in self.segments.items() if not seg['router']]
        if not spine or not spine.get('cidr'):
            if routed:
                raise LabError(f'segment {routed[0]!r}: router: false (a reflector is its gateway) needs the spine '
                               'option')
            return
        try:
            net = ipaddress.IPv4Network(spine['cidr'], strict=True)
        except ValueError as ex:
            raise LabError(f"spine: cidr {spine['cidr']!r} is not an IPv4 network ({ex})") from None
        if net.prefixlen > 30:
            raise LabError(f'spine: {net} is too small for a gateway and reflectors (use /30 or shorter)')
        for other, data in self.segments.items():
            if data['cidr'].overlaps(net):
                raise LabError(f"segment {other!r} ({data['cidr']}) and the spine ({net}) overlap")
        if spine.get('gateway'):
            gw = self._address('spine: gateway', spine['gateway'], net)
        else:
            gw = ipaddress.IPv4Interface(f'{net.network_address + 1}/{net.prefixlen}')
        # with a spine, the router exists only if some segment is routed by it
        self.router_wanted = len(routed) < len(self.segments)
        self.spine = {'cidr': net, 'gateway': gw, 'bridge': SPINE_BRIDGE, 'router_port': SPINE_ROUTER_PORT,
                      'routers': {}}
        # spine routers (the inventory's calico_spines): namespaces with one leg (eth1) on the spine only
        for router in spine.get('routers') or []:
            name = router['name']
            if not NAME_RE.match(name):
                raise LabError(f'spine router {name!r}: name must be letters, digits, ".", "_" or "-"')
            if name in self.spine['routers']:
                raise LabError(f'spine router {name!r} is listed twice')
            addr = self._address(f'spine router {name!r}: address', router['address'], net)
            if self.router_wanted and addr.ip == gw.ip:
                raise LabError(f"spine router {name!r}: address {addr.ip} is the spine's gateway (the router's leg)")
            taken = {r['address'].ip: other for other, r in self.spine['routers'].items()}
            if addr.ip in taken:
                raise LabError(f'spine routers {taken[addr.ip]!r} and {name!r} share the address {addr.ip}')
            netns = router.get('netns') or f'{self.prefix}-{name}'
            if not NETNS_RE.match(netns) or not netns.startswith(self.prefix + '-'):
                raise LabError(f"spine router {name!r}: netns {netns!r} must be a valid name starting with "
                               f"'{self.prefix}-'")
            self.spine['routers'][name] = {'netns': netns, 'address': addr, 'spine_port': ifname(KIND_SPINE, name),
                                           'address6': router.get('address6')}

    @staticmethod
    def _address(what, text, net):
        text = str(text).strip()
        try:
            iface = ipaddress.IPv4Interface(text)
        except ValueError as ex:
            raise LabError(f'{what} {text!r} is not an IPv4 address ({ex})') from None
        if '/' in text and iface.network.prefixlen != net.prefixlen:
            raise LabError(f'{what} {text} has a different prefix length than its segment {net}')
        if iface.ip not in net:
            raise LabError(f'{what} {iface.ip} is outside its segment {net}')
        if iface.ip in (net.network_address, net.broadcast_address):
            raise LabError(f"{what} {iface.ip} is the segment's network or broadcast address ({net})")
        return ipaddress.IPv4Interface(f'{iface.ip}/{net.prefixlen}')

    @staticmethod
    def _address6(what, text, taken, name):
        """A host's IPv6 address (dual stack) as an interface, /64 unless given; unique in the lab."""
        if not text:
            return None
        text = str(text).strip()
        try:
            iface = ipaddress.IPv6Interface(text if '/' in text else f'{text}/64')
        except ValueError as ex:
            raise LabError(f'{what} {text!r} is not an IPv6 address ({ex})') from None
        if iface.ip.is_link_local or iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
            raise LabError(f'{what} {iface.ip} is not a unicast address a segment can carry')
        if iface.ip in taken:
            raise LabError(f'hosts {taken[iface.ip]!r} and {name!r} share the IPv6 address {iface.ip}')
        taken[iface.ip] = name
        return iface

    def _hosts(self, hosts):
        addresses, spine_addresses, netnses, addresses6 = {}, {}, {}, {}
        for name, router in (self.spine or {}).get('routers', {}).items():
            spine_addresses[router['address'].ip] = name
            netnses[router['netns']] = name
            router['address6'] = self._address6(f'spine router {name!r}: address6', router['address6'], addresses6,
                                                name)
        for host in hosts:
            name = host['name']
            if not NAME_RE.match(name):
                raise LabError(f'host {name!r}: name must be letters, digits, ".", "_" or "-"')
            if name in self.hosts:
                raise LabError(f'host {name!r} is listed twice')
            seg = host['segment']
            if seg not in self.segments:
                raise LabError(f"host {name!r}: segment {seg!r} is not defined "
                               f"(segments: {', '.join(self.segments) or 'none'})")
            segment = self.segments[seg]
            addr = self._address(f'host {name!r}: address', host['address'], segment['cidr'])
            if segment['router'] and addr.ip == segment['gateway'].ip:
                raise LabError(f"host {name!r}: address {addr.ip} is segment {seg!r}'s gateway")
            if addr.ip in addresses:
                raise LabError(f'hosts {addresses[addr.ip]!r} and {name!r} share the address {addr.ip}')
            addresses[addr.ip] = name
            spine_addr = None
            if host.get('spine_address'):
                if self.spine is None:
                    raise LabError(f"host {name!r}: spine_address needs the spine option")
                spine_addr = self._address(f'host {name!r}: spine_address', host['spine_address'], self.spine['cidr'])
                if self.router_wanted and spine_addr.ip == self.spine['gateway'].ip:
                    raise LabError(f"host {name!r}: spine_address {spine_addr.ip} is the spine's gateway (the router's "
                                   'leg); pick another address')
                if spine_addr.ip in spine_addresses:
                    raise LabError(f'hosts {spine_addresses[spine_addr.ip]!r} and {name!r} share the spine address '
                                   f'{spine_addr.ip}')
                spine_addresses[spine_addr.ip] = name
            netns = host.get('netns') or f'{self.prefix}-{name}'
            if not NETNS_RE.match(netns):
                raise LabError(f'host {name!r}: netns {netns!r} is not a valid namespace name')
            if not netns.startswith(self.prefix + '-'):
                raise LabError(f"host {name!r}: netns {netns!r} must start with '{self.prefix}-' "
                               '(state=absent removes only the prefix\'s namespaces)')
            if netns in (self.fabric, self.router, self.mgmt_netns):
                raise LabError(f"host {name!r}: netns {netns!r} is reserved for the lab's fabric/router/management")
            if netns in netnses:
                raise LabError(f'hosts {netnses[netns]!r} and {name!r} share the netns {netns!r}')
            netnses[netns] = name
            address6 = self._address6(f'host {name!r}: address6', host.get('address6'), addresses6, name)
            spine6 = self._address6(f'host {name!r}: spine_address6', host.get('spine_address6'), addresses6, name)
            if spine6 and not spine_addr:
                raise LabError(f"host {name!r}: spine_address6 needs spine_address")
            self.hosts[name] = {
                'netns': netns, 'address': addr, 'segment': seg, 'address6': address6, 'spine_address6': spine6,
                'gateway': segment['gateway'].ip, 'gateway_dev': 'eth0',
                'bridge': segment['bridge'], 'fabric_port': ifname(KIND_HOST, name),
                'spine_address': spine_addr, 'spine_port': ifname(KIND_SPINE, name) if spine_addr else None,
                'routes': [],
            }

    def _gateways(self):
        """A segment the router does not serve has one of its reflectors (a host with a spine leg) as gateway.
        Reflectors reach those segments over the spine, and everything else by the router, if there is one."""
        via = {}  # segment not served by the router -> spine address of its gateway reflector
        for name, seg in self.segments.items():
            if seg['router']:
                continue
            gate = next((h for h in self.hosts.values()
                         if h['segment'] == name and h['spine_address'] and h['address'].ip == seg['gateway'].ip), None)
            if gate is None:
                raise LabError(f"segment {name!r}: gateway {seg['gateway'].ip} is not the address of one of its hosts "
                               'with a spine_address (router: false makes a reflector the gateway)')
            via[name] = gate['spine_address'].ip
        routes = {name: (str(self.segments[name]['cidr']), str(ip)) for name, ip in via.items()}
        order = sorted(routes, key=lambda name: self.segments[name]['cidr'])
        for host in self.hosts.values():
            if not host['spine_address']:
                continue
            host['gateway'] = self.spine['gateway'].ip if self.router_wanted else None
            host['gateway_dev'] = 'eth1'
            host['routes'] = [(*routes[name], 'eth1') for name in order if name != host['segment']]
        self.router_routes = [(*routes[name], SPINE_ROUTER_PORT) for name in order]

    def _mgmt(self, mgmt):
        """The management namespace (SSH labs): one leg on each listed segment's bridge, with an address of that
        segment, so a controller running inside it reaches every host on its own segment directly. No default
        route and no forwarding: it is an end host, never a path between racks."""
        if not mgmt:
            return
        legs = mgmt.get('legs') or []
        if not legs:
            raise LabError('mgmt: legs is empty; give at least one {segment, address} (or drop the mgmt option)')
        taken = {h['address'].ip: f"host {name!r}" for name, h in self.hosts.items()}
        taken.update({s['gateway'].ip: f"segment {name!r}'s gateway" for name, s in self.segments.items()
                      if s['router'] and self.router_wanted})
        self.mgmt = {}
        for leg in legs:
            seg = leg['segment']
            if seg not in self.segments:
                raise LabError(f"mgmt: segment {seg!r} is not defined (segments: {', '.join(self.segments) or 'none'})")
            if seg in self.mgmt:
                raise LabError(f'mgmt: segment {seg!r} has two legs')
            segment = self.segments[seg]
            addr = self._address(f'mgmt: address on segment {seg!r}', leg['address'], segment['cidr'])
            if addr.ip in taken:
                raise LabError(f'mgmt: address {addr.ip} on segment {seg!r} is already {taken[addr.ip]}\'s; '
                               'pick a free address of the segment')
            self.mgmt[seg] = {'address': addr, 'port': ifname(KIND_MGMT, seg), 'bridge': segment['bridge']}
        if mgmt.get('spine_address'):
            self._mgmt_spine(mgmt['spine_address'], taken)

    def _mgmt_spine(self, address, taken):
        """A management leg on the spine too (spine routers that are SSH machines): keyed by the spine bridge's
        name, which a segment of that name must not also claim."""
        if self.spine is None:
            raise LabError('mgmt: spine_address needs the spine option')
        if SPINE_BRIDGE in self.mgmt:
            raise LabError(f'mgmt: segment {SPINE_BRIDGE!r} has a leg and so has the spine; rename the segment')
        taken = dict(taken)
        taken.update({h['spine_address'].ip: f"host {name!r}" for name, h in self.hosts.items() if h['spine_address']})
        taken.update({r['address'].ip: f"spine router {name!r}" for name, r in self.spine_routers().items()})
        if self.router_wanted:
            taken[self.spine['gateway'].ip] = "the spine's gateway"
        addr = self._address('mgmt: spine_address', address, self.spine['cidr'])
        if addr.ip in taken:
            raise LabError(f'mgmt: spine_address {addr.ip} is already {taken[addr.ip]}\'s; pick a free address of '
                           'the spine')
        self.mgmt[SPINE_BRIDGE] = {'address': addr, 'port': ifname(KIND_MGMT, SPINE_BRIDGE),
                                   'bridge': self.spine['bridge']}

    def _check_names(self):
        seen = {}
        spine = {'spine': self.spine} if self.spine else {}
        for kind, names, keys in (('segment', self.segments, ('bridge', 'router_port')),
                                  ('spine', spine, ('bridge', 'router_port')),
                                  ('host', self.hosts, ('fabric_port', 'spine_port')),
                                  ('spine router', self.spine_routers(), ('spine_port',)),
                                  ('mgmt leg', self.mgmt or {}, ('port',))):
            for name, data in names.items():
                for key in keys:
                    port = data[key]
                    if port is None:
                        continue
                    if port in seen and seen[port] != (kind, name):
                        raise LabError(f'{kind} {name!r} and {seen[port][0]} {seen[port][1]!r} map to the same '
                                       f'interface name {port!r}; rename one of them')
                    seen[port] = (kind, name)

    def spine_routers(self):
        return self.spine['routers'] if self.spine else {}

    def namespaces(self):
        return ([self.fabric] + ([self.router] if self.router_wanted else [])
                + ([self.mgmt_netns] if self.mgmt else []) + [h['netns'] for h in self.hosts.values()]
                + [r['netns'] for r in self.spine_routers().values()])

    def mgmt_result(self):
        if not self.mgmt:
            return None
        return {'netns': self.mgmt_netns,
                'legs': {seg: {'address': str(leg['address']), 'port': leg['port'], 'bridge': leg['bridge']}
                         for seg, leg in self.mgmt.items()}}

    def result(self):
        segments = {
            name: {'cidr': str(s['cidr']), 'gateway': str(s['gateway']), 'bridge': s['bridge'],
                   'router_port': s['router_port'] if s['router'] and self.router_wanted else None,
                   'router': s['router']}
            for name, s in self.segments.items()
        }
        hosts = {}
        for name, h in self.hosts.items():
            hosts[name] = {'netns': h['netns'], 'address': str(h['address']),
                           'gateway': None if h['gateway'] is None else str(h['gateway']),
                           'segment': h['segment'], 'bridge': h['bridge'], 'fabric_port': h['fabric_port']}
            if h['address6']:
                hosts[name]['address6'] = str(h['address6'])
            if h['spine_address']:
                hosts[name].update(spine_address=str(h['spine_address']), spine_port=h['spine_port'],
                                   routes=[f'{cidr} via {gw} dev {dev}' for cidr, gw, dev in h['routes']])
                if h['spine_address6']:
                    hosts[name]['spine_address6'] = str(h['spine_address6'])
        spine = None
        if self.spine:
            spine = {'cidr': str(self.spine['cidr']), 'gateway': str(self.spine['gateway']) if self.router_wanted
                     else None, 'bridge': self.spine['bridge'],
                     'router_port': self.spine['router_port'] if self.router_wanted else None}
            if self.spine['routers']:
                spine['routers'] = {name: {'netns': r['netns'], 'address': str(r['address']),
                                           'spine_port': r['spine_port'],
                                           **({'address6': str(r['address6'])} if r['address6'] else {})}
                                    for name, r in self.spine['routers'].items()}
        return segments, hosts, spine
