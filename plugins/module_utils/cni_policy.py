# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Policy of the CNI plugin's containers: their endpoint chains, the dispatch entries and the ipsets.

The plugin owns exactly these, and nothing else:

* filter chains ``cali-cni-from-dispatch`` / ``cali-cni-to-dispatch`` (reached from the converge's
  ``cali-from-wl-dispatch`` / ``cali-to-wl-dispatch`` for cali interfaces it does not know) and
  ``cali-cni-fw-<if>`` / ``cali-cni-tw-<if>`` per container, laid out like the converge's endpoint
  chains (conntrack first, then the policies that select the container, default deny if any does);
* ipsets ``cali-s-<hash>``, one per peer selector of the fleet's policies. Their fleet-wide members
  (static workloads, and the address range of every container network whose labels match, on every
  host) come from the controller; each container on this host whose labels match is added on ADD.

On a dual-stack host (``ipv6`` in the policy document) the same chains exist in ip6tables, rendered from
the same policy for the containers' IPv6 addresses, and each selector has an IPv6 twin ``cali-s-<hash>-6``
(``hash:net family inet6``, members ``members6``).

Two paths: :class:`Writes` (:func:`add_endpoint` / :func:`remove_endpoint` for one container; the agent
batches every call that arrives together: one ``ipset restore`` and one ``iptables-restore --noflush``
each way, no read-back: the ADD latency budget) and :func:`sync`, which reads
both back and converges everything (``iptables-save`` / ``ipset save``), used by the converge and by GC.
Callers hold the store lock, so the two never interleave.
"""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.module_utils import chains, chains_render, chains_restore, iproute
from ansible_collections.netfleet.calico.plugins.module_utils.selector import (
    SelectorError,
    match_selector,
    parse_selector,
)

SET_PREFIX = 'cali-s-'
FROM_DISPATCH = chains.CNI_FROM_DISPATCH
TO_DISPATCH = chains.CNI_TO_DISPATCH
DIRECTIONS = ('ingress', 'egress')
IPTABLES = {'nft': ('iptables-nft-save', 'iptables-nft-restore'),
            'legacy': ('iptables-legacy-save', 'iptables-legacy-restore')}
SET6_SUFFIX = '-6'


class PolicyError(Exception):
    def __init__(self, msg, code=5):
        super().__init__(msg)
        self.msg = msg
        self.code = code


def run(argv, data=None):
    """stdout of ``argv`` (iproute's runner: C locale, no shell); PolicyError when it fails."""
    try:
        rc, out, err = iproute.run_process(argv, data, 60)
    except OSError as exc:
        raise PolicyError('%s: %s' % (argv[0], exc)) from None
    if rc != 0:
        detail = (err or out).strip()[:400]
        raise PolicyError('%s failed (rc=%d): %s' % (' '.join(argv), rc, detail))
    return out


def endpoint_chain_names(ifname):
    return chains.chain_name('cni', 'fw', ifname), chains.chain_name('cni', 'tw', ifname)


def families(policy):
    """The address families whose chains the plugin writes: 4, and 6 on a dual-stack host."""
    return (4, 6) if policy.get('ipv6') else (4,)


def set6_name(name):
    """The IPv6 twin of a selector's ipset."""
    return name + SET6_SUFFIX


def tools(policy, family=4):
    """(save, restore) binaries of the policy's backend for ``family``."""
    save, restore = IPTABLES[policy.get('iptables', 'nft')]
    if family == 6:
        return save.replace('iptables', 'ip6tables', 1), restore.replace('iptables', 'ip6tables', 1)
    return save, restore


# ---------------------------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------------------------

def _selects(selector_text, labels, cache):
    tree = cache.get(selector_text)
    if tree is None:
        try:
            tree = cache[selector_text] = parse_selector(selector_text)
        except SelectorError as exc:
            raise PolicyError('selector %r in the CNI configuration is malformed: %s' % (selector_text, exc),
                              code=7) from None
    return match_selector(tree, labels)


def endpoint_rules(labels, policy, cache=None):
    """(egress rules or None, ingress rules or None, names of the selecting policies) for a container."""
    cache = {} if cache is None else cache
    rules = {'ingress': None, 'egress': None}
    names = []
    for pol in policy.get('policies') or []:
        if not _selects(pol.get('selector') or 'all()', labels, cache):
            continue
        names.append(pol['name'])
        for direction in pol.get('types') or ['ingress']:
            rules[direction] = (rules[direction] or []) + list(pol.get(direction) or [])
    return rules['egress'], rules['ingress'], names


def _with_set6(rules):
    return None if rules is None else [dict(r, set6=set6_name(r['set'])) if r.get('set') else r for r in rules]


def render_endpoint(record, policy, cache=None, family=4):
    """``{chain: [rules]}`` of one container's two endpoint chains (``family`` 6: ip6tables')."""
    egress, ingress, _names = endpoint_rules(record.get('labels') or {}, policy, cache)
    if family == 6:
        egress, ingress = _with_set6(egress), _with_set6(ingress)
    fw, tw = endpoint_chain_names(record['host_ifname'])
    try:
        render = chains_render.render_endpoint_chain
        return {fw: [chains.normalize_rule(r) for r in render(egress, 'egress', 'RETURN', family)],
                tw: [chains.normalize_rule(r) for r in render(ingress, 'ingress', 'ACCEPT', family)]}
    except chains.ChainsError as exc:
        raise PolicyError('policy for container %s: %s' % (record.get('container_id'), exc), code=7) from None


def render_dispatch(records):
    """The two dispatch chains for ``records`` (sorted by interface; unknown interfaces are dropped)."""
    ifnames = sorted(r['host_ifname'] for r in records if r and r.get('host_ifname'))
    from_d, to_d = [], []
    for ifname in ifnames:
        fw, tw = endpoint_chain_names(ifname)
        from_d.append(chains.normalize_rule('-i %s -g %s' % (ifname, fw)))
        to_d.append(chains.normalize_rule('-o %s -g %s' % (ifname, tw)))
    from_d.append('-j DROP')
    to_d.append('-j DROP')
    return {FROM_DISPATCH: from_d, TO_DISPATCH: to_d}


def local_members(record, policy, cache=None):
    """Names of the ipsets a container's own address belongs in (its labels match the set's selector)."""
    cache = {} if cache is None else cache
    labels = record.get('labels') or {}
    return sorted(name for name, spec in (policy.get('sets') or {}).items()
                  if _selects(spec.get('selector') or 'all()', labels, cache))


def desired_sets(records, policy):
    """``{set name: set of members}``: the controller's fleet-wide members plus this host's containers (and
    on a dual-stack host the IPv6 twins: ``members6`` plus the containers' IPv6 addresses)."""
    cache = {}
    specs = policy.get('sets') or {}
    out = {name: {_member(m) for m in spec.get('members') or []} for name, spec in specs.items()}
    if policy.get('ipv6'):
        out.update({set6_name(name): {_member(m) for m in spec.get('members6') or []} for name, spec in specs.items()})
    for record in records:
        if record and record.get('ip'):
            for name in local_members(record, policy, cache):
                out[name].add(record['ip'])
                if record.get('ip6') and policy.get('ipv6'):
                    out[set6_name(name)].add(record['ip6'])
    return out


def _member(text):
    text = str(text)
    for host in ('/32', '/128'):
        if text.endswith(host):
            return text[:-len(host)]
    return text


# ---------------------------------------------------------------------------------------------
# the fast path (ADD / DEL): write what changes, read nothing back
# ---------------------------------------------------------------------------------------------

def _restore(policy, text, family=4):
    run([tools(policy, family)[1], '--noflush'], data=text)


def _dispatch_lines(records):
    lines = []
    for name, rules in sorted(render_dispatch(records).items()):
        lines.append(':%s - [0:0]' % name)  # declaring a chain with --noflush flushes it: one transaction
        lines.extend('-A %s %s' % (name, rule) for rule in rules)
    return lines


def _dispatch_entries(ifname):
    fw, tw = endpoint_chain_names(ifname)
    return ((FROM_DISPATCH, chains.normalize_rule('-i %s -g %s' % (ifname, fw))),
            (TO_DISPATCH, chains.normalize_rule('-o %s -g %s' % (ifname, tw))))


class Writes:
    """The ipset and iptables-restore input of one or more endpoint changes, applied by :meth:`flush` in one
    ``ipset restore`` for new members, one ``iptables-restore --noflush`` (and one ``ip6tables-restore`` on a
    dual-stack host) and one ``ipset restore`` for members that go: a batch of ADDs and DELs costs three or
    four processes, not three per container."""

    def __init__(self, policy):
        self.policy = policy
        self.set_adds, self.set_dels = [], []
        # per family: chain declarations, their rules, dispatch inserts, dispatch deletes, chains to delete
        self.rules = {family: {'decls': [], 'body': [], 'inserts': [], 'deletes': [], 'tail': []}
                      for family in families(policy)}

    def __bool__(self):
        return bool(self.set_adds or self.set_dels
                    or any(r['body'] or r['deletes'] or r['tail'] for r in self.rules.values()))

    def add(self, record):
        """One container's set memberships, chains and dispatch entries."""
        if not self.policy.get('enabled'):
            return
        for name in local_members(record, self.policy):
            self.set_adds.append('add %s %s\n' % (name, record['ip']))
            if record.get('ip6') and 6 in self.rules:
                self.set_adds.append('add %s %s\n' % (set6_name(name), record['ip6']))
        for family, rules in self.rules.items():
            chain_rules = render_endpoint(record, self.policy, family=family)
            rules['decls'].extend(':%s - [0:0]' % name for name in sorted(chain_rules))
            rules['body'].extend('-A %s %s' % (name, rule) for name, lines in sorted(chain_rules.items())
                                 for rule in lines)
            rules['inserts'].extend('-I %s 1 %s' % entry for entry in _dispatch_entries(record['host_ifname']))

    def remove(self, record):
        """Undo :meth:`add` for a container (missing pieces are not an error)."""
        if not self.policy.get('enabled'):
            return
        fw, tw = endpoint_chain_names(record['host_ifname'])
        for rules in self.rules.values():
            rules['deletes'].extend('-D %s %s' % entry for entry in _dispatch_entries(record['host_ifname']))
            rules['tail'].extend([':%s - [0:0]' % fw, ':%s - [0:0]' % tw, '-X %s' % fw, '-X %s' % tw])
        if record.get('ip'):
            for name in local_members(record, self.policy):
                self.set_dels.append('del %s %s\n' % (name, record['ip']))
                if record.get('ip6') and 6 in self.rules:
                    self.set_dels.append('del %s %s\n' % (set6_name(name), record['ip6']))

    def flush(self, records):
        """Apply everything; ``records`` are the attachments once these changes are made. The dispatch
        entries are inserted and deleted in place (the final DROP stays last; entries match distinct
        interfaces, so their order does not matter), as a restore that only adds rules does not wait for
        the kernel's RCU grace period. Should that fail (a dispatch chain gone, rules flushed by hand),
        both dispatch chains are rewritten whole from ``records`` in the same transaction."""
        if not self:
            return
        if self.set_adds:
            run(['ipset', 'restore', '-exist'], data=''.join(self.set_adds))
        for family, r in self.rules.items():
            fast = r['decls'] + r['body'] + r['inserts'] + r['deletes'] + r['tail']
            if not fast:
                continue
            try:
                _restore(self.policy, '\n'.join(['*filter'] + fast + ['COMMIT']) + '\n', family)
            except PolicyError:
                whole = r['decls'] + _dispatch_lines(records) + r['body'] + r['tail']
                _restore(self.policy, '\n'.join(['*filter'] + whole + ['COMMIT']) + '\n', family)
        if self.set_dels:
            run(['ipset', 'restore', '-exist'], data=''.join(self.set_dels))
        self.__init__(self.policy)

    def split_removals(self):
        """For removals only: apply the ipset deletions now (an address must leave the sets before it can be
        handed out again) and return the rules still to delete, as a :class:`Writes` whose :meth:`flush_rules`
        may run outside the store lock (deleting rules waits for RCU grace periods)."""
        if self.set_adds or any(r['body'] or r['inserts'] for r in self.rules.values()):
            raise ValueError('split_removals() on writes that add')
        if self.set_dels:
            run(['ipset', 'restore', '-exist'], data=''.join(self.set_dels))
        rules = Writes(self.policy)
        for family, r in self.rules.items():
            rules.rules[family].update(deletes=r['deletes'], tail=r['tail'])
        self.__init__(self.policy)
        return rules

    def flush_rules(self):
        """Delete the dispatch entries and chains in one restore per family, with no fallback (PolicyError when
        any is missing: the caller converges with :func:`sync` under the store lock instead)."""
        for family, r in self.rules.items():
            if r['deletes'] or r['tail']:
                _restore(self.policy, '\n'.join(['*filter'] + r['deletes'] + r['tail'] + ['COMMIT']) + '\n', family)
        self.__init__(self.policy)


def add_endpoint(record, records, policy):
    """Install one container's set memberships, chains and dispatch entries now (``records`` includes it)."""
    writes = Writes(policy)
    writes.add(record)
    writes.flush(records)


def remove_endpoint(record, records, policy):
    """Undo :func:`add_endpoint` now (``records`` no longer includes it)."""
    writes = Writes(policy)
    writes.remove(record)
    writes.flush(records)


# ---------------------------------------------------------------------------------------------
# sync: read back and converge everything the plugin owns
# ---------------------------------------------------------------------------------------------

def read_sets():
    """``{name: set of members}`` of the cali-s-* ipsets (``ipset save``)."""
    out = {}
    for line in run(['ipset', 'save']).splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].startswith(SET_PREFIX):
            if words[0] == 'create':
                out.setdefault(words[1], set())
            elif words[0] == 'add':
                out.setdefault(words[1], set()).add(_member(words[2]))
    return out


def plan_sets(desired, current):
    """(restore text that creates and fills sets, names to destroy once no rule references them)."""
    lines = []
    for name in sorted(desired):
        have = current.get(name)
        if have is None:
            lines.append('create %s hash:net family %s' % (name, 'inet6' if name.endswith(SET6_SUFFIX) else 'inet'))
            have = set()
        lines.extend('add %s %s' % (name, m) for m in sorted(desired[name] - have))
        lines.extend('del %s %s' % (name, m) for m in sorted(have - desired[name]))
    stale = sorted(set(current) - set(desired))
    return ''.join(line + '\n' for line in lines), stale


def desired_chains(records, policy, family=4):
    """Disabled (the plugin being removed): only the two dispatch chains, dropping everything, stay until
    calico_chains deletes the jumps to them and then them."""
    if not policy.get('enabled'):
        return {'chains': render_dispatch([]), 'jumps': {}}
    cache = {}
    want = render_dispatch(records)
    for record in records:
        if record and record.get('host_ifname'):
            want.update(render_endpoint(record, policy, cache, family))
    return {'chains': want, 'jumps': {}}


def _plan_chains(records, policy, family):
    """(have, want, restore text) of the plugin's chains of one family."""
    current = chains_restore.parse_save(run([tools(policy, family)[0], '-t', 'filter']),
                                        prefix=chains.CNI_CHAIN_PREFIX)
    have = chains_restore.owned_view(current, 'filter')
    have['jumps'] = {}  # the converge's gotos into our dispatch chains are the converge's
    want = desired_chains(records, policy, family)
    for name in (FROM_DISPATCH, TO_DISPATCH):  # ADD inserts at the top: any order of the entries is right
        got, wanted = have['chains'].get(name), want['chains'].get(name)
        if got and wanted and got[-1] == wanted[-1] and sorted(got[:-1]) == sorted(wanted[:-1]):
            have['chains'][name] = wanted
    return have, want, chains_restore.restore_text('filter', want, have)


def sync(records, policy, check_mode=False):
    """Converge the plugin's ipsets and chains (ip6tables' too on a dual-stack host) to ``records`` + ``policy``;
    return a result dict with ``changed`` and a ``diff`` (before/after as readable text)."""
    records = [r for r in records if r and not r.get('corrupt')]
    want_sets = desired_sets(records, policy) if policy.get('enabled') else {}
    have_sets = read_sets()
    set_text, stale_sets = plan_sets(want_sets, have_sets)
    plans = {family: _plan_chains(records, policy, family) for family in families(policy)}
    changed = bool(set_text or stale_sets or any(text for _h, _w, text in plans.values()))
    if changed and not check_mode:
        if set_text:
            run(['ipset', 'restore', '-exist'], data=set_text)
        for family, (_have, _want, text) in plans.items():
            if text:
                _restore(policy, text, family)
        for name in stale_sets:
            run(['ipset', 'destroy', name])

    def sets_text(sets):
        return ''.join('%s: %s\n' % (name, ' '.join(sorted(sets[name]))) for name in sorted(sets))

    def view(index):
        return ''.join(('' if family == 4 else 'ip6tables:\n') + chains_restore.format_view(plan[index], 'filter')
                       for family, plan in plans.items())

    return {
        'changed': changed,
        'sets': sorted(want_sets),
        'chains': sorted(plans[4][1]['chains']),
        'commands': {'ipset': set_text, 'iptables': plans[4][2], 'destroy': stale_sets,
                     **({'ip6tables': plans[6][2]} if 6 in plans else {})},
        'diff': {'before': view(0) + sets_text(have_sets), 'after': view(1) + sets_text(want_sets),
                 'before_header': 'CNI chains and ipsets (kernel)', 'after_header': 'CNI chains and ipsets (wanted)'},
    }
