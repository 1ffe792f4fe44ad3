# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""iproute2 helpers shared by the netfleet.calico modules.

Everything here is standard library only: modules ship it to the managed hosts, and
controller-side plugins import it as
``ansible_collections.netfleet.calico.plugins.module_utils.iproute`` (for example for
``workload_ifname``), so nothing may import Ansible at module level.

The kernel is driven through the ``ip`` binary, never through a shell:

* writes go through ``ip -batch -`` with the commands on stdin, so thousands of route or link
  changes cost one process (``ip -n NS -batch -`` inside a named network namespace,
  ``nsenter --net=PATH ip -batch -`` for a namespace given as a path); link work uses
  ``-force`` (report every failure), route reconciles stop at the first failure;
* reads use ``ip -j`` (JSON), several commands at once with ``ip -j -batch -``;
* sysctls are read and written directly under /proc/sys (per network namespace of the
  calling process), without a subprocess.

``ip -batch`` splits lines on whitespace, treats ``#`` as the start of a comment anywhere in
a line and gives quotes a meaning, so every value that reaches a batch line goes through
:func:`batch_token` first.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import subprocess
from collections import namedtuple

# socket and urllib.parse are imported where they are used: the CNI plugin imports this module on every
# call a runtime makes and never needs them (together ~5 ms of each call's start-up).

# Calico's Felix tags the routes it programs with protocol 80 (RTPROT number); BIRD's are
# "proto bird" (12). We reconcile only routes carrying our number and never touch others.
CALICO_PROTOCOL = 80
# Host side of every workload veth: fixed MAC, answers ARP for the fake gateway by proxy-ARP.
CALICO_MAC = 'ee:ee:ee:ee:ee:ee'
# Gateway the workloads route through; no interface anywhere owns it.
CALICO_GATEWAY = '169.254.1.1'
# IPv6 gateway of the workloads: the link-local address the kernel derives (EUI-64) from CALICO_MAC on
# the host side of every veth, so the host answers neighbour discovery for it without proxy NDP entries.
CALICO_GATEWAY6 = 'fe80::ecee:eeff:feee:eeee'
DEFAULT_INTERFACE_PREFIX = 'cali'
DEFAULT_NETNS_PREFIX = 'calico-'
# Interface names are at most IFNAMSIZ - 1 = 15 bytes.
IFNAME_MAX = 15
# ifalias is at most IFALIASZ - 1 = 255 bytes.
IFALIAS_MAX = 255
NETNS_RUN_DIR = '/run/netns'
PROC_SYS = '/proc/sys'
ROUTE_TYPES = ('unicast', 'blackhole', 'unreachable', 'prohibit')
# Protocol numbers 0-4 are the kernel's own (unspec, redirect, kernel, boot, static): "boot" is
# what a plain `ip route add` uses, so owning it would delete the administrator's routes.
MIN_OWNED_PROTOCOL = 5
MAX_PROTOCOL = 255

# Host-side per-interface sysctls of a workload veth (Calico's Felix sets the same:
# proxy_arp so the host answers ARP for 169.254.1.1, proxy_delay=0 or the first ARP reply waits
# up to 0.8 s, forwarding, route_localnet, and strict reverse-path filtering: a packet whose
# source is not routed back through this veth, i.e. not the workload's own address, is dropped).
WORKLOAD_SYSCTLS = (
    ('net/ipv4/conf/{ifname}/proxy_arp', '1'),
    ('net/ipv4/conf/{ifname}/rp_filter', '1'),
    ('net/ipv4/neigh/{ifname}/proxy_delay', '0'),
    ('net/ipv4/conf/{ifname}/forwarding', '1'),
    ('net/ipv4/conf/{ifname}/route_localnet', '1'),
)

# IPv6 sysctls of the host side of a workload veth with an IPv6 address (Felix: forwarding, proxy_ndp
# and accept_ra=0). IPv6 is enabled, the link-local comes from the MAC (addr_gen_mode 0, EUI-64: the
# workloads' gateway) and is usable at once (accept_dad 0) instead of tentative for a second.
WORKLOAD_SYSCTLS6 = (
    ('net/ipv6/conf/{ifname}/disable_ipv6', '0'),
    ('net/ipv6/conf/{ifname}/addr_gen_mode', '0'),
    ('net/ipv6/conf/{ifname}/accept_dad', '0'),
    ('net/ipv6/conf/{ifname}/accept_ra', '0'),
    ('net/ipv6/conf/{ifname}/forwarding', '1'),
    ('net/ipv6/conf/{ifname}/proxy_ndp', '1'),
)
# Every workload veth of a host with IPv6, IPv6 endpoint or not: a workload must never configure the host
# through router advertisements (Felix sets this on every workload interface).
WORKLOAD_SYSCTLS_RA = (('net/ipv6/conf/{ifname}/accept_ra', '0'),)

OWNER_ALIAS_PREFIX = 'netfleet:ep:'

_UNSAFE_TOKEN = re.compile(r'[\s#"\'\\\x00-\x1f\x7f]')
_IFNAME_RE = re.compile(r'[A-Za-z0-9_.@+=-]{1,15}\Z')  # \Z: '$' would let a trailing newline through
_NETNS_NAME_RE = re.compile(r'[A-Za-z0-9_.@+=-]{1,255}\Z')
_NETNS_PATH_RE = re.compile(r'/[A-Za-z0-9_./@+=:-]+\Z')
_TABLE_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
_MAC_RE = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')
_BATCH_FAILED_RE = re.compile(r'^Command failed (?:-|\S+):(\d+)\s*$')
_TABLE_ALIASES = {'254': 'main', 'main': 'main', '255': 'local', 'local': 'local', '253': 'default',
                  'default': 'default'}


class IprouteError(Exception):
    """An ``ip`` call failed. ``failures`` lists the failed batch lines when known."""

    def __init__(self, msg, argv=None, rc=None, stdout='', stderr='', failures=None):
        super().__init__(msg)
        self.msg = msg
        self.argv = list(argv or [])
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.failures = list(failures or [])

    def to_dict(self):
        """Details suitable for ``fail_json(**err.to_dict())``."""
        return {'msg': self.msg, 'cmd': self.argv, 'rc': self.rc, 'stderr': self.stderr,
                'failures': self.failures}


# --------------------------------------------------------------------------------------------
# small validators
# --------------------------------------------------------------------------------------------

def batch_token(value, what='value'):
    """Return ``str(value)`` if it is safe as one word of an ``ip -batch`` line, else raise ValueError."""
    text = str(value)
    if not text or _UNSAFE_TOKEN.search(text):
        raise ValueError('%s %r cannot be passed to ip: it is empty or contains whitespace, '
                         'quotes, a backslash, "#" or a control character' % (what, text))
    return text


def valid_ifname(name):
    return bool(_IFNAME_RE.match(name or '')) and name not in ('.', '..')


def valid_netns_name(name):
    return bool(_NETNS_NAME_RE.match(name or '')) and name not in ('.', '..')


def valid_netns_path(path):
    return bool(_NETNS_PATH_RE.match(path or '')) and '/../' not in path + '/' and '/./' not in path + '/'


def normalize_table(table):
    """'main', 254, '254' -> 'main'; other ids/names as strings. Raise ValueError if invalid."""
    text = str(table if table is not None else 'main').strip()
    if text in _TABLE_ALIASES:
        return _TABLE_ALIASES[text]
    if text.isascii() and text.isdigit():
        num = int(text)
        if not 1 <= num <= 0xFFFFFFFF:
            raise ValueError('routing table %s is out of range 1-4294967295' % text)
        return str(num)
    if text == 'all' or not _TABLE_RE.match(text):
        raise ValueError('invalid routing table %r: use main, a number or a name from rt_tables' % text)
    return text


def normalize_protocol(protocol):
    """Validate an owned route protocol number (5-255)."""
    try:
        num = int(protocol)
    except (TypeError, ValueError):
        raise ValueError('protocol must be an integer, got %r' % (protocol,)) from None
    if not MIN_OWNED_PROTOCOL <= num <= MAX_PROTOCOL:
        raise ValueError('protocol %d is not allowed: use 5-255 (0-4 are the kernel\'s own, '
                         '4 is "static" and 3 "boot" is what a plain `ip route add` uses)' % num)
    return num


def normalize_mac(mac):
    text = str(mac).strip().lower().replace('-', ':')
    if not _MAC_RE.match(text):
        raise ValueError('invalid MAC address %r' % (mac,))
    if int(text[:2], 16) & 1:
        raise ValueError('MAC address %s is a multicast address' % text)
    return text


def parse_cidr(text, strict=True):
    """Return the canonical CIDR string of a network ('172.17.8.2' -> '172.17.8.2/32').

    Raise ValueError with a readable message if invalid (host bits set when ``strict``)."""
    raw = str(text).strip()
    if raw == 'default':
        raw = '0.0.0.0/0'
    try:
        net = ipaddress.ip_network(raw, strict=strict)
    except ValueError as exc:
        raise ValueError('invalid CIDR %r: %s' % (text, exc)) from None
    return net.with_prefixlen


def parse_ip(text):
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise ValueError('invalid IP address %r' % (text,)) from None


def cidr_family(cidr):
    return 6 if ':' in cidr else 4


def eui64_link_local(mac):
    """The link-local address the kernel gives an interface with MAC ``mac`` (addr_gen_mode 0, EUI-64):
    'ee:ee:ee:ee:ee:ee' -> 'fe80::ecee:eeff:feee:eeee'."""
    octets = [int(part, 16) for part in normalize_mac(mac).split(':')]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xff, 0xfe] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + eui)))


# --------------------------------------------------------------------------------------------
# naming and ownership
# --------------------------------------------------------------------------------------------

def workload_ifname(workload_id, prefix=DEFAULT_INTERFACE_PREFIX):
    """Host-side veth name of a workload: prefix + first 11 hex chars of sha1(workload id).

    This is Calico's rule (libcalico-go, lib/backend/k8s/conversion ``VethNameForWorkload``:
    ``fmt.Sprintf("%s%s", prefix, hex.EncodeToString(sha1(workload))[:11])``; for Kubernetes
    pods Calico hashes ``"<namespace>.<pod>"``). With the default "cali" prefix that is 15
    characters, the kernel's limit, so prefixes longer than 4 characters are rejected.
    """
    if not prefix or not valid_ifname(prefix):
        raise ValueError('invalid interface prefix %r' % (prefix,))
    try:
        digest = hashlib.sha1(str(workload_id).encode('utf-8'), usedforsecurity=False)
    except TypeError:  # pragma: no cover - Python < 3.9
        digest = hashlib.sha1(str(workload_id).encode('utf-8'))  # nosec - a name, not a secret
    name = prefix + digest.hexdigest()[:11]
    if len(name) > IFNAME_MAX:
        raise ValueError('interface prefix %r is too long: prefix + 11 hex chars must fit in %d characters'
                         % (prefix, IFNAME_MAX))
    return name


def encode_owner_alias(name, nsref, owned):
    """ifalias recording that we made this veth: ``netfleet:ep:<name>:<netns|path>:<own|ext>``.

    ``own`` means the module created the namespace and deletes it with the endpoint. Name and
    namespace are percent-encoded (":", "%", whitespace, "#", quotes), so the alias splits
    unambiguously and is safe on an ``ip -batch`` line."""
    from urllib.parse import quote

    alias = '%s%s:%s:%s' % (OWNER_ALIAS_PREFIX, quote(str(name), safe='/@+=,'),
                            quote(str(nsref), safe='/@+=,'), 'own' if owned else 'ext')
    if len(alias.encode('utf-8')) > IFALIAS_MAX:
        raise ValueError('endpoint %r: ownership alias would exceed %d bytes; use a shorter name or netns'
                         % (name, IFALIAS_MAX))
    return alias


def decode_owner_alias(alias):
    """Return ``{'name', 'netns', 'owned'}`` for an alias made by :func:`encode_owner_alias`, else None."""
    if not alias or not alias.startswith(OWNER_ALIAS_PREFIX):
        return None
    parts = alias[len(OWNER_ALIAS_PREFIX):].split(':')
    if len(parts) != 3 or parts[2] not in ('own', 'ext') or not parts[0] or not parts[1]:
        return None
    from urllib.parse import unquote

    return {'name': unquote(parts[0]), 'netns': unquote(parts[1]), 'owned': parts[2] == 'own'}


# --------------------------------------------------------------------------------------------
# running ip
# --------------------------------------------------------------------------------------------

def run_process(argv, data=None, timeout=None):
    """(rc, stdout, stderr) of ``argv`` with ``data`` on stdin, in the C locale; never a shell."""
    env = dict(os.environ, LC_ALL='C', LANG='C')
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, env=env,  # noqa: S603
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def parse_json_stream(text):
    """Parse the concatenated JSON documents printed by ``ip -j -batch -`` (one per command)."""
    decoder = json.JSONDecoder()
    docs = []
    idx = 0
    text = text or ''
    end = len(text)
    while True:
        while idx < end and text[idx] in ' \t\r\n':
            idx += 1
        if idx >= end:
            return docs
        doc, idx = decoder.raw_decode(text, idx)
        docs.append(doc)


def parse_batch_failures(stderr, lines):
    """Map ``ip -force -batch`` stderr to ``[{'line', 'command', 'error'}]``."""
    failures = []
    pending = []
    for raw in (stderr or '').splitlines():
        match = _BATCH_FAILED_RE.match(raw.strip())
        if match:
            num = int(match.group(1))
            cmd = lines[num - 1] if 0 < num <= len(lines) else None
            failures.append({'line': num, 'command': cmd, 'error': ' '.join(pending).strip()})
            pending = []
        elif raw.strip():
            pending.append(raw.strip())
    if pending and failures:
        failures[-1]['error'] = (failures[-1]['error'] + ' ' + ' '.join(pending)).strip()
    return failures


class IpCommand:
    """Run ``ip`` for one network namespace context.

    ``netns`` (per call) is None (the caller's namespace), a namespace name (``ip -n NAME``)
    or an absolute path to a namespace file such as /proc/PID/ns/net (``nsenter --net=PATH``;
    iproute2's ``-n`` accepts names only). ``runner(argv, data, timeout) -> (rc, out, err)`` is
    injectable for tests. ``calls`` counts the processes started.
    """

    def __init__(self, ip_bin='ip', nsenter_bin='nsenter', runner=None, timeout=600, workers=None):
        self.ip_bin = ip_bin
        self.nsenter_bin = nsenter_bin
        self.runner = runner or run_process
        self.timeout = timeout
        self.workers = workers or max(4, 2 * (os.cpu_count() or 1))
        self.calls = 0

    def prefix(self, netns=None):
        if netns is None:
            return [self.ip_bin]
        if '/' not in netns:
            return [self.ip_bin, '-n', netns]
        if os.path.dirname(netns) == NETNS_RUN_DIR and valid_netns_name(os.path.basename(netns)):
            return [self.ip_bin, '-n', os.path.basename(netns)]
        return [self.nsenter_bin, '--net=' + netns, self.ip_bin]

    def run(self, args, data=None, netns=None, check=True):
        argv = self.prefix(netns) + list(args)
        self.calls += 1
        rc, out, err = self.runner(argv, data, self.timeout)
        if check and rc != 0:
            raise IprouteError('%s failed (rc=%s): %s' % (' '.join(argv), rc, (err or out or '').strip()),
                               argv=argv, rc=rc, stdout=out, stderr=err)
        return rc, out, err

    def json(self, args, netns=None):
        """``ip -j ARGS`` parsed; an empty output is an empty list."""
        _rc, out, _err = self.run(['-j'] + list(args), netns=netns)
        docs = parse_json_stream(out)
        return docs[0] if docs else []

    def json_batch(self, lines, netns=None):
        """Run read-only commands with ``ip -j -batch -``; return one parsed document per command."""
        data = ''.join(line + '\n' for line in lines)
        _rc, out, _err = self.run(['-j', '-batch', '-'], data=data, netns=netns)
        docs = parse_json_stream(out)
        if len(docs) != len(lines):
            raise IprouteError('ip -j -batch returned %d documents for %d commands' % (len(docs), len(lines)),
                               argv=self.prefix(netns) + ['-j', '-batch', '-'], stdout=out)
        return docs

    def batch(self, lines, netns=None, force=True):
        """Apply ``lines`` in one ``ip -batch -`` process; raise IprouteError listing the failed line(s).

        With ``force`` (``ip -force``) ip carries on after a failing line, so every failure is
        reported at once; without it ip stops at the first failure and later lines are not run."""
        lines = list(lines)
        if not lines:
            return 0
        argv = (['-force'] if force else []) + ['-batch', '-']
        rc, out, err = self.run(argv, data=''.join(line + '\n' for line in lines), netns=netns, check=False)
        if rc != 0:
            failures = parse_batch_failures(err, lines)
            if failures and force:
                first = failures[0]
                msg = '%d of %d ip commands failed; first: "%s": %s' % (
                    len(failures), len(lines), first['command'], first['error'] or 'error')
            elif failures:
                first = failures[0]
                msg = 'ip stopped at line %d of %d: "%s": %s' % (
                    first['line'], len(lines), first['command'], first['error'] or 'error')
            else:
                msg = 'ip -batch failed (rc=%s): %s' % (rc, (err or out).strip())
            raise IprouteError(msg, argv=self.prefix(netns) + argv, rc=rc, stdout=out, stderr=err,
                               failures=failures)
        return len(lines)

    def map(self, func, items):
        """Run ``func(item)`` (which calls ip) for all items, ``workers`` at a time; results in order."""
        items = list(items)
        if len(items) <= 1 or self.workers <= 1:
            return [func(item) for item in items]
        import concurrent.futures  # here, not at the top: the CNI plugin starts per container and never maps

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(func, items))


# --------------------------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# sysctl (direct /proc/sys access; per network namespace of the calling process)
# --------------------------------------------------------------------------------------------

def sysctl_path(name, root=PROC_SYS):
    """'net.ipv4.ip_forward' or 'net/ipv4/conf/eth0.100/forwarding' -> path under /proc/sys.

    As with sysctl(8), a name containing '/' is split on '/' only (needed for interface names
    with dots); otherwise '.' separates components."""
    text = str(name).strip()
    parts = text.strip('/').split('/') if '/' in text else text.split('.')
    if not text or any(part in ('', '.', '..') for part in parts) or any(_UNSAFE_TOKEN.search(p) for p in parts):
        raise ValueError('invalid sysctl name %r' % (name,))
    return os.path.join(root, *parts)


def sysctl_key(name):
    """Canonical dotted form of a sysctl name (slash form kept if a component contains a dot)."""
    text = str(name).strip()
    if '/' not in text:
        return text
    parts = text.strip('/').split('/')
    return '/'.join(parts) if any('.' in part for part in parts) else '.'.join(parts)


def normalize_sysctl_value(value):
    """Compare values the way the kernel prints them: booleans as 1/0, whitespace collapsed."""
    if isinstance(value, bool):
        return '1' if value else '0'
    return ' '.join(str(value).split())


def read_sysctl(name, root=PROC_SYS):
    """Current value (normalised), or None if the key does not exist."""
    try:
        with open(sysctl_path(name, root)) as handle:
            return normalize_sysctl_value(handle.read())
    except FileNotFoundError:
        return None


def write_sysctl(name, value, root=PROC_SYS):
    with open(sysctl_path(name, root), 'w') as handle:
        handle.write(normalize_sysctl_value(value))


# --------------------------------------------------------------------------------------------
# namespaces
# --------------------------------------------------------------------------------------------

def _nsfs_dev():
    try:
        return os.stat('/proc/self/ns/net').st_dev
    except OSError:  # pragma: no cover
        return None


def netns_state(name, run_dir=NETNS_RUN_DIR, nsfs_dev=None):
    """'present' (a mounted namespace), 'broken' (a bare file, e.g. left by `ip netns add` run in
    a private mount namespace) or 'absent'."""
    path = os.path.join(run_dir, name)
    try:
        st = os.stat(path)
    except OSError:
        return 'absent'
    if nsfs_dev is None:
        nsfs_dev = _nsfs_dev()
    if nsfs_dev is not None and st.st_dev != nsfs_dev:
        return 'broken'
    return 'present'


def netns_dir_is_slave(run_dir=NETNS_RUN_DIR, mountinfo='/proc/self/mountinfo'):
    """True if ``run_dir`` is a slave mount in this mount namespace.

    That is the case under ``ip netns exec`` (it unshares the mount namespace and makes "/"
    rslave): a namespace created there with ``ip netns add`` is bind-mounted in the private
    mount namespace only, so it disappears for everyone else when the process exits. Callers
    must refuse to create namespaces then (``nsenter --net=...`` keeps the mount namespace)."""
    try:
        with open(mountinfo) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    slave = False
    for line in lines:  # the last entry for a mount point is the one on top
        fields = line.split()
        if len(fields) < 7 or fields[4] != run_dir:
            continue
        optional = fields[6:fields.index('-')] if '-' in fields else fields[6:]
        slave = any(opt.startswith('master:') for opt in optional)
    return slave
