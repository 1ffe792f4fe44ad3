# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading ``iptables-save`` and writing ``iptables-restore --noflush`` input for the chains we own.

The other half of :mod:`chains` (which renders the wanted rules in iptables-save's spelling): parse
the kernel's rules into the same shape, keep only what is ours, and compute the one transaction that
turns the one into the other. Pure functions; the modules run the tools around them.
"""

from __future__ import annotations

import re

from ansible_collections.netfleet.calico.plugins.module_utils import chains
from ansible_collections.netfleet.calico.plugins.module_utils.chains import CHAIN_PREFIX, normalize_rule

_COUNTERS = re.compile(r'^\[\d+:\d+\]\s*')


def parse_save(text, prefix=CHAIN_PREFIX, ignore=(), ignore_prefix=None):
    """``iptables-save`` output -> ``{table: {'chains': {cali chain: [rules]}, 'jumps': {builtin: [rules]},
    'builtins': set, 'all_chains': set}}``: only the cali-* part (what this module owns) plus, per builtin
    chain, its rules that jump or go to a cali-* chain. Chains named in ``ignore`` (cali-* chains another
    module owns, like calico_tunnel's cali-INPUT-ipip) or starting with ``ignore_prefix`` (the CNI
    plugin's cali-cni-* chains) and the jumps to them are left out."""
    if ignore_prefix:
        ignore = _PrefixSet(ignore, ignore_prefix)
    tables = {}
    current = None
    for raw in (text or '').splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('*'):
            current = tables.setdefault(line[1:], {'chains': {}, 'jumps': {}, 'builtins': set(),
                                                   'all_chains': set()})
            continue
        if current is None or line == 'COMMIT':
            continue
        if line.startswith(':'):
            name, policy = (line[1:].split() + ['-'])[:2]
            current['all_chains'].add(name)
            if policy != '-':
                current['builtins'].add(name)
            if name.startswith(prefix) and name not in ignore:
                current['chains'].setdefault(name, [])
            continue
        line = _COUNTERS.sub('', line)
        if not line.startswith('-A '):
            continue
        _a, chain, *rest = line.split(None, 2)
        body = rest[0] if rest else ''
        if chain in ignore:
            continue
        if chain.startswith(prefix):
            current['chains'].setdefault(chain, []).append(normalize_rule(body))
        else:
            target = re.search(r'(?:^|\s)-[jg]\s+(\S+)', body)
            if target and target.group(1).startswith(prefix) and target.group(1) not in ignore:
                current['jumps'].setdefault(chain, []).append(normalize_rule(body))
    return tables


class _PrefixSet(frozenset):
    """A set of names that also contains every name starting with ``prefix``."""

    def __new__(cls, names, prefix):
        obj = super().__new__(cls, names)
        obj.prefix = prefix
        return obj

    def __contains__(self, name):
        return (isinstance(name, str) and name.startswith(self.prefix)) or frozenset.__contains__(self, name)


def owned_view(tables, table):
    """The owned part of one table as ``{'chains', 'jumps'}`` (empty when the table is not there)."""
    t = tables.get(table) or {}
    return {'chains': dict(t.get('chains', {})), 'jumps': {k: v for k, v in t.get('jumps', {}).items() if v}}


def format_view(view, table):
    """A readable iptables-save-like text of an owned view (for --diff): chains sorted by name."""
    lines = ['*%s' % table]
    for name in sorted(view.get('chains', {})):
        lines.append(':%s - [0:0]' % name)
    for builtin in sorted(view.get('jumps', {})):
        for rule in view['jumps'][builtin]:
            lines.append('-A %s %s' % (builtin, rule))
    for name in sorted(view.get('chains', {})):
        for rule in view['chains'][name]:
            lines.append('-A %s %s' % (name, rule))
    lines.append('COMMIT')
    return '\n'.join(lines) + '\n'


def restore_text(table, desired, current, insert=True):
    """The ``iptables-restore --noflush`` input that turns ``current`` (owned view) into ``desired``,
    or '' when they are equal. Owned chains whose rules differ are flushed and rewritten (the others
    are not named), stale cali-* chains are flushed and deleted, each builtin chain ends up with exactly
    one jump to its cali chain; rules and chains of anyone else are never named."""
    if desired == current:
        return ''
    lines = ['*%s' % table]
    want = desired['chains']
    have = current.get('chains', {})
    # only chains whose rules differ are rewritten (one changed endpoint = two chains), still one transaction
    rewrite = sorted(name for name in want if have.get(name) != want[name])
    for name in rewrite:
        if name not in have:
            lines.append(':%s - [0:0]' % name)
    for name in sorted(have):
        if name not in want or name in rewrite:
            lines.append('-F %s' % name)
    for builtin, rules in sorted(desired['jumps'].items()):
        existing = current.get('jumps', {}).get(builtin, [])
        for rule in rules:
            count = existing.count(rule)
            if count == 0:
                lines.append(('-I %s 1 %s' if insert else '-A %s %s') % (builtin, rule))
            for _unused in range(count - 1):
                lines.append('-D %s %s' % (builtin, rule))
    # jumps from builtin chains to cali chains that are not wanted (stale chains, old layouts)
    for builtin, rules in sorted(current.get('jumps', {}).items()):
        wanted = desired['jumps'].get(builtin, [])
        for rule in rules:
            if rule not in wanted:
                lines.append('-D %s %s' % (builtin, rule))
    for name in rewrite:
        for rule in want[name]:
            lines.append('-A %s %s' % (name, rule))
    for name in sorted(have):
        if name not in want:
            lines.append('-X %s' % name)
    lines.append('COMMIT')
    return '\n'.join(lines) + '\n'


def count_rules(desired):
    return sum(len(r) for t in desired.values() for r in t['chains'].values())


def cni_dispatch(texts, before, cni):
    """The CNI plugin's two dispatch chains around the restore input: with ``cni`` created (dropping
    everything) where missing, never rewritten (calico_cni fills them, and the plugin on every container
    start); without it deleted where left over, once the jumps to them are gone (calico_cni, run before,
    has already emptied them). Returns (texts, names of the chains deleted)."""
    present = before.get('filter', {}).get('all_chains', ())
    names = (chains.CNI_FROM_DISPATCH, chains.CNI_TO_DISPATCH)
    if cni:
        missing = [name for name in names if name not in present]
        if missing and texts.get('filter'):
            create = [':%s - [0:0]' % name for name in missing] + ['-A %s -j DROP' % name for name in missing]
            head, _sep, rest = texts['filter'].partition('\n')
            texts['filter'] = '\n'.join([head] + create + [rest])
        return texts, []
    left = [name for name in names if name in present]
    if left:
        body = texts.get('filter') or '*filter\nCOMMIT\n'
        head, _sep, _commit = body.rstrip('\n').rpartition('\n')
        texts['filter'] = '\n'.join([head] + ['-F %s' % n for n in left] + ['-X %s' % n for n in left]
                                    + ['COMMIT']) + '\n'
    return texts, left


def converge(ipt, before_text, desired, check_mode, insert=True, ignore=(), cni=False):
    """Apply (or in check mode validate) the restore input per table; return the result dict. ``ipt`` runs
    the backend's binaries: ``save()`` and ``restore(text, test=False)`` (module calico_chains, and the
    restore unit at boot)."""
    before = parse_save(before_text, ignore=ignore, ignore_prefix=chains.CNI_CHAIN_PREFIX)
    tables = [t for t in chains.TABLE_ORDER if t in desired]
    texts = {}
    for table in tables:
        current = owned_view(before, table)
        text = restore_text(table, desired[table], current, insert=insert)
        if text:
            texts[table] = text
    texts, dropped = cni_dispatch(texts, before, cni)
    if texts:
        for table in tables:
            if table in texts:
                ipt.restore(texts[table], test=check_mode)
    if check_mode or not texts:
        after = before
    else:
        after = parse_save(ipt.save(), ignore=ignore, ignore_prefix=chains.CNI_CHAIN_PREFIX)
    result = {'tables': [t for t in tables if t in texts], 'restore': texts}
    diff_before, diff_after = [], []
    changed = False
    mismatch = []
    for table in tables:
        b = owned_view(before, table)
        a = desired[table] if check_mode else owned_view(after, table)
        if b != a:
            changed = True
        if not check_mode and texts and a != desired[table]:
            mismatch.append(table)
        diff_before.append(format_view(b, table))
        diff_after.append(format_view(a, table))
    result['changed'] = changed or bool(dropped)
    result['diff'] = {'before': ''.join(diff_before), 'after': ''.join(diff_after),
                      'before_header': 'cali-* chains (iptables-save)', 'after_header': 'cali-* chains (wanted)'}
    result['mismatch'] = mismatch
    return result


class Iptables:
    """save/restore of one backend (``nft`` or ``legacy``; the plain binaries where the distribution has only
    one iptables) for one address family (4: iptables, 6: ip6tables). ``run(argv, data) -> (rc, out, err)`` and
    ``bin_path(name, required=False)`` come from the caller: module calico_chains, or the restore at boot."""

    def __init__(self, backend, run, bin_path, family=4):
        self.backend = backend
        self.run = run
        tool = 'ip6tables' if family == 6 else 'iptables'
        names = ('%s-%s-save' % (tool, backend), '%s-%s-restore' % (tool, backend)) \
            if backend in ('nft', 'legacy') else None
        self.save_bin = bin_path(names[0]) if names else None
        self.restore_bin = bin_path(names[1]) if names else None
        if not self.save_bin or not self.restore_bin:
            self.save_bin = bin_path(tool + '-save', required=True)
            self.restore_bin = bin_path(tool + '-restore', required=True)

    def save(self):
        rc, out, err = self.run([self.save_bin])
        if rc != 0:
            raise RuntimeError('%s failed (rc=%d): %s' % (self.save_bin, rc, err.strip()))
        return out

    def restore(self, text, test=False):
        argv = [self.restore_bin, '-w', '--noflush'] + (['--test'] if test else [])
        rc, out, err = self.run(argv, data=text)
        if rc != 0:
            raise RuntimeError('%s failed (rc=%d): %s' % (' '.join(argv), rc, (err or out).strip()))
