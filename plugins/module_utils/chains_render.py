# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cali-* iptables hierarchy rendered from the endpoints and their policy.

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

import re

from ansible_collections.netfleet.calico.plugins.module_utils.chains import (
    CHAIN_MAX,
    CNI_FROM_DISPATCH,
    CNI_TO_DISPATCH,
    DEFAULT_FAILSAFE_INBOUND,
    FAMILY_TABLES,
    HOOKS,
    ICMPV6_ND_TYPES,
    IPSET_NAME,
    PORT_PROTOCOLS,
    ChainsError,
    endpoint_chains,
    host_cidr,
    ipv4_address,
    ipv4_network,
    ipv6_address,
    ipv6_network,
    normalize_port,
    normalize_protocol,
    normalize_table,
    parse_failsafe,
)

_CHAIN_NAME = re.compile(r'^[A-Za-z0-9_.+-]+$')


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
