#!/usr/bin/env python
"""Benchmark the cali-* chains (module calico_chains) against one iptables process per rule.

    .venv/bin/python bench/chains.py            (root; about a minute)

1,000 workload endpoints on one host, each selected by its own policy (ingress: TCP 80 and 8080 from two
client addresses, ICMP from a /24; egress: UDP 53 to a /24), rendered by module_utils.chains and applied
the way the module applies them: one `iptables-save` read, one `iptables-restore -w --noflush` per table,
one read-back. Measured for both backends (iptables-nft and iptables-legacy) in the same run, and again for
IPv6 (`family: 6`, ip6tables: IPv6 endpoints and peers, ICMPv6 instead of ICMP, the raw anti-spoofing chain):

- render + apply on an empty host, a no-change run (read, render, compare: nothing applied), a run where
  one endpoint's policy changed, and removing everything;
- the same path as Ansible runs it on a host: the module as one Python process (`python -m ...calico_chains`);
- naive: one `iptables -A` process per rule (nft, the distribution default) for the rules of the first 100
  endpoints, extrapolated to all of them (a lower bound: every `iptables-nft -A` re-reads a ruleset that grows).

Everything happens inside a scratch namespace nfbench-chains-<hex> (this process enters it with setns);
it is deleted at the end, also on failure. Results are printed and written to docs/benchmarks.md under
"## bench/chains" (other sections are kept).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'collections'))
sys.path.insert(0, str(REPO / 'bench'))

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from routes import enter_netns  # noqa: E402  (the same setns helper as bench/routes)

from ansible_collections.netfleet.calico.plugins.module_utils import chains, chains_render, chains_restore  # noqa: E402

DOC = REPO / 'docs' / 'benchmarks.md'
SECTION = '## bench/chains'
COUNT = 1000
NAIVE_SAMPLE = 100
REPEAT = 3
POOL = '172.20.0.0/16'


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def run(argv, data=None):
    """What chains_restore.Iptables runs its binaries with (module calico_chains passes run_command)."""
    proc = subprocess.run(argv, input=data, capture_output=True, check=False, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def iptables(backend, family=4):
    return chains_restore.Iptables(backend, run, shutil.which, family=family)


def endpoint(i, port=80, family=4):
    name = 'w%d' % i
    if family == 6:
        return {
            'name': name, 'ip6': 'fd00:20::%x' % (i + 2),
            'ifname': 'cali' + hashlib.sha1(name.encode()).hexdigest()[:11],
            'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [str(port), '8080'],
                         'peers': ['fd00:20:200::%x/128' % (i % 200 + 1), 'fd00:20:201::%x/128' % (i % 200 + 1)]},
                        {'action': 'allow', 'protocol': 'icmpv6', 'peers': ['fd00:100::/64']}],
            'egress': [{'action': 'allow', 'protocol': 'udp', 'ports': ['53'], 'peers': ['fd00:96::/64']}],
        }
    return {
        'name': name, 'ip': '172.20.%d.%d' % (i // 250, i % 250 + 2),
        'ifname': 'cali' + hashlib.sha1(name.encode()).hexdigest()[:11],
        'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [str(port), '8080'],
                     'peers': ['172.20.200.%d/32' % (i % 200 + 1), '172.20.201.%d/32' % (i % 200 + 1)]},
                    {'action': 'allow', 'protocol': 'icmp', 'peers': ['192.168.100.0/24']}],
        'egress': [{'action': 'allow', 'protocol': 'udp', 'ports': ['53'], 'peers': ['10.96.0.0/24']}],
    }


def render(endpoints, family=4):
    return chains_render.render(endpoints, pool=POOL, family=family)


def run_once(backend, endpoints, family=4):
    """render + read + apply + read back, as the module does; returns (seconds, result)."""
    start = time.perf_counter()
    desired = render(endpoints, family)
    ipt = iptables(backend, family)
    result = chains_restore.converge(ipt, ipt.save(), desired, check_mode=False)
    secs = time.perf_counter() - start
    if result['mismatch']:
        raise RuntimeError('read-back differs from the rendering: %s' % result['mismatch'])
    return secs, result


def run_module_process(backend, endpoints, tmpdir, family=4):
    path = Path(tmpdir) / 'args.json'
    # backend auto, as site.yml runs it: the module reads both backends and picks the one holding rules
    path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': {'endpoints': endpoints, 'pool': POOL, 'backend': 'auto',
                                                        'family': family}}))
    env = dict(os.environ, PYTHONPATH=str(REPO / 'collections'))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'ansible_collections.netfleet.calico.plugins.modules.calico_chains',
                           str(path)], capture_output=True, text=True, env=env, check=False)
    secs = time.perf_counter() - start
    result = json.loads(proc.stdout)
    if result.get('failed'):
        raise RuntimeError('calico_chains failed: %s' % result.get('msg'))
    if result['backend'] != backend:
        raise RuntimeError('calico_chains picked backend %s, expected %s' % (result['backend'], backend))
    return secs, result


def flush(backend, family):
    """Leave nothing behind in the scratch namespace (the jumps and the fixed chains too)."""
    tool = 'ip6tables' if family == 6 else 'iptables'
    for table in chains.FAMILY_TABLES[family]:
        sh(['%s-%s' % (tool, backend), '-w', '-t', table, '-F'])
        sh(['%s-%s' % (tool, backend), '-w', '-t', table, '-X'])


def bench_backend(backend, tmpdir, family=4):
    eps = [endpoint(i, family=family) for i in range(COUNT)]
    rows = {}
    rows['apply'], result = run_once(backend, eps, family)
    tables = [t for t in chains.TABLE_ORDER if t in chains.FAMILY_TABLES[family]]
    assert result['changed'] and result['tables'] == tables
    rows['rules'] = chains_restore.count_rules(render(eps, family))
    start = time.perf_counter()
    render(eps, family)
    rows['render_only'] = time.perf_counter() - start
    ipt = iptables(backend, family)
    start = time.perf_counter()
    ipt.save()
    rows['save_only'] = time.perf_counter() - start
    rows['nochange'], result = run_once(backend, eps, family)
    assert not result['changed'] and not result['tables']
    eps[500] = endpoint(500, port=81, family=family)
    rows['one_changed'], result = run_once(backend, eps, family)
    assert result['changed']
    rows['module_nochange'], result = run_module_process(backend, eps, tmpdir, family)
    assert not result['changed']
    rows['remove'], result = run_once(backend, [], family)
    assert result['changed']
    rows['module_apply'], result = run_module_process(backend, eps, tmpdir, family)
    assert result['changed']
    run_once(backend, [], family)
    flush(backend, family)
    return rows


def bench_naive(family=4):
    """One `iptables-nft -A` (``ip6tables-nft``) process per rule for the first NAIVE_SAMPLE endpoints (plus the
    fixed chains)."""
    tool = 'ip6tables-nft' if family == 6 else 'iptables-nft'
    desired = render([endpoint(i, family=family) for i in range(NAIVE_SAMPLE)], family)
    argvs = []
    for table in chains.FAMILY_TABLES[family]:
        for name in desired[table]['chains']:
            argvs.append([tool, '-w', '-t', table, '-N', name])
        for name, rules in desired[table]['chains'].items():
            for rule in rules:
                argvs.append([tool, '-w', '-t', table, '-A', name] + chains.shlex.split(rule))
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, check=True, capture_output=True)
    secs = time.perf_counter() - start
    flush('nft', family)
    return secs, len(argvs)


def machine():
    cpu = benchdoc.cpu_model()
    return {'nproc': os.cpu_count(), 'kernel': platform.release(), 'cpu': cpu,
            'iptables': sh(['iptables', '-V']).stdout.strip(), 'python': platform.python_version(),
            'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC'),
            'load': Path('/proc/loadavg').read_text().split()[0]}


def verdict(seconds, target):
    return '%.3f s: %s' % (seconds, 'met' if seconds <= target else 'MISSED')


def naive_full(results, naive, family=4):
    """The naive figure for all COUNT endpoints: the sample's time per process times every process."""
    naive_secs, naive_processes = naive
    fixed = render([], family)
    total = results['nft']['rules'] + sum(len(fixed[t]['chains']) for t in chains.FAMILY_TABLES[family]) \
        + 2 * COUNT  # -N for each cali-fw-/cali-tw- chain
    return naive_secs / naive_processes * total, total


def backend_rows(results):
    nft, legacy = results['nft'], results['legacy']
    return [
        '| work | nft: module path | nft: module process | legacy: module path | legacy: module process |',
        '|---|---|---|---|---|',
        '| 1,000 endpoints, empty host (render + apply) | %.3f s | %.2f s | %.3f s | %.2f s |' % (
            nft['apply'], nft['module_apply'], legacy['apply'], legacy['module_apply']),
        '| 1,000 endpoints, nothing to change | %.3f s | %.2f s | %.3f s | %.2f s |' % (
            nft['nochange'], nft['module_nochange'], legacy['nochange'], legacy['module_nochange']),
        '| one endpoint\'s policy changed (its two chains rewritten, one transaction) | %.3f s | | %.3f s | |' % (
            nft['one_changed'], legacy['one_changed']),
        '| remove all 1,000 endpoints\' chains | %.3f s | | %.3f s | |' % (nft['remove'], legacy['remove']),
    ]


def target_rows(results, family):
    name = 'IPv6 ' if family == 6 else ''
    return [
        '| %sapply <= 0.5 s | %s | %s | %s | %s |' % ((name,) + tuple(
            verdict(results[b][k], 0.5) for b in ('nft', 'legacy') for k in ('apply', 'module_apply'))),
        '| %sno change <= 0.3 s | %s | %s | %s | %s |' % ((name,) + tuple(
            verdict(results[b][k], 0.3) for b in ('nft', 'legacy') for k in ('nochange', 'module_nochange'))),
    ]


def report(info, results, naive, results6, naive6):
    nft = results['nft']
    naive_secs, naive_processes = naive
    per_process = naive_secs / naive_processes
    full, total_processes = naive_full(results, naive)
    full6, _total6 = naive_full(results6, naive6, 6)
    lines = [
        SECTION,
        '',
        benchdoc.machine_line('chains.py', info),
        '',
        '1,000 workload endpoints on one host (a scratch namespace), each selected by its own policy (ingress TCP',
        '80,8080 from two addresses and ICMP from a /24, egress UDP 53 to a /24): %d rules in the cali-* chains' % (
            nft['rules']),
        'of filter and nat. "module path" is render + one `iptables-save` + one `iptables-restore -w --noflush` per',
        'table + one read-back, in one Python process (as the module does it, without Python/Ansible start-up);',
        '"module process" is the whole module run as Ansible starts it on a host (`python -m …calico_chains`).',
        '"naive" is one `iptables-nft -A` (or `-N`) process per rule: measured for the first %d endpoints' % (
            NAIVE_SAMPLE),
        '(%d processes, %.2f s, %.1f ms each), extrapolated linearly to all %d processes (a lower bound: each' % (
            naive_processes, naive_secs, per_process * 1000, total_processes),
        '`iptables-nft -A` re-reads a ruleset that keeps growing).',
        '',
        *backend_rows(results),
        '',
        'IPv6 (`family: 6`, ip6tables): the same 1,000 endpoints with IPv6 addresses and peers (ICMPv6 instead of',
        'ICMP), %d rules in the cali-* chains of raw (anti-spoofing) and filter (ND accepted to and from' % (
            results6['nft']['rules']),
        'workloads).',
        '',
        *backend_rows(results6),
        '',
        '| 1,000 endpoints, %d rules | naive, one iptables process per rule | module path (nft) | speed-up |' % (
            nft['rules']),
        '|---|---|---|---|',
        '| apply on an empty host | %.1f s (extrapolated from %d endpoints) | %.3f s | %.0fx |' % (
            full, NAIVE_SAMPLE, nft['apply'], full / nft['apply']),
        '| IPv6: apply on an empty host (`ip6tables-nft`, %d rules) | %.1f s (extrapolated from %d endpoints) | '
        '%.3f s | %.0fx |' % (results6['nft']['rules'], full6, NAIVE_SAMPLE, results6['nft']['apply'],
                              full6 / results6['nft']['apply']),
        '',
        'Figures are the median of %d rounds per backend.' % REPEAT,
        '',
        'Targets: 1,000 endpoints applied in <= 0.5 s, a no-change run in <= 0.3 s:',
        '',
        '| target | nft: module path | nft: module process | legacy: module path | legacy: module process |',
        '|---|---|---|---|---|',
        *target_rows(results, 4),
        *target_rows(results6, 6),
        '',
        'Baseline: 1,000 rules by one `iptables -A` each 2.2 s, by one `iptables-restore --noflush` 19 ms.',
        '',
        'Where the time goes (nft): rendering 1,000 endpoints %.3f s; one `iptables-save` of the whole ruleset' % (
            nft['render_only']),
        '%.3f s (legacy %.3f s). An apply is render + save + restore + save (the read-back, for `changed`' % (
            nft['save_only'], results['legacy']['save_only']),
        'and the diff), so the %d-rule restore itself is ~%.2f s: iptables-nft translates every rule into' % (
            nft['rules'], max(nft['apply'] - nft['render_only'] - 2 * nft['save_only'], 0)),
        'nftables expressions. The module process adds Python start-up, the import of AnsibleModule (~0.05 s)',
        'and the validation of 1,000 endpoint dicts against the argument spec (~0.05 s); its result does not',
        'echo the endpoint list back (`invocation` carries only their count), which saved ~0.1 s per run.',
        '',
    ]
    return '\n'.join(lines)


def main():
    if os.geteuid() != 0:
        sys.exit('bench/chains.py needs root (network namespaces)')
    name = 'nfbench-chains-' + secrets.token_hex(4)
    sh(['ip', 'netns', 'add', name])
    try:
        enter_netns(name)
        info = machine()
        print('bench: namespace %s, %s CPUs, kernel %s, %s' % (name, info['nproc'], info['kernel'], info['iptables']))
        results = {4: {}, 6: {}}
        with tempfile.TemporaryDirectory(prefix='nfbench-') as tmpdir:
            for family in (4, 6):
                for backend in ('nft', 'legacy'):
                    rounds = [bench_backend(backend, tmpdir, family) for _round in range(REPEAT)]
                    # the median of each figure over the rounds (one busy moment of a shared machine is not a result)
                    results[family][backend] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
                    print(json.dumps({'IPv%d %s' % (family, backend): results[family][backend]}, indent=1))
        naive, naive6 = bench_naive(), bench_naive(6)
        print(json.dumps({'naive': naive, 'naive6': naive6}))
        section = report(info, results[4], naive, results[6], naive6)
        print(section)
        benchdoc.write_section(SECTION, section, DOC)
        print('bench: results written to %s' % DOC.relative_to(REPO))
    finally:
        subprocess.run(['ip', 'netns', 'del', name], check=False, capture_output=True)


if __name__ == '__main__':
    main()
