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
time with nothing to change. Then, with the real kernel, real BIRD and real FRR (bench/convergence_daemons.py):

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
import datetime
import json
import os
import platform
import re
import resource
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from convergence_daemons import (
    RouteWatch,
    cpu_busy,
    cross_check,
    discover,
    discover_frr,
    flush,
    own_cpu_ticks,
    proc_cpu_ticks,
    read_blocks,
    rss_kib,
    sessions,
    sh,
    start_all,
    stop_all,
    tcp_counters,
)
from convergence_fabric import (
    POOL,
    expectations,
    mesh_inventory,
    rr_inventory,
    spine_inventory,
    write_inventory,
)
from convergence_report import report, section_of

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / 'docs' / 'benchmarks.md'
# the venv's (the repository's .venv, else the one running this script: a worktree has none)
BIN = REPO / '.venv' / 'bin' if (REPO / '.venv' / 'bin').is_dir() else Path(sys.executable).parent
PLAYBOOK = BIN / 'ansible-playbook'
CALLBACKS = REPO / 'bench' / 'callback_plugins'

TIMER_LINE = re.compile(r'^\s*(connect delay time|connect retry time|error wait time)\b')
DEVICE_SCAN_DEFAULT = 60   # BIRD's default scan time of protocol device


def log(msg):
    print('bench: ' + msg, flush=True)


# ------------------------------------------------------------------------------------------ playbooks

CPU_USED = {}   # tag -> CPU seconds (user + system) of the playbook and everything it ran


def playbook(name, inventory, prefix, logdir, tag, forks=None, repo=REPO, extra=()):
    """Run a playbook of checkout ``repo`` (its ansible.cfg, so its collections) with ``extra`` arguments;
    returns (wall seconds, PLAY RECAP totals, timing record of bench_timing). The fabric plan of a site.yml run
    is left in <logdir>/<tag>.plan.json (bench_plan)."""
    timing = logdir / ('%s.timing.json' % tag)
    env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
               ANSIBLE_CALLBACKS_ENABLED='bench_timing,bench_plan', BENCH_TIMING_FILE=str(timing),
               BENCH_PLAN_FILE=str(logdir / ('%s.plan.json' % tag)),
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_CONFIG=str(repo / 'ansible.cfg'))
    if forks:
        env['ANSIBLE_FORKS'] = str(forks)
    out = logdir / ('%s.log' % tag)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(out, 'w') as handle:
        rc = subprocess.run([str(PLAYBOOK), '-i', str(inventory), *extra, name], cwd=repo, env=env, check=False,
                            stdout=handle, stderr=subprocess.STDOUT).returncode
    secs = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_USED[str(logdir / tag)] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out.read_text()
    if rc != 0:
        raise RuntimeError('%s failed (rc %d), log %s:\n%s' % (name, rc, out, text[-3000:]))
    totals = {}
    for m in re.finditer(r'^\S+\s+:\s+(ok=.*)$', text, re.M):
        for key, value in re.findall(r'(\w+)=(\d+)', m.group(1)):
            totals[key] = totals.get(key, 0) + int(value)
    record = json.loads(timing.read_text()) if timing.exists() else None
    return secs, totals, record


def profile(record):
    """Per task of a run: wall time (first host starting it to the last host finishing it), median time a
    host's run of it was in flight, and how many hosts ran (ok/changed) or skipped it."""
    rows = []
    for task in record['tasks'] if record else []:
        runs = [(s, e) for s, e, _status in task['hosts'].values() if s is not None and e is not None]
        if not runs:
            continue
        statuses = {}
        for _s, _e, status in task['hosts'].values():
            statuses[status] = statuses.get(status, 0) + 1
        rows.append({'task': task['task'].split(' : ', 1)[-1], 'action': task['action'],
                     'wall': max(e for _s, e in runs) - min(s for s, _e in runs),
                     'per_host': statistics.median(e - s for s, e in runs),
                     'ran': statuses.get('ok', 0) + statuses.get('changed', 0), 'statuses': statuses})
    return {'total': (record['end'] - record['start']) if record else 0.0, 'tasks': rows}


def converge_once(birds, spines, watches, timeout):
    """Stop, flush, start all BIRDs and the spines' FRRs; seconds from start until every host (and spine) holds
    every route the plan gives it."""
    speakers = birds + spines
    tcp0 = tcp_counters(speakers)
    stopped, killed = stop_all(speakers)
    flush(speakers)
    for w in watches:
        w.dump()
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:       # drain dumps; the tables must be empty of the daemons' routes
        select.select(watches, [], [], 0.1)
        for w in watches:
            w.read()
    stale = sum(len(w.routes) for w in watches)
    if stale:
        raise RuntimeError('%d proto bird/bgp routes left after stopping the daemons and flushing' % stale)
    loadavg = os.getloadavg()[0]
    cpu0 = cpu_busy()
    own0 = own_cpu_ticks()
    poller = select.poll()
    by_fd = {}
    for speaker, w in zip(speakers, watches):
        poller.register(w.fileno(), select.POLLIN)
        by_fd[w.fileno()] = (speaker, w)
    for w in watches:
        w.seen.clear()                       # arrival times count from the start
    done = {}
    wall0 = time.time()
    t0 = time.perf_counter()
    spawn = start_all(birds, spines)
    pending = {s.host for s in speakers}
    for speaker, w in zip(speakers, watches):       # events that arrived while the daemons were being spawned
        w.read()
        if speaker.expect <= w.routes:
            done[speaker.host] = time.perf_counter() - t0
            pending.discard(speaker.host)
    while pending:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            break
        for fd, _ev in poller.poll(min(left, 0.5) * 1000):
            speaker, w = by_fd[fd]
            if w.read() and speaker.host in pending and speaker.expect <= w.routes:
                done[speaker.host] = time.perf_counter() - t0
                pending.discard(speaker.host)
    elapsed = max(done.values()) if not pending else None
    cpu1 = cpu_busy()
    own1 = own_cpu_ticks()
    # the daemons started in this window: all their CPU is in it
    daemon_ticks = {kind: sum(proc_cpu_ticks(p) for s in speakers if s.kind == kind for p in s.pids())
                    for kind in ('BIRD', 'FRR')}
    busy, total = cpu1[0] - cpu0[0], max(cpu1[1] - cpu0[1], 1)
    arrivals = sorted(t - t0 for s, w in zip(speakers, watches) for key, t in w.seen.items() if key in s.expect)
    held = [len(w.routes) for s, w in zip(speakers, watches) if s.kind == 'BIRD']
    result = {'seconds': elapsed, 'spawn': spawn, 'pending': sorted(pending),
              'host_median': statistics.median(done.values()) if done else None,
              'spines_done': max((done[s.host] for s in spines if s.host in done), default=None),
              'stopped': stopped, 'killed': killed, 'loadavg_before': loadavg,
              'cpu_busy': busy / total,
              'cpu_daemons': {k: v / os.sysconf('SC_CLK_TCK') for k, v in daemon_ticks.items()},
              # CPU used by anything but this lab's daemons and this benchmark (other labs, tests) in the window
              'cpu_others': max(0, busy - sum(daemon_ticks.values()) - (own1 - own0)) / total,
              'overruns': sum(w.overruns for w in watches),
              'routes': len(arrivals),
              'routes_per_host': (min(held), statistics.median(held), max(held)) if held else None,
              'route_p50': arrivals[len(arrivals) // 2] if arrivals else None,
              'route_p99': arrivals[min(len(arrivals) - 1, int(len(arrivals) * 0.99))] if arrivals else None,
              'routes_late': sum(1 for a in arrivals if a > (elapsed or 0) - 1.0 and a > 3.0)}
    if not pending:
        cross_check(speakers)
    total, est, ups = sessions(speakers)
    tcp1 = tcp_counters(speakers)
    # when each kind of session came up (s after the start; BIRD gives whole seconds): median, max
    session_up = {kind: (statistics.median(t) - wall0, max(t) - wall0) for kind, t in sorted(ups.items())}
    result.update(bgp_protocols=total, established=est, rss_kib=rss_kib(birds), frr_rss_kib=rss_kib(spines),
                  session_up=session_up,
                  listen_overflows=tcp1['ListenOverflows'] - tcp0['ListenOverflows'],
                  syn_retrans=tcp1['TCPSynRetrans'] - tcp0['TCPSynRetrans'])
    return result


def naive_timers(text):
    """BIRD's default timers: drop the role's connect delay/retry and error wait lines."""
    text = ''.join(line for line in text.splitlines(keepends=True) if not TIMER_LINE.match(line))
    return device_scan(text, DEVICE_SCAN_DEFAULT)


def device_scan(text, seconds):
    """`scan time <seconds>` in `protocol device` (the role ships 1; Calico's templates 2)."""
    out, in_device = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith('protocol device'):
            in_device = True
        elif in_device and line.startswith('}'):
            in_device = False
        if in_device and re.match(r'\s*scan time \d+;', line):
            line = re.sub(r'scan time \d+;', 'scan time %d;' % seconds, line)
        out.append(line)
    return ''.join(out)


def device_scan_2s(text):
    """Ablation: the role's timers with Calico's `scan time 2` in `protocol device` (the role ships 1). The
    scan timer bounds BIRD 2.0.12's idle poll() (3 s otherwise); work scheduled from a firing timer (a connect
    delay, say) waits for the next wake-up, so the period of the fastest timer is the tail of a cold start."""
    return device_scan(text, 2)


def rewrite_confs(birds, transform, originals):
    """Rewrite every bird.conf with transform (originals keeps the role's files); checked by bird -p."""
    for bird in birds:
        text = originals.setdefault(bird.conf, Path(bird.conf).read_text())
        Path(bird.conf).write_text(transform(text))
    sh(['bird', '-p', '-c', birds[0].conf])


def restore_confs(originals):
    for path, text in originals.items():
        Path(path).write_text(text)


def variant(birds, spines, transform, repeat, timeout):
    originals = {}
    try:
        rewrite_confs(birds, transform, originals)
        return measure(birds, spines, repeat, timeout)
    finally:
        restore_confs(originals)


def measure(birds, spines, repeat, timeout):
    runs = []
    watches = [RouteWatch(s.netns, s.proto) for s in birds + spines]
    try:
        for i in range(repeat):
            run = converge_once(birds, spines, watches, timeout)
            log('  run %d: %s' % (i + 1, fmt_run(run)))
            runs.append(run)
    finally:
        for w in watches:
            w.close()
    return runs


def fmt_run(run):
    secs = '%.2f s' % run['seconds'] if run['seconds'] is not None else 'NOT converged (%d hosts pending)' % len(
        run['pending'])
    return ('%s (median host %.2f s, routes p50/p99 %.2f/%.2f s, spawn %.2f s%s), %d/%d BGP protocols Established, '
            'BIRD RSS %.0f MiB%s, SYNs dropped %d / retransmitted %d, load before %.2f, CPU busy %.0f %% '
            '(BIRD %.1f CPU s, FRR %.1f CPU s, others %.0f %%)%s' % (
                secs, run['host_median'] or 0, run['route_p50'] or 0, run['route_p99'] or 0, run['spawn'],
                ', spines %.2f s' % run['spines_done'] if run['spines_done'] is not None else '',
                run['established'], run['bgp_protocols'],
                run['rss_kib'] / 1024, ', FRR RSS %.0f MiB' % (run['frr_rss_kib'] / 1024) if run['frr_rss_kib'] else '',
                run['listen_overflows'], run['syn_retrans'], run['loadavg_before'],
                100 * run['cpu_busy'], run['cpu_daemons']['BIRD'], run['cpu_daemons']['FRR'], 100 * run['cpu_others'],
                ', %d netlink overruns' % run['overruns'] if run['overruns'] else '')) + (
        '; sessions up (median/max s): ' + ', '.join(
            '%s %.1f/%.1f' % (k, m, x) for k, (m, x) in run.get('session_up', {}).items()))


# ------------------------------------------------------------------------------------------ one case

def lab_namespaces(prefix):
    out = sh(['ip', 'netns', 'list']).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + '-')]


def lab_down(inv, prefix, logdir):
    """Remove a bench lab with lab_down.yml; warn about (and return) any namespace of its prefix left."""
    try:
        playbook('lab/playbooks/lab_down.yml', inv, prefix, logdir, 'lab_down')
    finally:
        left = lab_namespaces(prefix)
        if left:
            log('  WARNING: namespaces of %s left after lab_down: %s' % (prefix, ' '.join(left[:10])))
    return left


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
    return spine_inventory(size, args.workloads, racks_of(size, args), args.reflectors_per_rack, args.spines)


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


def recap(totals):
    return ', '.join('%s=%d' % (k, totals.get(k, 0)) for k in ('ok', 'changed', 'failed', 'skipped'))


def machine():
    cpu = benchdoc.cpu_model()
    bird = sh(['bird', '--version']).stderr.strip() or sh(['bird', '--version']).stdout.strip()
    frr = subprocess.run(['/usr/lib/frr/bgpd', '--version'], capture_output=True, text=True, check=False).stdout
    ansible = sh([str(PLAYBOOK), '--version']).stdout.splitlines()[0]
    return {'nproc': os.cpu_count(), 'kernel': platform.release(), 'cpu': cpu, 'bird': bird,
            'frr': 'FRR ' + frr.split()[2] if frr.startswith('bgpd version') else 'FRR (not found)',
            'ansible': ansible.replace('ansible-playbook ', 'ansible-core ').strip(),
            'python': platform.python_version(), 'load': os.getloadavg()[0],
            'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='60,120', help='lab sizes (hosts), comma-separated')
    parser.add_argument('--topologies', default='mesh,rr', help='mesh, rr and/or spine, comma-separated')
    parser.add_argument('--racks', type=int, default=0,
                        help='spine: racks (default one per 50 hosts, at least 2; 500 hosts: 10 racks of 50)')
    parser.add_argument('--reflectors-per-rack', type=int, default=2, help='spine: reflectors per rack')
    parser.add_argument('--spines', type=int, default=2, help='spine: FRR spine routers')
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
