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
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import platform
import re
import resource
import secrets
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'collections'))

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)

from ansible_collections.netfleet.calico.plugins.module_utils import chains, chains_render, cni_policy, iproute  # noqa: E402

DOC = REPO / 'docs' / 'benchmarks.md'
SECTION = '## bench/cni'
PLAYBOOK = REPO / '.venv' / 'bin' / 'ansible-playbook'
INVENTORY = REPO / 'inventories' / 'lab-cni'

HOST, PEER, NETWORK = 'n1a', 'n2a', 'web'      # churn on n1a (rack1), probes from n2a (rack2)
CONTAINERS, WORKERS, PROBES = 200, 20, 30
SEQUENTIAL, NAIVE, FLOOR, TRACED = 30, 30, 15, 5
PROBE_INTERVAL, PROBE_TIMEOUT = 0.002, 3.0
TARGET_ADD_P50, TARGET_ADD_P99, TARGET_REPLY = 0.060, 0.150, 0.100
RUNTIME_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'   # a runtime started by systemd
NAIVE_NET = '10.254.0'                           # naive endpoints: outside the pool, never in the plugin's IPAM
CLONE_NEWNET = 0x40000000
LOG_LINE = re.compile(r'^\S+ (ADD|DEL) (\S+) (\S+) rc=(\d+) ([\d.]+)ms')


def log(msg):
    print('bench: ' + msg, flush=True)


def sh(argv, check=True, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError('%s failed (rc %d): %s' % (' '.join(argv), proc.returncode,
                                                      (proc.stderr or proc.stdout).strip()[-2000:]))
    return proc


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds):
    if seconds is None:
        return '-'
    return '%.2f ms' % (seconds * 1000) if seconds < 0.001 else '%.1f ms' % (seconds * 1000)


def cpu_children():
    """CPU seconds (user + system) of this process's waited-for descendants: every call's nsenter, interpreter
    and the ip/iptables/ipset processes it ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def namespaces(prefix):
    out = sh(['ip', 'netns', 'list'], check=False).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix))


def netns_batch(verb, names):
    """`ip netns add|del` for many namespaces in one process (best effort for del)."""
    if names:
        sh(['ip', '-force', '-batch', '-'], check=verb == 'add',
           input=''.join('netns %s %s\n' % (verb, name) for name in names))


_libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)


def setns(fd):
    """Move the calling thread into the network namespace of ``fd`` (setns(2) is per thread)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# ------------------------------------------------------------------------------------------ lab

class Lab:
    """The lab-cni lab of this run: playbooks under NETFLEET_LAB_PREFIX, plugin paths of a host."""

    def __init__(self, prefix, logdir):
        self.prefix = prefix
        self.logdir = Path(logdir)
        self.env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
                        ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'))

    def playbook(self, name, check=True):
        out = self.logdir / (Path(name).stem + '.log')
        start = time.perf_counter()
        with open(out, 'a') as handle:
            rc = subprocess.run([str(PLAYBOOK), '-i', str(INVENTORY), name], cwd=REPO, env=self.env, check=False,
                                stdout=handle, stderr=subprocess.STDOUT).returncode
        secs = time.perf_counter() - start
        if rc != 0 and check:
            raise RuntimeError('%s failed (rc %d):\n%s' % (name, rc, out.read_text()[-4000:]))
        return secs

    def netns(self, host):
        return '%s-%s' % (self.prefix, host)

    def state_dir(self, host):
        return '/run/netfleet/%s/%s' % (self.prefix, host)

    def birdc(self, host, *args):
        return sh(['birdc', '-s', self.state_dir(host) + '/bird.ctl', *args]).stdout


class Plugin:
    """The plugin of one lab host, called as a runtime calls it."""

    def __init__(self, lab, host):
        self.lab, self.host = lab, host
        cni = lab.state_dir(host) + '/cni'
        self.bin = cni + '/bin/netfleet-calico'
        conflist = json.loads(Path(cni, 'net.d', '10-netfleet-%s.conflist' % NETWORK).read_text())
        # what libcni puts on stdin: the plugin's entry of the conflist plus cniVersion and name
        self.conf = dict(conflist['plugins'][0], cniVersion=conflist['cniVersion'], name=conflist['name'])
        self.config = json.loads(Path(self.conf['config_file']).read_text())
        self.log_file = Path(self.conf['log_file'])
        client = Path(self.bin).read_text()
        self.python, self.lib = re.search(r"exec '([^']+)' -IS '([^']+)/netfleet-calico.py'", client).groups()
        # the plugin in-process, as the executable runs it while no agent answers
        self.inprocess = [self.python, '-IS', self.lib + '/netfleet-calico.py']
        self.agent_pidfile = cni + '/agent.pid'
        self.host_netns = '/run/netns/' + lab.netns(host)

    def agent_cpu(self):
        """CPU seconds of the agent and the processes it waited for (iptables-restore, ipset), from /proc."""
        pid = Path(self.agent_pidfile).read_text().split()[0]
        fields = Path('/proc/%s/stat' % pid).read_text().rsplit(')', 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / os.sysconf('SC_CLK_TCK')

    def call(self, command, container_id, netns, prev=None, wrap=(), exe=None):
        """(wall seconds from spawn to exit, rc, parsed stdout); ``wrap``: argv put in front (strace)."""
        env = {'PATH': RUNTIME_PATH, 'CNI_COMMAND': command, 'CNI_CONTAINERID': container_id, 'CNI_IFNAME': 'eth0',
               'CNI_NETNS': '/run/netns/' + netns, 'CNI_PATH': os.path.dirname(self.bin)}
        conf = dict(self.conf, prevResult=prev) if prev else self.conf
        data = json.dumps(conf).encode()
        start = time.perf_counter()
        proc = subprocess.Popen([*wrap, 'nsenter', '--net=' + self.host_netns, *(exe or [self.bin])], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(data)
        secs = time.perf_counter() - start
        try:
            result = json.loads(out) if out.strip() else None
        except ValueError:
            result = {'msg': (out + err).decode(errors='replace')}
        if proc.returncode != 0 and not result:
            result = {'msg': err.decode(errors='replace')}
        return secs, proc.returncode, result

    def log_size(self):
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_times(self, offset, ids):
        """{command: [ms]} of this run's containers, from the plugin's log (lines after ``offset``)."""
        out = {'ADD': [], 'DEL': []}
        with open(self.log_file, encoding='utf-8') as handle:
            handle.seek(offset)
            for line in handle:
                m = LOG_LINE.match(line)
                if m and m.group(2) in ids and m.group(4) == '0':
                    out[m.group(1)].append(float(m.group(5)) / 1000)
        return out


def bgp_snapshot(lab, speakers):
    """n2a's routes learned by BGP and every BIRD's route count."""
    counts = {}
    for host in speakers:
        text = lab.birdc(host, 'show', 'route', 'count')
        m = re.search(r'Total: (\d+) of (\d+) routes', text)
        counts[host] = m.group(0) if m else text.strip()
    return {'routes': sh(['ip', '-n', lab.netns(PEER), 'route', 'show', 'proto', 'bird']).stdout, 'counts': counts}


# ------------------------------------------------------------------------------------------ probe

def icmp_sockets(netns, count):
    """``count`` ICMP datagram sockets living in ``netns`` (made from this thread, which then comes back)."""
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    target = os.open('/run/netns/' + netns, os.O_RDONLY)
    try:
        setns(target)
        try:
            return [socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) for _i in range(count)]
        finally:
            setns(home)
    finally:
        os.close(home)
        os.close(target)


def probe(sock, ip, since, timeout=PROBE_TIMEOUT):
    """Echo requests to ``ip`` every PROBE_INTERVAL until the first reply: (seconds since ``since``, requests sent);
    (None, sent) on timeout. The kernel fills in the identifier and checksum of a datagram ICMP socket."""
    sent = 0
    next_send = time.perf_counter()
    deadline = since + timeout
    while True:
        now = time.perf_counter()
        if now >= deadline:
            return None, sent
        if now >= next_send:
            sent += 1
            try:
                sock.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, sent) + b'netfleet-bench', (ip, 0))
            except OSError:
                pass  # no route yet (EHOSTUNREACH and the like): try again next interval
            next_send = now + PROBE_INTERVAL
        ready, _w, _x = select.select([sock], [], [], max(0.0, min(next_send, deadline) - time.perf_counter()))
        if ready:
            try:
                data = sock.recv(2048)
            except OSError:
                continue  # an ICMP error for an earlier request (no route, unreachable): keep probing
            if data and data[0] == 0:   # echo reply (a late reply of an earlier probe is drained first, below)
                return time.perf_counter() - since, sent


def drain(sock):
    sock.setblocking(False)
    try:
        while True:
            sock.recv(2048)
    except OSError:
        pass
    finally:
        sock.setblocking(True)


# ------------------------------------------------------------------------------------------ ours

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


# ------------------------------------------------------------------------------------------ report

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
