# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cali-* iptables hierarchy: rendering, iptables-save normalisation, restore text.

Pure functions (no kernel access) so that everything here is unit-testable; the module
``calico_chains`` runs ``iptables-save`` / ``iptables-restore`` around them.

The chains (Calico's Felix layout, reduced to what this collection needs)::

    filter INPUT   -> cali-INPUT   -> cali-wl-to-host (from a workload) -> cali-from-wl-dispatch -> cali-fw-<if>
                                   -> cali-failsafe-in (SSH, BGP, ... always accepted)
    filter FORWARD -> cali-FORWARD -> cali-from-wl-dispatch -> cali-fw-<if>   (egress policy of the sender)
                                   -> cali-to-wl-dispatch   -> cali-tw-<if>   (ingress policy of the receiver)
    filter OUTPUT  -> cali-OUTPUT  (host to local workloads: allowed, as in Felix)
    nat PREROUTING -> cali-PREROUTING -> cali-fip-dnat        (floating IP -> workload IP)
    nat OUTPUT     -> cali-OUTPUT     -> cali-fip-dnat        (same, for the host's own connections)
    nat POSTROUTING-> cali-POSTROUTING-> cali-fip-snat         (workload leaves from its floating IP)
                                      -> cali-nat-outgoing     (MASQUERADE pool -> outside, if enabled)

IPv6 (``family=6``, for ip6tables) renders the same filter chains from the same policy model (peers and ICMP
rules of the other family left out), accepts ICMPv6 neighbour discovery from and to workloads before any
policy, and has the nat chains above for the endpoints' IPv6 floating IPs (``floating_ip6``) only: no
``cali-nat-outgoing``, and no nat chain at all while no endpoint has one. Its anti-spoofing is Felix's: IPv6 has no
rp_filter sysctl, so ``raw PREROUTING -> cali-PREROUTING`` drops a packet from a workload whose source the
host would not route back through the same interface (``-m rpfilter --invert``), i.e. any address but the
workload's own; IPv4 gets the same from ``rp_filter=1`` on each workload veth.

Endpoint chains (``cali-fw-<if>`` from the workload, ``cali-tw-<if>`` to it) start with
RELATED,ESTABLISHED -> ACCEPT and INVALID -> DROP, then the policy rules in policy
order, first match wins. An allowed packet leaves ``cali-fw-*`` with RETURN (so the receiver's
``cali-tw-*`` still decides) and ``cali-tw-*`` with ACCEPT; ``deny`` is DROP. An endpoint selected
by a policy in a direction ends that chain with DROP (default deny); an endpoint no policy selects
has no policy rules there (allow all, Kubernetes semantics).

Every rule is rendered exactly as ``iptables-save`` prints it (both backends), so that the
normalised read-back of an applied ruleset equals the rendering and a second run has nothing to do.
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
_CHAIN_NAME = re.compile(r'^[A-Za-z0-9_.+-]+$')
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


# ---------------------------------------------------------------------------------------------
# rendering (every rule in iptables-save's canonical spelling, without "-A <chain> ")
# ---------------------------------------------------------------------------------------------

def _match_proto_ports(protocol, ports, direction='dst'):
    out = []
    if protocol:
        out += ['-p', protocol]
    if ports:
        if protocol not in PORT_PROTOCOLS:
            raise ChainsError('ports %s need protocol tcp or udp (got %s)' % (','.join(ports), protocol or 'any'))
        flag = 'dport' if direction == 'dst' else 'sport'
        if len(ports) == 1:
            out += ['-m', protocol, '--' + flag, ports[0]]
        else:
            if len(ports) > 15:
                raise ChainsError('at most 15 ports per rule (multiport); split the rule')
            out += ['-m', 'multiport', '--' + flag + 's', ','.join(ports)]
    return out


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


def _family_of(value):
    return 6 if ':' in str(value) else 4


def render_rule(rule, direction, final, family=4):
    """Rules for one policy rule of an endpoint chain.

    ``direction`` 'ingress' (peer = source) or 'egress' (peer = destination); ``final`` the target
    of ``allow`` (RETURN in cali-fw-*, ACCEPT in cali-tw-*). ``rule['peers']`` None = any peer,
    a list = one rule per CIDR (an empty list matches nothing: no rule). ``rule['set']`` names an
    ipset the peer must also be in (the CNI plugin's selectors, whose members change at run time), and
    ``rule['set6']`` its IPv6 twin.
    With ``family`` 6 the IPv4 part of a rule is left out (and the IPv6 part with 4): its peers of the other
    family, an ICMP (or ICMPv6) rule and a rule naming an ipset without an IPv6 twin.
    """
    action = rule.get('action', 'allow')
    if action not in ('allow', 'deny'):
        raise ChainsError('action %r is not allow or deny' % (action,))
    target = final if action == 'allow' else 'DROP'
    protocol = normalize_protocol(rule.get('protocol'))
    ports = [normalize_port(p) for p in (rule.get('ports') or [])]
    set_name = rule.get('set6') if family == 6 else rule.get('set')
    if protocol == ('icmp' if family == 6 else '58') or (family == 6 and rule.get('set') and not set_name):
        return []
    # iptables-save's order: -s/-d, -p, then matches in the order given
    match_set = []
    if set_name:
        if not IPSET_NAME.match(str(set_name)):
            raise ChainsError('ipset name %r is not valid' % (set_name,))
        match_set = ['-m', 'set', '--match-set', str(set_name), 'src' if direction == 'ingress' else 'dst']
    proto_ports = _match_proto_ports(protocol, ports)
    tail = proto_ports[:2] + match_set + proto_ports[2:] + ['-j', target]
    peers = rule.get('peers')
    if peers is None:
        return [' '.join(tail)]
    flag = '-s' if direction == 'ingress' else '-d'
    # every peer is validated, also those of the other family (which that family's run renders)
    nets = [(ipv6_network if _family_of(peer) == 6 else ipv4_network)(peer, 'peer') for peer in peers]
    return [' '.join([flag, net] + tail) for net in nets if _family_of(net) == family]


def render_endpoint_chain(rules, direction, final, family=4):
    """One cali-fw-*/cali-tw-* chain: conntrack first, then policy; ``rules`` None = not selected."""
    out = ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-m conntrack --ctstate INVALID -j DROP']
    if rules is None:
        return out
    for rule in rules:
        out += render_rule(rule, direction, final, family)
    out.append('-j DROP')  # selected in this direction: default deny
    return out


def render(endpoints, pool=None, failsafe_inbound=DEFAULT_FAILSAFE_INBOUND, endpoint_to_host_action='drop',
           nat_outgoing=False, interface_prefix='cali', cni=False, family=4, pool6=None):
    """The desired cali-* state: ``{table: {'chains': {name: [rules]}, 'jumps': {builtin: [rule]}}}``.

    ``endpoints``: ``[{name, ip, ifname, ingress, egress, floating_ip, floating_ip6}]`` with ``ingress``/``egress``
    None (no policy selects it: allow) or a list of ``{action, protocol, ports, peers}``. With ``cni``
    a packet of a cali interface that is not one of ``endpoints`` goes on to the CNI plugin's dispatch
    chains (which drop what they do not know) instead of being dropped here. An endpoint has ``ip``, ``ip6`` or
    both; ``family`` 6 renders ip6tables' tables (``raw``, ``filter`` and ``nat``, the last empty unless an
    endpoint has ``floating_ip6``) with ``pool6`` (the IPv6 pool) for the floating IPs' SNAT; ``pool``,
    ``nat_outgoing`` and ``floating_ip`` are IPv4's and not used (and ``pool6``, ``floating_ip6`` not by
    ``family`` 4). Both pools are validated by both.
    """
    if family not in FAMILY_TABLES:
        raise ChainsError('family %r is not 4 or 6' % (family,))
    if endpoint_to_host_action not in ('drop', 'accept'):
        raise ChainsError('endpoint_to_host_action %r is not drop or accept' % (endpoint_to_host_action,))
    if nat_outgoing and not pool and family == 4:
        raise ChainsError('nat_outgoing needs pool (the container pool CIDR)')
    pool = ipv4_network(pool, 'pool') if pool else None
    pool6 = ipv6_network(pool6, 'pool6') if pool6 else None
    if family == 6:
        pool, nat_outgoing = pool6, False
    wildcard = interface_prefix + '+'
    seen_if, seen_ip, seen_fip = {}, {}, {}
    eps = []
    for index, ep in enumerate(endpoints or []):
        name = ep.get('name') or 'endpoints[%d]' % index
        ifname, ip = ep.get('ifname'), ep.get('ip')
        if not ifname or not _CHAIN_NAME.match(str(ifname)) or len(str(ifname)) > 15:
            raise ChainsError('endpoint %s: ifname %r is not an interface name' % (name, ifname))
        if not ifname.startswith(interface_prefix):
            raise ChainsError('endpoint %s: ifname %s does not start with %s' % (name, ifname, interface_prefix))
        if not ip and not ep.get('ip6'):
            raise ChainsError('endpoint %s: ip is missing' % name)
        ip = ipv4_address(ip, 'endpoint %s: ip' % name) if ip else None
        ip6 = ipv6_address(ep['ip6'], 'endpoint %s: ip6' % name) if ep.get('ip6') else None
        fip = ipv4_address(ep['floating_ip'], 'endpoint %s: floating_ip' % name) if ep.get('floating_ip') else None
        fip6 = ipv6_address(ep['floating_ip6'], 'endpoint %s: floating_ip6' % name) if ep.get('floating_ip6') else None
        if fip and not ip:
            raise ChainsError('endpoint %s: floating_ip needs ip (the address it is NATed to)' % name)
        if fip6 and not ip6:
            raise ChainsError('endpoint %s: floating_ip6 needs ip6 (the address it is NATed to)' % name)
        # each family's run NATs its own floating IPs only (both are validated by both)
        ep = dict(ep, ip=ip, ip6=ip6, floating_ip=fip if family == 4 else None,
                  floating_ip6=fip6 if family == 6 else None)
        for key, seen, value in (('ifname', seen_if, ifname), ('ip', seen_ip, ip), ('ip6', seen_ip, ip6),
                                 ('floating_ip', seen_fip, fip), ('floating_ip6', seen_fip, fip6)):
            if not value:
                continue
            if value in seen:
                raise ChainsError('endpoint %s: %s %s is also used by endpoint %s' % (name, key, value, seen[value]))
            seen[value] = name
        eps.append(ep)
    eps.sort(key=lambda e: e['ifname'])

    failsafe = [parse_failsafe(p) for p in (failsafe_inbound or [])]

    f = {}
    f['cali-INPUT'] = ['-i %s -g cali-wl-to-host' % wildcard, '-j cali-failsafe-in']
    f['cali-FORWARD'] = ['-i %s -j cali-from-wl-dispatch' % wildcard,
                         '-o %s -j cali-to-wl-dispatch' % wildcard,
                         '-i %s -j ACCEPT' % wildcard,
                         '-o %s -j ACCEPT' % wildcard]
    f['cali-OUTPUT'] = ['-o %s -j RETURN' % wildcard]
    nd_rules = ['-p 58 -m icmp6 --icmpv6-type %d -j ACCEPT' % t for t in ICMPV6_ND_TYPES] if family == 6 else []
    f['cali-OUTPUT'] = ['-o %s %s' % (wildcard, rule) for rule in nd_rules] + f['cali-OUTPUT']
    f['cali-failsafe-in'] = [' '.join(_match_proto_ports(proto, [port]) + ['-j', 'ACCEPT'])
                             for proto, port in failsafe]
    f['cali-wl-to-host'] = nd_rules + [
        '-j cali-from-wl-dispatch', '-j ' + ('ACCEPT' if endpoint_to_host_action == 'accept' else 'DROP')]
    from_dispatch, to_dispatch = [], []
    endpoint_rules = {}
    for ep in eps:
        fw, tw = endpoint_chains(ep['ifname'])
        from_dispatch.append('-i %s -g %s' % (ep['ifname'], fw))
        to_dispatch.append('-o %s -g %s' % (ep['ifname'], tw))
        try:
            endpoint_rules[fw] = render_endpoint_chain(ep.get('egress'), 'egress', 'RETURN', family)
            endpoint_rules[tw] = render_endpoint_chain(ep.get('ingress'), 'ingress', 'ACCEPT', family)
        except ChainsError as exc:
            raise ChainsError('endpoint %s: %s' % (ep.get('name') or ep['ifname'], exc)) from None
    # traffic from or to a cali interface this host does not know is dropped (as Felix does)
    if cni:
        from_dispatch.append('-i %s -g %s' % (wildcard, CNI_FROM_DISPATCH))
        to_dispatch.append('-o %s -g %s' % (wildcard, CNI_TO_DISPATCH))
    else:
        from_dispatch.append('-i %s -j DROP' % wildcard)
        to_dispatch.append('-o %s -j DROP' % wildcard)
    f['cali-from-wl-dispatch'] = from_dispatch
    f['cali-to-wl-dispatch'] = to_dispatch
    f.update(endpoint_rules)

    n = _render_nat(eps, pool, nat_outgoing, family)
    raw = {'cali-PREROUTING': ['-i %s -m rpfilter --invert -j DROP' % wildcard]}
    tables = {'filter': f, 'nat': n, 'raw': raw}
    for chains in tables.values():
        for name in chains:
            if len(name) > CHAIN_MAX:  # cannot happen with chain_name(); a guard for future chains
                raise ChainsError('chain name %s is longer than %d characters' % (name, CHAIN_MAX))
    # an empty table is owned by nobody: none of our chains there, none left over (ip6tables nat without a
    # floating IP; such a host need not have IPv6 NAT at all)
    return {table: normalize_table({'chains': tables[table], 'jumps': {b: ['-j ' + c] for b, c in HOOKS[table]}}
                                   if tables[table] else {'chains': {}, 'jumps': {}})
            for table in FAMILY_TABLES[family]}


def _render_nat(eps, pool, nat_outgoing, family):
    """The nat chains: each floating IP DNATed to its endpoint, and the endpoint's own connections leaving from it;
    for IPv6 nothing at all without a floating IP (its jumps neither)."""
    key, host = ('floating_ip6', lambda a: a + '/128') if family == 6 else ('floating_ip', host_cidr)
    with_fip = sorted((e for e in eps if e.get(key)), key=lambda e: str(e[key]))
    if family == 6 and not with_fip:
        return {}
    n = {}
    n['cali-PREROUTING'] = ['-j cali-fip-dnat']
    n['cali-OUTPUT'] = ['-j cali-fip-dnat']
    n['cali-POSTROUTING'] = ['-j cali-fip-snat'] + (['-j cali-nat-outgoing'] if family == 4 else [])
    dnat, snat = [], []
    for ep in with_fip:
        ip = str(ep['ip6' if family == 6 else 'ip']).split('/', maxsplit=1)[0]
        fip = str(ep[key]).split('/', maxsplit=1)[0]
        dnat.append('-d %s -j DNAT --to-destination %s' % (host(fip), ip))
        # hairpin: the workload reaching its own floating IP
        snat.append('-s %s -d %s -j SNAT --to-source %s' % (host(ip), host(ip), fip))
        # connections the workload opens to anything outside the pool leave from its floating IP
        if pool:
            snat.append('-s %s ! -d %s -j SNAT --to-source %s' % (host(ip), pool, fip))
        else:
            snat.append('-s %s -j SNAT --to-source %s' % (host(ip), fip))
    n['cali-fip-dnat'] = dnat
    n['cali-fip-snat'] = snat
    if family == 4:
        n['cali-nat-outgoing'] = ['-s %s ! -d %s -j MASQUERADE' % (pool, pool)] if nat_outgoing else []
    return n


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
