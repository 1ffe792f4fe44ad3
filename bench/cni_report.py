"""bench/cni.py's report: the summary of a run, printed and written to docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import benchdoc
from cni_lab import (
    CONTAINERS,
    FLOOR,
    NAIVE,
    SECTION,
    SEQUENTIAL,
    TARGET_ADD_P50,
    TARGET_ADD_P99,
    TARGET_REPLY,
    TRACED,
    WORKERS,
    ms,
    pct,
    sh,
)


def machine(plugin):
    return {'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC'), 'nproc': os.cpu_count(),
            'kernel': platform.release(), 'cpu': benchdoc.cpu_model(),
            'iptables': sh(['iptables', '-V']).stdout.strip(),
            'python': sh([plugin.python, '-V']).stdout.strip() if plugin else None,
            'load': Path('/proc/loadavg').read_text().split()[0]}


def verdict(value, target):
    return 'PASS' if value is not None and value <= target else 'FAIL'


def summarise(res):
    recs = res['churn']
    adds, dels = [r['add'] for r in recs], [r['del'] for r in recs]
    replies = [r['reply'] for r in recs if 'sent' in r and r['reply'] is not None]
    probed = [r for r in recs if 'sent' in r]
    span = max(r['del_end'] for r in recs) - min(r['add_start'] for r in recs)
    seq_add, seq_del = [a for a, _d in res['sequential']], [d for _a, d in res['sequential']]
    s = {
        'n': len(recs), 'errors': [r['name'] + ': ' + r['error'] for r in recs if r.get('error')],
        'add_p50': pct(adds, 50), 'add_p99': pct(adds, 99), 'add_max': max(adds),
        'del_p50': pct(dels, 50), 'del_p99': pct(dels, 99), 'del_max': max(dels),
        'span': span, 'rate': len(recs) / span,
        'int_add_p50': pct(res['internal']['ADD'], 50), 'int_add_p99': pct(res['internal']['ADD'], 99),
        'int_del_p50': pct(res['internal']['DEL'], 50), 'int_del_p99': pct(res['internal']['DEL'], 99),
        'probed': len(probed), 'replied': len(replies), 'timeouts': len(probed) - len(replies),
        'reply_p50': pct(replies, 50) if replies else None, 'reply_p99': pct(replies, 99) if replies else None,
        'reply_max': max(replies) if len(replies) == len(probed) and replies else None,
        'first_echo': sum(1 for r in probed if r['reply'] is not None and r['sent'] == 1),
        'seq_add_p50': pct(seq_add, 50), 'seq_add_p99': pct(seq_add, 99), 'seq_del_p50': pct(seq_del, 50),
        'seq_int_add_p50': pct(res['seq_internal']['ADD'], 50), 'seq_int_del_p50': pct(res['seq_internal']['DEL'], 50),
        'naive_p50': pct(res['naive'][0], 50), 'naive_p99': pct(res['naive'][0], 99), 'naive_steps': res['naive'][1],
        'cpu_call': res['churn_cpu'] / (2 * len(recs)), 'seq_cpu_call': res['seq_cpu'] / (2 * len(res['sequential'])),
        'slow': sorted(((r['reply'], r['sent']) for r in probed if r['reply'] is None or r['reply'] > 0.010),
                       key=lambda x: -(x[0] or 1e9)),
    }
    inproc = res['inproc']
    s.update(inproc_add_p50=pct([r['add'] for r in inproc], 50), inproc_add_p99=pct([r['add'] for r in inproc], 99),
             inproc_del_p50=pct([r['del'] for r in inproc], 50), inproc_del_p99=pct([r['del'] for r in inproc], 99),
             inproc_cpu_call=res['inproc_cpu'] / (2 * len(inproc)),
             inproc_errors=[r['name'] + ': ' + r['error'] for r in inproc if r.get('error')],
             agent_cpu_call=res['agent_cpu'] / (2 * len(recs)))
    s['ratio_inproc'] = s['inproc_add_p50'] / s['add_p50']
    # Little's law: WORKERS calls always in flight, each needing cpu_call of the machine's nproc CPUs
    s['queue_floor'] = WORKERS * s['cpu_call'] / (os.cpu_count() or 1)
    s['ratio'] = s['naive_p50'] / s['add_p50']
    s['ratio_seq'] = s['naive_p50'] / s['seq_add_p50']
    return s


def breakdown_lines(data):
    if not data:
        return []
    lines = ['', 'Where one uncontended in-process call\'s time goes (`strace --seccomp-bpf -f -e trace=execve,flock`,',
             'only those calls stop the plugin; median of %d ADD + DEL; a child is its exec to its exit):' % TRACED, '']
    for command in ('ADD', 'DEL'):
        rows = data[command]['rows']
        lines.append('- %s, %s in all: %s.' % (command, ms(data[command]['total']), '; '.join(
            '%s %s' % (label, ms(secs)) for label, secs in rows)))
    return lines


def report(info, res, s):
    bgp = res['bgp']
    same = bgp['before'] == bgp['during'] == bgp['after']
    route_lines = [line.strip() for line in bgp['before']['routes'].splitlines() if line.strip()]
    targets = [
        ('ADD p50 <= 60 ms (200 containers, 20 at a time)', ms(s['add_p50']), verdict(s['add_p50'], TARGET_ADD_P50)),
        ('ADD p99 <= 150 ms (same run)', ms(s['add_p99']), verdict(s['add_p99'], TARGET_ADD_P99)),
        ('first cross-host reply <= 100 ms after ADD returns (p99 of %d)' % s['probed'],
         ms(s['reply_p99']) + (' (%d without reply)' % s['timeouts'] if s['timeouts'] else ''),
         verdict(s['reply_p99'] if not s['timeouts'] else None, TARGET_REPLY)),
        ('for reference, not a target: ADD p50 <= 60 ms one call at a time', ms(s['seq_add_p50']),
         verdict(s['seq_add_p50'], TARGET_ADD_P50)),
    ]
    floor_ = res['floor']
    lines = [
        SECTION,
        '',
        benchdoc.machine_line('cni.py', info, python_label='plugin interpreter'),
        '',
        'Lab inventories/lab-cni (prefix %s: lab_up + site.yml %.1f s, status.yml %.1f s). The plugin site.yml' % (
            res['prefix'], res['site'], res['status']),
        'installed on n1a is called as a runtime calls it: the `web` conflist entry on stdin, CNI_* in the',
        'environment, `nsenter --net=<n1a> .../cni/bin/netfleet-calico` (the `sh` client, which hands the call to the',
        'host\'s resident agent with `nc -U`); "wall" is spawn to exit as the runtime sees it, "plugin" the time the',
        'agent logs (cni.log: from receiving the call to its answer, queueing behind the batch in progress included).',
        'Churn: %d containers, each a fresh namespace, ADD then DEL, %d worker threads (at most %d alive).' % (
            CONTAINERS, WORKERS, WORKERS),
        '"in-process": the same churn calling the plugin as the executable does while no agent answers (one',
        '`python3 -IS` per call; every ADD and DEL serialises on the store lock). "one at a time": %d more,' % (
            SEQUENTIAL),
        'sequentially. "naive":',
        'the same endpoint made by a shell-script plugin, one process per step (%d: ip link add, ip link set' % (
            s['naive_steps']),
        'netns, 5 `ip -n`, ip link set up, 4 sysctl -w, ip route add, iptables -N/-A/-I for the two endpoint chains',
        'and the dispatch entries, ipset add), %d containers one at a time, one `nsenter ... sh -e` per ADD.' % NAIVE,
        '',
        '| run | ADD p50 | ADD p99 | ADD max | DEL p50 | DEL p99 | DEL max | plugin ADD p50 / p99 | '
        'plugin DEL p50 / p99 |',
        '|---|---|---|---|---|---|---|---|---|',
        '| churn, %d x (ADD + DEL), %d at a time | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |' % (
            s['n'], WORKERS, ms(s['add_p50']), ms(s['add_p99']), ms(s['add_max']), ms(s['del_p50']),
            ms(s['del_p99']), ms(s['del_max']), ms(s['int_add_p50']), ms(s['int_add_p99']), ms(s['int_del_p50']),
            ms(s['int_del_p99'])),
        '| in-process (no agent), %d x (ADD + DEL), %d at a time | %s | %s | | %s | %s | | | |' % (
            len(res['inproc']), WORKERS, ms(s['inproc_add_p50']), ms(s['inproc_add_p99']), ms(s['inproc_del_p50']),
            ms(s['inproc_del_p99'])),
        '| one at a time, %d x (ADD + DEL) | %s | %s | | %s | | | %s | %s |' % (
            SEQUENTIAL, ms(s['seq_add_p50']), ms(s['seq_add_p99']), ms(s['seq_del_p50']), ms(s['seq_int_add_p50']),
            ms(s['seq_int_del_p50'])),
        '| naive shell plugin, %d x ADD, one at a time | %s | %s | | | | | | |' % (
            NAIVE, ms(s['naive_p50']), ms(s['naive_p99'])),
        '',
        'Churn throughput: %.1f containers/s (ADD + DEL; %d in %.1f s). In-process / agent, ADD p50 under churn:' % (
            s['rate'], s['n'], s['span']),
        '%.1fx. Naive / ours, ADD p50: %.2fx against the churn, %.2fx one at a time.' % (
            s['ratio_inproc'], s['ratio'], s['ratio_seq']),
        'Start-up floor of every call (p50 of %d, nsenter into n1a, VERSION): `nsenter true` %s; the `sh` +' % (
            FLOOR, ms(floor_['nsenter'])),
        '`nc -U` client answered by the agent %s;' % ms(floor_['client']),
        'in-process instead: `python3 -IS -c pass` %s, + importing the plugin\'s modules %s.' % (
            ms(floor_['python']), ms(floor_['imports'])),
        '',
        'CPU (user + system of nsenter, the client and the agent with every process it runs, from getrusage and the',
        'agent\'s /proc stat): %s per call in the churn (the agent\'s share %s), %s one at a time; in-process' % (
            ms(s['cpu_call']), ms(s['agent_cpu_call']), ms(s['seq_cpu_call'])),
        '%s.' % ms(s['inproc_cpu_call']),
        'With %d calls always in flight on %d CPUs a call cannot take less than' % (WORKERS, info['nproc']),
        '%d x %s / %d = %s on average (Little\'s law), whatever the lock does: ADD p50 <= 60 ms at 20 at a time' % (
            WORKERS, ms(s['cpu_call']), info['nproc'], ms(s['queue_floor'])),
        'needs <= %.0f ms of CPU per call on this machine.' % (TARGET_ADD_P50 * info['nproc'] / WORKERS * 1000),
    ] + breakdown_lines(res.get('breakdown')) + [
        '',
        'First cross-host reply: a container on n2a (rack2, network web) pings %d of the churned containers on n1a' % (
            s['probed']),
        '(rack1) from the moment their ADD returns: an ICMP echo every 2 ms from a socket already open in its',
        'namespace, until the first reply: p50 %s, p99 %s, max %s; %d of %d answered the very first echo%s. Floor' % (
            ms(s['reply_p50']), ms(s['reply_p99']), ms(s['reply_max']), s['first_echo'], s['probed'],
            ' (over 10 ms: %s)' % ', '.join('%s after %d echoes' % (ms(r), n) for r, n in s['slow'])
            if s['slow'] else ''),
        '(the same probe to a container up for a while): %s. No BGP change: n2a\'s `proto bird` routes (%s) and' % (
            ms(res['reply_floor']), '; '.join(route_lines)),
        'the route count of every BIRD (%s) were %s before, during and after the churn.' % (
            ', '.join('%s %s' % (h, c.split(': ')[1]) for h, c in sorted(bgp['before']['counts'].items())),
            'identical' if same else 'NOT identical'),
        '',
        '| target | measured | result |',
        '|---|---|---|',
    ] + ['| %s | %s | %s |' % t for t in targets] + ['']
    if s['errors'] or s['inproc_errors']:
        errors = s['errors'] + s['inproc_errors']
        lines += ['Errors (%d): %s' % (len(errors), '; '.join(errors[:5])), '']
    return '\n'.join(lines), targets, same
