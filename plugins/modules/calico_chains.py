#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_chains
short_description: Program the cali-* iptables chains (policy, failsafe, floating IPs) atomically
version_added: 0.1.0
description:
  - Renders the whole C(cali-*) hierarchy of the C(filter) and C(nat) tables from a host's workload endpoints,
    their resolved policy rules and floating IPs (the chains of Calico's Felix), and applies each
    table with ONE C(iptables-restore -w --noflush), so a table never shows a half-written policy.
  - "filter: C(INPUT -> cali-INPUT -> cali-wl-to-host -> cali-from-wl-dispatch -> cali-fw-<if>) and
    C(cali-INPUT -> cali-failsafe-in); C(FORWARD -> cali-FORWARD -> cali-from-wl-dispatch / cali-to-wl-dispatch ->
    cali-fw-<if> / cali-tw-<if>); C(OUTPUT -> cali-OUTPUT)."
  - "nat: C(PREROUTING -> cali-PREROUTING -> cali-fip-dnat), C(OUTPUT -> cali-OUTPUT -> cali-fip-dnat),
    C(POSTROUTING -> cali-POSTROUTING -> cali-fip-snat, cali-nat-outgoing)."
  - Owns only chains whose names start with C(cali-) plus exactly one jump from each builtin chain it uses.
    Rules and chains of anyone else are never named in the restore input. C(cali-*) chains it does not render
    (endpoints that are gone) are flushed and deleted in the same transaction.
  - Endpoint chains accept C(RELATED,ESTABLISHED), drop C(INVALID), then apply the policy rules in order (first
    match wins); an endpoint selected in a direction ends with C(DROP), an unselected one allows all.
  - C(changed) and the diff come from comparing the normalised C(iptables-save) of the owned chains before and
    after. When the kernel already holds exactly the rendered chains nothing is applied at all.
  - Works with C(iptables-nft) and C(iptables-legacy); by default it uses whichever already holds rules on the host
    (as Calico and kube-proxy decide), else what C(iptables -V) reports.
  - "O(family=6) programs the same policy with C(ip6tables) (run the module once per family): the C(filter) chains
    above from the endpoints' O(endpoints[].ip6) and the IPv6 peers of their rules (IPv4 peers, C(icmp) rules
    and ipset rules are IPv4's), ICMPv6 neighbour discovery (types 130-133, 135, 136) always accepted from
    workloads into the host (C(cali-wl-to-host)) and from the host to them (C(cali-OUTPUT)), and C(raw
    PREROUTING -> cali-PREROUTING) with C(-i cali+ -m rpfilter --invert -j DROP): a workload sending from an IPv6
    address the host does not route back to its interface (not its own) reaches nobody. That is Felix's IPv6
    anti-spoofing (IPv6 has no rp_filter sysctl); for IPv4 M(netfleet.calico.calico_workloads) sets
    C(rp_filter=1) on each workload veth. The C(nat) chains above for IPv6 floating IPs
    (O(endpoints[].floating_ip6), SNAT leaving O(pool6) alone), and none at all while no endpoint has one;
    O(nat_outgoing) is IPv4's."
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iptables 1.8 (C(iptables-save), C(iptables-restore); C(iptables-nft-*) / C(iptables-legacy-*) when present).
options:
  endpoints:
    description:
      - The complete list of this host's workload endpoints (normally C(_calico_node_plan.policy) from the fabric
        plan). Chains of endpoints not listed are removed.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Workload name (messages only).
        type: str
      ip:
        description: The workload's IPv4 address (no prefix, or C(/32)); an endpoint has I(ip), I(ip6) or both.
        type: str
      ip6:
        description: The workload's IPv6 address (no prefix, or C(/128)).
        type: str
        version_added: 0.1.0
      ifname:
        description: Host-side interface (C(cali) + 11 hex digits).
        type: str
        required: true
      floating_ip:
        description:
          - Floating IP DNATed to I(ip); the workload's own connections out of the pool leave from it (IPv4 only).
        type: str
      floating_ip6:
        description:
          - IPv6 floating IP DNATed to I(ip6) by ip6tables (O(family=6)); the workload's own connections out of
            O(pool6) leave from it.
        type: str
        version_added: 0.1.0
      ingress:
        description:
          - Rules for traffic to the workload, in order; null means no policy selects the workload for ingress
            (allow all), a list (even empty) means selected (default deny after the rules).
        type: list
        elements: dict
      egress:
        description: Rules for traffic from the workload, like I(ingress).
        type: list
        elements: dict
      policies:
        description: Names of the policies that select the endpoint (informational).
        type: list
        elements: str
  pool:
    description: The container pool (CIDR); floating-IP SNAT and O(nat_outgoing) leave pool-internal traffic alone.
    type: str
  pool6:
    description: The IPv6 container pool (CIDR); with O(family=6) the IPv6 floating-IP SNAT leaves traffic inside it
      alone.
    type: str
    version_added: 0.1.0
  nat_outgoing:
    description: Masquerade traffic from the pool to addresses outside it (C(cali-nat-outgoing)).
    type: bool
    default: false
  endpoint_to_host_action:
    description:
      - What happens to traffic from a workload to the host itself after the workload's egress policy
        (C(cali-wl-to-host)). C(drop) is Calico's default (DefaultEndpointToHostAction).
    type: str
    choices: [drop, accept]
    default: drop
  failsafe_inbound_ports:
    description:
      - C(protocol:port) entries always accepted into the host (C(cali-failsafe-in)), whatever the policy says, so a
        policy can never cut Ansible (SSH) or BGP off a host. Default is Calico's FailsafeInboundHostPorts.
    type: list
    elements: str
    default: ['tcp:22', 'udp:68', 'tcp:179', 'tcp:2379', 'tcp:2380', 'tcp:5473', 'tcp:6443', 'tcp:6666', 'tcp:6667']
  state:
    description:
      - C(present) programs the chains. C(absent) removes every C(cali-*) chain of O(family) and the jumps to them
        (the other options but O(backend) are not used); role calico_node does so with the IPv6 chains of a host
        whose fleet no longer sets C(calico_pool_v6).
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
  family:
    description:
      - C(4) programs C(iptables), C(6) C(ip6tables) (see the description for what differs).
    type: int
    choices: [4, 6]
    default: 4
    version_added: 0.1.0
  backend:
    description:
      - C(auto) uses the backend that already holds rules (nft vs legacy), else the one C(iptables -V) reports.
        With O(family=6) the IPv6 rules decide, and while there are none the IPv4 rules do, so both families end
        up in one backend.
      - C(nft) / C(legacy) force C(iptables-nft-*) / C(iptables-legacy-*).
    type: str
    choices: [auto, nft, legacy]
    default: auto
  ignore_chains:
    description:
      - C(cali-*) chains owned by another module (role calico_node passes calico_tunnel's C(cali-INPUT-ipip));
        they and the jumps to them are neither rewritten nor removed.
    type: list
    elements: str
    default: []
  cni:
    description:
      - The host runs the CNI plugin (role calico_node, C(calico_cni)). Packets of C(cali*) interfaces that are not
        in O(endpoints) go on to the plugin's dispatch chains (C(cali-cni-from-dispatch), C(cali-cni-to-dispatch))
        instead of being dropped; those chains must exist (M(netfleet.calico.calico_cni) creates them).
      - Chains named C(cali-cni-*) belong to the plugin and are never rewritten or removed here, with or without
        this option.
      - With O(family=6) the same goes for the plugin's ip6tables chains (a dual-stack host's containers get an
        IPv6 address too).
    type: bool
    default: false
    version_added: 0.1.0
  boot_state:
    description:
      - After a run that converged (not in check mode), record the rendered chains, the backend and the insert mode
        in this JSON file, for the restore unit that applies them again at boot (see
        M(netfleet.calico.calico_boot)). Written atomically and only when its content changes. Both families may
        record in the same file; each run replaces its own family's part.
    type: path
    version_added: 0.1.0
  insert_mode:
    description:
      - C(insert) puts a missing jump at the top of its builtin chain (Calico's ChainInsertMode default), C(append)
        at the end. A jump that exists is left where it is.
    type: str
    choices: [insert, append]
    default: insert
extends_documentation_fragment:
  - netfleet.calico.workloads
attributes:
  check_mode:
    support: full
    description:
      - Renders, reads C(iptables-save) and validates the restore input with C(iptables-restore --test).
      - Changes nothing.
  diff_mode:
    support: full
    description: The owned chains (and builtin jumps) before and after, in C(iptables-save) notation, per table.
  platform:
    support: full
    platforms: posix
    description: Linux with iptables; run as root.
notes:
  - Policy selectors are resolved to addresses by the controller (the C(netfleet.calico.fabric) plan); this module
    only sees address lists.
  - Host-to-local-workload traffic is allowed (C(cali-OUTPUT)), as in Felix.
seealso:
  - module: netfleet.calico.calico_workloads
  - module: community.general.iptables_state
"""

EXAMPLES = r"""
- name: Program policy and floating IPs from the fabric plan (what role calico_node does)
  netfleet.calico.calico_chains:
    endpoints: "{{ _calico_node_plan.policy }}"
    pool: "{{ calico_node_fabric.pool }}"
    nat_outgoing: true

- name: One web workload that only accepts TCP 80 from 172.17.9.2, reachable as 203.0.113.10
  netfleet.calico.calico_chains:
    pool: 172.17.0.0/16
    endpoints:
      - name: web
        ip: 172.17.8.2
        ifname: calif29bc91bbda
        floating_ip: 203.0.113.10
        ingress:
          - {action: allow, protocol: tcp, ports: ['80'], peers: [172.17.9.2/32]}
        egress: null

- name: The same policy for IPv6 (ip6tables), with IPv6 anti-spoofing, reachable as 2001:db8:99::10
  netfleet.calico.calico_chains:
    family: 6
    pool6: "2001:db8:8::/48"
    endpoints:
      - name: web
        ip: 172.17.8.2
        ip6: "2001:db8:8::2"
        ifname: calif29bc91bbda
        floating_ip6: "2001:db8:99::10"
        ingress:
          - {action: allow, protocol: tcp, ports: ['80'], peers: [172.17.9.2/32, "2001:db8:9::2/128"]}
        egress: null

- name: Remove every cali-* chain and jump
  netfleet.calico.calico_chains:
    endpoints: []
    failsafe_inbound_ports: []
"""

RETURN = r"""
backend:
  description: The iptables backend used.
  returned: always
  type: str
  sample: nft
tables:
  description: Tables whose owned chains differed from the rendering (and were rewritten, unless in check mode).
  returned: always
  type: list
  elements: str
  sample: [filter]
rules:
  description: Number of rules in the rendered cali-* chains (both tables).
  returned: always
  type: int
  sample: 42
restore:
  description: The C(iptables-restore --noflush) input per table that was applied (or would be in check mode).
  returned: always
  type: dict
  sample: {filter: "*filter\n-F cali-tw-calif29bc91bbda\n-A cali-tw-calif29bc91bbda ...\nCOMMIT\n"}
"""

import concurrent.futures

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import boot, chains, chains_render, chains_restore
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff


def make_iptables(module, backend, family=4):
    """The backend's save/restore, run through ``module.run_command`` (unit tests replace this function)."""
    return chains_restore.Iptables(
        backend, lambda argv, data=None: module.run_command(argv, data=data, binary_data=True), module.get_bin_path,
        family=family)


def _has_rules(text):
    return any(line.startswith('-A ') for line in (text or '').splitlines())


def detect_backend(module, make=None, family=4):
    """(backend, save output): the backend whose tables hold rules; nft wins a tie with rules in both only
    if it has more of them; with no rules anywhere, what ``iptables -V`` says. For ``family`` 6 the ip6tables
    rules decide; while there are none, the iptables rules do (both families in one backend)."""
    make = make or (lambda b, f=family: make_iptables(module, b, f))
    iptables = {backend: make(backend) for backend in ('nft', 'legacy')}

    def save(backend):
        try:
            return backend, iptables[backend].save()
        except RuntimeError:
            return backend, None

    # both reads at once: on a host with 10,000 rules the nft read alone is most of a no-change run
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outputs = {b: (iptables[b], out) for b, out in pool.map(save, iptables) if out is not None}
    counts = {b: sum(1 for line in out.splitlines() if line.startswith('-A ')) for b, (_i, out) in outputs.items()}
    with_rules = [b for b in ('nft', 'legacy') if counts.get(b)]
    if not with_rules and family == 6:
        chosen, _ipt, _text = detect_backend(module, lambda b: make(b, 4), 4)
        if chosen in outputs:
            return chosen, outputs[chosen][0], outputs[chosen][1]
        ipt = make(chosen)
        return chosen, ipt, ipt.save()
    if len(with_rules) == 1:
        chosen = with_rules[0]
    elif len(with_rules) == 2:
        chosen = 'nft' if counts['nft'] >= counts['legacy'] else 'legacy'
    else:
        chosen = default_backend(module)
        if chosen not in outputs:
            chosen = next(iter(outputs), chosen)
    if chosen in outputs:
        return chosen, outputs[chosen][0], outputs[chosen][1]
    ipt = make(chosen)
    return chosen, ipt, ipt.save()


def default_backend(module):
    binary = module.get_bin_path('iptables')
    if not binary:
        return 'nft'
    rc, out, err = module.run_command([binary, '-V'])
    return 'legacy' if 'legacy' in (out + err) else 'nft'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str'),
                ip=dict(type='str'),
                ip6=dict(type='str'),
                ifname=dict(type='str', required=True),
                floating_ip=dict(type='str'),
                floating_ip6=dict(type='str'),
                ingress=dict(type='list', elements='dict'),
                egress=dict(type='list', elements='dict'),
                policies=dict(type='list', elements='str'),
            ), required_one_of=[('ip', 'ip6')]),
            pool=dict(type='str'),
            pool6=dict(type='str'),
            nat_outgoing=dict(type='bool', default=False),
            endpoint_to_host_action=dict(type='str', default='drop', choices=['drop', 'accept']),
            failsafe_inbound_ports=dict(type='list', elements='str', default=list(chains.DEFAULT_FAILSAFE_INBOUND)),
            interface_prefix=dict(type='str', default='cali'),
            backend=dict(type='str', default='auto', choices=['auto', 'nft', 'legacy']),
            insert_mode=dict(type='str', default='insert', choices=['insert', 'append']),
            ignore_chains=dict(type='list', elements='str', default=[]),
            cni=dict(type='bool', default=False),
            boot_state=dict(type='path'),
            family=dict(type='int', default=4, choices=[4, 6]),
            state=dict(type='str', default='present', choices=['present', 'absent']),
        ),
        supports_check_mode=True,
    )
    p = module.params
    family = p['family']
    cni = p['cni']
    try:
        desired = chains_render.render(p['endpoints'], pool=p['pool'], failsafe_inbound=p['failsafe_inbound_ports'],
                                       endpoint_to_host_action=p['endpoint_to_host_action'],
                                       nat_outgoing=p['nat_outgoing'], interface_prefix=p['interface_prefix'], cni=cni,
                                       family=family, pool6=p['pool6'])
    except chains.ChainsError as exc:
        module.fail_json(msg=str(exc))
    if p['state'] == 'absent':  # every table of the family without a cali-* chain or jump
        desired = {table: {'chains': {}, 'jumps': {}} for table in desired}
    try:
        if p['backend'] == 'auto':
            backend, ipt, before_text = detect_backend(module, family=family)
        else:
            backend = p['backend']
            ipt = make_iptables(module, backend, family)
            before_text = ipt.save()
        result = chains_restore.converge(ipt, before_text, desired, module.check_mode,
                                         insert=p['insert_mode'] == 'insert', ignore=frozenset(p['ignore_chains']),
                                         cni=cni)
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), backend=locals().get('backend'))
    if result.pop('mismatch'):
        module.warn('the read-back of the cali-* chains differs from the rendering; the next run will rewrite '
                    'them again (please report with the diff)')
    if p['boot_state'] and not module.check_mode:
        try:
            result['changed'] = boot.record_chains(p['boot_state'], backend, desired, p['insert_mode'] == 'insert',
                                                   p['ignore_chains'], cni, family) or result['changed']
        except OSError as exc:
            module.fail_json(msg='boot_state: cannot write %s: %s' % (p['boot_state'], exc.strerror))
    out = dict(changed=result['changed'], backend=backend, tables=result['tables'],
               rules=chains_restore.count_rules(desired), restore=result['restore'], diff=result['diff'])
    # Echo the arguments without the endpoint list: 1,000 endpoints copied through no_log filtering and
    # back to the controller cost more than the whole no-change run (bench/chains).
    out['invocation'] = {'module_args': dict(p, endpoints='%d endpoints' % len(p['endpoints']))}
    exit_with_diff(module, out)


if __name__ == '__main__':
    main()
