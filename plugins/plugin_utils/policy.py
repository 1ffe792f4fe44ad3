# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side policy planning: selectors, per-endpoint rule sets, floating IPs.

Called by :func:`fabric.build_fabric` after the workloads have their addresses. Inputs:

- per workload (``calico_workloads`` entries): ``labels`` (a dict of str -> str), ``floating_ip`` and
  ``floating_ip6`` (checked by :mod:`floating`);
- fleet-wide ``calico_policies``: a list of ``{name, order?, selector?, types?, ingress?, egress?}``,
  each rule ``{action: allow|deny, protocol?, from|to: {selector?, cidr?}, ports?}``.

Selectors are a small Calico subset, parsed here (never evaluated as code)::

    app == 'web'    role != 'db'    has(app)    !has(app)    all()    a == 'x' && b == 'y'
    a == 'x' || b == 'y'    (parentheses)    tier in {'web', 'api'}    tier not in {'db'}

``k != 'v'`` and ``k not in {...}`` also match workloads without the label (as in Calico).

Semantics (Kubernetes NetworkPolicy / Calico): a workload that no policy selects in a direction
allows everything in that direction; a selected one allows only what a rule of a selecting
policy allows (policies by ``order`` then name, rules in list order, first match wins) and drops
the rest. A policy applies to ``ingress`` and/or ``egress`` as listed in ``types``, else to the
directions whose key is present, else to ingress. Peer selectors are resolved here, at plan time,
to the addresses of the matching workloads across the whole fabric (one rule per address).

Every bad input is a one-line :class:`fabric.FabricError` naming the policy or host and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.module_utils import chains
from ansible_collections.netfleet.calico.plugins.module_utils.selector import (  # noqa: F401 (re-exported)
    SelectorError,
    canonical,
    match_selector,
    parse_selector,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs, inventory
from ansible_collections.netfleet.calico.plugins.plugin_utils.cni import set_name
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.floating import FloatingIps

DEFAULT_ORDER = 1000
DIRECTIONS = ('ingress', 'egress')
RULE_KEYS = {'action', 'protocol', 'ports', 'from', 'to'}
POLICY_KEYS = {'name', 'order', 'selector', 'types', 'ingress', 'egress', 'description'}
NAME_RE = inputs.NAME  # matched whole (fullmatch)
SELECTOR_FIX = "write it like app == 'web' && has(tier), role != 'db', or all()"


def policy_subject(name):
    return f"policy '{name}'"


def compile_selector(text, subject, where):
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise FabricError(subject, f'{where} {text!r} is malformed: {exc}', SELECTOR_FIX) from None


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------

def _cidrs(value, subject, where, pool):
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        net = inputs.network_or_none(item if isinstance(item, str) else None)
        if net is None:
            addr = inputs.address_or_none(item if isinstance(item, str) else None)
            if addr is None:
                raise FabricError(subject, f'{where} cidr {item!r} is not an IPv4 CIDR',
                                  'use a CIDR like 10.0.0.0/8 or an address like 192.168.100.50')
            out.append(f'{addr}/32')
        else:
            out.append(str(net.cidr))
    return out


def parse_rule(rule, subject, where, direction, pool):
    if not isinstance(rule, Mapping):
        raise FabricError(subject, f'{where} is not a mapping',
                          'write each rule as {action: allow, protocol: tcp, ports: [80], from: {...}}')
    unknown = sorted(set(rule) - RULE_KEYS)
    if unknown:
        raise FabricError(subject, f"{where} has unknown key(s) {', '.join(map(str, unknown))}",
                          'use action, protocol, ports and ' + ('from' if direction == 'ingress' else 'to'))
    peer_key = 'from' if direction == 'ingress' else 'to'
    if ('to' if direction == 'ingress' else 'from') in rule:
        wrong = 'to' if direction == 'ingress' else 'from'
        raise FabricError(subject, f"{where} uses '{wrong}' in an {direction} rule",
                          f"use '{peer_key}' ({direction} rules match the "
                          f"{'source' if direction == 'ingress' else 'destination'})")
    action = rule.get('action', 'allow')
    if action not in ('allow', 'deny'):
        raise FabricError(subject, f'{where} action {action!r} is not valid', 'use allow or deny')
    try:
        protocol = chains.normalize_protocol(rule.get('protocol'))
    except chains.ChainsError as exc:
        raise FabricError(subject, f'{where}: {exc}', 'use tcp, udp, icmp or a protocol number 1-255') \
            from None
    ports_raw = rule.get('ports') or []
    if not isinstance(ports_raw, list):
        ports_raw = [ports_raw]
    ports = []
    for port in ports_raw:
        try:
            ports.append(chains.normalize_port(port))
        except chains.ChainsError as exc:
            raise FabricError(subject, f'{where}: {exc}',
                              "use ports 1-65535 or ranges like '8000:8080'") from None
    if ports and protocol not in chains.PORT_PROTOCOLS:
        raise FabricError(subject, f"{where} lists ports but protocol is {protocol or 'any'}",
                          'set protocol: tcp or udp, or drop ports')
    if len(ports) > 15:
        raise FabricError(subject, f'{where} lists {len(ports)} ports (iptables multiport takes 15)',
                          'split the rule in two, or use port ranges')
    peer = rule.get(peer_key)
    selector = cidrs = None
    if peer is not None:
        if not isinstance(peer, Mapping) or not set(peer) <= {'selector', 'cidr'} or not peer:
            raise FabricError(subject, f"{where} '{peer_key}' must be {{selector: ...}} and/or "
                              "{cidr: ...}", f"write {peer_key}: {{selector: \"app == 'web'\"}}")
        if 'selector' in peer:
            selector = compile_selector(peer['selector'], subject, f'{where} {peer_key} selector')
        if 'cidr' in peer:
            cidrs = _cidrs(peer['cidr'], subject, f'{where} {peer_key}', pool)
    return {'action': action, 'protocol': protocol, 'ports': ports, 'selector': selector, 'cidrs': cidrs}


def parse_policies(value, pool):
    """Validate ``calico_policies``; return them sorted by (order, name) with compiled selectors."""
    if inputs.is_unset(value):
        return []
    if not isinstance(value, list):
        raise FabricError('calico_policies', 'is not a list',
                          'set calico_policies to a list of {name, selector, ingress, egress}')
    out, seen = [], set()
    for index, pol in enumerate(value):
        if not isinstance(pol, Mapping) or not isinstance(pol.get('name'), str) or not NAME_RE.fullmatch(pol['name']):
            raise FabricError(f'calico_policies[{index}]', 'has no valid name',
                              'give every policy a name of letters, digits, . _ -')
        name = pol['name']
        subject = policy_subject(name)
        if name in seen:
            raise FabricError(subject, 'is defined twice', 'give each policy its own name')
        seen.add(name)
        unknown = sorted(set(pol) - POLICY_KEYS)
        if unknown:
            raise FabricError(subject, f"has unknown key(s) {', '.join(map(str, unknown))}",
                              'use name, order, selector, types, ingress and egress')
        order = pol.get('order', DEFAULT_ORDER)
        if isinstance(order, bool) or not isinstance(order, (int, float)):
            raise FabricError(subject, f'order {order!r} is not a number', 'use a number like 100')
        selector = compile_selector(pol.get('selector', 'all()'), subject, 'selector')
        types = pol.get('types')
        if types is None:
            types = [d for d in DIRECTIONS if d in pol] or ['ingress']
        if not isinstance(types, list) or not types or not set(types) <= set(DIRECTIONS):
            raise FabricError(subject, f'types {types!r} is not valid', 'use [ingress], [egress] or both')
        rules = {}
        for direction in DIRECTIONS:
            raw = pol.get(direction) or []
            if not isinstance(raw, list):
                raise FabricError(subject, f'{direction} is not a list', f'write {direction}: [{{...}}, ...]')
            rules[direction] = [parse_rule(r, subject, f'{direction} rule {i + 1}', direction, pool)
                                for i, r in enumerate(raw)]
        out.append({'name': name, 'order': order, 'selector': selector, 'types': list(types), 'rules': rules})
    out.sort(key=lambda p: (p['order'], p['name']))
    return out


def plan_policy(reader, hosts, plan_hosts, pool_net, cni_members=(), pool_v6=None):
    """Add ``policy`` (per-endpoint rule sets) and ``floating_ips`` (and with ``pool_v6``, a dual-stack fleet,
    ``floating_ips_v6``) to every host of ``plan_hosts``; return the fleet's floating IPs, ``(IPv4, IPv6)``, each
    sorted exact prefixes (``a.b.c.d/32``, ``x::y/128``) for BIRD's filters.

    ``cni_members`` are the container networks' ranges ``(host, cidr, labels)``: a selector matches a
    range whose labels it matches, so static workloads' rules admit containers of any host, and every
    CNI host gets the policy document its plugin resolves new containers against (``cni.policy``)."""
    value, _source = inventory.fleet_setting(reader, hosts, 'calico_policies', None)
    policies = parse_policies(value, pool_net)
    floating = FloatingIps(plan_hosts, pool_net, pool_v6)

    # labels and floating IPs, checked per host in host order
    members = []  # (host, entry, labels)
    for name in hosts:
        subject = host_subject(name)
        for entry in plan_hosts[name]['workloads']:
            labels = inputs.parse_labels(entry.get('labels'), subject, f"workload '{entry['name']}'")
            floating.check(name, subject, entry)
            members.append((name, entry, labels))

    def ips_of(selector):
        return ([e['ip'] + '/32' for _h, e, labels in members if match_selector(selector, labels)]
                + [cidr for _h, cidr, labels in cni_members if ':' not in cidr and match_selector(selector, labels)])

    def ips6_of(selector):  # dual stack: the selected workloads' IPv6 addresses and ranges (ip6tables' rules)
        return ([e['ip6'] + '/128' for _h, e, labels in members if e.get('ip6') and match_selector(selector, labels)]
                + [cidr for _h, cidr, labels in cni_members if ':' in cidr and match_selector(selector, labels)])

    def resolve(rule):
        peers = None
        if rule['selector'] is not None:
            peers = ips_of(rule['selector']) + ips6_of(rule['selector'])
            if rule['cidrs'] is not None:  # both: the selected workloads (and ranges) inside the CIDRs
                peers = _intersect(peers, rule['cidrs'])
        elif rule['cidrs'] is not None:
            peers = list(rule['cidrs'])
        return {'action': rule['action'], 'protocol': rule['protocol'], 'ports': rule['ports'], 'peers': peers}

    resolved = [{'name': p['name'], 'selector': p['selector'], 'types': p['types'],
                 'rules': {d: [resolve(r) for r in p['rules'][d]] for d in DIRECTIONS}} for p in policies]

    for name in hosts:
        endpoints, fips, fips6 = [], [], []
        for host, entry, labels in members:
            if host != name:
                continue
            ep = {'name': entry['name'], 'ip': entry['ip'], 'ifname': entry['ifname'], 'ingress': None,
                  'egress': None, 'policies': []}
            if entry.get('ip6'):
                ep['ip6'] = entry['ip6']
            for pol in resolved:
                if not match_selector(pol['selector'], labels):
                    continue
                ep['policies'].append(pol['name'])
                for direction in pol['types']:
                    ep[direction] = (ep[direction] or []) + pol['rules'][direction]
            if entry.get('floating_ip'):
                ep['floating_ip'] = entry['floating_ip']
                fips.append(entry['floating_ip'] + '/32')
            if entry.get('floating_ip6'):
                ep['floating_ip6'] = entry['floating_ip6']
                fips6.append(entry['floating_ip6'] + '/128')
            endpoints.append(ep)
        plan_hosts[name]['policy'] = endpoints
        plan_hosts[name]['floating_ips'] = sorted(fips, key=inputs.netaddr.IPNetwork)
        if pool_v6 is not None:
            plan_hosts[name]['floating_ips_v6'] = sorted(fips6, key=inputs.netaddr.IPNetwork)
    if cni_members:
        dual = any(':' in cidr for _h, cidr, _labels in cni_members)
        document = _cni_document(policies, ips_of, ips6_of if dual else None)
        for name in hosts:
            if plan_hosts[name].get('cni', {}).get('enabled'):
                plan_hosts[name]['cni']['policy'] = document
    return floating.fleet(4), floating.fleet(6)


def _intersect(peers, cidrs):
    """The parts of ``peers`` (CIDRs) inside any of ``cidrs``: a peer inside a CIDR whole, a CIDR inside a
    peer (a container range wider than the rule's CIDR) as the CIDR."""
    nets = [inputs.netaddr.IPNetwork(c) for c in cidrs]
    out = []
    for peer in peers:
        pnet = inputs.netaddr.IPNetwork(peer)
        for net in nets:
            if pnet in net:
                out.append(str(pnet.cidr))
                break
            if net in pnet:
                out.append(str(net.cidr))
    return list(dict.fromkeys(out))


def _cni_document(policies, ips_of, ips6_of=None):
    """The policies as the CNI plugin applies them on a host: selectors as canonical text (matched there
    against a new container's labels), and each peer selector as an ipset with its fleet-wide members
    (``members6`` too on a dual-stack fleet: the IPv6 twin's)."""
    sets = {}

    def host_rule(rule):
        out = {'action': rule['action'], 'protocol': rule['protocol'], 'ports': rule['ports'],
               'peers': list(rule['cidrs']) if rule['cidrs'] is not None else None}
        if rule['selector'] is not None:
            name = set_name(rule['selector'])
            sets[name] = {'selector': canonical(rule['selector']), 'members': ips_of(rule['selector'])}
            if ips6_of is not None:
                sets[name]['members6'] = ips6_of(rule['selector'])
            out['set'] = name
        return out

    document = [{'name': p['name'], 'selector': canonical(p['selector']), 'types': p['types'],
                 **{d: [host_rule(r) for r in p['rules'][d]] for d in DIRECTIONS}} for p in policies]
    return {'policies': document, 'sets': sets}
