#!/usr/bin/env python
"""Benchmark the CPU site.yml costs per host: this checkout against a baseline revision, same lab, same run.

    .venv/bin/python bench/site_cpu.py                       (root; 60 hosts, baseline = merge-base with main)
    .venv/bin/python bench/site_cpu.py --sizes 60,500 --baseline main --no-doc
    .venv/bin/python bench/site_cpu.py --sizes 60,500 --topology rr     (two racks, one reflector each: ~1.5 h)

For every size and for both checkouts (the baseline is exported with `git archive REV` into a temporary
directory: its own ansible.cfg, roles and plugins; the lab collection and the bench helpers are this
checkout's) it builds a fresh lab (a full mesh, or with --topology rr two racks with a reflector each)
with bench/convergence_lab.py's helpers (temporary inventory, lab/playbooks/lab_up.yml under a fresh
NETFLEET_LAB_PREFIX=sc<hex>), runs site.yml cold and once more with nothing to change, and removes
the lab with lab_down (also on failure). For each site.yml run:

- wall seconds, and CPU seconds of the whole ansible-playbook process tree (getrusage of this
  script's children), split into
  - controller, main process: ansible-playbook itself (strategy, variable manager, results,
    callbacks; os.times() from the bench_timing callback at the end of the run),
  - controller, workers: the per-task forks (templating of the task's arguments and variables, action
    plugin, module packing, the netns connection's nsenter and sh): the rest,
  - modules: the module processes on the (namespace) hosts: the interpreter is a tiny sh wrapper that
    runs the venv's Python and writes that child's CPU (`times`) to a file, one file per module run
    (an action's own commands on a host, such as calico_node_facts' read, count under the workers);
  these are further split into start-up (module runs x the CPU of one `ansible.builtin.ping` run:
  Python, AnsiballZ and module_utils.basic, measured on each lab, the mean of both used for both) and the
  modules' own work;
- tasks per host (ok + skipped of a host's PLAY RECAP line) and module runs per host.

The figures are printed as a table with the ratios ours / baseline and written to docs/benchmarks.md
under "## bench/site_cpu" (other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from convergence_daemons import sh
from convergence_fabric import mesh_inventory, rr_inventory, write_inventory
from convergence_lab import BIN, CPU_USED, REPO, lab_down, log, machine, playbook

SECTION = '## bench/site_cpu'
RECAP = re.compile(r'^(\S+)\s+:\s+(ok=.*)$', re.M)


def export(rev, dest):
    """The tree of ``rev`` in ``dest`` (git archive: no worktree is registered in the repository)."""
    sha = sh(['git', 'rev-parse', '--verify', rev + '^{commit}'], cwd=REPO).stdout.strip()
    archive = subprocess.run(['git', 'archive', '--format=tar', sha], cwd=REPO, check=True, capture_output=True)
    subprocess.run(['tar', '-x', '-C', str(dest)], input=archive.stdout, check=True)
    return sha


def module_wrapper(directory):
    """An interpreter for the modules that records each module process's CPU: `times` (its second line,
    the waited-for children: the module's Python and the commands it ran) into one file per run."""
    record = directory / 'module_cpu'
    record.mkdir()
    wrapper = directory / 'python'
    # not `times | ...`: a pipeline runs `times` in a subshell, which has no children
    wrapper.write_text('#!/bin/sh\n%s "$@"\nrc=$?\ntimes > %s/$$\nexit $rc\n' % (BIN / 'python', record))
    wrapper.chmod(0o755)
    return wrapper, record


def module_cpu(record):
    """(module runs, CPU seconds) from the wrapper's record, then empty it for the next run."""
    runs, cpu = 0, 0.0
    for path in record.iterdir():
        lines = path.read_text().splitlines()
        path.unlink()
        if len(lines) == 2:
            runs += 1
            times = (re.fullmatch(r'(\d+)m([\d.]+)s', p).groups() for p in lines[1].split())
            cpu += sum(int(m) * 60 + float(s) for m, s in times)
    return runs, cpu


def recap_hosts(log_path, size):
    """Tasks per host of the lab's hosts (ok + skipped; localhost's preflight plays left out)."""
    counts = []
    for host, line in RECAP.findall(log_path.read_text()):
        if host == 'localhost':
            continue
        values = dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', line))
        counts.append(values.get('ok', 0) + values.get('skipped', 0))
    if len(counts) != size:
        raise RuntimeError('%s: %d hosts in the PLAY RECAP, expected %d' % (log_path, len(counts), size))
    return statistics.mean(counts)


def ping_cost(inv, prefix, wrapper, record, size):
    """CPU of one module start-up: `ansible.builtin.ping` on every host with the recording interpreter."""
    module_cpu(record)
    env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'))
    subprocess.run([str(BIN / 'ansible'), '-i', str(inv), 'calico_nodes:calico_route_reflectors', '-m',
                    'ansible.builtin.ping',
                    '-e', 'ansible_python_interpreter=%s' % wrapper], cwd=REPO, env=env, check=True,
                   capture_output=True)
    runs, cpu = module_cpu(record)
    if runs < size:
        raise RuntimeError('ping: %d module runs recorded, expected %d' % (runs, size))
    return cpu / runs


def site_run(checkout, inv, prefix, logdir, tag, wrapper, record, size, startup):
    module_cpu(record)
    wall, totals, timing = playbook('site.yml', inv, prefix, logdir, tag, repo=checkout,
                                    extra=('-e', 'ansible_python_interpreter=%s' % wrapper))
    runs, modules = module_cpu(record)
    total = CPU_USED[str(logdir / tag)]
    main = timing['cpu']['self'] if timing else 0.0
    return {'wall': wall, 'cpu': total, 'main': main, 'workers': total - main - modules, 'modules': modules,
            'startup': min(runs * startup, modules), 'module_runs': runs / size,
            'tasks': recap_hosts(logdir / ('%s.log' % tag), size), 'changed': totals.get('changed', 0)}


# the labs: a full mesh, or two racks with one reflector each (as inventories/lab-racks; a full mesh of
# hundreds of hosts is no fleet anyone runs)
# (``size`` hosts in all: with reflectors, two of them are the reflectors)
TOPOLOGIES = {'mesh': (mesh_inventory, 'Full-mesh lab'),
              'rr': (lambda size, workloads: rr_inventory(size - 2, workloads),
                     'Two racks with one route reflector each (as inventories/lab-racks; the hosts counted include '
                     'both reflectors)')}


def variant(label, checkout, size, workdir, topology='mesh'):
    """A fresh lab of ``size`` hosts, site.yml of ``checkout`` cold and with nothing to change."""
    prefix = 'sc' + secrets.token_hex(3)
    inv = workdir / ('%s-%d' % (label, size))
    write_inventory(inv, TOPOLOGIES[topology][0](size, 1))
    logdir = inv / 'logs'
    logdir.mkdir()
    bindir = workdir / ('%s-%d-bin' % (label, size))   # not in the inventory directory (an executable there is
    bindir.mkdir()                                      # read as an inventory script)
    wrapper, record = module_wrapper(bindir)
    result = {'label': label, 'size': size, 'prefix': prefix}
    log('%s, %d hosts: prefix %s' % (label, size, prefix))
    try:
        result['lab_up'], _t, _r = playbook('lab/playbooks/lab_up.yml', inv, prefix, logdir, 'lab_up')
        result['startup'] = ping_cost(inv, prefix, wrapper, record, size)
        log('  lab_up %.0f s; one module start-up (ping) %.3f CPU s' % (result['lab_up'], result['startup']))
        for tag in ('cold', 'nochange'):
            run = site_run(checkout, inv, prefix, logdir, tag, wrapper, record, size, result['startup'])
            result[tag] = run
            log('  site.yml %s: %.1f s wall, %.1f CPU s (main %.1f, workers %.1f, modules %.1f), '
                '%.1f tasks and %.1f module runs per host, changed=%d' % (
                    tag, run['wall'], run['cpu'], run['main'], run['workers'], run['modules'], run['tasks'],
                    run['module_runs'], run['changed']))
        if result['nochange']['changed']:
            raise RuntimeError('%s: the second site.yml changed %d tasks' % (label, result['nochange']['changed']))
    finally:
        lab_down(inv, prefix, logdir)
    return result


def share_startup(results):
    """One module start-up figure per size for both checkouts (the mean of their `ping` runs; the modules
    and the interpreter are the same), so the split of module CPU compares like with like."""
    for size in {r['size'] for r in results}:
        pings = [r['startup'] for r in results if r['size'] == size and 'error' not in r]
        if not pings:
            continue
        ping = statistics.mean(pings)
        for r in results:
            if r['size'] == size and 'error' not in r:
                r['ping'] = ping
                for tag in ('cold', 'nochange'):
                    run = r[tag]
                    run['startup'] = min(run['module_runs'] * size * ping, run['modules'])


def table(results):
    rows = ['| hosts | run | checkout | wall | CPU s (per host) | controller main | controller workers | '
            'module start-up | module work | tasks / host | module runs / host |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
    for size in sorted({r['size'] for r in results}):
        for tag, name in (('cold', 'cold'), ('nochange', 'nothing to change')):
            pair = {r['label']: r for r in results if r['size'] == size and tag in r}
            for label in ('baseline', 'ours'):
                if label not in pair:
                    continue
                run = pair[label][tag]
                rows.append('| %d | %s | %s | %.1f s | %.0f (%.2f) | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |' % (
                    size, name, label, run['wall'], run['cpu'], run['cpu'] / size, run['main'], run['workers'],
                    run['startup'], run['modules'] - run['startup'], run['tasks'], run['module_runs']))
            if len(pair) == 2:
                base, ours = pair['baseline'][tag], pair['ours'][tag]
                ratios = [ours[k] / base[k] if base[k] else float('nan')
                          for k in ('wall', 'cpu', 'main', 'workers', 'startup')]
                work = base['modules'] - base['startup']
                ratios.append((ours['modules'] - ours['startup']) / work if work > 0 else float('nan'))
                ratios += [ours['tasks'] / base['tasks'], ours['module_runs'] / base['module_runs']]
                rows.append('| %d | %s | **ours / baseline** | %.2f | **%.2f** | %.2f | %.2f | %.2f | %.2f | %.2f '
                            '| %.2f |' % (size, name, *ratios))
    return rows


def report(info, results, args, baseline_sha):
    lines = [SECTION, '',
             benchdoc.machine_line(' '.join(['site_cpu.py', *args.argv]), info) + ' %s; baseline `%s` (%s).' % (
                 info['ansible'], args.baseline, baseline_sha[:12]), '',
             TOPOLOGIES[args.topology][1] + ', one workload per host, a fresh lab per checkout; CPU seconds of the '
             'whole ansible-playbook process tree, split as the docstring of bench/site_cpu.py says (module start-up = '
             'module runs x the CPU of one `ping` module run, the mean of both labs).', '']
    lines += table(results)
    errors = [r for r in results if 'error' in r]
    for r in errors:
        lines += ['', '- %s %d hosts FAILED: %s' % (r['label'], r['size'], r['error'].splitlines()[0])]
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='60', help='lab sizes (hosts), comma-separated (500 takes ~20 min)')
    parser.add_argument('--baseline', default=None, help='git revision to compare with (default: merge-base with main)')
    parser.add_argument('--topology', choices=sorted(TOPOLOGIES), default='mesh',
                        help='mesh: a full mesh; rr: two racks with one reflector each (for hundreds of hosts)')
    parser.add_argument('--no-doc', action='store_true', help='do not write docs/benchmarks.md')
    parser.add_argument('--keep-logs', action='store_true', help='keep the temporary inventories and logs')
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if os.geteuid() != 0:
        sys.exit('bench/site_cpu.py needs root (network namespaces, BIRD)')
    if args.baseline is None:
        args.baseline = sh(['git', 'merge-base', 'HEAD', 'main'], cwd=REPO).stdout.strip()
    sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    info = machine()
    info['iptables'] = sh(['iptables', '--version']).stdout.strip()
    info['load'] = '%.2f' % os.getloadavg()[0]
    info['nproc'] = os.cpu_count()
    workdir = Path(tempfile.mkdtemp(prefix='nfsitecpu-'))
    baseline = workdir / 'baseline'
    baseline.mkdir()
    sha = export(args.baseline, baseline)
    log('baseline %s (%s) in %s' % (args.baseline, sha[:12], baseline))
    results = []
    try:
        for size in sizes:
            for label, checkout in (('baseline', baseline), ('ours', REPO)):
                try:
                    results.append(variant(label, checkout, size, workdir, args.topology))
                except Exception as exc:  # report it, go on with the other runs
                    log('%s %d hosts FAILED: %s' % (label, size, str(exc).splitlines()[0] if str(exc) else exc))
                    results.append({'label': label, 'size': size, 'error': str(exc)})
        share_startup(results)
    finally:
        if args.keep_logs or any('error' in r for r in results):
            log('inventories and logs kept in %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    section = report(info, results, args, sha)
    print()
    print(section)
    if not args.no_doc:
        benchdoc.write_section(SECTION, section)
        log('results written to docs/benchmarks.md')
    Path(tempfile.gettempdir(), 'nfsitecpu-last.json').write_text(
        json.dumps({'info': info, 'args': vars(args), 'results': results}, indent=1, default=str))


if __name__ == '__main__':
    main()
