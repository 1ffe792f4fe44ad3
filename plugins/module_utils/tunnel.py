# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""IPIP tunnel device and its host-protection chain, used by calico_tunnel and calico_node_state.

Pure planning functions (read state -> decide) plus thin appliers over an injectable runner, so
unit tests drive them with a faked ``ip`` / ``iptables-save`` / ``iptables-restore``.

Tunnel device MTU = parent MTU - 20 (the outer IPv4 header); IP protocol 4 is
accepted into a host only from fabric node IPs.
"""

from __future__ import annotations

import json
import re
import subprocess

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.module_utils.chains import normalize_rule

IPIP_OVERHEAD = 20
DEFAULT_CHAIN = 'cali-INPUT-ipip'
CHAIN_MAX = 28  # iptables chain names <= 28 characters
IFNAME_MAX = 15  # the kernel's IFNAMSIZ - 1
# Whole-value patterns (\Z: '$' would let a trailing newline into an iptables-restore payload).
_CHAIN_RE = re.compile(r'cali-[A-Za-z0-9_-]+\Z')
_OCTET = r'(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
_IPV4_RE = re.compile(_OCTET + r'(\.' + _OCTET + r'){3}\Z')

# The module options (calico_tunnel's, and calico_node_state's ``tunnel``): one spec for both.
OPTIONS = dict(
    name=dict(type='str', default='tun0'),
    state=dict(type='str', choices=['present', 'absent'], default='present'),
    local=dict(type='str'),
    mtu=dict(type='int'),
    firewall=dict(type='bool', default=True),
    allow_from=dict(type='list', elements='str', default=[]),
    chain=dict(type='str', default=DEFAULT_CHAIN),
)


class TunnelError(Exception):
    pass


def find_parent(addr_doc, local):
    """The link holding IPv4 address ``local`` in ``ip -j addr show`` output: ``{ifname, mtu}`` or None."""
    for link in addr_doc or []:
        for info in link.get('addr_info') or []:
            if info.get('family') == 'inet' and info.get('local') == local:
                return {'ifname': link.get('ifname'), 'mtu': link.get('mtu')}
    return None


def find_link(link_doc, name):
    for link in link_doc or []:
        if link.get('ifname') == name:
            return link
    return None


def describe(link):
    """Comparable view of a tunnel link from ``ip -j -d link show``: {kind, local, remote, mtu, up}."""
    if link is None:
        return None
    info = link.get('linkinfo') or {}
    data = info.get('info_data') or {}
    return {
        'kind': info.get('info_kind'),
        'local': data.get('local'),
        'remote': data.get('remote', 'any'),
        'mtu': link.get('mtu'),
        'up': 'UP' in (link.get('flags') or []),
    }


def render(state):
    if state is None:
        return ''
    return 'type {kind} local {local} remote {remote}\nmtu {mtu}\nstate {up}\n'.format(
        kind=state['kind'], local=state['local'], remote=state['remote'], mtu=state['mtu'],
        up='up' if state['up'] else 'down')


def plan_device(current, name, present, local=None, mtu=None):
    """ip commands (batch lines) turning ``current`` (describe()) into the wanted device."""
    if not present:
        return ['link del dev %s' % name] if current is not None else []
    wanted = {'kind': 'ipip', 'local': local, 'remote': 'any'}
    lines = []
    if current is not None and any(current.get(k) != v for k, v in wanted.items()):
        lines.append('link del dev %s' % name)
        current = None
    if current is None:
        lines.append('link add name %s type ipip local %s' % (name, local))
        lines.append('link set dev %s mtu %d up' % (name, mtu))
        return lines
    if current.get('mtu') != mtu:
        lines.append('link set dev %s mtu %d' % (name, mtu))
    if not current.get('up'):
        lines.append('link set dev %s up' % name)
    return lines


# --------------------------------------------------------------------------- host protection

def check_chain(chain):
    if not _CHAIN_RE.match(chain or '') or len(chain) > CHAIN_MAX:
        raise TunnelError('chain %r must start with cali-, contain no blank and have at most %d characters'
                          % (chain, CHAIN_MAX))


def desired_rules(chain, allow_from):
    """Rule lines (iptables-save spelling) of the chain: allowed sources return to INPUT, the rest drop."""
    rules = ['-A %s -s %s/32 -j RETURN' % (chain, ip) for ip in sorted(set(allow_from), key=_ip_key)]
    rules.append('-A %s -j DROP' % chain)
    return rules


def _ip_key(ip):
    try:
        return tuple(int(p) for p in ip.split('.'))
    except ValueError:
        return (999, ip)


def _normalized(line):
    """``-A <chain> <rule>`` with the rule in one canonical spelling: iptables-save prints protocol 4 as
    ``-p 4`` on one system and ``-p ipencap`` on another (seen in the IPIP VM, Debian's 6.1 kernel), and a
    jump compared as text would then be rewritten on every run."""
    _a, chain, *rest = line.split(None, 2)
    return ('-A %s %s' % (chain, normalize_rule(rest[0]))) if rest else line


def parse_save(text, chain):
    """From ``iptables-save -t filter``: (chain exists, its rule lines, INPUT lines jumping to it), rules in
    their canonical spelling (module_utils.chains.normalize_rule)."""
    exists = False
    rules, jumps = [], []
    for line in (text or '').splitlines():
        line = line.strip()
        if line.startswith(':%s ' % chain):
            exists = True
        elif line.startswith('-A %s ' % chain) or line == '-A %s' % chain:
            rules.append(_normalized(line))
        elif line.startswith('-A INPUT ') and line.split()[-2:] == ['-j', chain]:
            jumps.append(_normalized(line))
    return exists, rules, jumps


def jump_rule(chain):
    return '-p 4 -j %s' % chain


def plan_chain(save_text, chain, present, allow_from=()):
    """iptables-restore --noflush input (or None when nothing is to change) for the chain and its jump."""
    exists, rules, jumps = parse_save(save_text, chain)
    out = []
    if present:
        want = desired_rules(chain, allow_from)
        want_jump = '-A INPUT %s' % jump_rule(chain)
        if exists and rules == want and jumps == [want_jump]:
            return None
        out.append(':%s - [0:0]' % chain)  # declared with --noflush: created, or flushed if it exists
        out.extend(want)
        for extra in jumps[1:] if jumps and jumps[0] == want_jump else jumps:
            out.append('-D' + extra[2:])
        if want_jump not in jumps:
            out.append('-I INPUT 1 %s' % jump_rule(chain))
    else:
        if not exists and not jumps:
            return None
        for jump in jumps:
            out.append('-D' + jump[2:])
        if exists:
            out.append('-F %s' % chain)
            out.append('-X %s' % chain)
    return '*filter\n' + ''.join(line + '\n' for line in out) + 'COMMIT\n'


def render_chain(save_text, chain):
    exists, rules, jumps = parse_save(save_text, chain)
    if not exists and not jumps:
        return ''
    return ''.join(line + '\n' for line in jumps + rules)


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
            raise TunnelError('%s failed (rc=%s): %s' % (' '.join(argv), rc, (err or out or '').strip()))
        return out

    def json(self, args):
        out = self.run([self.ip, '-j'] + args)
        return json.loads(out) if out.strip() else []


def reconcile(params, check_mode, runner, bins=None):
    """What calico_tunnel (and calico_node_state's ``tunnel`` part) does, without AnsibleModule: read the device
    and the chain, plan, apply outside check mode, read back. Raises TunnelError."""
    name, present = params['name'], params['state'] == 'present'
    if not iproute.valid_ifname(name):
        raise TunnelError('name %r is not a valid interface name (at most %d characters)' % (name, IFNAME_MAX))
    check_chain(params['chain'])
    for what, values in (('local', [params['local']] if params.get('local') else []),
                         ('allow_from', params.get('allow_from') or [])):
        for value in values:
            if not _IPV4_RE.match(str(value)):
                raise TunnelError('%s %r is not an IPv4 address' % (what, value))
    t = Tunnel(runner, **(bins or {}))
    links = t.json(['-d', 'link', 'show'])
    before = describe(find_link(links, name))
    parent = mtu = None
    if params.get('local'):
        parent = find_parent(t.json(['addr', 'show']), params['local'])
    if present:
        if not params.get('local'):
            raise TunnelError('local (the node IP) is required with state=present')
        if parent is None:
            raise TunnelError('node IP %s is not on any interface of this host; set the node IP to one of '
                              "the host's addresses" % params['local'])
        mtu = params.get('mtu') or (parent['mtu'] - IPIP_OVERHEAD)
        if not 68 <= mtu <= 65535:
            raise TunnelError('tunnel mtu %s is out of range 68-65535' % mtu)
    if before is not None and before['kind'] not in ('ipip', None) and not present:
        raise TunnelError('%s is a %s device, not ipip: not removing it' % (name, before['kind']))
    lines = plan_device(before, name, present, params.get('local'), mtu)
    after = None
    if present:
        after = {'kind': 'ipip', 'local': params['local'], 'remote': 'any', 'mtu': mtu, 'up': True}

    save_before = restore_input = None
    if params['firewall']:
        save_before = t.run([t.save, '-t', 'filter'])
        restore_input = plan_chain(save_before, params['chain'], present, params['allow_from'])

    save_after = save_before
    if not check_mode:
        if lines:
            t.run([t.ip, '-batch', '-'], data=''.join(line + '\n' for line in lines))
            now = describe(find_link(t.json(['-d', 'link', 'show']), name))
            if now != after:
                raise TunnelError('%s after the change is %s, expected %s' % (name, now, after))
        if restore_input:
            t.run([t.restore, '--noflush'], data=restore_input)
            save_after = t.run([t.save, '-t', 'filter'])
            if plan_chain(save_after, params['chain'], present, params['allow_from']) is not None:
                raise TunnelError('chain %s does not read back as applied' % params['chain'])
    elif restore_input:
        exists, _rules, _jumps = parse_save(save_before, params['chain'])
        if present:
            wanted = ['-A INPUT ' + jump_rule(params['chain'])] + desired_rules(
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
                       'before': render(before), 'after': render(after)}]
    if params['firewall']:
        result['diff'].append({'before_header': 'iptables filter %s' % params['chain'],
                               'after_header': 'iptables filter %s' % params['chain'],
                               'before': render_chain(save_before, params['chain']),
                               'after': render_chain(save_after, params['chain'])})
    return result


def binaries(get_bin_path, firewall):
    """``reconcile``'s ``bins`` from AnsibleModule.get_bin_path (iptables only with the firewall)."""
    bins = {'ip': get_bin_path('ip', required=True)}
    if firewall:
        bins['save'] = get_bin_path('iptables-save', required=True)
        bins['restore'] = get_bin_path('iptables-restore', required=True)
    return bins


def explain(exc):
    """The one-line message for a TunnelError (with the fix when the kernel lacks IPIP)."""
    msg = str(exc)
    if 'Unknown device type' in msg or 'ipip' in msg and 'not supported' in msg.lower():
        msg += ' (this kernel has no IPIP support: load module ipip)'
    return msg
