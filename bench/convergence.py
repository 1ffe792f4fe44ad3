#!/usr/bin/env python
"""Benchmark BGP convergence of netfleet.calico labs: full mesh vs route reflectors.

    .venv/bin/python bench/convergence.py                          (root; 60 and 120 hosts, mesh and rr)
    .venv/bin/python bench/convergence.py --sizes 60 --topologies mesh --repeat 1 --no-doc

For every case (size x topology) it writes a temporary inventory (a copy of inventories/lab/group_vars
plus a generated hosts.yml), builds the lab with lab/playbooks/lab_up.yml under a fresh prefix
(NETFLEET_LAB_PREFIX=cv<hex>) and provisions it with site.yml (wall clock, cold). On the 60-host cases
(every case with --site) site.yml runs a second time with nothing to change. Then, with the real kernel
and real BIRD:

1. stop every BIRD of the lab (SIGTERM to the pid of its pid file, wait until it is gone), flush the
   kernel routes BIRD left (`proto bird`) and the neighbour tables, so the fabric starts cold;
2. start all of them at once, each with the command the role runs (plugins/modules/calico_bird.py,
   pid-file manager): `ip netns exec <ns> bird -c <conf> -s <sock> -P <pid>` (read back from the
   running daemon's command line, so it is exactly what site.yml started);
3. watch every host's main table through one rtnetlink socket per namespace (route events plus a dump,
   no process per poll: 120 `ip` processes per poll round would compete with BIRD for the 2 CPUs)
   until every host holds every other host's block as a `proto bird` route (reflectors: every block);
   the result is cross-checked afterwards with `ip -n <ns> -j route show proto bird` on every host;
4. wait for every BGP session to be Established and count them (`birdc show protocols`), and sum
   VmRSS of the BIRD processes.

Steps 1-4 run --repeat times (median reported). For the mesh cases the same is repeated with BIRD's
default timers (the `connect delay time`, `connect retry time` and `error wait time` lines removed from
every bird.conf, protocol device's scan time at BIRD's default 60 s): the naive baseline.
Results are printed as a table and written to
docs/benchmarks.md under "## bench/convergence" (other sections are kept). Every lab is removed with
lab/playbooks/lab_down.yml in a finally block, and the script checks that no namespace of its prefix is left.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import ctypes.util
import datetime
import errno
import ipaddress
import json
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / 'docs' / 'benchmarks.md'
SECTION = '## bench/convergence'
# the venv's (the repository's .venv, else the one running this script: a worktree has none)
BIN = REPO / '.venv' / 'bin' if (REPO / '.venv' / 'bin').is_dir() else Path(sys.executable).parent
PLAYBOOK = BIN / 'ansible-playbook'
LAB_GROUP_VARS = REPO / 'inventories' / 'lab' / 'group_vars'
CALLBACKS = REPO / 'bench' / 'callback_plugins'

# Targets and the hand-built figures of the article's configuration (seconds).
TARGET_CONVERGE = {'rr': 3.0, 'mesh': 6.0}          # for 120 hosts
TARGET_SITE_COLD, TARGET_SITE_NOCHANGE = 120.0, 60.0  # for 60 hosts
DESIGN = {('mesh', 60): 2.9, ('mesh', 120): 5.4, ('rr', 60): 2.1, ('rr', 120): 3.0}
DESIGN_NAIVE = {('mesh', 60): 8.6}

TIMER_LINE = re.compile(r'^\s*(connect delay time|connect retry time|error wait time)\b')
DEVICE_SCAN_DEFAULT = 60   # BIRD's default scan time of protocol device

CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33
NETLINK_ROUTE = 0
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTPROT_BIRD = 12
RT_TABLE_MAIN = 254
RTA_DST, RTA_TABLE = 1, 15


def log(msg):
    print('bench: ' + msg, flush=True)


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def pmap(func, items, workers=16):
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


# ------------------------------------------------------------------------------------------ inventory

SEGMENT = ipaddress.IPv4Network('10.64.0.0/16')        # mesh: one segment for every host
RACK_SEGMENTS = [ipaddress.IPv4Network('10.65.0.0/16'), ipaddress.IPv4Network('10.66.0.0/16')]
SPINE_SEGMENT = ipaddress.IPv4Network('10.255.0.0/24')
POOL, BLOCK_PREFIX = '172.16.0.0/12', 26                 # 16,384 blocks: any size fits
BASE_AS = 64512


def host_name(i):
    return 'h%03d' % i


def host_ip(net, i):
    """i-th host address of a segment, from .1.1 (the .0.x range is left to gateways and reflectors)."""
    return str(net.network_address + 256 + (i // 250) * 256 + (i % 250) + 1)


def host_entry(ip, workloads):
    entry = {'calico_node_ip': ip}
    if workloads:
        entry['calico_workloads'] = [{'name': 'w%d' % k} for k in range(1, workloads + 1)]
    return entry


def dump_yaml(data, indent=0):
    """Tiny YAML writer for the inventory (dicts, lists of flat dicts, scalars): no PyYAML dependency."""
    pad = '  ' * indent
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            if value:
                lines.append('%s%s:' % (pad, key))
                lines.extend(dump_yaml(value, indent + 1))
            else:
                lines.append('%s%s: {}' % (pad, key))
        elif isinstance(value, list):
            flows = ['{%s}' % ', '.join('%s: %s' % kv for kv in item.items()) for item in value]
            lines.append('%s%s: [%s]' % (pad, key, ', '.join(flows)))
        else:
            lines.append('%s%s: %s' % (pad, key, value))
    return lines


def mesh_inventory(size, workloads):
    hosts = {host_name(i): host_entry(host_ip(SEGMENT, i - 1), workloads) for i in range(1, size + 1)}
    return {'all': {
        'vars': {'calico_pool': POOL, 'calico_block_prefix': BLOCK_PREFIX, 'calico_bgp_topology': 'full_mesh'},
        'children': {
            'calico_racks': {'children': {'rack1': {
                'vars': {'calico_as_number': BASE_AS, 'lab_segment': str(SEGMENT)}, 'hosts': hosts}}},
            'calico_nodes': {'children': {'rack1': {}}},
        }}}


def rr_inventory(size, workloads):
    """The size hosts split over two racks (each its own segment and AS) with one reflector per rack,
    the rack's ToR: gateway of the rack segment, leg on the spine segment (as inventories/lab-racks)."""
    racks, reflectors = {}, {}
    per_rack = [size // 2 + size % 2, size // 2]
    first = 1
    for r, (count, net) in enumerate(zip(per_rack, RACK_SEGMENTS), start=1):
        gateway = str(net.network_address + 1)
        rr = 'rr%d' % r
        hosts = {rr: {'calico_node_ip': gateway, 'calico_rr_spine_ip': str(SPINE_SEGMENT.network_address + r)}}
        for i in range(first, first + count):
            hosts[host_name(i)] = host_entry(host_ip(net, i - first), workloads)
        first += count
        racks['rack%d' % r] = {'vars': {'calico_as_number': BASE_AS + r, 'lab_segment': str(net)}, 'hosts': hosts}
        reflectors[rr] = {}
    return {'all': {
        'vars': {'calico_pool': POOL, 'calico_block_prefix': BLOCK_PREFIX,
                 'calico_bgp_topology': 'route_reflector', 'lab_spine_segment': str(SPINE_SEGMENT)},
        'children': {
            'calico_racks': {'children': racks},
            'calico_route_reflectors': {'hosts': reflectors},
            'calico_nodes': {'hosts': {h: {} for rack in racks.values() for h in rack['hosts']
                                       if h not in reflectors}},
        }}}


def write_inventory(directory, data):
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(LAB_GROUP_VARS, directory / 'group_vars')
    (directory / 'hosts.yml').write_text('---\n# generated by bench/convergence.py\n'
                                         + '\n'.join(dump_yaml(data)) + '\n')


# ------------------------------------------------------------------------------------------ playbooks

CPU_USED = {}   # tag -> CPU seconds (user + system) of the playbook and everything it ran


def playbook(name, inventory, prefix, logdir, tag, forks=None, repo=REPO, extra=()):
    """Run a playbook of checkout ``repo`` (its ansible.cfg, so its collections) with ``extra`` arguments;
    returns (wall seconds, PLAY RECAP totals, timing record of bench_timing)."""
    timing = logdir / ('%s.timing.json' % tag)
    env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
               ANSIBLE_CALLBACKS_ENABLED='bench_timing', BENCH_TIMING_FILE=str(timing),
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


# ------------------------------------------------------------------------------------------ netlink

_libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class RouteWatch:
    """One rtnetlink socket inside a host's namespace, subscribed to IPv4 route events; keeps the set of
    `proto bird` destinations of the main table."""

    def __init__(self, netns):
        self.netns = netns
        own = os.open('/proc/self/ns/net', os.O_RDONLY)
        target = os.open('/run/netns/' + netns, os.O_RDONLY)
        try:
            setns(target)
            try:
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
            finally:
                setns(own)
        finally:
            os.close(target)
            os.close(own)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.bind((0, RTMGRP_IPV4_ROUTE))
        self.routes = set()
        self.seen = {}          # destination -> perf_counter() when it first appeared
        self.seq = 0
        self.overruns = 0

    def fileno(self):
        return self.sock.fileno()

    def dump(self):
        self.routes.clear()
        self.seen.clear()
        self.seq += 1
        rtmsg = struct.pack('=BBBBBBBBI', socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        self.sock.send(struct.pack('=IHHII', 16 + len(rtmsg), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP,
                                   self.seq, 0) + rtmsg)

    def read(self):
        """Drain the socket; True if the route set changed."""
        changed = False
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1          # events were lost: read the table again
                self.dump()
                changed = True
                continue
            changed |= self._parse(data)

    def _parse(self, data):
        changed = False
        off = 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from('=IH', data, off)
            if length < 16:
                break
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE) and length >= 28:
                family, dst_len, _src, _tos, table, proto = struct.unpack_from('=BBBBBB', data, off + 16)
                if family == socket.AF_INET and proto == RTPROT_BIRD:
                    dst, pos, end = '0.0.0.0', off + 28, off + length
                    while pos + 4 <= end:
                        alen, atype = struct.unpack_from('=HH', data, pos)
                        if alen < 4:
                            break
                        if atype == RTA_DST:
                            dst = socket.inet_ntoa(data[pos + 4:pos + 8])
                        elif atype == RTA_TABLE:
                            table = struct.unpack_from('=I', data, pos + 4)[0]
                        pos += (alen + 3) & ~3
                    if table == RT_TABLE_MAIN:
                        key = '%s/%d' % (dst, dst_len)
                        if mtype == RTM_NEWROUTE:
                            if key not in self.routes:
                                changed = True
                                self.seen.setdefault(key, time.perf_counter())
                            self.routes.add(key)
                        else:
                            changed |= key in self.routes
                            self.routes.discard(key)
            off += (length + 3) & ~3
        return changed

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------------------------------ BIRD

class Bird:
    """One lab host's BIRD, as site.yml started it (pid file under <state_dir>/<host>/)."""

    def __init__(self, host, netns, argv):
        self.host, self.netns, self.argv = host, netns, argv
        opts = dict(zip(argv[1::2], argv[2::2]))
        self.conf, self.sock, self.pidfile = opts['-c'], opts['-s'], opts['-P']
        self.blocks = set()     # own blocks (blackholes, proto 80), none on a reflector
        self.expect = set()

    def pid(self):
        try:
            pid = int(Path(self.pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None


def alive(pid):
    try:
        stat = Path('/proc/%d/stat' % pid).read_text()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] not in ('Z', 'X')


def discover(prefix, state_dir):
    """Every BIRD of the lab: its pid file, command line and namespace (checked against /run/netns)."""
    birds = []
    for pidfile in sorted(Path(state_dir).glob('*/bird.pid')):
        host = pidfile.parent.name
        netns = '%s-%s' % (prefix, host)
        pid = int(pidfile.read_text().split()[0])
        argv = Path('/proc/%d/cmdline' % pid).read_bytes().rstrip(b'\0').decode().split('\0')
        if os.path.basename(argv[0]) != 'bird' or str(pidfile) not in argv:
            raise RuntimeError('%s: pid %d is not this host\'s bird: %s' % (pidfile, pid, argv))
        if os.stat('/proc/%d/ns/net' % pid).st_ino != os.stat('/run/netns/' + netns).st_ino:
            raise RuntimeError('%s: bird %d does not run in namespace %s' % (pidfile, pid, netns))
        birds.append(Bird(host, netns, argv))
    return birds


def read_blocks(birds, pool):
    pool = ipaddress.IPv4Network(pool)

    def own(bird):
        routes = json.loads(sh(['ip', '-n', bird.netns, '-j', 'route', 'show', 'proto', '80', 'type',
                                'blackhole']).stdout or '[]')
        nets = [r['dst'] for r in routes if ipaddress.IPv4Network(r['dst']).subnet_of(pool)]
        return set(nets)

    for bird, own_blocks in zip(birds, pmap(own, birds)):
        bird.blocks = own_blocks
    blocks = set().union(*(b.blocks for b in birds))
    for bird in birds:
        bird.expect = blocks - bird.blocks
    return blocks


def stop_all(birds, timeout=15.0):
    pids = [b.pid() for b in birds]
    for pid in pids:
        if pid:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if p]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return len([p for p in pids if p]), len(left)


def flush(birds):
    def one(bird):
        sh(['ip', '-n', bird.netns, 'route', 'flush', 'proto', 'bird'])
        sh(['ip', '-n', bird.netns, 'neigh', 'flush', 'all'])
    pmap(one, birds)


def start_all(birds):
    """Start every BIRD at once; returns seconds until every `ip netns exec ... bird` has returned
    (the daemons have forked and written their pid files)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(['ip', 'netns', 'exec', b.netns] + b.argv, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for b in birds]
    for bird, proc in zip(birds, procs):
        out = proc.communicate()[0]
        if proc.returncode != 0:
            raise RuntimeError('%s: bird did not start: %s' % (bird.host, out.decode(errors='replace')))
    return time.perf_counter() - start


def birdc_protocols(bird):
    out = subprocess.run(['birdc', '-s', bird.sock, 'show', 'protocols'], capture_output=True, check=False,
                         text=True).stdout
    bgp = [line for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == 'BGP']
    return len(bgp), sum('Established' in line for line in bgp)


def sessions(birds, wait=30.0):
    """(BGP protocols, Established) summed over the lab, once all are Established or after wait s."""
    deadline = time.monotonic() + wait
    while True:
        counts = pmap(birdc_protocols, birds)
        total, est = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if est == total or time.monotonic() > deadline:
            return total, est
        time.sleep(0.5)


def rss_kib(birds):
    total = 0
    for bird in birds:
        pid = bird.pid()
        if pid:
            m = re.search(r'^VmRSS:\s+(\d+) kB', Path('/proc/%d/status' % pid).read_text(), re.M)
            total += int(m.group(1)) if m else 0
    return total


def cross_check(birds):
    """Every host's `ip -j route show proto bird` (what the brief asks to poll) holds its expected blocks."""
    def missing(bird):
        routes = json.loads(sh(['ip', '-n', bird.netns, '-j', 'route', 'show', 'proto', 'bird']).stdout or '[]')
        return bird.expect - {r['dst'] if '/' in r['dst'] else r['dst'] + '/32' for r in routes}
    bad = {b.host: sorted(m) for b, m in zip(birds, pmap(missing, birds)) if m}
    if bad:
        raise RuntimeError('cross-check with ip route failed: %s' % dict(list(bad.items())[:5]))


def converge_once(birds, watches, timeout):
    """Stop, flush, start all BIRDs; seconds from start until every host holds every expected block."""
    tcp0 = tcp_counters(birds)
    stopped, killed = stop_all(birds)
    flush(birds)
    for w in watches:
        w.dump()
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:       # drain dumps; the tables must be empty of bird routes
        select.select(watches, [], [], 0.1)
        for w in watches:
            w.read()
    stale = sum(len(w.routes) for w in watches)
    if stale:
        raise RuntimeError('%d proto bird routes left after stopping BIRD and flushing' % stale)
    loadavg = os.getloadavg()[0]
    cpu0 = cpu_busy()
    own0 = own_cpu_ticks()
    poller = select.poll()
    by_fd = {}
    for bird, w in zip(birds, watches):
        poller.register(w.fileno(), select.POLLIN)
        by_fd[w.fileno()] = (bird, w)
    done = {}
    t0 = time.perf_counter()
    spawn = start_all(birds)
    pending = {b.host for b in birds}
    for bird, w in zip(birds, watches):       # events that arrived while the daemons were being spawned
        w.read()
        if bird.expect <= w.routes:
            done[bird.host] = time.perf_counter() - t0
            pending.discard(bird.host)
    while pending:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            break
        for fd, _ev in poller.poll(min(left, 0.5) * 1000):
            bird, w = by_fd[fd]
            if w.read() and bird.host in pending and bird.expect <= w.routes:
                done[bird.host] = time.perf_counter() - t0
                pending.discard(bird.host)
    elapsed = max(done.values()) if not pending else None
    cpu1 = cpu_busy()
    own1 = own_cpu_ticks()
    bird_ticks = sum(proc_cpu_ticks(b.pid()) for b in birds)   # started in this window: all their CPU is in it
    busy, total = cpu1[0] - cpu0[0], max(cpu1[1] - cpu0[1], 1)
    arrivals = sorted(t - t0 for bird, w in zip(birds, watches) for key, t in w.seen.items() if key in bird.expect)
    result = {'seconds': elapsed, 'spawn': spawn, 'pending': sorted(pending),
              'host_median': statistics.median(done.values()) if done else None,
              'stopped': stopped, 'killed': killed, 'loadavg_before': loadavg,
              'cpu_busy': busy / total,
              # CPU used by anything but this lab's BIRDs and this benchmark (other labs, tests) in the window
              'cpu_others': max(0, busy - bird_ticks - (own1 - own0)) / total,
              'overruns': sum(w.overruns for w in watches),
              'routes': len(arrivals),
              'route_p50': arrivals[len(arrivals) // 2] if arrivals else None,
              'route_p99': arrivals[min(len(arrivals) - 1, int(len(arrivals) * 0.99))] if arrivals else None,
              'routes_late': sum(1 for a in arrivals if a > (elapsed or 0) - 1.0 and a > 3.0)}
    if not pending:
        cross_check(birds)
    total, est = sessions(birds)
    tcp1 = tcp_counters(birds)
    result.update(bgp_protocols=total, established=est, rss_kib=rss_kib(birds),
                  listen_overflows=tcp1['ListenOverflows'] - tcp0['ListenOverflows'],
                  syn_retrans=tcp1['TCPSynRetrans'] - tcp0['TCPSynRetrans'])
    return result


def tcp_counters(birds):
    """TcpExt ListenOverflows (SYNs dropped: BIRD's listen backlog is 8) and TCPSynRetrans summed over the
    hosts' namespaces, read through each running BIRD's /proc/<pid>/net/netstat (the counters of its netns)."""
    total = {'ListenOverflows': 0, 'TCPSynRetrans': 0}
    for bird in birds:
        pid = bird.pid()
        try:
            lines = Path('/proc/%d/net/netstat' % pid).read_text().splitlines() if pid else []
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith('TcpExt:'):
                row = dict(zip(names.split()[1:], values.split()[1:]))
                for key in total:
                    total[key] += int(row.get(key, 0))
    return total


def proc_cpu_ticks(pid):
    try:
        fields = Path('/proc/%d/stat' % pid).read_text().rsplit(')', 1)[1].split()
    except (OSError, TypeError):
        return 0
    return int(fields[11]) + int(fields[12])       # utime + stime (clock ticks)


def own_cpu_ticks():
    """CPU of this process and its waited-for children (the `ip` commands), in clock ticks."""
    hz = os.sysconf('SC_CLK_TCK')
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * hz


def cpu_busy():
    fields = [int(x) for x in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


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


def variant(birds, transform, repeat, timeout):
    originals = {}
    try:
        rewrite_confs(birds, transform, originals)
        return measure(birds, repeat, timeout)
    finally:
        restore_confs(originals)


def measure(birds, repeat, timeout):
    runs = []
    watches = [RouteWatch(b.netns) for b in birds]
    try:
        for i in range(repeat):
            run = converge_once(birds, watches, timeout)
            log('  run %d: %s' % (i + 1, fmt_run(run)))
            runs.append(run)
    finally:
        for w in watches:
            w.close()
    return runs


def fmt_run(run):
    secs = '%.2f s' % run['seconds'] if run['seconds'] is not None else 'NOT converged (%d hosts pending)' % len(
        run['pending'])
    return ('%s (median host %.2f s, routes p50/p99 %.2f/%.2f s, spawn %.2f s), %d/%d BGP protocols Established, '
            'BIRD RSS %.0f MiB, SYNs dropped %d / retransmitted %d, load before %.2f, CPU busy %.0f %% '
            '(others %.0f %%)%s' % (
                secs, run['host_median'] or 0, run['route_p50'] or 0, run['route_p99'] or 0, run['spawn'],
                run['established'], run['bgp_protocols'],
                run['rss_kib'] / 1024, run['listen_overflows'], run['syn_retrans'], run['loadavg_before'],
                100 * run['cpu_busy'], 100 * run['cpu_others'],
                ', %d netlink overruns' % run['overruns'] if run['overruns'] else ''))


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


def ensure_gc_thresh(size):
    """The neighbour table is shared by all namespaces: a full mesh of N hosts holds
    N*(N-1) entries. lab_up raises the limits to 4096/16384/32768; raise them further if a case needs it."""
    need = size * size + 4 * size
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


def run_case(topology, size, args, workdir):
    prefix = 'cv' + secrets.token_hex(3)
    case = {'topology': topology, 'size': size, 'prefix': prefix}
    inv = workdir / ('%s-%d' % (topology, size))
    data = mesh_inventory(size, args.workloads) if topology == 'mesh' else rr_inventory(size, args.workloads)
    write_inventory(inv, data)
    logdir = inv / 'logs'
    logdir.mkdir()
    log('%s %d hosts: prefix %s, inventory %s' % (topology, size, prefix, inv))
    overflow0 = neigh_overflows()
    try:
        case['lab_up'], _t, _r = playbook('lab/playbooks/lab_up.yml', inv, prefix, logdir, 'lab_up')
        case['gc_raised'] = ensure_gc_thresh(size)
        log('  lab_up %.1f s%s' % (case['lab_up'], '; raised ' + ', '.join(case['gc_raised'])
                                   if case['gc_raised'] else ''))
        case['site_cold'], case['site_cold_recap'], record = playbook('site.yml', inv, prefix, logdir, 'site_cold')
        case['site_cold_profile'] = profile(record)
        case['site_cold_cpu'] = CPU_USED[str(logdir / 'site_cold')]
        log('  site.yml cold %.1f s, %.0f CPU s (%s)' % (case['site_cold'], case['site_cold_cpu'],
                                                         recap(case['site_cold_recap'])))
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
        birds = discover(prefix, '/run/netfleet/%s' % prefix)
        blocks = read_blocks(birds, POOL)
        case['birds'] = len(birds)
        case['blocks'] = len(blocks)
        log('  %d BIRDs, %d blocks; measuring (%d runs)' % (len(birds), len(blocks), args.repeat))
        if len(blocks) != size:
            raise RuntimeError('expected %d blocks, found %d' % (size, len(blocks)))
        case['tuned'] = measure(birds, args.repeat, args.timeout)
        if topology == 'mesh' and not args.no_naive:
            log('  BIRD default timers (naive), %d runs' % args.naive_repeat)
            case['naive'] = variant(birds, naive_timers, args.naive_repeat, args.naive_timeout)
        if args.scan_experiment:
            log('  ablation: role timers with protocol device scan time 2, %d runs' % args.repeat)
            case['scan1'] = variant(birds, device_scan_2s, args.repeat, args.timeout)
    finally:
        case['left_after_down'] = len(lab_down(inv, prefix, logdir))
    overflow1 = neigh_overflows()
    case['neigh_overflow'] = (overflow1 - overflow0) if overflow0 is not None and overflow1 is not None else None
    if args.keep_logs:
        log('  logs kept in %s' % logdir)
    return case


def recap(totals):
    return ', '.join('%s=%d' % (k, totals.get(k, 0)) for k in ('ok', 'changed', 'failed', 'skipped'))


# ------------------------------------------------------------------------------------------ report

def machine():
    cpu = benchdoc.cpu_model()
    bird = sh(['bird', '--version']).stderr.strip() or sh(['bird', '--version']).stdout.strip()
    ansible = sh([str(PLAYBOOK), '--version']).stdout.splitlines()[0]
    return {'nproc': os.cpu_count(), 'kernel': platform.release(), 'cpu': cpu, 'bird': bird,
            'ansible': ansible.replace('ansible-playbook ', 'ansible-core ').strip(),
            'python': platform.python_version(),
            'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}


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


def table(cases):
    rows = ['| lab | BIRDs | BGP sessions (Established) | converge, role as shipped | BIRD default timers (naive) | '
            'naive / role | ablation: device scan time 2 (Calico) | hand-built (article) | target | total BIRD RSS |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for c in cases:
        if 'tuned' not in c:
            continue
        last = c['tuned'][-1]
        tuned = med(c['tuned'])
        naive = med(c['naive']) if c.get('naive') else None
        ratio = ('%.1fx' % (naive / tuned)) if naive and tuned else ('' if not c.get('naive') else '-')
        design = DESIGN.get((c['topology'], c['size']))
        dn = DESIGN_NAIVE.get((c['topology'], c['size']))
        design_s = ('%.1f s' % design if design else '') + (' (naive %.1f s)' % dn if dn else '')
        target = TARGET_CONVERGE.get(c['topology']) if c['size'] == 120 else None
        target_s = ('<= %.0f s: %s' % (target, 'met' if tuned is not None and tuned <= target else 'NOT met')
                    if target else '')
        name = '%s %d hosts' % ('full mesh' if c['topology'] == 'mesh' else '2 racks, 1 reflector each', c['size'])
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
        name = '%s %d hosts' % ('full mesh' if c['topology'] == 'mesh' else '2 racks + 2 reflectors', c['size'])
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


def report(info, cases, args):
    cmd = '.venv/bin/python bench/convergence.py'
    if args.argv:
        cmd += ' ' + ' '.join(args.argv)
    runs = [r for c in cases for r in c.get('tuned', []) + c.get('naive', []) + c.get('scan1', [])]
    others = max((r['cpu_others'] for r in runs), default=0.0)
    lines = [
        SECTION,
        '',
        '`%s` (root) - %s; %s CPUs (`nproc`), kernel %s, CPU "%s", %s, %s, Python %s.' % (
            cmd, info['date'], info['nproc'], info['kernel'], info['cpu'], info['bird'], info['ansible'],
            info['python']),
        '',
        'Each lab is built by `lab/playbooks/lab_up.yml` from a generated inventory (mesh: N hosts on one segment',
        '%s, AS %d; rr: the N hosts split over two racks, each its own /16 segment and AS, with one' % (
            SEGMENT, BASE_AS),
        'reflector per rack as its ToR, on spine %s), pool %s with /%d blocks, %d workload(s)' % (
            SPINE_SEGMENT, POOL, BLOCK_PREFIX, args.workloads),
        'per host, and provisioned by `site.yml`. Convergence: every BIRD of the lab is stopped (SIGTERM via',
        'its pid file), the `proto bird` routes and neighbour tables are flushed, then all BIRDs are started',
        'at once with the role\'s command (`ip netns exec <ns> bird -c <conf> -s <sock> -P <pid>`); the time is',
        'from that start until every host holds every other host\'s block (reflectors: every block) as a',
        '`proto bird` kernel route, seen through one rtnetlink socket per namespace and cross-checked with',
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
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='60,120', help='lab sizes (hosts), comma-separated')
    parser.add_argument('--topologies', default='mesh,rr', help='mesh, rr or both')
    parser.add_argument('--site', action='store_true', help='also time the no-change site.yml on every size')
    parser.add_argument('--repeat', type=int, default=5, help='convergence runs per case (median reported)')
    parser.add_argument('--naive-repeat', type=int, default=1, help='runs with BIRD default timers (mesh)')
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
    if set(topologies) - {'mesh', 'rr'}:
        sys.exit('--topologies: mesh and/or rr')
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
    section = report(info, cases, args)
    print()
    print(section)
    if not args.no_doc:
        benchdoc.write_section(SECTION, section, DOC)
        log('results written to %s' % DOC.relative_to(REPO))
    Path(tempfile.gettempdir(), 'nfconv-last.json').write_text(
        json.dumps({'info': info, 'args': vars(args), 'cases': cases}, indent=1, default=str))


if __name__ == '__main__':
    main()
