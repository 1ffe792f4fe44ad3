#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_tunnel
short_description: Reconcile the IPIP tunnel device (tun0) of a Calico-style node and its host-protection chain
version_added: 0.2.0
description:
  - Creates or reconciles an IPIP device (default C(tun0)) with C(local) = the node IP and no fixed remote,
    MTU = MTU of the interface holding the node IP minus 20 (the outer IPv4 header), administratively up.
    A device of the wrong type or with another C(local) is replaced; MTU and state are changed in place.
  - With I(state=absent) the device is removed (the kernel drops every route through it).
  - "Host protection (I(firewall)): IP protocol 4 is accepted into the host only from I(allow_from) (the fabric's
    node IPs). A C(cali-*) chain (I(chain)) returns for those sources and drops every other IPIP packet; one jump
    C(-p 4) from C(INPUT) leads to it. Applied with one atomic C(iptables-restore --noflush), read back with
    C(iptables-save); only this chain and its jump are touched. With I(state=absent) both are removed."
  - Reads the state first and acts only when it differs, and never in check mode.
author:
  - netfleet.calico developers (!UNKNOWN)
requirements:
  - iproute2 (C(ip)) with JSON output; a kernel with IPIP (module C(ipip)).
  - iptables (C(iptables-save), C(iptables-restore)) when I(firewall=true).
options:
  name:
    description: Name of the tunnel device (at most 15 characters).
    type: str
    default: tun0
  state:
    description: C(present) creates/reconciles the device and the chain, C(absent) removes both.
    type: str
    choices: [present, absent]
    default: present
  local:
    description: The node IP, the tunnel's local end; must be an address of an interface of the host. Required
      with I(state=present); with I(state=absent) it only serves to report RV(workload_mtu).
    type: str
  mtu:
    description: Tunnel MTU. Default (null) is the MTU of the interface holding I(local) minus 20.
    type: int
  firewall:
    description: Manage the host-protection chain for IP protocol 4.
    type: bool
    default: true
  allow_from:
    description: Addresses allowed to send IPIP (protocol 4) packets to this host (the other nodes' IPs).
    type: list
    elements: str
    default: []
  chain:
    description: Name of the host-protection chain; must start with C(cali-) (at most 28 characters).
    type: str
    default: cali-INPUT-ipip
attributes:
  check_mode:
    support: full
    description: Reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Shows the device (type, local, remote, MTU, state) and the chain's rules before and after.
  platform:
    support: full
    platforms: posix
    description: Linux.
notes:
  - Routes through the tunnel are programmed by BIRD's kernel export (C(ifname)/C(onlink)), see role
    C(netfleet.calico.calico_node); this module only owns the device and the chain.
seealso:
  - module: netfleet.calico.calico_workloads
"""

EXAMPLES = r"""
- name: IPIP device for cross-subnet peers, IPIP only from fabric hosts
  netfleet.calico.calico_tunnel:
    local: 192.168.100.100
    allow_from: [192.168.100.101, 192.168.200.101, 192.168.200.102]

- name: Mode never - remove tun0 and the chain
  netfleet.calico.calico_tunnel:
    state: absent
"""

RETURN = r"""
device:
  description: The tunnel device after the run (null when absent).
  returned: always
  type: dict
  sample: {kind: ipip, local: 192.168.100.100, remote: any, mtu: 1480, up: true}
mtu:
  description: Tunnel MTU (null when absent).
  returned: always
  type: int
  sample: 1480
parent:
  description: The interface holding I(local) and its MTU (null when absent).
  returned: always
  type: dict
  sample: {ifname: eth0, mtu: 1500}
workload_mtu:
  description: MTU workload veths should use - the tunnel MTU when present, else the MTU of the interface holding
    I(local) (null when I(local) is not given).
  returned: always
  type: int
  sample: 1480
commands:
  description: ip batch lines run (or that would run in check mode).
  returned: always
  type: list
  elements: str
iptables:
  description: The iptables-restore input applied (or that would be), null when the chain was already right.
  returned: always
  type: str
"""

import json
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel

IFNAME_MAX = 15


def default_runner(argv, data=None):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Tunnel:
    def __init__(self, runner, ip='ip', save='iptables-save', restore='iptables-restore'):
        self.runner = runner
        self.ip, self.save, self.restore = ip, save, restore

    def run(self, argv, data=None):
        rc, out, err = self.runner(argv, data)
        if rc != 0:
            raise tunnel.TunnelError('%s failed (rc=%s): %s' % (' '.join(argv), rc, (err or out or '').strip()))
        return out

    def json(self, args):
        out = self.run([self.ip, '-j'] + args)
        return json.loads(out) if out.strip() else []


def reconcile(params, check_mode, runner, bins=None):
    """Everything the module does, without AnsibleModule (unit tests call this)."""
    name, present = params['name'], params['state'] == 'present'
    if not name or len(name) > IFNAME_MAX or '/' in name or any(c.isspace() for c in name):
        raise tunnel.TunnelError('name %r is not a valid interface name (at most %d characters)' % (name, IFNAME_MAX))
    tunnel.check_chain(params['chain'])
    t = Tunnel(runner, **(bins or {}))
    links = t.json(['-d', 'link', 'show'])
    before = tunnel.describe(tunnel.find_link(links, name))
    parent = mtu = None
    if params.get('local'):
        parent = tunnel.find_parent(t.json(['addr', 'show']), params['local'])
    if present:
        if not params.get('local'):
            raise tunnel.TunnelError('local (the node IP) is required with state=present')
        if parent is None:
            raise tunnel.TunnelError('node IP %s is not on any interface of this host; set the node IP to one of '
                                     "the host's addresses" % params['local'])
        mtu = params.get('mtu') or (parent['mtu'] - tunnel.IPIP_OVERHEAD)
        if not 68 <= mtu <= 65535:
            raise tunnel.TunnelError('tunnel mtu %s is out of range 68-65535' % mtu)
    if before is not None and before['kind'] not in ('ipip', None) and not present:
        raise tunnel.TunnelError('%s is a %s device, not ipip: not removing it' % (name, before['kind']))
    lines = tunnel.plan_device(before, name, present, params.get('local'), mtu)
    after = None
    if present:
        after = {'kind': 'ipip', 'local': params['local'], 'remote': 'any', 'mtu': mtu, 'up': True}

    save_before = restore_input = None
    if params['firewall']:
        save_before = t.run([t.save, '-t', 'filter'])
        restore_input = tunnel.plan_chain(save_before, params['chain'], present, params['allow_from'])

    save_after = save_before
    if not check_mode:
        if lines:
            t.run([t.ip, '-batch', '-'], data=''.join(line + '\n' for line in lines))
            now = tunnel.describe(tunnel.find_link(t.json(['-d', 'link', 'show']), name))
            if now != after:
                raise tunnel.TunnelError('%s after the change is %s, expected %s' % (name, now, after))
        if restore_input:
            t.run([t.restore, '--noflush'], data=restore_input)
            save_after = t.run([t.save, '-t', 'filter'])
            if tunnel.plan_chain(save_after, params['chain'], present, params['allow_from']) is not None:
                raise tunnel.TunnelError('chain %s does not read back as applied' % params['chain'])
    elif restore_input:
        exists, _rules, _jumps = tunnel.parse_save(save_before, params['chain'])
        if present:
            wanted = ['-A INPUT ' + tunnel.jump_rule(params['chain'])] + tunnel.desired_rules(
                params['chain'], params['allow_from'])
            save_after = ':%s - [0:0]\n' % params['chain'] + ''.join(line + '\n' for line in wanted)
        else:
            save_after = ''

    result = {
        'changed': bool(lines) or bool(restore_input),
        'device': after,
        'mtu': mtu,
        'parent': parent,
        'workload_mtu': mtu if present else (parent['mtu'] if parent else None),
        'commands': lines,
        'iptables': restore_input,
    }
    result['diff'] = [{'before_header': 'link %s' % name, 'after_header': 'link %s' % name,
                       'before': tunnel.render(before), 'after': tunnel.render(after)}]
    if params['firewall']:
        result['diff'].append({'before_header': 'iptables filter %s' % params['chain'],
                               'after_header': 'iptables filter %s' % params['chain'],
                               'before': tunnel.render_chain(save_before, params['chain']),
                               'after': tunnel.render_chain(save_after, params['chain'])})
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', default='tun0'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            local=dict(type='str'),
            mtu=dict(type='int'),
            firewall=dict(type='bool', default=True),
            allow_from=dict(type='list', elements='str', default=[]),
            chain=dict(type='str', default=tunnel.DEFAULT_CHAIN),
        ),
        required_if=[('state', 'present', ['local'])],
        supports_check_mode=True,
    )
    bins = {'ip': module.get_bin_path('ip', required=True)}
    if module.params['firewall']:
        bins['save'] = module.get_bin_path('iptables-save', required=True)
        bins['restore'] = module.get_bin_path('iptables-restore', required=True)
    try:
        result = reconcile(module.params, module.check_mode, default_runner, bins)
    except tunnel.TunnelError as exc:
        msg = str(exc)
        if 'Unknown device type' in msg or 'ipip' in msg and 'not supported' in msg.lower():
            msg += ' (this kernel has no IPIP support: load module ipip)'
        module.fail_json(msg=msg)
    if not module._diff:
        result.pop('diff')
    module.exit_json(**result)


if __name__ == '__main__':
    main()
