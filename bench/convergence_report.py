"""The report of bench/convergence.py: its sections of docs/benchmarks.md (full mesh and two racks with
reflectors in "## bench/convergence", racks with reflectors and FRR spines in "## bench/convergence: spine")."""

from __future__ import annotations

import os
import statistics

from convergence_fabric import BASE_AS, BLOCK_PREFIX, POOL, SEGMENT, SPINE_AS, SPINE_SEGMENT

SECTION = '## bench/convergence'
SPINE_SECTION = '## bench/convergence: spine'

# Targets and the hand-built figures of the article's configuration (seconds).
TARGET_CONVERGE = {'rr': 3.0, 'mesh': 6.0}          # for 120 hosts
TARGET_SPINE = {500: 10.0}                           # spine topology: hosts -> seconds
TARGET_SITE_COLD, TARGET_SITE_NOCHANGE = 120.0, 60.0  # for 60 hosts
DESIGN = {('mesh', 60): 2.9, ('mesh', 120): 5.4, ('rr', 60): 2.1, ('rr', 120): 3.0}
DESIGN_NAIVE = {('mesh', 60): 8.6}


def section_of(topology):
    return SPINE_SECTION if topology == 'spine' else SECTION


def lab_name(c, short=False):
    if c['topology'] == 'mesh':
        return 'full mesh %d hosts' % c['size']
    if c['topology'] == 'rr':
        return '%s %d hosts' % ('2 racks + 2 reflectors' if short else '2 racks, 1 reflector each', c['size'])
    return '%d hosts, %d racks x %d reflectors, %d spines' % (
        c['size'], c.get('racks', 0), c.get('reflectors_per_rack', 0), c.get('spines', 0))


def med(runs, key='seconds'):
    values = [r[key] for r in runs if r[key] is not None]
    if not values or len(values) < len(runs):
        return None
    return statistics.median(values)


def secs_range(runs):
    values = [r['seconds'] for r in runs]
    if any(v is None for v in values):
        ok = [v for v in values if v is not None]
        return '%d of %d runs not converged in time%s' % (
            len(values) - len(ok), len(values), (' (others %s s)' % '/'.join('%.2f' % v for v in ok)) if ok else '')
    if len(values) == 1:
        return '%.2f s' % values[0]
    return '%.2f s (%.2f-%.2f)' % (statistics.median(values), min(values), max(values))


def measured(cases):
    """(case, its last run, median converge as shipped, naive / shipped) for every case that was measured."""
    for c in cases:
        if 'tuned' not in c:
            continue
        tuned = med(c['tuned'])
        naive = med(c['naive']) if c.get('naive') else None
        ratio = ('%.1fx' % (naive / tuned)) if naive and tuned else ('' if not c.get('naive') else '-')
        yield c, c['tuned'][-1], tuned, ratio


def target_cell(target, tuned):
    """A table cell: the target in seconds and whether the median met it (empty without a target)."""
    if not target:
        return ''
    return '<= %.0f s: %s' % (target, 'met' if tuned is not None and tuned <= target else 'NOT met')


def table(cases):
    rows = ['| lab | BIRDs | BGP sessions (Established) | converge, role as shipped | BIRD default timers (naive) | '
            'naive / role | ablation: device scan time 2 (Calico) | hand-built (article) | target | total BIRD RSS |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for c, last, tuned, ratio in measured(cases):
        design = DESIGN.get((c['topology'], c['size']))
        dn = DESIGN_NAIVE.get((c['topology'], c['size']))
        design_s = ('%.1f s' % design if design else '') + (' (naive %.1f s)' % dn if dn else '')
        target_s = target_cell(TARGET_CONVERGE.get(c['topology']) if c['size'] == 120 else None, tuned)
        name = lab_name(c)
        rows.append('| %s | %d | %d (%d) | %s | %s | %s | %s | %s | %s | %.0f MiB |' % (
            name, c['birds'], last['bgp_protocols'] // 2, last['established'] // 2, secs_range(c['tuned']),
            secs_range(c['naive']) if c.get('naive') else 'not measured', ratio,
            secs_range(c['scan1']) if c.get('scan1') else 'not measured', design_s, target_s,
            last['rss_kib'] / 1024))
    return rows


def runs_detail(cases):
    """Every run: convergence, median host, route arrival p50/p99 (shows the 3 s steps)."""
    lines = []
    for c in cases:
        for key, label in (('tuned', 'role'), ('naive', 'naive'), ('scan1', 'scan 2')):
            if c.get(key):
                lines.append('- %s %d, %s: %s' % (c['topology'], c['size'], label, '; '.join(
                    ('%.2f' % r['seconds'] if r['seconds'] is not None else 'not converged')
                    + ' (host median %.2f, routes p50 %.2f, p99 %.2f, SYNs dropped %d)' % (
                        r['host_median'] or 0, r['route_p50'] or 0, r['route_p99'] or 0, r['listen_overflows'])
                    for r in c[key])))
    return lines


def site_table(cases):
    rows = ['| lab | lab_up | site.yml cold | site.yml, nothing to change | target (60 hosts) |',
            '|---|---|---|---|---|']
    for c in cases:
        if 'site_cold' not in c:
            continue
        nochange = ('%.1f s, %.0f CPU s (changed=%d)' % (c['site_nochange'], c['site_nochange_cpu'],
                                                         c['site_nochange_recap'].get('changed', 0))
                    if 'site_nochange' in c else 'not measured')
        target = ''
        if c['size'] == 60:
            ok_cold = c['site_cold'] <= TARGET_SITE_COLD
            ok_nc = c.get('site_nochange', 1e9) <= TARGET_SITE_NOCHANGE
            target = 'cold <= %.0f s: %s; no change <= %.0f s: %s' % (
                TARGET_SITE_COLD, 'met' if ok_cold else 'NOT met', TARGET_SITE_NOCHANGE, 'met' if ok_nc else 'NOT met')
        name = lab_name(c, short=True)
        rows.append('| %s | %.1f s | %.1f s, %.0f CPU s (changed=%d) | %s | %s |' % (
            name, c['lab_up'], c['site_cold'], c['site_cold_cpu'], c['site_cold_recap'].get('changed', 0),
            nochange, target))
    return rows


def profile_table(case, top=10):
    """The slowest tasks of the cold and the no-change site.yml of one case."""
    cold = {r['task']: r for r in case['site_cold_profile']['tasks']}
    nochange = {r['task']: r for r in case.get('site_nochange_profile', {'tasks': []})['tasks']}
    names = sorted(cold, key=lambda t: -cold[t]['wall'])[:top]
    rows = ['| task (%s %d hosts) | module | hosts ran | cold: wall | in flight per host (median) | '
            'no change: wall |' % (case['topology'], case['size']), '|---|---|---|---|---|---|']
    for name in names:
        r, n = cold[name], nochange.get(name)
        rows.append('| %s | %s | %d | %.1f s | %.2f s | %s |' % (
            name.replace('|', '/'), r['action'].replace('netfleet.calico.', ''), r['ran'], r['wall'], r['per_host'],
            '%.1f s' % n['wall'] if n else ''))
    shown = sum(cold[t]['wall'] for t in names)
    rows.append('| (these %d of %d tasks) | | | %.1f s of %.1f s | | %.1f s of %.1f s |' % (
        len(names), len(cold), shown, case['site_cold_profile']['total'],
        sum(nochange[t]['wall'] for t in names if t in nochange),
        case.get('site_nochange_profile', {}).get('total', 0)))
    return rows


def host_task_runs(prof):
    return sum(r['ran'] for r in prof['tasks'])


def machine_line(info, args, frr=False):
    cmd = '.venv/bin/python bench/convergence.py'
    if args.argv:
        cmd += ' ' + ' '.join(args.argv)
    return ('`%s` (root) - %s; %s CPUs (`nproc`), kernel %s, CPU "%s", %s%s, %s, Python %s; 1-minute load average '
            '%.2f at the start (%s).' % (
                cmd, info['date'], info['nproc'], info['kernel'], info['cpu'], info['bird'],
                ', ' + info['frr'] if frr else '', info['ansible'], info['python'], info['load'],
                'an idle machine' if info['load'] < 1 else 'other jobs were running; figures may be inflated'))


def report(info, cases, args, title=SECTION):
    """One section of docs/benchmarks.md: ``title`` with the cases of its topologies."""
    if title == SPINE_SECTION:
        return spine_report(info, cases, args)
    runs = [r for c in cases for r in c.get('tuned', []) + c.get('naive', []) + c.get('scan1', [])]
    lines = [
        SECTION,
        '',
        machine_line(info, args),
        '',
        'Each lab is built by `lab/playbooks/lab_up.yml` from a generated inventory (mesh: N hosts on one segment',
        '%s, AS %d; rr: the N hosts split over two racks, each its own /16 segment and AS, with one' % (
            SEGMENT, BASE_AS),
        'reflector per rack as its ToR, on spine %s), pool %s with /%d blocks, %d workload(s)' % (
            SPINE_SEGMENT, POOL, BLOCK_PREFIX, args.workloads),
        'per host, and provisioned by `site.yml`. Convergence: every BIRD of the lab is stopped (SIGTERM via',
        'its pid file), the `proto bird` routes and neighbour tables are flushed, then all BIRDs are started',
        'at once with the role\'s command (`bird -c <conf> -s <sock> -P <pid>`, entered into the host\'s namespace by',
        '`nsenter --net`, not `ip netns exec`: its mount namespace and /sys remount cost the lab seconds at 500',
        'hosts);',
        'the time is from that start until every host holds the routes the fabric plan gives it (every other',
        'host\'s block; reflectors: every block) as `proto bird` kernel routes, seen through one rtnetlink socket',
        'per namespace and cross-checked with',
        '`ip -j route show proto bird`. Median of %d runs (min-max); the naive column removes the' % args.repeat,
        '`connect delay/retry time` and `error wait time` lines from every bird.conf and sets protocol device\'s',
        '`scan time` to BIRD\'s default 60 (BIRD\'s defaults: 5 s connect delay, 120 s retry), %d run(s);' % (
            args.naive_repeat),
        'the ablation column keeps the role\'s timers but Calico\'s `scan time 2` (the role ships 1).',
        'Sessions = BGP protocols / 2 (every session has two ends in',
        'the lab). RSS = sum of VmRSS of the lab\'s BIRD processes with every session Established.',
        '',
    ]
    lines += table(cases)
    lines += common_tail(cases, runs, args)
    return '\n'.join(lines)


def common_tail(cases, runs, args):
    """Every run, failures, site.yml times and profile, the quiet machine check."""
    others = max((r['cpu_others'] for r in runs), default=0.0)
    lines = []
    lines += ['', 'Every run, seconds from start: converged (median host; p50/p99 of route arrivals; SYNs to port 179 '
              'dropped by a full listen queue, TcpExt ListenOverflows summed over the hosts):', '']
    lines += runs_detail(cases)
    lines += ['']
    failed = ['- %s %d hosts: FAILED: %s' % (c['topology'], c['size'], c['error'].strip().splitlines()[0])
              for c in cases if 'error' in c]
    if failed:
        lines += failed + ['']
    lines += site_table(cases)
    lines += ['']
    for c in cases:
        if c.get('size') == args.profile_size and 'site_cold_profile' in c:
            task_runs = host_task_runs(c['site_nochange_profile']) if 'site_nochange_profile' in c else 0
            lines += ['Where site.yml spends its time (%s %d hosts; bench/callback_plugins/bench_timing.py: '
                      'wall = first host starting the task to the last finishing it; a host\'s run of a task '
                      'waits for a CPU most of the time it is in flight):' % (c['topology'], c['size']), '']
            lines += profile_table(c) + ['']
            if task_runs:
                lines += ['No-change run: %d task runs on hosts (not skipped), %.0f CPU s in total: %.2f CPU s per '
                          'task per host on a machine with %d CPUs.' % (
                              task_runs, c['site_nochange_cpu'], c['site_nochange_cpu'] / task_runs, os.cpu_count()),
                          '']
            if c.get('forks_sweep'):
                lines += ['forks (no-change site.yml, %d-host mesh): ' % c['size'] + '; '.join(
                    ['50 (ansible.cfg): %.1f s, %.0f CPU s' % (c['site_nochange'], c['site_nochange_cpu'])] +
                    ['%d: %.1f s, %.0f CPU s' % (f['forks'], f['seconds'], f['cpu']) for f in c['forks_sweep']]) + '.',
                    '']
    if runs:
        lines += ['Quiet machine check: during the convergence runs other processes (other engineers\' labs and tests '
                  'on this shared 2-CPU machine) used at most %.0f %% of the CPUs (median %.0f %%; 1-min load '
                  'average before the runs %.1f-%.1f). %s' % (
                      100 * others, 100 * statistics.median(r['cpu_others'] for r in runs),
                      min(r['loadavg_before'] for r in runs), max(r['loadavg_before'] for r in runs),
                      # the lab's own kernel work (route installs, softirqs, kworkers) counts as "others" too,
                      # and the load average before a run is mostly the previous run's BIRDs: judge by the median
                      'Taken on a quiet machine (the kernel work of the lab itself, route installs and softirqs, '
                      'counts as "other" CPU too).' if statistics.median(r['cpu_others'] for r in runs) < 0.10 else
                      'NOT a quiet machine: the convergence figures are pessimistic; re-run when the machine is idle.'),
                  '']
    if any('site_cold' in c for c in cases):
        lines += ['site.yml wall times depend on the machine being otherwise idle too (they are CPU-bound: '
                  'CPU seconds above are those of the playbook and everything it ran).', '']
    return lines


def spine_table(cases):
    rows = ['| lab | speakers | BGP sessions (Established) | routes per host (min / median / max) '
            '| converge, as shipped | spines converged | BIRD default timers (naive) | naive / ours | target '
            '| BIRD RSS | FRR RSS |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
    for c, last, tuned, ratio in measured(cases):
        target_s = target_cell(TARGET_SPINE.get(c['size']), tuned)
        held = last['routes_per_host']
        spines_done = [r['spines_done'] for r in c['tuned'] if r['spines_done'] is not None]
        rows.append('| %s | %d BIRD + %d FRR | %d (%d) | %s | %s | %s | %s | %s | %s | %.0f MiB | %.0f MiB |' % (
            lab_name(c), c['birds'], c['frrs'], last['bgp_protocols'] // 2, last['established'] // 2,
            '%d / %g / %d' % held if held else '-', secs_range(c['tuned']),
            '%.2f s' % statistics.median(spines_done) if spines_done else '-',
            secs_range(c['naive']) if c.get('naive') else 'not measured', ratio, target_s,
            last['rss_kib'] / 1024, last['frr_rss_kib'] / 1024))
    return rows


def spine_report(info, cases, args):
    runs = [r for c in cases for r in c.get('tuned', []) + c.get('naive', [])]
    lines = [
        SPINE_SECTION,
        '',
        machine_line(info, args, frr=True),
        '',
        'Each lab (as inventories/lab-spine, generated): N hosts split evenly over the racks, rack r on its own',
        'segment 10.(64+r).0.0/16 with AS %d+r; each rack\'s reflectors are its ToRs (gateways of the rack' % BASE_AS,
        'segment) with a leg on the spine segment %s, where they peer by eBGP with the FRR spines (AS %d).' % (
            SPINE_SEGMENT, SPINE_AS),
        'Pool %s with /%d blocks, %s, %d workload(s) per host; built by `lab/playbooks/lab_up.yml`, provisioned by' % (
            POOL, BLOCK_PREFIX, ('each rack a /%d share of it announced as one aggregate (calico_rack_block_pool)'
                                 % args.rack_block_pool) if args.rack_block_pool else 'one route per block',
            args.workloads),
        '`site.yml`. Cold start: every BIRD and every spine\'s zebra and bgpd are stopped (SIGTERM via their pid',
        'files), their routes (`proto bird`, zebra\'s `proto bgp`) and the neighbour tables flushed, then all are',
        'started at once (in their namespaces by `nsenter --net`) with the command lines read back from the running',
        'daemons: each BIRD as role calico_node starts it, each spine\'s FRR as module calico_frr does (zebra,',
        'then bgpd once zebra\'s pid file and vty socket exist). Converged: every host and reflector holds the',
        'routes the fabric plan gives it (site.yml\'s `calico_fabric`, read through status.yml\'s analysis: what it',
        'would call missing from an empty table), and',
        'every spine each prefix its prefix lists accept from the racks; seen through one rtnetlink socket per',
        'namespace, cross-checked with `ip -j route show proto bird|bgp`. Routes per host: the `proto bird` routes',
        'every host and reflector holds once converged. Median of %d runs (min-max); naive: BIRD\'s default timers' % (
            args.repeat),
        'as for the mesh (connect delay/retry and error wait lines removed, device scan time 60; FRR as shipped),',
        '%d run(s). Sessions = (BIRD BGP protocols + FRR neighbors) / 2. RSS: sum of VmRSS of the BIRD processes' % (
            args.naive_repeat),
        'and of the spines\' zebra and bgpd, every session Established.',
        '',
    ]
    lines += spine_table(cases)
    lines += common_tail(cases, runs, args)
    return '\n'.join(lines)
