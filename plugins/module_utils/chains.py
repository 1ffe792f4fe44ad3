# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cali-* iptables chains' names, the values their rules take, and ``iptables-save`` normalisation.

Pure functions (no kernel access), shared by the rendering (:mod:`chains_render`), the restore
(:mod:`chains_restore`) and the IPIP tunnel's host protection; the module ``calico_chains`` runs
``iptables-save`` / ``iptables-restore`` around them. Every rule is rendered exactly as ``iptables-save``
prints it (both backends), so that the normalised read-back of an applied ruleset equals the rendering and a
second run has nothing to do.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import shlex

CHAIN_PREFIX = 'cali-'
CHAIN_MAX = 28  # XT_EXTENSION_MAXNAMELEN (29) - 1: the kernel's limit on a chain name

# builtin chain -> our top chain, per table
HOOKS = {
    'filter': (('INPUT', 'cali-INPUT'), ('FORWARD', 'cali-FORWARD'), ('OUTPUT', 'cali-OUTPUT')),
    'nat': (('PREROUTING', 'cali-PREROUTING'), ('OUTPUT', 'cali-OUTPUT'), ('POSTROUTING', 'cali-POSTROUTING')),
    'raw': (('PREROUTING', 'cali-PREROUTING'),),
}
TABLES = ('filter', 'nat')                  # IPv4 (iptables)
TABLES6 = ('raw', 'filter', 'nat')          # IPv6 (ip6tables); nat only with floating IPs
TABLE_ORDER = ('raw', 'filter', 'nat')      # the order tables are restored in, whichever a rendering has
FAMILY_TABLES = {4: TABLES, 6: TABLES6}
# ICMPv6 types always accepted from workloads to the host and from the host to workloads, before any policy:
# multicast listener query/report/done, router solicitation, neighbour solicitation/advertisement
# (Felix's list); without them a workload cannot resolve its gateway.
ICMPV6_ND_TYPES = (130, 131, 132, 133, 135, 136)

# Chains the CNI plugin owns (rewritten on every container ADD/DEL; the converge never touches them).
CNI_CHAIN_PREFIX = 'cali-cni-'
CNI_FROM_DISPATCH = 'cali-cni-from-dispatch'
CNI_TO_DISPATCH = 'cali-cni-to-dispatch'

# Calico's default FailsafeInboundHostPorts (felix configuration reference).
DEFAULT_FAILSAFE_INBOUND = ('tcp:22', 'udp:68', 'tcp:179', 'tcp:2379', 'tcp:2380', 'tcp:5473', 'tcp:6443',
                            'tcp:6666', 'tcp:6667')

# protocol names iptables-save may print -> number (both sides are normalised to one spelling)
PROTOCOL_NUMBERS = {
    'icmp': 1, 'igmp': 2, 'ipencap': 4, 'ipip': 4, 'tcp': 6, 'egp': 8, 'udp': 17, 'ipv6': 41, 'gre': 47,
    'esp': 50, 'ah': 51, 'icmpv6': 58, 'ipv6-icmp': 58, 'ospf': 89, 'pim': 103, 'vrrp': 112, 'sctp': 132,
    'udplite': 136,
}
NAMED_PROTOCOLS = {1: 'icmp', 6: 'tcp', 17: 'udp'}
PORT_PROTOCOLS = ('tcp', 'udp')

_COUNTERS = re.compile(r'^\[\d+:\d+\]\s*')
_NEEDS_WORK = frozenset(('-p', '--protocol', '-s', '-d', '--source', '--destination', '--comment'))
IPSET_NAME = re.compile(r'[A-Za-z0-9_.:-]{1,31}\Z')


class ChainsError(ValueError):
    """Bad input for the chains (turned into fail_json by the module)."""


# ---------------------------------------------------------------------------------------------
# names and small parsers
# ---------------------------------------------------------------------------------------------

def chain_name(*parts, limit=CHAIN_MAX):
    """``cali-`` + parts joined by ``-``; longer than ``limit`` -> cut and a stable hash suffix.

    The suffix is ``_`` + the first 8 hex digits of sha1 of the full name, so two long names that
    share a prefix still get different, deterministic chain names (Calico shortens the same way).
    """
    full = CHAIN_PREFIX + '-'.join(str(p) for p in parts if str(p))
    if len(full) <= limit:
        return full
    digest = hashlib.sha1(full.encode('utf-8')).hexdigest()[:8]
    return full[:limit - 9] + '_' + digest


def endpoint_chains(ifname):
    """(from-workload chain, to-workload chain) of an interface: cali-fw-<if>, cali-tw-<if>."""
    return chain_name('fw', ifname), chain_name('tw', ifname)


def normalize_protocol(value):
    """'tcp' | 'udp' | 'icmp' | a number as a string (e.g. '47'); None for any. Raises ChainsError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ('', 'any', 'all')):
        return None
    if isinstance(value, bool):
        raise ChainsError('protocol %r is not a protocol name or number' % (value,))
    text = str(value).strip().lower()
    if text.isascii() and text.isdigit():
        number = int(text)
        if not 0 < number < 256:
            raise ChainsError('protocol number %s is outside 1-255' % text)
    elif text in PROTOCOL_NUMBERS:
        number = PROTOCOL_NUMBERS[text]
    else:
        raise ChainsError('protocol %r is unknown (use tcp, udp, icmp or a protocol number 1-255)' % (value,))
    return NAMED_PROTOCOLS.get(number, str(number))


def normalize_port(value):
    """'80' or '8000:8080' (also accepts 8000-8080); raises ChainsError outside 1-65535."""
    if isinstance(value, bool):
        raise ChainsError('port %r is not a port number or range' % (value,))
    text = str(value).strip().replace('-', ':')
    parts = text.split(':')
    if len(parts) not in (1, 2) or not all(p.isascii() and p.isdigit() for p in parts):
        raise ChainsError('port %r is not a port number or a range like 8000:8080' % (value,))
    numbers = [int(p) for p in parts]
    for number in numbers:
        if not 1 <= number <= 65535:
            raise ChainsError('port %s is outside 1-65535' % number)
    if len(numbers) == 2:
        if numbers[0] > numbers[1]:
            raise ChainsError('port range %s has its bounds reversed' % text)
        if numbers[0] == numbers[1]:
            return str(numbers[0])
    return ':'.join(str(n) for n in numbers)


def parse_failsafe(value):
    """'tcp:22' | {'protocol': 'tcp', 'port': 22} -> ('tcp', '22')."""
    if isinstance(value, dict):
        proto, port = value.get('protocol', 'tcp'), value.get('port')
    else:
        text = str(value).strip()
        proto, sep, port = text.partition(':')
        if not sep:
            proto, port = 'tcp', text
    proto = normalize_protocol(proto)
    if proto not in PORT_PROTOCOLS:
        raise ChainsError('failsafe port %r: protocol must be tcp or udp' % (value,))
    return proto, normalize_port(port)


def host_cidr(value):
    """'1.2.3.4' -> '1.2.3.4/32'; a CIDR is kept (iptables-save prints both this way)."""
    text = str(value).strip()
    return text if '/' in text else text + '/32'


_DOTTED = re.compile(r'^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})(?:/(0|[1-9]\d?))?\Z')


def _fast_ipv4(text):
    """(address int, prefix length or None) of a canonical dotted quad [/len], or None (then ipaddress decides).
    Rendering 1,000 endpoints parses ~4,000 addresses: ipaddress alone was half of the render time."""
    m = _DOTTED.match(text)
    if not m:
        return None
    octets = [int(g) for g in m.groups()[:4]]
    if max(octets) > 255:
        return None
    plen = m.group(5)
    if plen is not None:
        plen = int(plen)
        if plen > 32:
            return None
    return (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3], plen


def ipv4_address(value, what):
    """A plain IPv4 address (``/32`` accepted) as a string; anything else (a newline too) is a ChainsError,
    so no input can add lines of its own to the restore text."""
    text = str(value).strip()
    if text.endswith('/32'):
        text = text[:-3]
    fast = _fast_ipv4(text)
    if fast is not None and fast[1] is None:
        return text
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ChainsError('%s %r is not an IPv4 address' % (what, value)) from None


def ipv4_network(value, what):
    """An IPv4 network in iptables-save's spelling (``a.b.c.d/len``, host bits cleared refused)."""
    text = host_cidr(value)
    fast = _fast_ipv4(text)
    if fast is not None and fast[1] is not None:
        address, plen = fast
        if address & ((1 << (32 - plen)) - 1) == 0:
            return text
    try:
        return str(ipaddress.IPv4Network(text))
    except ValueError:
        raise ChainsError('%s %r is not an IPv4 CIDR (without host bits)' % (what, value)) from None


def ipv6_address(value, what):
    """A plain IPv6 address (``/128`` accepted) in its compressed spelling; anything else is a ChainsError."""
    text = str(value).strip()
    if text.endswith('/128'):
        text = text[:-4]
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ChainsError('%s %r is not an IPv6 address' % (what, value)) from None


def ipv6_network(value, what):
    """An IPv6 network in ip6tables-save's spelling (``addr/len``, compressed; host bits set refused)."""
    text = str(value).strip()
    try:
        return ipaddress.IPv6Network(text if '/' in text else text + '/128').with_prefixlen
    except ValueError:
        raise ChainsError('%s %r is not an IPv6 CIDR (without host bits)' % (what, value)) from None


# ---------------------------------------------------------------------------------------------
# iptables-save parsing and normalisation
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)
def normalize_rule(rule):
    """One rule body (no ``-A <chain>``) in a canonical spelling, so that desired and read-back compare.

    Drops counters, re-quotes comments, spells protocols tcp/udp/icmp or by number, writes bare
    addresses as /32 — the differences seen between iptables-nft-save, iptables-legacy-save and
    the rendering. Cached and without shlex unless the rule has quotes: 10,000+ rules per run.
    """
    text = rule.strip()
    if text.startswith('['):
        text = _COUNTERS.sub('', text)
    if '"' in text or "'" in text:
        try:
            tokens = shlex.split(text)
        except ValueError:
            tokens = text.split()
    else:
        tokens = text.split()
    if not _NEEDS_WORK.intersection(tokens):
        return ' '.join(tokens)
    out = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok in ('-p', '--protocol') and nxt is not None:
            try:
                out += ['-p', normalize_protocol(nxt)]
            except ChainsError:
                out += ['-p', nxt]
            i += 2
            continue
        if tok in ('-s', '-d', '--source', '--destination') and nxt is not None:
            flag = '-s' if tok in ('-s', '--source') else '-d'
            out += [flag, nxt if '/' in nxt else nxt + ('/128' if ':' in nxt else '/32')]
            i += 2
            continue
        if tok == '--comment' and nxt is not None:
            out += ['--comment', '"%s"' % nxt.replace('"', '')]
            i += 2
            continue
        out.append(tok)
        i += 1
    return ' '.join(out)


def normalize_table(state):
    return {
        'chains': {name: [normalize_rule(r) for r in rules] for name, rules in state.get('chains', {}).items()},
        'jumps': {name: [normalize_rule(r) for r in rules] for name, rules in state.get('jumps', {}).items()},
    }
