#!/usr/bin/env python
"""Benchmark the netfleet-calico CNI plugin: container churn, first cross-host reply, against a shell plugin.

    .venv/bin/python bench/cni.py               (root; about a minute)

Builds the lab of inventories/lab-cni (lab/playbooks/lab_up.yml, site.yml, then playbooks/status.yml, which waits
for every BGP session and block) under its own prefix nfb<hex> (namespaces nfb<hex>-<host>), then calls the
plugin site.yml installed exactly as a runtime does: the conflist's plugin entry (plus cniVersion and name) on
stdin, CNI_* in the environment, `nsenter --net=/run/netns/<prefix>-n1a <cni bin dir>/netfleet-calico`.

1. Churn ("ours"): 200 containers on n1a, network web, each a fresh namespace nfb<hex>-c<i> made by the bench
   beforehand (one `ip -batch` of `netns add`), ADD then DEL, 20 worker threads (at most 20 containers alive:
   the web range of a host is a /26). Per call: wall latency from spawn to exit as the runtime sees it, and the
   plugin's own time from its log (cni.log, `rc=0 <ms>ms`). Throughput = containers (ADD + DEL) per second.
   The same for 30 containers one at a time (no lock contention), and the start-up floor: nsenter + the
   plugin's interpreter (`python3 -IS`) doing nothing, and importing the plugin's modules.
2. First cross-host reply: a container on n2a (other rack, network web, added with the plugin there) pings 30 of
   the churned containers right after their ADD returns: ICMP echo every 2 ms (like `ping -i 0.002`) from a
   datagram ICMP socket opened beforehand in that container's namespace (no process to start between the ADD's
   exit and the first echo), until the first reply. The same probe against a container that has been up for a
   while gives the floor (one round trip). n2a's `proto bird` routes and every BIRD's route count are read before,
   during and after the churn: a container's /32 never reaches BGP (its host's block is already announced).
3. Naive: the same endpoint made the way a shell-script CNI plugin would (one process per step: ip link add,
   ip link set netns, ip -n addr/route, ip link set up, 4 sysctl -w, ip route add, iptables -N/-A/-I per chain
   and rule, ipset add), for 30 containers one at a time, each ADD one `nsenter --net=... sh -e` run. Its chains
   are cali-naive-* (never jumped to) and its set cali-naive-s, all removed afterwards.

Targets: ADD p50 <= 60 ms and p99 <= 150 ms, first cross-host reply <= 100 ms after ADD returns; a miss
is reported (PASS/FAIL), not an error. Everything is removed at the end, also on failure or Ctrl-C: the
containers (DEL), their namespaces, the lab (lab_down.yml); the script checks that no nfb<hex>-* namespace is
left. Results are printed and written to docs/benchmarks.md under "## bench/cni" (other sections are kept).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'collections'))

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from cni_lab import (  # noqa: E402
    CONTAINERS,
    DOC,
    FLOOR,
    HOST,
    NAIVE,
    NAIVE_NET,
    NETWORK,
    PEER,
    PROBES,
    RUNTIME_PATH,
    SECTION,
    SEQUENTIAL,
    TRACED,
    WORKERS,
    Lab,
    Plugin,
    bgp_snapshot,
    cpu_children,
    drain,
    icmp_sockets,
    log,
    ms,
    namespaces,
    netns_batch,
    probe,
    sh,
)
from cni_report import machine, report, summarise  # noqa: E402

from ansible_collections.netfleet.calico.plugins.module_utils import chains, chains_render, cni_policy, iproute  # noqa: E402


def churn(plugin, names, probes, sockets, stop, progress, exe=None):
    """ADD then DEL of every container in ``names`` (WORKERS at a time); returns the per-container records."""
    socks = dict(zip(sorted(probes), sockets))

    def one(name):
        if stop.is_set():
            return None
        rec = {'name': name}
        rec['add'], rc, result = plugin.call('ADD', name, name, exe=exe)
        rec['add_end'] = time.perf_counter()
        rec['add_start'] = rec['add_end'] - rec['add']
        if rc != 0:
            rec['error'] = 'ADD rc=%d %s' % (rc, (result or {}).get('msg'))
        else:
            rec['ip'] = result['ips'][0]['address'].split('/')[0]
            if name in socks:
                rec['reply'], rec['sent'] = probe(socks[name], rec['ip'], rec['add_end'])
        rec['del'], rc, result = plugin.call('DEL', name, name, prev=result if rc == 0 else None, exe=exe)
        rec['del_end'] = time.perf_counter()
        if rc != 0:
            rec['error'] = (rec.get('error', '') + ' DEL rc=%d %s' % (rc, (result or {}).get('msg'))).strip()
        progress(rec)
        return rec

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
    try:
        return [r for r in pool.map(one, names) if r]
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def sequential(plugin, names):
    rows = []
    for name in names:
        add, rc, result = plugin.call('ADD', name, name)
        if rc != 0:
            raise RuntimeError('sequential ADD %s failed: %s' % (name, result))
        dele, rc, _r = plugin.call('DEL', name, name, prev=result)
        if rc != 0:
            raise RuntimeError('sequential DEL %s failed' % name)
        rows.append((add, dele))
    return rows


def floor(plugin):
    """Start-up floor of one call, p50 of FLOOR runs each: nsenter, + the interpreter, + the plugin's imports."""
    imp = 'import sys; sys.path.insert(0, %r); import ansible_collections.netfleet.calico.plugins.module_utils.cni' % (
        plugin.lib)
    out = '; import os; os._exit(0)'  # as the launcher leaves
    cases = {'nsenter': ['/bin/true'], 'client': [plugin.bin], 'python': [plugin.python, '-IS', '-c', out[2:]],
             'imports': [plugin.python, '-IS', '-c', imp + out]}
    out = {}
    for key, argv in cases.items():
        times = []
        for _i in range(FLOOR):
            start = time.perf_counter()
            subprocess.run(['nsenter', '--net=' + plugin.host_netns, *argv], check=True, input=b'{}',
                           stdout=subprocess.DEVNULL, env={'PATH': RUNTIME_PATH, 'CNI_COMMAND': 'VERSION'})
            times.append(time.perf_counter() - start)
        out[key] = statistics.median(times)
    return out


STRACE_LINE = re.compile(r'^(\d+)\s+(\d+\.\d+) (.*)$')


def child_label(argv):
    """A stable name for a process the plugin ran (container namespace and interface names left out)."""
    if argv[:2] == ['ip', '-n']:
        return 'ip -n <container> ' + ' '.join(argv[3:4])
    return ' '.join(argv[:3])


def strace_spans(path):
    """(total, start-up, [(label, seconds)], tail) of one traced call: nsenter exec to exit; to the first lock
    or child; each child exec to exit; last child exit to exit."""
    execs, exits, locks, order = {}, {}, [], []
    first_pid = None
    for line in Path(path).read_text().splitlines():
        m = STRACE_LINE.match(line)
        if not m:
            continue
        pid, ts, rest = int(m.group(1)), float(m.group(2)), m.group(3)
        first_pid = first_pid or pid
        if rest.startswith('execve(') and rest.rstrip().endswith('= 0'):
            argv = re.findall(r'"([^"]*)"', rest.split('], ')[0])[1:]
            execs.setdefault(pid, []).append((ts, argv))
            if pid != first_pid:
                order.append(pid)
        elif rest.startswith('+++ exited'):
            exits[pid] = ts
        elif rest.startswith('flock(') and 'LOCK_EX' in rest and pid == first_pid:
            locks.append(ts)
    plugin_start = execs[first_pid][-1][0]
    children = [(child_label(execs[p][-1][1]), exits[p] - execs[p][-1][0]) for p in order if p in exits]
    first_work = min([execs[p][-1][0] for p in order] + locks[:1])
    last_child = max((exits[p] for p in order if p in exits), default=first_work)
    return (exits[first_pid] - execs[first_pid][0][0], first_work - plugin_start, children,
            exits[first_pid] - last_child)


def breakdown(plugin, names, workdir):
    """Where one uncontended call's time goes: ADD and DEL of ``names`` one at a time under
    `strace --seccomp-bpf -f -e trace=execve,flock` (only those calls stop the plugin); medians, seconds."""
    if not shutil.which('strace'):
        return None
    runs = {'ADD': [], 'DEL': []}
    for i, name in enumerate(names):
        prev = None
        for command in ('ADD', 'DEL'):
            path = Path(workdir) / ('strace-%s-%d.txt' % (command, i))
            wrap = ['strace', '--seccomp-bpf', '-f', '-ttt', '-e', 'trace=execve,flock', '-o', str(path)]
            _s, rc, prev = plugin.call(command, name, name, prev=prev, wrap=wrap, exe=plugin.inprocess)
            if rc != 0:
                raise RuntimeError('%s %s under strace failed: %s' % (command, name, prev))
            runs[command].append(strace_spans(path))
    out = {}
    for command, spans in runs.items():
        labels = [label for label, _secs in spans[0][2]]
        rows = [('start-up: exec to the first lock or child (interpreter, imports, config)',
                 statistics.median(s[1] for s in spans))]
        for k, label in enumerate(labels):
            rows.append((label, statistics.median(s[2][k][1] for s in spans if len(s[2]) > k)))
        rows.append(('after the last child to exit (result, log)', statistics.median(s[3] for s in spans)))
        total = statistics.median(s[0] for s in spans)
        rows.append(('the rest (Python between the children: plan, store, spawning; and strace following each child)',
                     total - sum(r[1] for r in rows)))
        out[command] = {'total': total, 'rows': rows}
    return out


# ------------------------------------------------------------------------------------------ naive

NAIVE_FROM, NAIVE_TO, NAIVE_SET = 'cali-naive-from', 'cali-naive-to', 'cali-naive-s'


def naive_script(i, ns, rules):
    """One ADD of a shell-script CNI plugin: one process per step (run inside the host's namespace)."""
    host_if = iproute.workload_ifname('naive%03d' % i)
    tmp, ip = 'nvtmp%03d' % i, '%s.%d' % (NAIVE_NET, i + 1)
    fw, tw = 'cali-naive-fw-%03d' % i, 'cali-naive-tw-%03d' % i
    lines = [
        'ip link add %s address ee:ee:ee:ee:ee:ee type veth peer name %s' % (host_if, tmp),
        'ip link set %s netns %s name eth0' % (tmp, ns),
        'ip -n %s link set lo up' % ns,
        'ip -n %s link set eth0 up' % ns,
        'ip -n %s addr add %s/32 dev eth0' % (ns, ip),
        'ip -n %s route add 169.254.1.1 dev eth0 scope link' % ns,
        'ip -n %s route add default via 169.254.1.1 dev eth0' % ns,
        'ip link set %s up' % host_if,
        'sysctl -qw net.ipv4.conf.%s.proxy_arp=1' % host_if,
        'sysctl -qw net.ipv4.neigh.%s.proxy_delay=0' % host_if,
        'sysctl -qw net.ipv4.conf.%s.forwarding=1' % host_if,
        'sysctl -qw net.ipv4.conf.%s.route_localnet=1' % host_if,
        'ip route add %s/32 dev %s proto 80 scope link' % (ip, host_if),
    ]
    for chain, key in ((fw, 'egress'), (tw, 'ingress')):
        lines.append('iptables -w -N %s' % chain)
        lines += ['iptables -w -A %s %s' % (chain, rule) for rule in rules[key]]
    lines += ['iptables -w -I %s 1 -i %s -g %s' % (NAIVE_FROM, host_if, fw),
              'iptables -w -I %s 1 -o %s -g %s' % (NAIVE_TO, host_if, tw),
              'ipset add %s %s' % (NAIVE_SET, ip)]
    return 'set -e\n' + '\n'.join(lines) + '\n', len(lines)


def naive(plugin, names, workdir):
    """The shell plugin's ADD for each of ``names`` in turn; returns ([seconds], processes per ADD)."""
    netns = plugin.lab.netns(plugin.host)
    labels = plugin.config['networks'][NETWORK].get('labels') or {}
    egress, ingress, _names = cni_policy.endpoint_rules(labels, plugin.config['policy'])
    render = chains_render.render_endpoint_chain
    rules = {'egress': [chains.normalize_rule(r) for r in render(egress, 'egress', 'RETURN')],
             'ingress': [chains.normalize_rule(r) for r in render(ingress, 'ingress', 'ACCEPT')]}
    setup = ['iptables -w -N %s' % NAIVE_FROM, 'iptables -w -A %s -j DROP' % NAIVE_FROM,
             'iptables -w -N %s' % NAIVE_TO, 'iptables -w -A %s -j DROP' % NAIVE_TO,
             'ipset create %s hash:net family inet' % NAIVE_SET]
    sh(['ip', 'netns', 'exec', netns, 'sh', '-ec', '\n'.join(setup)])
    times, steps = [], 0
    try:
        for i, name in enumerate(names):
            text, steps = naive_script(i, name, rules)
            path = Path(workdir) / ('naive%03d.sh' % i)
            path.write_text(text)
            start = time.perf_counter()
            proc = subprocess.run(['nsenter', '--net=' + plugin.host_netns, 'sh', str(path)], capture_output=True,
                                  text=True, env={'PATH': RUNTIME_PATH}, check=False)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise RuntimeError('naive ADD %d failed: %s' % (i, proc.stderr.strip()[-1000:]))
    finally:
        naive_cleanup(plugin, len(names))
    return times, steps


def naive_cleanup(plugin, count):
    netns = plugin.lab.netns(plugin.host)
    links = ''.join('link del %s\n' % iproute.workload_ifname('naive%03d' % i) for i in range(count))
    sh(['ip', '-n', netns, '-force', '-batch', '-'], input=links, check=False)
    save = sh(['ip', 'netns', 'exec', netns, 'iptables-save', '-t', 'filter'], check=False).stdout
    mine = [line.split()[0][1:] for line in save.splitlines() if line.startswith(':cali-naive-')]
    text = '*filter\n' + ''.join('-F %s\n' % c for c in mine) + ''.join('-X %s\n' % c for c in mine) + 'COMMIT\n'
    if mine:
        sh(['ip', 'netns', 'exec', netns, 'iptables-restore', '-w', '--noflush'], input=text, check=False)
    sh(['ip', 'netns', 'exec', netns, 'ipset', 'destroy', NAIVE_SET], check=False)
    left = [line for line in sh(['ip', 'netns', 'exec', netns, 'iptables-save', '-t', 'filter'], check=False)
            .stdout.splitlines() if 'cali-naive' in line]
    if left:
        log('WARNING: naive chains left: %s' % left[:3])


# ------------------------------------------------------------------------------------------ main

def run(lab, workdir, info_box, state):
    res = state['res']
    res['prefix'] = lab.prefix
    res['site'] = lab.playbook('lab/playbooks/lab_up.yml') + lab.playbook('site.yml')
    res['status'] = lab.playbook('playbooks/status.yml')
    log('lab up: lab_up + site.yml %.1f s, status.yml %.1f s' % (res['site'], res['status']))
    plugin, peer = state['plugin'], state['peer'] = Plugin(lab, HOST), Plugin(lab, PEER)
    info_box.update(machine(plugin))
    speakers = sorted(h for h in os.listdir('/run/netfleet/' + lab.prefix)
                      if os.path.exists(lab.state_dir(h) + '/bird.ctl'))

    # the probe source: a container on n2a, and a long-lived target on n1a (the floor of the probe)
    src, old = lab.prefix + '-src', lab.prefix + '-old'
    names = ['%s-c%03d' % (lab.prefix, i) for i in range(CONTAINERS)]
    seq_names = ['%s-s%03d' % (lab.prefix, i) for i in range(SEQUENTIAL)]
    naive_names = ['%s-n%03d' % (lab.prefix, i) for i in range(NAIVE)]
    trace_names = ['%s-t%03d' % (lab.prefix, i) for i in range(TRACED)]
    inproc_names = ['%s-i%03d' % (lab.prefix, i) for i in range(CONTAINERS)]
    netns_batch('add', [src, old] + names + seq_names + naive_names + trace_names + inproc_names)
    sh(['ip', 'netns', 'exec', src, 'sysctl', '-qw', 'net.ipv4.ping_group_range=0 0'])
    _s, rc, src_result = peer.call('ADD', src, src)
    if rc != 0:
        raise RuntimeError('ADD of the probe source on %s failed: %s' % (PEER, src_result))
    res['src_added'] = True
    _s, rc, old_result = plugin.call('ADD', old, old)
    if rc != 0:
        raise RuntimeError('ADD of the floor target on %s failed: %s' % (HOST, old_result))
    res['old_added'] = True
    sockets = icmp_sockets(src, PROBES + 1)
    floor_sock = sockets.pop()
    old_ip = old_result['ips'][0]['address'].split('/')[0]
    warm, _sent = probe(floor_sock, old_ip, time.perf_counter())
    if warm is None:
        raise RuntimeError('no reply from %s (%s) to the container on %s: the lab does not forward'
                           % (old_ip, HOST, PEER))
    floors = []
    for _i in range(10):
        drain(floor_sock)
        floors.append(probe(floor_sock, old_ip, time.perf_counter())[0])
    res['reply_floor'] = statistics.median(floors)
    log('probe source %s (%s) on %s; floor (reply from a container up for a while) %s'
        % (src, src_result['ips'][0]['address'], PEER, ms(res['reply_floor'])))

    res['floor'] = floor(plugin)
    log('start-up floor: %s' % ', '.join('%s %s' % (k, ms(v)) for k, v in res['floor'].items()))
    res['breakdown'] = breakdown(plugin, trace_names, workdir)

    bgp = {'before': bgp_snapshot(lab, speakers)}
    probes = {names[int(k * CONTAINERS / PROBES)] for k in range(PROBES)}
    offset = plugin.log_size()
    done = []
    lock = threading.Lock()

    def progress(rec):
        with lock:
            done.append(rec)
            if len(done) == CONTAINERS // 2:
                bgp['during'] = bgp_snapshot(lab, speakers)  # ~20 containers alive right now
            if len(done) % 50 == 0:
                log('churn: %d/%d containers' % (len(done), CONTAINERS))

    log('churn: %d containers on %s, %d at a time, %d probed from %s' % (CONTAINERS, HOST, WORKERS, PROBES, PEER))
    cpu0, agent0 = cpu_children(), plugin.agent_cpu()
    res['churn'] = churn(plugin, names, probes, sockets, threading.Event(), progress)
    res['churn_cpu'] = cpu_children() - cpu0 + plugin.agent_cpu() - agent0
    res['agent_cpu'] = plugin.agent_cpu() - agent0
    bgp['after'] = bgp_snapshot(lab, speakers)
    res['bgp'] = bgp
    res['internal'] = plugin.log_times(offset, set(names))
    for sock in sockets + [floor_sock]:
        sock.close()

    log('in-process (no agent): the same churn, each call its own interpreter')
    cpu0 = cpu_children()
    res['inproc'] = churn(plugin, inproc_names, set(), [], threading.Event(), lambda rec: None, exe=plugin.inprocess)
    res['inproc_cpu'] = cpu_children() - cpu0

    offset = plugin.log_size()
    log('one at a time: %d containers' % SEQUENTIAL)
    cpu0, agent0 = cpu_children(), plugin.agent_cpu()
    res['sequential'] = sequential(plugin, seq_names)
    res['seq_cpu'] = cpu_children() - cpu0 + plugin.agent_cpu() - agent0
    res['seq_internal'] = plugin.log_times(offset, set(seq_names))

    records = os.listdir(plugin.config['data_dir'] + '/endpoints')
    cni_chains = [line for line in sh(['ip', 'netns', 'exec', lab.netns(HOST), 'iptables-save', '-t', 'filter'])
                  .stdout.splitlines() if line.startswith(':cali-cni-fw-') or line.startswith(':cali-cni-tw-')]
    res['leftover'] = {'records': len(records), 'chains': len(cni_chains)}
    log('after the churn: %d store record(s), %d endpoint chain(s) on %s (the floor target\'s)'
        % (len(records), len(cni_chains), HOST))

    log('naive: %d containers one at a time' % NAIVE)
    res['naive'] = naive(plugin, naive_names, workdir)
    netns_batch('del', names + seq_names + naive_names + trace_names + inproc_names)
    return res


def cleanup(lab, state):
    prefix, res, plugin, peer = lab.prefix, state['res'], state['plugin'], state['peer']
    for who, name, flag in ((peer, prefix + '-src', 'src_added'), (plugin, prefix + '-old', 'old_added')):
        if who is not None and res.get(flag):
            try:
                who.call('DEL', name, name)
            except OSError as exc:
                log('WARNING: DEL %s: %s' % (name, exc))
    mine = [n for n in namespaces(prefix + '-') if re.match(re.escape(prefix) + r'-(src|old|[csnti]\d{3})\Z', n)]
    netns_batch('del', mine)
    try:
        lab.playbook('lab/playbooks/lab_down.yml')
    finally:
        left = namespaces(prefix + '-')
        if left:
            log('WARNING: namespaces left after lab_down: %s; deleting them' % ' '.join(left[:10]))
            netns_batch('del', left)
        if os.path.exists('/run/netfleet/' + prefix):
            log('WARNING: /run/netfleet/%s left after lab_down' % prefix)


def main():
    if os.geteuid() != 0:
        sys.exit('bench/cni.py needs root (network namespaces)')
    started = time.perf_counter()
    prefix = 'nfb' + secrets.token_hex(3)    # short: lab prefixes are 1-16 letters/digits, namespaces <prefix>-<host>
    load = Path('/proc/loadavg').read_text().split()[0]
    log('lab-cni under prefix %s (1-minute load average %s)' % (prefix, load))
    info = {}
    state = {'res': {}, 'plugin': None, 'peer': None}
    with tempfile.TemporaryDirectory(prefix='nfbench-cni-') as workdir:
        lab = Lab(prefix, workdir)
        try:
            res = run(lab, workdir, info, state)
        finally:
            cleanup(lab, state)
    info['load'] = load
    s = summarise(res)
    print(json.dumps({k: (round(v * 1000, 1) if isinstance(v, float) and k not in ('rate', 'ratio', 'ratio_seq',
                                                                                   'ratio_inproc')
                          else v) for k, v in s.items()}, indent=1))
    section, targets, same = report(info, res, s)
    print(section)
    for name, value, result in targets:
        print('%s: %s (%s)' % (result, name, value))
    print('%s: no BGP change (n2a routes and BIRD route counts identical before, during and after)'
          % ('PASS' if same else 'FAIL'))
    benchdoc.write_section(SECTION, section, DOC)
    log('results written to %s; %.0f s in all' % (DOC.relative_to(REPO), time.perf_counter() - started))


if __name__ == '__main__':
    main()
