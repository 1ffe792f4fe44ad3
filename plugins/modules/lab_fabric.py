#!/usr/bin/python
# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build or destroy the netfleet.calico lab: network namespaces wired by Linux bridges."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_fabric
short_description: Build or destroy the lab's network-namespace fabric
version_added: 0.1.0
description:
  - Reconciles the wiring of the netfleet.calico lab on the machine that runs it (the controller, as root);
    every lab host is a Linux network namespace, every rack segment a Linux bridge (design section 4).
  - With O(state=present) it creates a fabric namespace C(<prefix>-fabric) holding one bridge per segment
    (the L2 switches; no bridge lives in the root namespace), a router namespace C(<prefix>-router) with one leg
    per segment carrying the segment's gateway address and C(net.ipv4.ip_forward=1) (it knows only its
    connected routes, so it forwards host addresses and nothing of the container routes), and per host a
    namespace with C(lo) up, C(eth0) (a veth whose peer is a port of the segment's bridge) carrying the host's
    address, and C(default via <segment gateway>) (proxy-ARP for 169.254.1.1 needs a default route).
  - "Racks with route reflectors (design section 4): with O(spine), a bridge C(spine) joins the hosts that have a
    O(hosts[].spine_address) (the reflectors) on their C(eth1). A segment with O(segments[].router=false) gets no
    router leg: its O(segments[].gateway) must be the address of one of its hosts with a spine address, the rack's
    gateway (ToR). Each such reflector has C(default via) the router's spine leg (O(spine.gateway)) if there is a
    router, else no default route, and a C(proto static) route to every other reflector-gated segment via that
    segment's gateway reflector's spine address; the router has the same routes on its spine leg. The router
    namespace exists only if some segment has O(segments[].router=true) (always without O(spine)); one no longer
    needed is deleted. The lab sets no sysctl on reflectors: forwarding is the route_reflector role's job."
  - Wiring in the fabric and router namespaces is owned entirely by this module, so anything there that the spec
    does not describe (a removed host's port, a removed segment's bridge, a route added by hand to the router)
    is deleted. In a host namespace only C(lo), C(eth0), the IPv4 addresses of C(eth0) and the default route are
    managed (on a reflector also C(eth1), its addresses and the C(proto static) routes); workload interfaces,
    BIRD routes and everything else the roles add are left alone. A host removed from the spec is unplugged (its
    fabric ports, C(eth0) and C(eth1), go) but its namespace stays until O(state=absent).
  - It raises C(net.ipv4.neigh.default.gc_thresh1/2/3) in the root namespace (the neighbour table is shared by
    all namespaces and overflows at the default 1024 entries once a lab has about 35 hosts in full mesh); it
    only ever raises them. Nothing else is created in the root namespace (no interface, address or route).
  - Changes are applied with one C(ip -batch) per namespace that needs a change (plus one for creating and
    deleting namespaces), then read back; a lab that does not converge is a failure.
  - It needs root with C(CAP_SYS_ADMIN) and C(CAP_NET_ADMIN); without them it fails with one line saying to run it
    as root, before anything is created.
  - With O(state=absent) it stops every daemon whose pid file is under O(state_dir) (only if the process's
    command line names that pid file or O(state_dir); C(SIGTERM), then C(SIGKILL) after O(stop_timeout)), then
    any process still running inside one of the lab's namespaces, deletes every namespace whose name starts
    with C(<prefix>-) (hosts, workload namespaces C(<prefix>-<host>-<workload>), fabric, router) and removes
    O(state_dir).
author: netfleet.calico developers (!UNKNOWN)
options:
  prefix:
    description:
      - Short name of this lab run; every namespace of the lab is named C(<prefix>-...).
      - 1 to 16 letters, digits or underscores. C(-) is not allowed, so that one lab's prefix is never the start
        of another lab's namespace names.
    type: str
    required: true
  state:
    description:
      - V(present) builds or repairs the lab; V(absent) stops its daemons and deletes it.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description:
      - Directory of the lab's run-time files (BIRD configs, sockets, pid files), for example C(/run/netfleet/<prefix>).
        Created with O(state=present), removed with O(state=absent).
      - Must be absolute and its last component must contain O(prefix), so that O(state=absent) can never remove
        an unrelated directory.
    type: path
    required: true
  segments:
    description:
      - The lab's L2 segments (one per rack). Each becomes a bridge in the fabric namespace and a router leg.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Segment name (letters, digits, C(.), C(_), C(-)); usually the rack group's name.
        type: str
        required: true
      cidr:
        description: IPv4 network of the segment, for example C(192.168.100.0/24) (prefix length 30 or shorter).
        type: str
        required: true
      gateway:
        description:
          - Address of the router's leg on this segment and the hosts' default gateway, with or without the
            prefix length. Defaults to the first usable address (C(192.168.100.1) for C(192.168.100.0/24)).
          - With O(segments[].router=false), the address of the segment's reflector that is its gateway.
        type: str
      router:
        description:
          - Whether the router has a leg on this segment. V(false) (needs O(spine)) makes a reflector of the segment
            its gateway.
        type: bool
        default: true
  spine:
    description:
      - The spine segment joining the route reflectors (a bridge C(spine) in the fabric namespace). Ignored with
        O(state=absent).
    type: dict
    suboptions:
      cidr:
        description: IPv4 network of the spine, for example C(10.255.0.0/24); must not overlap a segment.
        type: str
        required: true
      gateway:
        description:
          - Address of the router's leg on the spine (when there is a router); the reflectors' default gateway.
            Defaults to the first usable address.
        type: str
  hosts:
    description:
      - The lab's hosts. Each becomes a namespace plugged into its segment's bridge.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory hostname (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      netns:
        description:
          - Namespace of the host (what the P(netfleet.calico.netns#connection) connection enters); must start
            with C(<prefix>-) and must not be the fabric's or router's name.
          - Defaults to C(<prefix>-<name>).
        type: str
      address:
        description:
          - IPv4 address of the host's C(eth0) (its C(calico_node_ip)), with or without the segment's prefix length.
        type: str
        required: true
      segment:
        description: Name of the host's segment (one of O(segments)).
        type: str
        required: true
      spine_address:
        description:
          - A route reflector's address on the spine (its C(eth1)), with or without the spine's prefix length.
            Needs O(spine).
        type: str
  mgmt:
    description:
      - "The management namespace C(<prefix>-mgmt) of an SSH lab (C(lab_ssh: true)): the controller's place in the
        lab. It gets one leg per listed segment, a veth C(mg-<segment>) (same name on both ends) whose fabric end is a
        port of the segment's bridge, carrying O(mgmt.legs[].address). Run C(ansible-playbook) inside it
        (C(ip netns exec <prefix>-mgmt ansible-playbook ...)) and the standard C(ssh) connection reaches every host's
        fabric address directly on its segment, while the root namespace holds none of the lab's addresses or routes."
      - It has no default route and no forwarding, so it never joins two racks. Without O(mgmt), a management
        namespace left by an earlier run is deleted. Ignored with O(state=absent) (the namespace goes with the lab).
    type: dict
    suboptions:
      legs:
        description: One leg per segment.
        type: list
        elements: dict
        required: true
        suboptions:
          segment:
            description: A segment of O(segments).
            type: str
            required: true
          address:
            description:
              - The leg's address on that segment (with or without the prefix length); not a host's address nor
                the router's gateway.
            type: str
            required: true
  neigh_gc_thresh:
    description:
      - Minimum values of C(net.ipv4.neigh.default.gc_thresh1), C(gc_thresh2) and C(gc_thresh3) in the root
        namespace. Values already higher are kept.
    type: list
    elements: int
    default: [4096, 16384, 32768]
  stop_timeout:
    description: Seconds to wait for a daemon to exit after C(SIGTERM) before sending C(SIGKILL) (O(state=absent)).
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Reports what would be created or removed, and the commands, without running them.
  diff_mode:
    support: full
    description: Shows the lab's wiring (per namespace) before and after.
notes:
  - Needs root and iproute2 on the machine it runs on; run it on C(localhost) with C(connection=local).
  - Interface names in the fabric and router namespaces are C(br-<segment>) (bridge), C(gw-<segment>) (router leg,
    same name on both ends), C(h-<host>) (host port), C(spine) (spine bridge), C(rt-spine) (router leg on the
    spine), C(s-<host>) (a reflector's spine port) and C(mg-<segment>) (the management leg, same name on both
    ends); a name longer than 15 characters is replaced by the kind
    and a hash of the name. The fabric port's alias (C(ip link show)) names its host's namespace.
seealso:
  - plugin: netfleet.calico.netns
    plugin_type: connection
"""

EXAMPLES = r"""
- name: Build the lab of the article's picture
  netfleet.calico.lab_fabric:
    prefix: nf
    state_dir: /run/netfleet/nf
    segments:
      - {name: rack1, cidr: 192.168.100.0/24}
      - {name: rack2, cidr: 192.168.200.0/24, gateway: 192.168.200.254}
    hosts:
      - {name: host-a, netns: nf-host-a, address: 192.168.100.100, segment: rack1}
      - {name: host-b, netns: nf-host-b, address: 192.168.100.101, segment: rack1}
      - {name: host-c, netns: nf-host-c, address: 192.168.200.101, segment: rack2}

- name: Racks whose route reflectors are their gateways, joined by a spine (no router namespace)
  netfleet.calico.lab_fabric:
    prefix: rr
    state_dir: /run/netfleet/rr
    spine: {cidr: 10.255.0.0/24}
    segments:
      - {name: rack1, cidr: 192.168.101.0/24, gateway: 192.168.101.1, router: false}
      - {name: rack2, cidr: 192.168.102.0/24, gateway: 192.168.102.1, router: false}
    hosts:
      - {name: rr1, address: 192.168.101.1, segment: rack1, spine_address: 10.255.0.11}
      - {name: r1h1, address: 192.168.101.11, segment: rack1}
      - {name: rr2, address: 192.168.102.1, segment: rack2, spine_address: 10.255.0.21}
      - {name: r2h1, address: 192.168.102.11, segment: rack2}

- name: An SSH lab - the controller's namespace nf-mgmt with a leg on rack1 (then run lab_sshd)
  netfleet.calico.lab_fabric:
    prefix: nf
    state_dir: /run/netfleet/nf
    segments: [{name: rack1, cidr: 192.168.100.0/24}]
    hosts: [{name: host-a, address: 192.168.100.100, segment: rack1}]
    mgmt: {legs: [{segment: rack1, address: 192.168.100.254}]}

- name: Destroy it (daemons by pid file, every nf-* namespace, the state directory)
  netfleet.calico.lab_fabric:
    prefix: nf
    state: absent
    state_dir: /run/netfleet/nf
"""

RETURN = r"""
created:
  description: Objects created (or that would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["netns nf-host-a", "bridge nf-fabric/br-rack1", "veth nf-fabric/h-host-a <-> nf-host-a/eth0",
           "address nf-host-a/eth0 192.168.100.100/24", "route nf-host-a default via 192.168.100.1 dev eth0"]
removed:
  description: Objects removed (or that would be), one line each.
  returned: always
  type: list
  elements: str
  sample: ["link nf-fabric/h-host-z", "netns nf-host-a", "directory /run/netfleet/nf"]
updated:
  description: Objects changed in place (link set up, port moved to another bridge, sysctl raised).
  returned: always
  type: list
  elements: str
  sample: ["sysctl net.ipv4.neigh.default.gc_thresh3 1024 -> 32768", "link nf-host-a/lo up"]
killed:
  description: Processes stopped by O(state=absent).
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    reason:
      description: C(pidfile) (named by a pid file under O(state_dir)) or C(netns) (still inside a lab namespace).
      type: str
    pidfile:
      description: The pid file, for RV(killed[].reason=pidfile).
      type: str
    netns:
      description: The namespace it ran in, for RV(killed[].reason=netns).
      type: str
    cmdline:
      description: Its command line.
      type: str
    signal:
      description: Last signal sent, C(TERM) or C(KILL) (nothing is sent in check mode).
      type: str
  sample: [{pid: 4242, reason: pidfile, pidfile: /run/netfleet/nf/host-a/bird.pid,
            cmdline: "bird -c /run/netfleet/nf/host-a/bird.conf -P /run/netfleet/nf/host-a/bird.pid", signal: TERM}]
commands:
  description:
    - The C(ip -batch) inputs run (or that would be, in check mode), in order, as C({netns, lines}); C(netns) is null
      for the root namespace (creating and deleting namespaces only).
    - Setting C(ip_forward) in the router is the one C({netns, exec}) entry (C(ip netns exec NETNS EXEC...)).
  returned: always
  type: list
  elements: dict
  sample: [{netns: null, lines: ["netns add nf-fabric"]}, {netns: nf-fabric, lines: ["link add br-rack1 type bridge"]}]
namespaces:
  description: The lab's namespaces after the run (fabric, router, management, hosts); empty after O(state=absent).
  returned: always
  type: list
  elements: str
  sample: [nf-fabric, nf-router, nf-host-a, nf-host-b]
fabric_netns:
  description: Name of the fabric namespace (the bridges).
  returned: always
  type: str
  sample: nf-fabric
router_netns:
  description: Name of the router namespace; null when the lab has none (every segment's gateway is a reflector).
  returned: always
  type: str
  sample: nf-router
segments:
  description: The segments as built, by name.
  returned: when O(state=present)
  type: dict
  sample: {rack1: {cidr: 192.168.100.0/24, gateway: 192.168.100.1/24, bridge: br-rack1, router_port: gw-rack1,
                   router: true}}
mgmt_netns:
  description: Name of the management namespace; null without O(mgmt).
  returned: always
  type: str
  sample: nf-mgmt
mgmt:
  description: The management namespace as built (C(netns), C(legs) by segment), or null without O(mgmt).
  returned: when O(state=present)
  type: dict
  sample: {netns: nf-mgmt, legs: {rack1: {address: 192.168.100.254/24, port: mg-rack1, bridge: br-rack1}}}
spine:
  description: The spine as built (C(gateway) and C(router_port) null without a router), or null without O(spine).
  returned: when O(state=present)
  type: dict
  sample: {cidr: 10.255.0.0/24, gateway: null, bridge: spine, router_port: null}
hosts:
  description: The hosts as built, by name.
  returned: when O(state=present)
  type: dict
  sample: {host-a: {netns: nf-host-a, address: 192.168.100.100/24, gateway: 192.168.100.1, segment: rack1,
                    bridge: br-rack1, fabric_port: h-host-a},
           rr2: {netns: nf-rr2, address: 192.168.102.1/24, gateway: null, segment: rack2, bridge: br-rack2,
                 fabric_port: h-rr2, spine_address: 10.255.0.21/24, spine_port: s-rr2,
                 routes: ["192.168.101.0/24 via 10.255.0.11 dev eth1"]}}
"""

import concurrent.futures
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_pid

NETNS_RUN_DIR = '/run/netns'
GC_THRESH = '/proc/sys/net/ipv4/neigh/default/gc_thresh%d'
IFNAMSIZ = 15
PREFIX_RE = re.compile(r'^[A-Za-z0-9_]{1,16}$')
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')
NETNS_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$')
KIND_BRIDGE = 'br-'
KIND_ROUTER = 'gw-'
KIND_HOST = 'h-'
KIND_SPINE = 's-'            # a reflector's port on the spine bridge
KIND_MGMT = 'mg-'            # the management namespace's leg on a segment (same name on both ends)
SPINE_BRIDGE = 'spine'       # no '-': never the name of a kind-prefixed interface
SPINE_ROUTER_PORT = 'rt-spine'
ROUTE_PROTO = 'static'       # the lab's own routes on reflectors and the router (BIRD's are proto bird, ours 80)
FORWARD_CMD = 'echo 1 > /proc/sys/net/ipv4/ip_forward'  # a constant: no user data ever reaches a shell
WORKERS = 8  # namespaces read or configured at once (each is one short-lived `ip` process)


class LabError(Exception):
    """A one-line error for fail_json."""


# Capabilities `ip netns add` and the wiring need (linux/capability.h bit numbers).
NEEDED_CAPS = {'CAP_NET_ADMIN': 12, 'CAP_SYS_ADMIN': 21}
ROOT_FIX = 'run it as root with full capabilities: sudo ansible-playbook playbooks/lab_up.yml (not in a container ' \
           'or under setpriv/capsh that drops them)'


def missing_caps(status_path='/proc/self/status'):
    """Names of NEEDED_CAPS this process lacks (from CapEff); [] when it has them or cannot tell."""
    try:
        with open(status_path) as handle:
            line = next((ln for ln in handle if ln.startswith('CapEff:')), None)
    except OSError:
        return []
    if line is None:
        return []
    effective = int(line.split(':', 1)[1].strip(), 16)
    return sorted(name for name, bit in NEEDED_CAPS.items() if not effective & (1 << bit))


def check_privileges(euid=None, status_path='/proc/self/status'):
    """Raise LabError with one line unless this process is root with the capabilities namespaces need."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise LabError(f'lab_fabric needs root to create network namespaces (running as uid {euid}) — {ROOT_FIX}')
    lacking = missing_caps(status_path)
    if lacking:
        raise LabError(f'lab_fabric needs root with {" and ".join(NEEDED_CAPS)} to create network namespaces '
                       f'(this root process lacks {", ".join(lacking)}) — {ROOT_FIX}')


def ifname(kind, name):
    """Interface name `<kind><name>`, or `<kind><sha1 of name>` when that exceeds IFNAMSIZ."""
    if len(kind) + len(name) <= IFNAMSIZ and re.match(r'^[A-Za-z0-9_.-]+$', name):
        return kind + name
    return kind + hashlib.sha1(name.encode()).hexdigest()[:IFNAMSIZ - len(kind)]


# --------------------------------------------------------------------------------------------- spec


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
        self.spine = {'cidr': net, 'gateway': gw, 'bridge': SPINE_BRIDGE, 'router_port': SPINE_ROUTER_PORT}

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

    def _hosts(self, hosts):
        addresses, spine_addresses, netnses = {}, {}, {}
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
            self.hosts[name] = {
                'netns': netns, 'address': addr, 'segment': seg,
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

    def _check_names(self):
        seen = {}
        spine = {'spine': self.spine} if self.spine else {}
        for kind, names, keys in (('segment', self.segments, ('bridge', 'router_port')),
                                  ('spine', spine, ('bridge', 'router_port')),
                                  ('host', self.hosts, ('fabric_port', 'spine_port')),
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

    def namespaces(self):
        return ([self.fabric] + ([self.router] if self.router_wanted else [])
                + ([self.mgmt_netns] if self.mgmt else []) + [h['netns'] for h in self.hosts.values()])

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
            if h['spine_address']:
                hosts[name].update(spine_address=str(h['spine_address']), spine_port=h['spine_port'],
                                   routes=[f'{cidr} via {gw} dev {dev}' for cidr, gw, dev in h['routes']])
        spine = None
        if self.spine:
            spine = {'cidr': str(self.spine['cidr']), 'gateway': str(self.spine['gateway']) if self.router_wanted
                     else None, 'bridge': self.spine['bridge'],
                     'router_port': self.spine['router_port'] if self.router_wanted else None}
        return segments, hosts, spine


# --------------------------------------------------------------------------------------------- observation


class NsState:
    """What one namespace holds, as `ip -j -d` reports it."""

    def __init__(self, name, addrs=(), routes=(), nsids=(), netconf=()):
        self.name = name
        self.links = {link['ifname']: link for link in addrs}
        self.by_index = {link['ifindex']: link for link in addrs}
        self.routes = list(routes)
        self.nsids = {e['nsid']: e.get('name') for e in nsids if 'nsid' in e}
        self.forwarding = any(c.get('family') == 'inet' and c.get('interface') == 'all' and c.get('forwarding')
                              for c in netconf)

    def kind(self, dev):
        return (self.links[dev].get('linkinfo') or {}).get('info_kind')

    def up(self, dev):
        return 'UP' in self.links[dev].get('flags', ())

    def inet(self, dev):
        return [f"{a['local']}/{a['prefixlen']}" for a in self.links[dev].get('addr_info', ())
                if a.get('family') == 'inet']

    def peer(self, dev):
        """(namespace name, ifindex) of a veth's peer, or None; the name is None unless nsids were read."""
        link = self.links.get(dev)
        if link is None or self.kind(dev) != 'veth' or 'link_index' not in link:
            return None
        if 'link_netnsid' in link:
            return self.nsids.get(link['link_netnsid']), link['link_index']
        return self.name, link['link_index']


class Lab:
    """Runs iproute2 for the module."""

    def __init__(self, module):
        self.module = module
        self.ip = module.get_bin_path('ip', required=True, opt_dirs=['/usr/sbin', '/sbin'])
        self.commands = []

    @staticmethod
    def list_netns():
        try:
            return sorted(os.listdir(NETNS_RUN_DIR))
        except FileNotFoundError:
            return []

    @staticmethod
    def _run(argv, data=None):
        """Run argv (never a shell); thread-safe, so namespaces can be handled in parallel."""
        proc = subprocess.run(argv, input=data, capture_output=True, text=True,
                              env=dict(os.environ, LC_ALL='C'), check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def read(self, netns, fabric=False, router=False):
        """One `ip -j -d -n NETNS -batch -` call: links with addresses, main routes (+ peer namespace ids in the
        fabric, where every veth peer is checked; + forwarding in the router)."""
        keys = ['addrs', 'routes'] + (['nsids'] if fabric else []) + (['netconf'] if router else [])
        lines = ['addr show', 'route show table main'] + (['netns list-id'] if fabric else []) \
            + (['netconf show'] if router else [])
        rc, out, err = self._run([self.ip, '-j', '-d', '-n', netns, '-batch', '-'], '\n'.join(lines) + '\n')
        if rc != 0:
            return None
        values, decoder, pos = [], json.JSONDecoder(), 0
        out = out.strip()
        try:
            while pos < len(out):
                value, pos = decoder.raw_decode(out, pos)
                values.append(value)
                while pos < len(out) and out[pos].isspace():
                    pos += 1
        except ValueError:
            return None
        if len(values) != len(lines):
            return None
        return NsState(netns, **dict(zip(keys, values)))

    def batch(self, netns, lines):
        """Run one `ip [-n NETNS] -batch -`; any failing line fails the module."""
        self.batches([(netns, lines)])

    def batches(self, jobs):
        """Run several `ip -n NETNS -batch -` (distinct namespaces, independent of each other) in parallel."""
        jobs = [(netns, list(lines)) for netns, lines in jobs if lines]
        self.commands.extend({'netns': netns, 'lines': lines} for netns, lines in jobs)
        if self.module.check_mode or not jobs:
            return

        def one(job):
            netns, lines = job
            argv = [self.ip] + (['-n', netns] if netns else []) + ['-batch', '-']
            return job, self._run(argv, '\n'.join(lines) + '\n')

        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = list(pool.map(one, jobs))
        for (netns, lines), (rc, out, err) in results:
            if rc != 0:
                where = f'namespace {netns}' if netns else 'the root namespace'
                raise LabError(f'ip -batch in {where} failed: {err.strip() or out.strip()} '
                               f'(lines: {"; ".join(lines)})')

    def exec_in(self, netns, argv):
        self.commands.append({'netns': netns, 'exec': list(argv)})
        if self.module.check_mode:
            return
        rc, out, err = self._run([self.ip, 'netns', 'exec', netns] + list(argv))
        if rc != 0:
            raise LabError(f'{" ".join(argv)} in namespace {netns} failed: {err.strip() or out.strip()}')


def observe(lab, spec):
    """Observed states of the spec's namespaces (plus a router the spec no longer wants, to remove it);
    None for a missing one, False for an unreadable one."""
    existing = set(lab.list_netns())
    wanted = spec.namespaces()
    if not spec.router_wanted and spec.router in existing:
        wanted = wanted + [spec.router]
    if not spec.mgmt and spec.mgmt_netns in existing:
        wanted = wanted + [spec.mgmt_netns]
    present = [ns for ns in wanted if ns in existing]
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        read = dict(zip(present, pool.map(
            lambda ns: lab.read(ns, fabric=(ns == spec.fabric), router=(ns == spec.router)), present)))
    states = {ns: (read[ns] or False) if ns in read else None for ns in wanted}
    return existing, states


def read_gc_thresh():
    values = []
    for i in (1, 2, 3):
        with open(GC_THRESH % i) as f:
            values.append(int(f.read().split()[0]))
    return values


# --------------------------------------------------------------------------------------------- describe (diff)


def _peer_name(states, ns_state, dev, fabric_ports):
    peer = ns_state.peer(dev)
    if peer is None:
        return '?'
    peer_ns, index = peer
    if peer_ns is None:  # a host or router end: look its pair up from the fabric side
        port = fabric_ports.get((ns_state.name, ns_state.links[dev]['ifindex']))
        if port and index == port[1]:
            return port[0]
    other = states.get(peer_ns)
    if other and index in other.by_index:
        return f"{peer_ns}/{other.by_index[index]['ifname']}"
    return f'{peer_ns or "?"}/#{index}'


def _updown(ns_state, dev):
    return 'up' if ns_state.up(dev) else 'down'


def _owned_route(route):
    """A route this module manages on a reflector or the router (dst, via, dev; tagged proto static)."""
    return (route.get('protocol') == ROUTE_PROTO and route.get('type', 'unicast') == 'unicast'
            and route.get('dst') not in (None, 'default'))


def describe_observed(spec, states, gc_thresh, state_dir_exists):
    """The lab's wiring as found, in the same words describe_desired uses."""
    fabric = states.get(spec.fabric) or None
    fabric_ports = {}  # (peer namespace, peer ifindex) -> ('<fabric>/<port>', port ifindex)
    for dev, link in (fabric.links.items() if fabric else ()):
        if fabric.peer(dev):
            fabric_ports[fabric.peer(dev)] = (f'{spec.fabric}/{dev}', link['ifindex'])
    out = {'root': [f'net.ipv4.neigh.default.gc_thresh{i + 1} {v}' for i, v in enumerate(gc_thresh)]}
    if state_dir_exists:
        out['root'].append(f'directory {spec.state_dir}')
    for ns, st in states.items():
        if st is None:
            continue
        if st is False:
            out[ns] = ['unreadable']
            continue
        lines = [f"lo {_updown(st, 'lo')}"] if 'lo' in st.links and ns != spec.fabric else []
        for dev in sorted(st.links):
            if dev == 'lo' or (ns not in (spec.fabric, spec.router, spec.mgmt_netns) and dev not in ('eth0', 'eth1')):
                continue
            kind = st.kind(dev) or 'device'
            if kind == 'veth':
                master = f" master {st.links[dev]['master']}" if st.links[dev].get('master') else ''
                peer = _peer_name(states, st, dev, fabric_ports)
                lines.append(f'veth {dev}{master} peer {peer} {_updown(st, dev)}')
            else:
                lines.append(f'{kind} {dev} {_updown(st, dev)}')
            lines.extend(f'address {dev} {a}' for a in st.inet(dev))
        if ns == spec.router:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('protocol') != 'kernel')
            lines.append(f'ip_forward {int(st.forwarding)}')
        elif ns == spec.mgmt_netns:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('protocol') != 'kernel')
        elif ns != spec.fabric:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('dst') == 'default' or _owned_route(r))
        out[ns] = lines
    return out


def describe_desired(spec, gc_thresh):
    """The lab's wiring as the spec wants it (compare describe_observed)."""
    out = {'root': [f'net.ipv4.neigh.default.gc_thresh{i + 1} {max(v, w)}'
                    for i, (v, w) in enumerate(zip(gc_thresh, spec.gc_thresh))] + [f'directory {spec.state_dir}']}
    fabric, router = [], []
    legs = [seg for seg in spec.segments.values() if seg['router']] + ([spec.spine] if spec.spine else [])
    for seg in spec.segments.values():
        fabric.append(f"bridge {seg['bridge']} up")
    if spec.spine:
        fabric.append(f"bridge {spec.spine['bridge']} up")
    if spec.router_wanted:
        for seg in legs:
            port = seg['router_port']
            fabric.append(f"veth {port} master {seg['bridge']} peer {spec.router}/{port} up")
            router.append((port, [f"veth {port} peer {spec.fabric}/{port} up", f"address {port} {seg['gateway']}"]))
    for host in spec.hosts.values():
        fabric.append(f"veth {host['fabric_port']} master {host['bridge']} peer {host['netns']}/eth0 up")
        lines = ['lo up', f"veth eth0 peer {spec.fabric}/{host['fabric_port']} up", f"address eth0 {host['address']}"]
        if host['spine_address']:
            fabric.append(f"veth {host['spine_port']} master {spec.spine['bridge']} peer {host['netns']}/eth1 up")
            lines += [f"veth eth1 peer {spec.fabric}/{host['spine_port']} up",
                      f"address eth1 {host['spine_address']}"]
        if host['gateway'] is not None:
            lines.append(f"route default via {host['gateway']} dev {host['gateway_dev']}")
        lines += [f'route {cidr} via {gw} dev {dev} proto {ROUTE_PROTO}' for cidr, gw, dev in host['routes']]
        out[host['netns']] = lines
    if spec.mgmt:
        mgmt = ['lo up']
        for leg in sorted(spec.mgmt.values(), key=lambda leg: leg['port']):
            fabric.append(f"veth {leg['port']} master {leg['bridge']} peer {spec.mgmt_netns}/{leg['port']} up")
            mgmt += [f"veth {leg['port']} peer {spec.fabric}/{leg['port']} up",
                     f"address {leg['port']} {leg['address']}"]
        out[spec.mgmt_netns] = mgmt
    out[spec.fabric] = sorted(fabric, key=lambda line: line.split()[1])
    if spec.router_wanted:
        out[spec.router] = (['lo up'] + [line for _unused, lines in sorted(router) for line in lines]
                            + [f'route {cidr} via {gw} dev {dev} proto {ROUTE_PROTO}'
                               for cidr, gw, dev in spec.router_routes]
                            + ['ip_forward 1'])
    return out


def _route_text(route):
    parts = [route.get('type', ''), route.get('dst', '')] if route.get('type', 'unicast') != 'unicast' \
        else [route.get('dst', '')]
    if route.get('gateway'):
        parts += ['via', route['gateway']]
    if route.get('dev'):
        parts += ['dev', route['dev']]
    if route.get('protocol'):
        parts += ['proto', route['protocol']]
    if route.get('metric'):
        parts += ['metric', str(route['metric'])]
    return ' '.join(p for p in parts if p)


# --------------------------------------------------------------------------------------------- plan (present)


class Plan:
    def __init__(self):
        self.root = []            # netns add/del in the root namespace
        self.pre = {}             # netns -> deletions, run before the fabric batch
        self.fabric = []          # fabric namespace: bridges, veth pairs (peers created in their namespaces)
        self.post = {}            # netns -> addresses, links up, routes
        self.root_late = []       # netns del of a router no longer needed (after its fabric legs are gone)
        self.forward = False      # set ip_forward in the router
        self.sysctls = {}         # root-namespace sysctl path -> value
        self.make_state_dir = False
        self.created, self.removed, self.updated = [], [], []

    def add(self, table, ns, line):
        table.setdefault(ns, []).append(line)

    @property
    def changed(self):
        return bool(self.created or self.removed or self.updated)


def _plan_routes(plan, st, wanted, gone):
    """Make the namespace's proto-static routes exactly `wanted` [(dst, via, dev)] (devices in `gone` vanish anyway)."""
    have = [r for r in st.routes if _owned_route(r) and r.get('dev') not in gone]
    keep = set()
    for route in have:
        key = (route.get('dst'), route.get('gateway'), route.get('dev'))
        if key in wanted and key not in keep and 'metric' not in route:
            keep.add(key)
            continue
        plan.add(plan.post, st.name, f'route del {_route_selector(route)}')
        plan.removed.append(f'route {st.name} {_route_text(route)}')
    for dst, via, dev in wanted:
        if (dst, via, dev) not in keep:
            plan.add(plan.post, st.name, f'route add {dst} via {via} dev {dev} proto {ROUTE_PROTO}')
            plan.created.append(f'route {st.name} {dst} via {via} dev {dev} proto {ROUTE_PROTO}')


def _plan_drop_links(plan, ns, state, keep, doomed, fresh):
    """Delete the links of namespace ``ns`` other than lo and ``keep`` (the router's and the management
    namespace's legs); return the devices that are gone or about to be recreated (their routes go with them)."""
    for name, link in sorted(state.links.items()):
        if name != 'lo' and name not in keep and (ns, link['ifindex']) not in doomed:
            plan.add(plan.pre, ns, f'link del {name}')
            plan.removed.append(f'link {ns}/{name}')
            doomed.add((ns, link['ifindex']))
    return {dev for dev, link in state.links.items() if (ns, link['ifindex']) in doomed or (ns, dev) in fresh}


def plan_present(spec, states, gc_now, state_dir_exists):
    plan = Plan()
    F, R = spec.fabric, spec.router

    for i, (now, want) in enumerate(zip(gc_now, spec.gc_thresh), start=1):
        if now < want:
            plan.sysctls[GC_THRESH % i] = want
            plan.updated.append(f'sysctl net.ipv4.neigh.default.gc_thresh{i} {now} -> {want}')
    if not state_dir_exists:
        plan.make_state_dir = True
        plan.created.append(f'directory {spec.state_dir}')

    st = {}
    for ns in spec.namespaces():
        if states[ns] is None:
            plan.root.append(f'netns add {ns}')
            plan.created.append(f'netns {ns}')
        elif states[ns] is False:
            plan.root += [f'netns del {ns}', f'netns add {ns}']
            plan.updated.append(f'netns {ns} (recreated: it could not be read)')
        st[ns] = states[ns] or NsState(ns, [{'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK']}])
    fab = st[F]
    if not spec.router_wanted and states.get(R) is not None:
        # every segment has a reflector as gateway now: the router goes, after its fabric legs (pass 1)
        plan.root_late.append(f'netns del {R}')
        plan.removed.append(f'netns {R}')
    M = spec.mgmt_netns
    if not spec.mgmt and states.get(M) is not None:
        # the lab no longer has a management namespace (lab_ssh turned off): it goes after its fabric legs
        plan.root_late.append(f'netns del {M}')
        plan.removed.append(f'netns {M}')

    # the fabric namespace's wanted links: name -> (kind, bridge it belongs to, peer namespace, peer name)
    want = {}
    for seg in spec.segments.values():
        want[seg['bridge']] = ('bridge', None, None, None)
        if spec.router_wanted and seg['router']:
            want[seg['router_port']] = ('veth', seg['bridge'], R, seg['router_port'])
    if spec.spine:
        want[spec.spine['bridge']] = ('bridge', None, None, None)
        if spec.router_wanted:
            want[spec.spine['router_port']] = ('veth', spec.spine['bridge'], R, spec.spine['router_port'])
    for leg in (spec.mgmt or {}).values():
        want[leg['port']] = ('veth', leg['bridge'], M, leg['port'])
    for host in spec.hosts.values():
        want[host['fabric_port']] = ('veth', host['bridge'], host['netns'], 'eth0')
        if host['spine_address']:
            want[host['spine_port']] = ('veth', spec.spine['bridge'], host['netns'], 'eth1')

    # pass 1: fabric links to delete (stale, wrong kind, or veths not paired with the right peer)
    doomed = set()        # (netns, ifindex) of links that vanish with the fabric deletions
    fresh = set()         # (netns, name) of veth ends (re)created by this run

    def paired(name, peer_ns, peer_name):
        other = st[peer_ns]
        if name not in fab.links or peer_name not in other.links:
            return False
        # the fabric end names its peer's namespace; the peer end's link_index closes the pair
        return (fab.peer(name) == (peer_ns, other.links[peer_name]['ifindex'])
                and other.kind(peer_name) == 'veth'
                and other.links[peer_name].get('link_index') == fab.links[name]['ifindex'])

    for name, link in sorted(fab.links.items()):
        if name == 'lo':
            continue
        wanted = want.get(name)
        ok = wanted is not None and fab.kind(name) == wanted[0]
        if ok and wanted[0] == 'veth':
            ok = paired(name, wanted[2], wanted[3])
        if not ok:
            plan.add(plan.pre, F, f'link del {name}')
            plan.removed.append(f'link {F}/{name}')
            doomed.add((F, link['ifindex']))
            if fab.peer(name):
                doomed.add(fab.peer(name))

    # pass 2: create what is missing in the fabric; clear the way in the peer namespaces
    for name, (kind, bridge, peer_ns, peer_name) in sorted(want.items(), key=lambda kv: kv[1][0] != 'bridge'):
        exists = name in fab.links and (F, fab.links[name]['ifindex']) not in doomed
        if kind == 'bridge':
            if not exists:
                plan.fabric += [f'link add {name} type bridge', f'link set {name} up']
                plan.created.append(f'bridge {F}/{name}')
            elif not fab.up(name):
                plan.fabric.append(f'link set {name} up')
                plan.updated.append(f'link {F}/{name} up')
            continue
        if not exists:
            other = st[peer_ns]
            if peer_name in other.links and (peer_ns, other.links[peer_name]['ifindex']) not in doomed:
                plan.add(plan.pre, peer_ns, f'link del {peer_name}')
                plan.removed.append(f'link {peer_ns}/{peer_name}')
            plan.fabric += [f'link add {name} type veth peer name {peer_name} netns {peer_ns}',
                            f'link set {name} alias {peer_ns} master {bridge} up']
            plan.created.append(f'veth {F}/{name} <-> {peer_ns}/{peer_name}')
            fresh.add((peer_ns, peer_name))
            continue
        link = fab.links[name]
        if link.get('master') != bridge or not fab.up(name):
            plan.fabric.append(f'link set {name} master {bridge} up')
            plan.updated.append(f'link {F}/{name} master {bridge} up')

    # the router (if any segment needs it): legs up with the gateway address, connected routes plus the
    # routes to the segments behind reflectors (via their spine address), forwarding on
    if spec.router_wanted:
        rtr = st[R]
        legs = {seg['router_port']: seg for seg in spec.segments.values() if seg['router']}
        if spec.spine:
            legs[spec.spine['router_port']] = spec.spine
        gone = _plan_drop_links(plan, R, rtr, legs, doomed, fresh)
        wanted_routes = set(spec.router_routes)
        for route in rtr.routes:
            if route.get('protocol') != 'kernel' and route.get('dev') not in gone and not _owned_route(route):
                plan.add(plan.post, R, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {R} {_route_text(route)}')
        _plan_lo(plan, rtr)
        for dev, seg in legs.items():
            _plan_iface(plan, rtr, dev, [str(seg['gateway'])], (R, dev) in fresh)
        _plan_routes(plan, rtr, wanted_routes, gone)
        if not (states[R] and rtr.forwarding):
            plan.forward = True
            plan.updated.append(f'sysctl {R} net.ipv4.ip_forward 1')

    # the management namespace (SSH labs): lo and its legs up with their addresses, nothing else (no routes but
    # the connected ones, no forwarding)
    if spec.mgmt:
        mst = st[M]
        legs = {leg['port']: leg for leg in spec.mgmt.values()}
        gone = _plan_drop_links(plan, M, mst, legs, doomed, fresh)
        for route in mst.routes:
            if route.get('protocol') != 'kernel' and route.get('dev') not in gone:
                plan.add(plan.post, M, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {M} {_route_text(route)}')
        _plan_lo(plan, mst)
        for dev, leg in sorted(legs.items()):
            _plan_iface(plan, mst, dev, [str(leg['address'])], (M, dev) in fresh)

    # the hosts: lo and eth0 up, the address, the default route (stale routes go before the addresses change);
    # a reflector also eth1 on the spine, its default route via the router's spine leg (if there is a router)
    # and the routes to the other reflectors' segments
    for host in spec.hosts.values():
        ns = host['netns']
        hst = st[ns]
        is_fresh = (ns, 'eth0') in fresh
        gone = {dev for dev, link in hst.links.items() if (ns, link['ifindex']) in doomed or (ns, dev) in fresh}
        gw = None if host['gateway'] is None else str(host['gateway'])
        dev = host['gateway_dev']
        defaults = [r for r in hst.routes if r.get('dst') == 'default' and r.get('dev') not in gone]
        good = [r for r in defaults if gw is not None and r.get('gateway') == gw and r.get('dev') == dev
                and r.get('type', 'unicast') == 'unicast'][:1]
        for route in defaults:
            if route not in good:
                plan.add(plan.post, ns, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {ns} {_route_text(route)}')
        _plan_lo(plan, hst)
        _plan_iface(plan, hst, 'eth0', [str(host['address'])], is_fresh)
        if host['spine_address']:
            _plan_iface(plan, hst, 'eth1', [str(host['spine_address'])], (ns, 'eth1') in fresh)
            _plan_routes(plan, hst, set(host['routes']), gone)
        if gw is not None and not good:
            plan.add(plan.post, ns, f'route add default via {gw} dev {dev}')
            plan.created.append(f'route {ns} default via {gw} dev {dev}')
    return plan


def _plan_lo(plan, st):
    if 'lo' in st.links and not st.up('lo'):
        plan.add(plan.post, st.name, 'link set lo up')
        plan.updated.append(f'link {st.name}/lo up')


def _plan_iface(plan, st, dev, addresses, fresh):
    """Bring dev up and make its IPv4 addresses exactly `addresses` (dev exists or is being created)."""
    have = [] if fresh or dev not in st.links else st.inet(dev)
    if fresh or dev not in st.links or not st.up(dev):
        plan.add(plan.post, st.name, f'link set {dev} up')
        if not fresh:
            plan.updated.append(f'link {st.name}/{dev} up')
    for addr in have:
        if addr not in addresses:
            plan.add(plan.post, st.name, f'address del {addr} dev {dev}')
            plan.removed.append(f'address {st.name}/{dev} {addr}')
    for addr in addresses:
        if addr not in have:
            plan.add(plan.post, st.name, f'address add {addr} brd + dev {dev}')
            plan.created.append(f'address {st.name}/{dev} {addr}')


def _route_selector(route):
    parts = [route['type']] if route.get('type', 'unicast') != 'unicast' else []
    parts.append(route.get('dst', 'default'))
    if route.get('gateway'):
        parts += ['via', route['gateway']]
    if route.get('dev'):
        parts += ['dev', route['dev']]
    if 'metric' in route:
        parts += ['metric', str(route['metric'])]
    parts += ['table', 'main']
    return ' '.join(parts)


def apply_present(lab, spec, plan):
    if plan.sysctls and not lab.module.check_mode:
        for path, value in sorted(plan.sysctls.items(), reverse=True):  # gc_thresh3 first
            with open(path, 'w') as f:
                f.write(f'{value}\n')
    if plan.make_state_dir and not lab.module.check_mode:
        os.makedirs(spec.state_dir, mode=0o755, exist_ok=True)
    lab.batch(None, plan.root)
    # deletions: the fabric's first (they take veth peers with them), then the other namespaces'
    lab.batch(spec.fabric, plan.pre.get(spec.fabric, []))
    lab.batches((ns, lines) for ns, lines in plan.pre.items() if ns != spec.fabric)
    lab.batch(spec.fabric, plan.fabric)
    lab.batches(sorted(plan.post.items(), key=lambda item: item[0] != spec.router))
    if plan.forward:
        lab.exec_in(spec.router, ['/bin/sh', '-c', FORWARD_CMD])
    lab.batch(None, plan.root_late)


# --------------------------------------------------------------------------------------------- absent


def _ref_pattern(paths):
    return re.compile('|'.join(re.escape(p) + r'(?:/|$)' for p in sorted(paths, key=len, reverse=True)))


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
    except OSError:
        return None


def pidfile_processes(state_dir):
    """Processes named by *.pid files under state_dir whose command line references that file or state_dir."""
    found = []
    if not os.path.isdir(state_dir):
        return found
    dir_refs = {state_dir, os.path.realpath(state_dir)}
    for root, dirs, files in os.walk(state_dir):
        dirs.sort()
        for fname in sorted(files):
            if not fname.endswith('.pid'):
                continue
            path = os.path.join(root, fname)
            pid = read_pid(path)
            if pid is None or pid == os.getpid() or any(p['pid'] == pid for p in found):
                continue
            args = _cmdline(pid)
            if not args:
                continue
            pattern = _ref_pattern(dir_refs | {path, os.path.realpath(path)})
            if any(pattern.search(arg) for arg in args):
                found.append({'pid': pid, 'reason': 'pidfile', 'pidfile': path, 'cmdline': ' '.join(args)})
    return found


def netns_processes(names, skip):
    """Processes whose network namespace is one of the named ones."""
    ids = {}
    for name in names:
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, name))
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = name
    found = []
    if not ids:
        return found
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) in skip or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f'/proc/{entry}/ns/net')
        except OSError:
            continue
        name = ids.get((st.st_dev, st.st_ino))
        if name:
            args = _cmdline(entry)
            if args is not None:
                found.append({'pid': int(entry), 'reason': 'netns', 'netns': name, 'cmdline': ' '.join(args)})
    return found


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False


def stop(procs, timeout):
    """SIGTERM, wait up to timeout, SIGKILL the rest and wait for them."""
    for sig, name, wait in ((signal.SIGTERM, 'TERM', timeout), (signal.SIGKILL, 'KILL', 5)):
        targets = [p for p in procs if _alive(p['pid'])]
        if not targets:
            return
        for proc in targets:
            try:
                os.kill(proc['pid'], sig)
                proc['signal'] = name
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(p['pid']) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
    left = [p['pid'] for p in procs if _alive(p['pid'])]
    if left:
        raise LabError(f'processes {left} did not exit after SIGKILL')


def run_absent(lab, spec, result):
    prefix = spec.prefix + '-'
    names = [n for n in lab.list_netns() if n.startswith(prefix)]
    state_dir_exists = os.path.lexists(spec.state_dir)
    killed = pidfile_processes(spec.state_dir)
    if not lab.module.check_mode:
        stop(killed, lab.module.params['stop_timeout'])
    # anything still inside a lab namespace would keep it (and its veths) alive after `netns del`
    strays = netns_processes(names, skip={p['pid'] for p in killed})
    if not lab.module.check_mode:
        stop(strays, lab.module.params['stop_timeout'])
    killed += strays
    result['killed'] = killed
    result['diff'] = {
        'before': {'namespaces': names, 'processes': [f"{p['pid']} {p['cmdline']}" for p in killed],
                   'state_dir': spec.state_dir if state_dir_exists else None},
        'after': {'namespaces': [], 'processes': [], 'state_dir': None},
    }
    if names:
        lab.batch(None, [f'netns del {n}' for n in names])
        result['removed'] += [f'netns {n}' for n in names]
    if state_dir_exists:
        if not lab.module.check_mode:
            if os.path.isdir(spec.state_dir) and not os.path.islink(spec.state_dir):
                shutil.rmtree(spec.state_dir)
            else:
                os.unlink(spec.state_dir)
        result['removed'].append(f'directory {spec.state_dir}')
    result['changed'] = bool(names or state_dir_exists or killed)


# --------------------------------------------------------------------------------------------- main


def run_present(lab, spec, result):
    gc_now = read_gc_thresh()
    state_dir_exists = os.path.isdir(spec.state_dir)
    _unused, states = observe(lab, spec)
    plan = plan_present(spec, states, gc_now, state_dir_exists)
    result['diff'] = {
        'before': describe_observed(spec, states, gc_now, state_dir_exists),
        'after': describe_desired(spec, gc_now),
    }
    result.update(created=plan.created, removed=plan.removed, updated=plan.updated, changed=plan.changed)
    result['segments'], result['hosts'], result['spine'] = spec.result()
    result['mgmt'] = spec.mgmt_result()
    result['namespaces'] = spec.namespaces()
    if not plan.changed:
        return
    apply_present(lab, spec, plan)
    if lab.module.check_mode:
        return
    # read back: a lab that does not converge in one pass is a bug, not something to hide
    _unused, states = observe(lab, spec)
    again = plan_present(spec, states, read_gc_thresh(), os.path.isdir(spec.state_dir))
    if again.changed:
        raise LabError('the lab did not converge; still to do: '
                       + '; '.join(again.created + again.removed + again.updated))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            state_dir=dict(type='path', required=True),
            segments=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                cidr=dict(type='str', required=True),
                gateway=dict(type='str'),
                router=dict(type='bool', default=True),
            )),
            spine=dict(type='dict', options=dict(
                cidr=dict(type='str', required=True),
                gateway=dict(type='str'),
            )),
            hosts=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                netns=dict(type='str'),
                address=dict(type='str', required=True),
                segment=dict(type='str', required=True),
                spine_address=dict(type='str'),
            )),
            mgmt=dict(type='dict', options=dict(
                legs=dict(type='list', elements='dict', required=True, options=dict(
                    segment=dict(type='str', required=True),
                    address=dict(type='str', required=True),
                )),
            )),
            neigh_gc_thresh=dict(type='list', elements='int', default=[4096, 16384, 32768]),
            stop_timeout=dict(type='int', default=10),
        ),
        supports_check_mode=True,
    )
    state = module.params['state']
    result = dict(changed=False, created=[], removed=[], updated=[], killed=[], commands=[], namespaces=[])
    try:
        spec = Spec(module.params, state)
        result.update(fabric_netns=spec.fabric, router_netns=spec.router if spec.router_wanted else None,
                      mgmt_netns=spec.mgmt_netns if spec.mgmt else None)
        check_privileges()  # before anything is created: one line instead of a failing `ip netns add`
        lab = Lab(module)
        try:
            if state == 'present':
                run_present(lab, spec, result)
            else:
                run_absent(lab, spec, result)
        finally:
            result['commands'] = lab.commands
    except LabError as ex:
        result.pop('diff', None)
        module.fail_json(msg=str(ex), **result)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
