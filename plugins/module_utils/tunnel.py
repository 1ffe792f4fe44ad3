# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""IPIP tunnel device and its host-protection chain (issue #4), used by calico_tunnel.

Pure planning functions (read state -> decide) plus thin appliers over an injectable runner, so
unit tests drive them with a faked ``ip`` / ``iptables-save`` / ``iptables-restore``.

Design §5: tunnel device MTU = parent MTU - 20 (the outer IPv4 header); IP protocol 4 is
accepted into a host only from fabric node IPs.
"""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.module_utils.chains import normalize_rule

IPIP_OVERHEAD = 20
DEFAULT_CHAIN = 'cali-INPUT-ipip'
CHAIN_MAX = 28  # design §5: iptables chain names <= 28 characters


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
    if not chain.startswith('cali-') or len(chain) > CHAIN_MAX or any(c.isspace() for c in chain):
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
