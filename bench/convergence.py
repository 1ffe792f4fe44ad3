#!/usr/bin/env python
"""Benchmark BGP convergence of netfleet.calico labs: full mesh, route reflectors, racks with FRR spines.

    .venv/bin/python bench/convergence.py                          (root; 60 and 120 hosts, mesh and rr)
    .venv/bin/python bench/convergence.py --sizes 60 --topologies mesh --repeat 1 --no-doc
    .venv/bin/python bench/convergence.py --sizes 60,500 --topologies spine --repeat 3   (10 racks at 500 hosts)

For every case (size x topology) it writes a temporary inventory (a copy of inventories/lab/group_vars, or
inventories/lab-spine's, plus a generated hosts.yml: bench/convergence_fabric.py), builds the lab with
lab/playbooks/lab_up.yml under a fresh prefix (NETFLEET_LAB_PREFIX=cv<hex>, --prefix) and provisions it with
site.yml (wall clock and CPU seconds, cold; the fabric plan it rolled out is kept by
bench/callback_plugins/bench_plan.py). On the 60-host cases (every case with --site) site.yml runs a second
time with nothing to change. Then, with the real kernel, real BIRD and real FRR (bench/convergence_measure.py
and bench/convergence_daemons.py):

1. stop every BIRD of the lab and, with spines, every spine's zebra and bgpd (SIGTERM to the pid of its pid
   file, wait until it is gone), flush the kernel routes they left (`proto bird`, zebra's `proto bgp`) and the
   neighbour tables, so the fabric starts cold;
2. start all of them at once, each with the command it ran with (read back from the running daemon's command
   line, so it is exactly what site.yml started): BIRD as the role does (plugins/modules/calico_bird.py,
   pid-file manager: `bird -c <conf> -s <sock> -P <pid>`, in the host's namespace by `nsenter --net`), a spine's FRR as
   plugins/modules/calico_frr.py does (zebra, then bgpd once zebra's pid file and vty socket exist);
3. watch every speaker's main table through one rtnetlink socket per namespace (route events plus a dump,
   no process per poll: hundreds of `ip` processes per poll round would compete with the daemons for the
   2 CPUs) until every host and reflector holds the routes the fabric plan gives it (what status.yml's
   analysis, plugin_utils/fabric_status.py, would call missing from an empty table) and every spine the
   prefixes its prefix lists accept from the racks; the result is cross-checked afterwards with
   `ip -n <ns> -j route show proto bird|bgp`;
4. wait for every BGP session to be Established and count them (`birdc show protocols`, vtysh `show bgp
   summary`), and sum VmRSS of the BIRD and FRR processes.

Steps 1-4 run --repeat times (median reported). For the mesh and spine cases the same is repeated with BIRD's
default timers (the `connect delay time`, `connect retry time` and `error wait time` lines removed from
every bird.conf, protocol device's scan time at BIRD's default 60 s): the naive baseline.
Results are printed as tables and written to docs/benchmarks.md (bench/convergence_report.py) under
"## bench/convergence" (mesh, rr) and "## bench/convergence: spine" (other sections are kept). Every lab is
removed with lab/playbooks/lab_down.yml in a finally block, and the script checks that no namespace of its
prefix is left.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from convergence_daemons import discover, discover_frr, read_blocks
from convergence_fabric import (
    POOL,
    expectations,
    mesh_inventory,
    rr_inventory,
    spine_inventory,
    write_inventory,
)
from convergence_lab import CPU_USED, lab_down, log, machine, playbook, profile, recap
from convergence_measure import device_scan_2s, measure, naive_timers, variant
from convergence_report import report, section_of

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / 'docs' / 'benchmarks.md'


# ------------------------------------------------------------------------------------------ one case

def ensure_gc_thresh(size, topology):
    """The neighbour table is shared by all namespaces: a full mesh of N hosts holds
    N*(N-1) entries, racks with reflectors a few per host. lab_up raises the limits to 4096/16384/32768;
    raise them further if a case needs it."""
    need = size * size + 4 * size if topology == 'mesh' else 8 * size
    raised = []
    for idx, want in ((1, need // 4), (2, need), (3, 2 * need)):
        path = Path('/proc/sys/net/ipv4/neigh/default/gc_thresh%d' % idx)
        cur = int(path.read_text())
        if cur < want:
            path.write_text(str(want))
            raised.append('gc_thresh%d %d -> %d' % (idx, cur, want))
    return raised


def neigh_overflows():
    try:
        out = subprocess.run(['dmesg'], capture_output=True, check=False, text=True).stdout
    except OSError:
        return None
    return out.count('neighbor table overflow')


def inventory_of(topology, size, args):
    if topology == 'mesh':
        return mesh_inventory(size, args.workloads)
    if topology == 'rr':
        return rr_inventory(size, args.workloads)
    return spine_inventory(size, args.workloads, racks_of(size, args), args.reflectors_per_rack, args.spines,
                           args.rack_block_pool)


def racks_of(size, args):
    """--racks, else one rack per 50 hosts (at least 2)."""
    return args.racks or max(2, size // 50)


def run_case(topology, size, args, workdir):
    prefix = args.prefix + secrets.token_hex(3)
    case = {'topology': topology, 'size': size, 'prefix': prefix}
    if topology == 'spine':
        case.update(racks=racks_of(size, args), reflectors_per_rack=args.reflectors_per_rack, spines=args.spines)
    inv = workdir / ('%s-%d' % (topology, size))
    write_inventory(inv, inventory_of(topology, size, args))
    logdir = inv / 'logs'
    logdir.mkdir()
    log('%s %d hosts: prefix %s, inventory %s' % (topology, size, prefix, inv))
    overflow0 = neigh_overflows()
    try:
        case['lab_up'], _t, _r = playbook('lab/playbooks/lab_up.yml', inv, prefix, logdir, 'lab_up')
        case['gc_raised'] = ensure_gc_thresh(size, topology)
        log('  lab_up %.1f s%s' % (case['lab_up'], '; raised ' + ', '.join(case['gc_raised'])
                                   if case['gc_raised'] else ''))
        case['site_cold'], case['site_cold_recap'], record = playbook('site.yml', inv, prefix, logdir, 'site_cold')
        case['site_cold_profile'] = profile(record)
        case['site_cold_cpu'] = CPU_USED[str(logdir / 'site_cold')]
        log('  site.yml cold %.1f s, %.0f CPU s (%s)' % (case['site_cold'], case['site_cold_cpu'],
                                                         recap(case['site_cold_recap'])))
        plan = json.loads((logdir / 'site_cold.plan.json').read_text())
        if size == args.profile_size or args.site:
            case['site_nochange'], case['site_nochange_recap'], record = playbook('site.yml', inv, prefix, logdir,
                                                                                  'site_nochange')
            case['site_nochange_profile'] = profile(record)
            case['site_nochange_cpu'] = CPU_USED[str(logdir / 'site_nochange')]
            log('  site.yml no change %.1f s, %.0f CPU s (%s)' % (
                case['site_nochange'], case['site_nochange_cpu'], recap(case['site_nochange_recap'])))
            if size == args.profile_size and topology == 'mesh':
                case['forks_sweep'] = []
                for forks in args.forks_sweep:
                    secs, totals, _r = playbook('site.yml', inv, prefix, logdir, 'site_forks%d' % forks, forks=forks)
                    cpu = CPU_USED[str(logdir / ('site_forks%d' % forks))]
                    case['forks_sweep'].append({'forks': forks, 'seconds': secs, 'cpu': cpu,
                                                'changed': totals.get('changed', 0)})
                    log('  site.yml no change, forks %d: %.1f s, %.0f CPU s' % (forks, secs, cpu))
        state_dir = '/run/netfleet/%s' % prefix
        birds = discover(prefix, state_dir)
        spines = discover_frr(prefix, state_dir, sorted(plan.get('spines') or {}))
        blocks = read_blocks(birds, POOL)
        expectations(plan, birds, spines)
        case['birds'], case['frrs'] = len(birds), len(spines)
        case['blocks'] = len(blocks)
        expected = sorted(len(b.expect) for b in birds)
        case['expected_per_host'] = (expected[0], statistics.median(expected), expected[-1])
        log('  %d BIRDs, %d FRRs, %d blocks, %d-%d routes expected per host; measuring (%d runs)' % (
            len(birds), len(spines), len(blocks), expected[0], expected[-1], args.repeat))
        if len(blocks) != size:
            raise RuntimeError('expected %d blocks, found %d' % (size, len(blocks)))
        case['tuned'] = measure(birds, spines, args.repeat, args.timeout)
        if topology in ('mesh', 'spine') and not args.no_naive:
            log('  BIRD default timers (naive), %d runs' % args.naive_repeat)
            case['naive'] = variant(birds, spines, naive_timers, args.naive_repeat, args.naive_timeout)
        if args.scan_experiment and topology != 'spine':
            log('  ablation: role timers with protocol device scan time 2, %d runs' % args.repeat)
            case['scan1'] = variant(birds, spines, device_scan_2s, args.repeat, args.timeout)
    finally:
        case['left_after_down'] = len(lab_down(inv, prefix, logdir))
    overflow1 = neigh_overflows()
    case['neigh_overflow'] = (overflow1 - overflow0) if overflow0 is not None and overflow1 is not None else None
    if args.keep_logs:
        log('  logs kept in %s' % logdir)
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='60,120', help='lab sizes (hosts), comma-separated')
    parser.add_argument('--topologies', default='mesh,rr', help='mesh, rr and/or spine, comma-separated')
    parser.add_argument('--racks', type=int, default=0,
                        help='spine: racks (default one per 50 hosts, at least 2; 500 hosts: 10 racks of 50)')
    parser.add_argument('--reflectors-per-rack', type=int, default=2, help='spine: reflectors per rack')
    parser.add_argument('--spines', type=int, default=2, help='spine: FRR spine routers')
    parser.add_argument('--rack-block-pool', type=int, default=20,
                        help='spine: prefix length of a rack\'s share of the pool, one aggregate per rack '
                             '(calico_rack_block_pool); 0: one route per block')
    parser.add_argument('--prefix', default='cv', help='lab name prefix (random hex appended)')
    parser.add_argument('--site', action='store_true', help='also time the no-change site.yml on every size')
    parser.add_argument('--repeat', type=int, default=5, help='convergence runs per case (median reported)')
    parser.add_argument('--naive-repeat', type=int, default=1, help='runs with BIRD default timers (mesh, spine)')
    parser.add_argument('--no-naive', action='store_true', help='skip the BIRD-default-timers baseline')
    parser.add_argument('--no-scan-experiment', dest='scan_experiment', action='store_false',
                        help='skip the ablation with `scan time 2` in protocol device')
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds to wait for convergence')
    parser.add_argument('--naive-timeout', type=float, default=200.0,
                        help='seconds to wait with BIRD default timers (retry 120 s)')
    parser.add_argument('--workloads', type=int, default=1, help='workloads per host')
    parser.add_argument('--forks-sweep', default='',
                        help='comma-separated forks values: re-run the no-change site.yml on the 60-host mesh with '
                             'each (profiling; ansible.cfg has forks = 50)')
    parser.add_argument('--no-doc', action='store_true', help='do not write docs/benchmarks.md')
    parser.add_argument('--keep-logs', action='store_true', help='keep the temporary inventories and logs')
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.forks_sweep = [int(f) for f in args.forks_sweep.split(',') if f.strip()]
    if os.geteuid() != 0:
        sys.exit('bench/convergence.py needs root (network namespaces, BIRD)')
    topologies = [t.strip() for t in args.topologies.split(',') if t.strip()]
    if not topologies or set(topologies) - {'mesh', 'rr', 'spine'}:
        sys.exit('--topologies: mesh, rr and/or spine')
    sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    # site.yml is timed a second time (nothing to change) and profiled on the 60-host labs (the target)
    args.profile_size = 60
    info = machine()
    log('%s CPUs, kernel %s, %s, %s' % (info['nproc'], info['kernel'], info['cpu'], info['bird']))
    workdir = Path(tempfile.mkdtemp(prefix='nfconv-'))
    cases = []
    try:
        for size in sizes:
            for topology in topologies:
                try:
                    cases.append(run_case(topology, size, args, workdir))
                except Exception as exc:  # report it, go on with the other cases
                    log('%s %d hosts FAILED: %s' % (topology, size, str(exc).splitlines()[0] if str(exc) else exc))
                    cases.append({'topology': topology, 'size': size, 'error': str(exc)})
    finally:
        if args.keep_logs or any('error' in c for c in cases):
            log('inventories and logs kept in %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # mesh and rr share one section, spine has its own: a run of one keeps the other's figures
    for title in sorted({section_of(c['topology']) for c in cases}):
        section = report(info, [c for c in cases if section_of(c['topology']) == title], args, title)
        print()
        print(section)
        if not args.no_doc:
            benchdoc.write_section(title, section, DOC)
            log('results written to %s (%s)' % (DOC.relative_to(REPO), title))
    Path(tempfile.gettempdir(), 'nfconv-last.json').write_text(
        json.dumps({'info': info, 'args': vars(args), 'cases': cases}, indent=1, default=str))


if __name__ == '__main__':
    main()
