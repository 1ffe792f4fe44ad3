"""The routing daemons of a bench lab and their routes, for bench/convergence.py.

BIRD on every host and reflector (pid file manager of role calico_node), FRR's zebra and bgpd on every spine
(module calico_frr: pid files, vty and zserv sockets in the spine's state directory): find them by their pid
files, stop them, start them again with the command line they run with (read back from /proc, so it is exactly
what site.yml started), count their BGP sessions and memory. RouteWatch follows one namespace's main table
through an rtnetlink socket (no process per poll: hundreds of `ip` processes per poll round would compete with
the daemons for the CPUs).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import errno
import ipaddress
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'collections'))   # the checkout's own collection (ansible.cfg's collections_path)

from ansible_collections.netfleet.calico.plugins.module_utils import frr  # noqa: E402
from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_pid  # noqa: E402

CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33
NETLINK_ROUTE = 0
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTPROT_BIRD = 12
RTPROT_BGP = 186        # zebra's protocol for the routes bgpd learned
RT_TABLE_MAIN = 254
RTA_DST, RTA_TABLE = 1, 15


def in_netns(netns, argv):
    """argv run in a lab namespace by `nsenter --net`: a host starting its daemon, without the mount namespace and
    /sys remount of `ip netns exec` (with hundreds of daemons started at once that was seconds of lab overhead)."""
    return ['nsenter', '--net=/run/netns/' + netns, '--'] + list(argv)


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def pmap(func, items, workers=16):
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


# ------------------------------------------------------------------------------------------ netlink

_libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class RouteWatch:
    """One rtnetlink socket inside a host's namespace, subscribed to IPv4 route events; keeps the set of
    destinations of the main table that routing protocol ``proto`` installed (BIRD's, or zebra's BGP routes)."""

    def __init__(self, netns, proto=RTPROT_BIRD):
        self.netns, self.proto = netns, proto
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
                if family == socket.AF_INET and proto == self.proto:
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
                            self.seen.pop(key, None)
            off += (length + 3) & ~3
        return changed

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------------------------------ daemons

def alive(pid):
    try:
        stat = Path('/proc/%d/stat' % pid).read_text()
    except (OSError, TypeError):
        return False
    return stat.rsplit(')', 1)[1].split()[0] not in ('Z', 'X')


def cmdline(pid):
    return Path('/proc/%d/cmdline' % pid).read_bytes().rstrip(b'\0').decode().split('\0')


def check_netns(pid, netns, what):
    if os.stat('/proc/%d/ns/net' % pid).st_ino != os.stat('/run/netns/' + netns).st_ino:
        raise RuntimeError('%s: pid %d does not run in namespace %s' % (what, pid, netns))


class Bird:
    """One lab host's BIRD, as site.yml started it (pid file under <state_dir>/<host>/)."""

    kind = 'BIRD'
    proto, proto_name = RTPROT_BIRD, 'bird'

    def __init__(self, host, netns, argv):
        self.host, self.netns, self.argv = host, netns, argv
        opts = dict(zip(argv[1::2], argv[2::2]))
        self.conf, self.sock, self.pidfile = opts['-c'], opts['-s'], opts['-P']
        self.blocks = set()     # own blocks (blackholes, proto 80), none on a reflector
        self.expect = set()     # what the plan says this host holds once the fabric has converged

    def pid(self):
        pid = read_pid(self.pidfile)
        return pid if pid and alive(pid) else None

    def pids(self):
        return [p for p in [self.pid()] if p]

    def spawn(self):
        """Start the daemon (it forks; the returned process is the one that exits once it has)."""
        return subprocess.Popen(in_netns(self.netns, self.argv), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def sessions(self):
        """(BGP protocols, Established, [(kind, epoch seconds it came up)]) of `birdc show protocols`; the kind
        is the protocol name's prefix (RR, Client, Peer, Global: to a spine or another rack). bird.conf's
        `timeformat protocol iso long` gives the time to the second."""
        out = subprocess.run(['birdc', '-s', self.sock, 'show', 'protocols'], capture_output=True, check=False,
                             text=True).stdout
        bgp = [line.split() for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == 'BGP']
        ups = []
        for f in bgp:
            if f[-1] == 'Established' and len(f) >= 7:
                try:
                    up = time.mktime(time.strptime('%s %s' % (f[4], f[5].split('.')[0]), '%Y-%m-%d %H:%M:%S'))
                except ValueError:
                    continue
                ups.append((f[0].split('_', 1)[0], up))
        return len(bgp), sum(f[-1] == 'Established' for f in bgp), ups


class Frr:
    """One spine's FRR as site.yml started it (module calico_frr: zebra first, then bgpd, each with its pid file,
    vty socket and log in <state_dir>/<spine>/, the zserv socket there too)."""

    kind = 'FRR'
    proto, proto_name = RTPROT_BGP, 'bgp'

    def __init__(self, host, netns, state_dir, argvs):
        self.host, self.netns, self.state_dir, self.argvs = host, netns, state_dir, argvs
        self.blocks = set()
        self.expect = set()

    def pid(self):
        """bgpd's pid (its /proc/<pid>/net is the spine's namespace)."""
        return frr.running_pid(self.state_dir, 'bgpd')

    def pids(self):
        return [p for p in (frr.running_pid(self.state_dir, d) for d in self.argvs) if p]

    def start(self, timeout=15):
        """As calico_frr: each daemon in FRR's order, the next one once the last has its pid file and vty socket
        (bgpd connects to zebra's zserv socket)."""
        for daemon, argv in self.argvs.items():
            proc = subprocess.run(in_netns(self.netns, argv), capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not frr.wait_started(self.state_dir, daemon, timeout):
                out = (proc.stderr or proc.stdout)[-300:]
                raise RuntimeError('%s: %s did not start: %s' % (self.host, daemon, out))

    def sessions(self):
        """(BGP neighbors, Established, [('Spine', epoch seconds it came up)]) of `show bgp summary json`."""
        out = subprocess.run(['vtysh', '--vty_socket', self.state_dir, '-c', 'show bgp ipv4 unicast summary json'],
                             capture_output=True, check=False, text=True).stdout
        try:
            peers = json.loads(out or '{}').get('peers', {})
        except ValueError:
            return 0, 0, []
        up = [p for p in peers.values() if p.get('state') == 'Established']
        return len(peers), len(up), [('Spine', p['peerUptimeEstablishedEpoch']) for p in up
                                     if 'peerUptimeEstablishedEpoch' in p]


def discover(prefix, state_dir):
    """Every BIRD of the lab: its pid file, command line and namespace (checked against /run/netns)."""
    birds = []
    for pidfile in sorted(Path(state_dir).glob('*/bird.pid')):
        host = pidfile.parent.name
        netns = '%s-%s' % (prefix, host)
        pid = int(pidfile.read_text().split()[0])
        argv = cmdline(pid)
        if os.path.basename(argv[0]) != 'bird' or str(pidfile) not in argv:
            raise RuntimeError('%s: pid %d is not this host\'s bird: %s' % (pidfile, pid, argv))
        check_netns(pid, netns, str(pidfile))
        birds.append(Bird(host, netns, argv))
    return birds


def discover_frr(prefix, state_dir, spines):
    """Every spine's FRR daemons (``spines``: their names): command lines read back from their pid files."""
    found = []
    for spine in spines:
        directory = os.path.join(state_dir, spine)
        argvs = {}
        for daemon in frr.ORDER:
            pid = frr.running_pid(directory, daemon)
            if pid:
                check_netns(pid, '%s-%s' % (prefix, spine), '%s %s' % (spine, daemon))
                argvs[daemon] = cmdline(pid)
        if 'bgpd' not in argvs:
            raise RuntimeError('%s: no bgpd runs with a pid file in %s' % (spine, directory))
        found.append(Frr(spine, '%s-%s' % (prefix, spine), directory, argvs))
    return found


def read_blocks(birds, pool):
    """Every host's own blocks (its `proto 80` blackholes inside the pool); the set of all of them."""
    pool = ipaddress.IPv4Network(pool)

    def own(bird):
        routes = json.loads(sh(['ip', '-n', bird.netns, '-j', 'route', 'show', 'proto', '80', 'type',
                                'blackhole']).stdout or '[]')
        return {r['dst'] for r in routes if ipaddress.IPv4Network(r['dst']).subnet_of(pool)}

    for bird, own_blocks in zip(birds, pmap(own, birds)):
        bird.blocks = own_blocks
    return set().union(*(b.blocks for b in birds))


def stop_all(speakers, timeout=15.0):
    """SIGTERM to every daemon at once; SIGKILL what is left after timeout. Returns (stopped, killed)."""
    pids = [p for s in speakers for p in s.pids()]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return len(pids), len(left)


def flush(speakers):
    """The routes the daemons installed (`proto bird`, zebra's `proto bgp`) and the neighbour tables."""
    def one(s):
        sh(['ip', '-n', s.netns, 'route', 'flush', 'proto', s.proto_name])
        sh(['ip', '-n', s.netns, 'neigh', 'flush', 'all'])
    pmap(one, speakers)


def start_all(birds, spines):
    """Start every daemon at once (the spines' FRRs each in a thread of its own, zebra then bgpd); returns
    seconds until every start command has returned (the daemons have forked and written their pid files)."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(spines), 1)) as pool:
        frrs = [pool.submit(s.start) for s in spines]
        procs = [b.spawn() for b in birds]
        for bird, proc in zip(birds, procs):
            out = proc.communicate()[0]
            if proc.returncode != 0:
                raise RuntimeError('%s: bird did not start: %s' % (bird.host, out.decode(errors='replace')))
        for f in frrs:
            f.result()
    return time.perf_counter() - start


def sessions(speakers, wait=30.0):
    """(BGP protocols or neighbors, Established, {kind: [epoch seconds each came up]}) summed over the lab, once
    all are Established or after wait s."""
    deadline = time.monotonic() + wait
    while True:
        counts = pmap(lambda s: s.sessions(), speakers)
        total, est = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if est == total or time.monotonic() > deadline:
            ups = {}
            for _t, _e, times in counts:
                for kind, up in times:
                    ups.setdefault(kind, []).append(up)
            return total, est, ups
        time.sleep(0.5)


def rss_kib(speakers):
    """Sum of VmRSS of the daemons' processes."""
    total = 0
    for pid in (p for s in speakers for p in s.pids()):
        try:
            m = re.search(r'^VmRSS:\s+(\d+) kB', Path('/proc/%d/status' % pid).read_text(), re.M)
        except OSError:
            continue
        total += int(m.group(1)) if m else 0
    return total


def cross_check(speakers):
    """Every namespace's `ip -j route show proto <bird|bgp>` holds what it is expected to hold."""
    def missing(s):
        routes = json.loads(sh(['ip', '-n', s.netns, '-j', 'route', 'show', 'proto', s.proto_name]).stdout or '[]')
        return s.expect - {r['dst'] if '/' in r['dst'] else r['dst'] + '/32' for r in routes}
    bad = {s.host: sorted(m) for s, m in zip(speakers, pmap(missing, speakers)) if m}
    if bad:
        raise RuntimeError('cross-check with ip route failed: %s' % dict(list(bad.items())[:5]))


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
