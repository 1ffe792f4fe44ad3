# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Running ``ip`` for the netfleet.calico modules, and the names and values that reach it.

Everything here is standard library only: modules ship it to the managed hosts, and
controller-side plugins import it as
``ansible_collections.netfleet.calico.plugins.module_utils.iproute`` (for example for
``workload_ifname``), so nothing may import Ansible at module level.

The kernel is driven through the ``ip`` binary, never through a shell:

* writes go through ``ip -batch -`` with the commands on stdin, so thousands of route or link
  changes cost one process (``ip -n NS -batch -`` inside a named network namespace,
  ``nsenter --net=PATH ip -batch -`` for a namespace given as a path); link work uses
  ``-force`` (report every failure), route reconciles stop at the first failure;
* reads use ``ip -j`` (JSON), several commands at once with ``ip -j -batch -``.

Routes (read, plan, apply) are in ``iproute_routes``; sysctls and namespace files, read without
a subprocess, in ``procfs``.

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

# urllib.parse is imported where it is used: the CNI plugin imports this module on every call a runtime
# makes and never needs it (a few ms of each call's start-up).

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

# characters that are unsafe on an ip -batch line (and in a sysctl name)
UNSAFE_CHARS = re.compile(r'[\s#"\'\\\x00-\x1f\x7f]')
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
    if not text or UNSAFE_CHARS.search(text):
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
