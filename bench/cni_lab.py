"""bench/cni.py's lab: its settings, the lab and the plugin as a runtime calls it, the ICMP probe."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import re
import resource
import select
import socket
import struct
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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
