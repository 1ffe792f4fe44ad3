"""One cold start of a bench lab's routing daemons, measured (bench/convergence.py): stop and flush every
speaker, start them all at once, and time until every host and spine holds the routes the plan gives it; the
same with bird.conf rewritten (BIRD's default timers, the naive baseline; a device scan time ablation)."""

from __future__ import annotations

import os
import re
import select
import statistics
import time
from pathlib import Path

from convergence_daemons import (
    RouteWatch,
    cpu_busy,
    cross_check,
    flush,
    own_cpu_ticks,
    proc_cpu_ticks,
    rss_kib,
    sessions,
    sh,
    start_all,
    stop_all,
    tcp_counters,
)
from convergence_lab import log

TIMER_LINE = re.compile(r'^\s*(connect delay time|connect retry time|error wait time)\b')
DEVICE_SCAN_DEFAULT = 60   # BIRD's default scan time of protocol device


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
