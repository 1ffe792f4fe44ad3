# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side checks of site.yml that are about hosts and the roll-out, not about the plan itself.

- :func:`node_problems`: what one host's facts (site.yml's first play) say it cannot do: it is
  unreachable, its BIRD is missing or too old, its iptables rules sit in the other backend or in both.
- :func:`rollout`: the batches (``serial``) and the tolerated failures (``max_fail_percentage``) of the
  plays that change hosts, validated, and refused when a make-before-break peer change would be split
  over batches.
- :func:`node_steps`: which hosts need site.yml's steps beside their converge (packages, cali-* chains,
  the CNI plugin, the drop of old BGP sessions), so that the others run none of those tasks.

Every message is one line in the style of the fabric preflight
(``netfleet.calico preflight: <subject>: <problem> — <fix>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import PREFLIGHT, FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import VarReader

# `onlink = true;` and `ifname = ...` in a kernel export filter arrived in BIRD 2.0.12.
BIRD_ONLINK = (2, 0, 12)
BIRD_ANY = (2, 0, 0)  # the configuration is BIRD 2 syntax
BIRD_PACKAGE = "Debian bookworm's bird2"

DEFAULT_SERIAL = [1, '10%', '25%']   # one canary host, then growing batches
DEFAULT_RR_SERIAL = [1]              # one reflector at a time: a rack never loses both of its reflectors
DEFAULT_MAX_FAIL_PERCENTAGE = 0      # any failure stops the roll-out before the next batch

# What role calico_node's own conditions (its vars/main.yml) read where the inventory sets nothing: its default
# calico_node_install_packages, and role ipip's chain, which calico_chains leaves alone (a unit test evaluates the
# role's conditions with the roles' defaults files and holds node_steps to the same answers).
DEFAULT_INSTALL_PACKAGES = True
DEFAULT_IPIP_CHAIN = 'cali-INPUT-ipip'
CNI_DISPATCH_CHAIN = 'cali-cni-from-dispatch'  # the CNI plugin's: it is installed on a host that has this chain

_SERIAL_ITEM = re.compile(r'([0-9]{1,9})(%?)')


def version_tuple(text):
    """(2, 0, 12) from '2.0.12', 'v2.0.12' or '2.0.12-rc1'; None when there is no leading number."""
    match = re.match(r'^v?(\d+(?:\.\d+)*)', str(text or '').strip())
    if not match:
        return None
    parts = tuple(int(p) for p in match.group(1).split('.'))
    return parts + (0,) * (3 - len(parts)) if len(parts) < 3 else parts


def _dotted(version):
    return '.'.join(str(p) for p in version)


def _line(subject, problem, fix):
    return f'{PREFLIGHT}: {subject}: {problem} — {fix}'


def _first_line(text):
    """The first line of a task's message, without ansible-core's 'Task failed: ' lead-in."""
    for line in str(text or '').splitlines():
        line = line.strip()
        while line.startswith(('Task failed: ', 'Action failed: ', 'Module failed: ')):
            line = line.split(': ', 1)[1].strip()
        if line:
            return line
    return 'no reason given'


def node_problems(result, host, bird_binary='bird', install_packages=True, onlink=True, ipip_mode='never',
                  iptables_backend='auto', iptables=True):
    """One-line problems of one host (empty when it can take the fabric).

    ``result`` is the registered result of calico_node_facts in site.yml's first play (run with
    ``ignore_unreachable``); the keyword arguments are the host's role settings: whether the role installs
    BIRD itself, whether the configuration needs ``onlink`` (or IPIP's ``ifname``), the forced iptables
    backend, and whether this host's run will write iptables rules at all.
    """
    subject = host_subject(host)
    result = result if isinstance(result, Mapping) else {}
    if result.get('unreachable'):
        return [_line(subject, f"is unreachable ({_first_line(result.get('msg'))})",
                      'check its connectivity (is it up, can this controller reach it) and its inventory entry '
                      '(ansible_host, ansible_port, ansible_user, ansible_connection)')]
    facts = result.get('calico_node_facts')
    if not isinstance(facts, Mapping):
        if result.get('skipped'):
            return []
        return [_line(subject, f"its facts could not be read ({_first_line(result.get('msg'))})",
                      'fix the host so that netfleet.calico.calico_node_facts runs there, then run site.yml again')]
    problems = []

    mode = str(ipip_mode or 'never').strip().lower().replace('-', '_')
    tunnel = mode not in ('never', '')
    need = BIRD_ONLINK if (onlink or tunnel) else BIRD_ANY
    why = (' (IPIP tunnel routes need ' if tunnel else ' (onlink routes need ' if onlink
           else ' (the configuration needs ')
    raw = facts.get('bird_version')
    if raw is None:
        if not install_packages:
            problems.append(_line(subject, f'BIRD is not installed ({bird_binary} not found)',
                                  f'install BIRD >= {_dotted(need)} ({BIRD_PACKAGE}), or set calico_node_bird_binary '
                                  'to its path, or calico_node_install_packages: true'))
    else:
        have = version_tuple(raw)
        if have is None or have < need:
            problems.append(_line(subject, f'BIRD {raw} is too old{why}{_dotted(need)})',
                                  f'install BIRD >= {_dotted(need)} ({BIRD_PACKAGE})'))

    rules = facts.get('iptables_rules') if isinstance(facts.get('iptables_rules'), Mapping) else {}
    backend = str(iptables_backend or 'auto').strip().lower()
    if iptables and rules:
        count = {b: rules.get(b) for b in ('nft', 'legacy')}
        held = [b for b in ('nft', 'legacy') if count[b]]
        if backend == 'auto' and len(held) == 2:
            problems.append(_line(subject, f"has iptables rules in both backends (iptables-nft: {count['nft']}, "
                                           f"iptables-legacy: {count['legacy']}) and the kernel enforces both",
                                  'keep the firewall in one backend (flush the other), or choose one for the cali-* '
                                  'chains with calico_iptables_backend: nft or legacy for this host'))
        elif backend in ('nft', 'legacy'):
            other = 'legacy' if backend == 'nft' else 'nft'
            if count[backend] is None and count[other] is not None:
                problems.append(_line(subject, f'calico_iptables_backend is {backend} but iptables-{backend} is not '
                                               'installed',
                                      f'set calico_iptables_backend: {other} (or auto) for this host'))
            elif not count[backend] and count[other]:
                problems.append(_line(subject, f'calico_iptables_backend is {backend} but its {count[other]} '
                                               f'iptables rule(s) are in iptables-{other} (none in iptables-{backend})',
                                      f'set calico_iptables_backend: {other} (or auto) for this host, or move its '
                                      f'firewall to iptables-{backend}'))
    return problems


# ---------------------------------------------------------------------------------------------
# roll-out batches
# ---------------------------------------------------------------------------------------------

def parse_serial(value, var):
    """``value`` as Ansible's ``serial`` list (numbers of hosts or 'N%'); raises FabricError."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        text = str(item) if not isinstance(item, bool) else ''
        match = _SERIAL_ITEM.fullmatch(text)
        number = int(match.group(1)) if match else 0
        if not match or number < 1 or (match.group(2) and number > 100):
            raise FabricError(var, f'{value!r} is not a batch size',
                              "use a number of hosts, a percentage such as '25%', or a list of them "
                              "(e.g. [1, '10%', '25%']; the last one repeats)")
        out.append(f'{number}%' if match.group(2) else number)
    if not out:
        raise FabricError(var, 'is an empty list', "give at least one batch size, e.g. [1, '10%', '25%']")
    return out


def parse_max_fail(value, var):
    text = str(value) if not isinstance(value, bool) else ''
    if not re.fullmatch(r'[0-9]{1,3}', text) or int(text) > 100:
        raise FabricError(var, f'{value!r} is not a percentage 0-100',
                          'set it to the share of a batch that may fail before the roll-out stops (0: none)')
    return int(text)


def batch_sizes(serial, count):
    """The batches Ansible makes of ``count`` hosts with ``serial`` (its pct_to_int: at least 1 per batch)."""
    sizes, left, index = [], count, 0
    while left > 0:
        item = serial[min(index, len(serial) - 1)]
        size = max(int(int(item[:-1]) / 100.0 * count), 1) if isinstance(item, str) else int(item)
        size = min(size, left)
        sizes.append(size)
        left -= size
        index += 1
    return sizes


def rollout(plan, hosts_needing_transition=(), serial=None, rr_serial=None, max_fail_percentage=None):
    """``{'reflectors': {...}, 'nodes': {...}}``: per converging play of site.yml its ``serial``,
    ``max_fail_percentage``, ``any_errors_fatal`` and the batch sizes.

    ``plan`` is the fabric plan (``calico_fabric``); ``hosts_needing_transition`` the hosts whose BGP
    sessions change make-before-break in this run (new sessions must be Established before the old ones go,
    which needs their peers configured in the same batch).
    """
    serial = parse_serial(DEFAULT_SERIAL if serial is None else serial, 'calico_serial')
    rr_serial = parse_serial(DEFAULT_RR_SERIAL if rr_serial is None else rr_serial, 'calico_rr_serial')
    max_fail = parse_max_fail(DEFAULT_MAX_FAIL_PERCENTAGE if max_fail_percentage is None else max_fail_percentage,
                              'calico_max_fail_percentage')
    hosts = plan.get('hosts', {}) if isinstance(plan, Mapping) else {}
    # site.yml: reflectors that run no workloads in one play, then every calico_nodes host
    reflectors = [h for h, entry in hosts.items() if entry.get('role') == 'reflector' and not entry.get('block')]
    nodes = [h for h in hosts if h not in reflectors]
    out = {}
    for play, members, value, var in (('reflectors', reflectors, rr_serial, 'calico_rr_serial'),
                                      ('nodes', nodes, serial, 'calico_serial')):
        sizes = batch_sizes(value, len(members))
        out[play] = {'serial': value, 'max_fail_percentage': max_fail, 'any_errors_fatal': max_fail == 0,
                     'batches': sizes}
        if len(sizes) > 1:
            for name in sorted(hosts_needing_transition):
                raise FabricError(host_subject(name),
                                  f'its BGP peers change make-before-break (new sessions must come up before old '
                                  f'ones go) but {var} splits the {play} into {len(sizes)} batches',
                                  'run this change in one batch: '
                                  '-e \'{"calico_serial": ["100%"], "calico_rr_serial": ["100%"]}\'')
    return out


# ---------------------------------------------------------------------------------------------
# steps beside the converge
# ---------------------------------------------------------------------------------------------

def node_steps(plan, settings, hosts_needing_transition=()):
    """``{'prepare': [hosts], 'after': [hosts]}``: the calico_nodes hosts (``plan`` entries that are not
    reflector-only) that need a step beside their one module run, in plan order.

    - ``prepare`` (before the converge): packages to install, cali-* chains wanted or left to remove (either
      family), or the CNI plugin to remove;
    - ``after``: the CNI plugin to install, or old BGP sessions to drop (``hosts_needing_transition``).

    ``settings`` per host: ``facts`` (its ``calico_node_facts``, None when unread: then it needs ``prepare``),
    ``install_packages``, ``nat_outgoing``, ``policies`` (whether the fleet has any) and ``ipip_chain``. These are
    the conditions role calico_node's tasks keep; a host left out here would skip them all. BIRD's sessions need no
    step: site.yml's fact play read them from the socket the converge uses."""
    hosts = plan.get('hosts', {}) if isinstance(plan, Mapping) else {}
    transition = set(hosts_needing_transition)
    prepare, after = [], []
    for name, entry in hosts.items():
        if entry.get('role') == 'reflector' and not entry.get('block'):
            continue
        mine = settings.get(name, {})
        facts = mine.get('facts')
        cni_wanted = bool((entry.get('cni') or {}).get('enabled'))
        if _needs_prepare(entry, mine, facts, cni_wanted):
            prepare.append(name)
        if cni_wanted or name in transition:
            after.append(name)
    return {'prepare': prepare, 'after': after}


def node_settings(hostvars, hosts):
    """Per host of ``hosts``, what :func:`node_steps` reads from its variables (the first play checked them) and
    its facts (site.yml's fact play)."""
    reader = VarReader(hostvars)
    out = {}
    for name in hosts:
        def setting(*names, default=None, host=name):
            for var in names:
                value = reader.get(host, var)
                if value is not None:
                    return value
            return default
        facts = setting('ansible_facts', default={})
        out[name] = {
            # facts as ansible_facts.calico_node_facts (also a variable of its own unless INJECT_FACTS_AS_VARS is off)
            'facts': (facts.get('calico_node_facts') if isinstance(facts, Mapping) else None)
            or setting('calico_node_facts'),
            'install_packages': boolean(setting('calico_node_install_packages', default=DEFAULT_INSTALL_PACKAGES),
                                        strict=False),
            'nat_outgoing': boolean(setting('calico_node_nat_outgoing', 'calico_nat_outgoing', default=False),
                                    strict=False),
            'policies': bool(setting('calico_policies')),
            'ipip_chain': setting('ipip_chain', default=DEFAULT_IPIP_CHAIN),
        }
    return out


def _needs_prepare(entry, settings, facts, cni_wanted):
    if not isinstance(facts, Mapping) or settings.get('install_packages', DEFAULT_INSTALL_PACKAGES):
        return True
    chains = facts.get('cali_chains') if isinstance(facts.get('cali_chains'), Mapping) else {}
    ipip_chain = settings.get('ipip_chain') or DEFAULT_IPIP_CHAIN
    chains_present = any(chain != ipip_chain for names in chains.values() for chain in names or ())
    chains_wanted = (bool(settings.get('policies')) or bool(settings.get('nat_outgoing'))
                     or bool(entry.get('floating_ips')) or cni_wanted)
    cni_present = CNI_DISPATCH_CHAIN in (chains.get('filter') or ())
    return (chains_wanted or chains_present or bool(entry.get('blocks_v6')) or bool(facts.get('cali_chains6'))
            or (cni_present and not cni_wanted))
