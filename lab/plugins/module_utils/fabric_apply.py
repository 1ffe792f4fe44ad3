# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab fabric on the machine: privileges, `ip` commands (read, `-batch` per namespace, in parallel), the
root namespace's neighbour-table sysctls, and teardown (daemons by pid file, then whatever runs in the lab's
namespaces, the namespaces and the state directory)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import time

from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_pid
from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_plan import (
    GC_THRESH,
    NsState,
    describe_desired,
    describe_observed,
    plan_present,
)
from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_spec import LabError

NETNS_RUN_DIR = '/run/netns'
FORWARD_CMD = 'echo 1 > /proc/sys/net/ipv4/ip_forward'  # a constant: no user data ever reaches a shell
WORKERS = 8  # namespaces read or configured at once (each is one short-lived `ip` process)

# Capabilities `ip netns add` and the wiring need (linux/capability.h bit numbers).
NEEDED_CAPS = {'CAP_NET_ADMIN': 12, 'CAP_SYS_ADMIN': 21}
ROOT_FIX = ('run it as root with full capabilities: sudo ansible-playbook netfleet.calico_lab.lab_up (not in a '
            'container or under setpriv/capsh that drops them)')


def missing_caps(status_path='/proc/self/status'):
    """Names of NEEDED_CAPS this process lacks (from CapEff); [] when it has them or cannot tell."""
    try:
        with open(status_path) as handle:
            line = next((ln for ln in handle if ln.startswith('CapEff:')), None)
    except OSError:
        return []
    if line is None:
        return []
    effective = int(line.split(':', 1)[1].strip(), 16)
    return sorted(name for name, bit in NEEDED_CAPS.items() if not effective & (1 << bit))


def check_privileges(euid=None, status_path='/proc/self/status'):
    """Raise LabError with one line unless this process is root with the capabilities namespaces need."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise LabError(f'lab_fabric needs root to create network namespaces (running as uid {euid}) — {ROOT_FIX}')
    lacking = missing_caps(status_path)
    if lacking:
        raise LabError(f'lab_fabric needs root with {" and ".join(NEEDED_CAPS)} to create network namespaces '
                       f'(this root process lacks {", ".join(lacking)}) — {ROOT_FIX}')


# --------------------------------------------------------------------------------------------- observation


class Lab:
    """Runs iproute2 for the module."""

    def __init__(self, module):
        self.module = module
        self.ip = module.get_bin_path('ip', required=True, opt_dirs=['/usr/sbin', '/sbin'])
        self.commands = []

    @staticmethod
    def list_netns():
        try:
            return sorted(os.listdir(NETNS_RUN_DIR))
        except FileNotFoundError:
            return []

    @staticmethod
    def _run(argv, data=None):
        """Run argv (never a shell); thread-safe, so namespaces can be handled in parallel."""
        proc = subprocess.run(argv, input=data, capture_output=True, text=True,
                              env=dict(os.environ, LC_ALL='C'), check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def read(self, netns, fabric=False, router=False):
        """One `ip -j -d -n NETNS -batch -` call: links with addresses, main routes (+ peer namespace ids in the
        fabric, where every veth peer is checked; + forwarding in the router)."""
        keys = ['addrs', 'routes'] + (['nsids'] if fabric else []) + (['netconf'] if router else [])
        lines = ['addr show', 'route show table main'] + (['netns list-id'] if fabric else []) \
            + (['netconf show'] if router else [])
        rc, out, err = self._run([self.ip, '-j', '-d', '-n', netns, '-batch', '-'], '\n'.join(lines) + '\n')
        if rc != 0:
            return None
        values, decoder, pos = [], json.JSONDecoder(), 0
        out = out.strip()
        try:
            while pos < len(out):
                value, pos = decoder.raw_decode(out, pos)
                values.append(value)
                while pos < len(out) and out[pos].isspace():
                    pos += 1
        except ValueError:
            return None
        if len(values) != len(lines):
            return None
        return NsState(netns, **dict(zip(keys, values)))

    def batch(self, netns, lines):
        """Run one `ip [-n NETNS] -batch -`; any failing line fails the module."""
        self.batches([(netns, lines)])

    def batches(self, jobs):
        """Run several `ip -n NETNS -batch -` (distinct namespaces, independent of each other) in parallel."""
        jobs = [(netns, list(lines)) for netns, lines in jobs if lines]
        self.commands.extend({'netns': netns, 'lines': lines} for netns, lines in jobs)
        if self.module.check_mode or not jobs:
            return

        def one(job):
            netns, lines = job
            argv = [self.ip] + (['-n', netns] if netns else []) + ['-batch', '-']
            return job, self._run(argv, '\n'.join(lines) + '\n')

        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = list(pool.map(one, jobs))
        for (netns, lines), (rc, out, err) in results:
            if rc != 0:
                where = f'namespace {netns}' if netns else 'the root namespace'
                raise LabError(f'ip -batch in {where} failed: {err.strip() or out.strip()} '
                               f'(lines: {"; ".join(lines)})')

    def exec_in(self, netns, argv):
        self.commands.append({'netns': netns, 'exec': list(argv)})
        if self.module.check_mode:
            return
        rc, out, err = self._run([self.ip, 'netns', 'exec', netns] + list(argv))
        if rc != 0:
            raise LabError(f'{" ".join(argv)} in namespace {netns} failed: {err.strip() or out.strip()}')


def observe(lab, spec):
    """Observed states of the spec's namespaces (plus a router the spec no longer wants, to remove it);
    None for a missing one, False for an unreadable one."""
    existing = set(lab.list_netns())
    wanted = spec.namespaces()
    if not spec.router_wanted and spec.router in existing:
        wanted = wanted + [spec.router]
    if not spec.mgmt and spec.mgmt_netns in existing:
        wanted = wanted + [spec.mgmt_netns]
    present = [ns for ns in wanted if ns in existing]
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        read = dict(zip(present, pool.map(
            lambda ns: lab.read(ns, fabric=(ns == spec.fabric), router=(ns == spec.router)), present)))
    states = {ns: (read[ns] or False) if ns in read else None for ns in wanted}
    return existing, states


def read_gc_thresh():
    values = []
    for i in (1, 2, 3):
        with open(GC_THRESH % i) as f:
            values.append(int(f.read().split()[0]))
    return values


# --------------------------------------------------------------------------------------------- present


def apply_present(lab, spec, plan):
    if plan.sysctls and not lab.module.check_mode:
        for path, value in sorted(plan.sysctls.items(), reverse=True):  # gc_thresh3 first
            with open(path, 'w') as f:
                f.write(f'{value}\n')
    if plan.make_state_dir and not lab.module.check_mode:
        os.makedirs(spec.state_dir, mode=0o755, exist_ok=True)
    lab.batch(None, plan.root)
    # deletions: the fabric's first (they take veth peers with them), then the other namespaces'
    lab.batch(spec.fabric, plan.pre.get(spec.fabric, []))
    lab.batches((ns, lines) for ns, lines in plan.pre.items() if ns != spec.fabric)
    lab.batch(spec.fabric, plan.fabric)
    lab.batches(sorted(plan.post.items(), key=lambda item: item[0] != spec.router))
    if plan.forward:
        lab.exec_in(spec.router, ['/bin/sh', '-c', FORWARD_CMD])
    lab.batch(None, plan.root_late)


def run_present(lab, spec, result):
    gc_now = read_gc_thresh()
    state_dir_exists = os.path.isdir(spec.state_dir)
    _unused, states = observe(lab, spec)
    plan = plan_present(spec, states, gc_now, state_dir_exists)
    result['diff'] = {
        'before': describe_observed(spec, states, gc_now, state_dir_exists),
        'after': describe_desired(spec, gc_now),
    }
    result.update(created=plan.created, removed=plan.removed, updated=plan.updated, changed=plan.changed)
    result['segments'], result['hosts'], result['spine'] = spec.result()
    result['mgmt'] = spec.mgmt_result()
    result['namespaces'] = spec.namespaces()
    if not plan.changed:
        return
    apply_present(lab, spec, plan)
    if lab.module.check_mode:
        return
    # read back: a lab that does not converge in one pass is a bug, not something to hide
    _unused, states = observe(lab, spec)
    again = plan_present(spec, states, read_gc_thresh(), os.path.isdir(spec.state_dir))
    if again.changed:
        raise LabError('the lab did not converge; still to do: '
                       + '; '.join(again.created + again.removed + again.updated))


# --------------------------------------------------------------------------------------------- absent


def _ref_pattern(paths):
    return re.compile('|'.join(re.escape(p) + r'(?:/|$)' for p in sorted(paths, key=len, reverse=True)))


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
    except OSError:
        return None


def pidfile_processes(state_dir):
    """Processes named by *.pid files under state_dir whose command line references that file or state_dir."""
    found = []
    if not os.path.isdir(state_dir):
        return found
    dir_refs = {state_dir, os.path.realpath(state_dir)}
    for root, dirs, files in os.walk(state_dir):
        dirs.sort()
        for fname in sorted(files):
            if not fname.endswith('.pid'):
                continue
            path = os.path.join(root, fname)
            pid = read_pid(path)
            if pid is None or pid == os.getpid() or any(p['pid'] == pid for p in found):
                continue
            args = _cmdline(pid)
            if not args:
                continue
            pattern = _ref_pattern(dir_refs | {path, os.path.realpath(path)})
            if any(pattern.search(arg) for arg in args):
                found.append({'pid': pid, 'reason': 'pidfile', 'pidfile': path, 'cmdline': ' '.join(args)})
    return found


def netns_processes(names, skip):
    """Processes whose network namespace is one of the named ones."""
    ids = {}
    for name in names:
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, name))
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = name
    found = []
    if not ids:
        return found
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) in skip or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f'/proc/{entry}/ns/net')
        except OSError:
            continue
        name = ids.get((st.st_dev, st.st_ino))
        if name:
            args = _cmdline(entry)
            if args is not None:
                found.append({'pid': int(entry), 'reason': 'netns', 'netns': name, 'cmdline': ' '.join(args)})
    return found


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False


def stop(procs, timeout):
    """SIGTERM, wait up to timeout, SIGKILL the rest and wait for them."""
    for sig, name, wait in ((signal.SIGTERM, 'TERM', timeout), (signal.SIGKILL, 'KILL', 5)):
        targets = [p for p in procs if _alive(p['pid'])]
        if not targets:
            return
        for proc in targets:
            try:
                os.kill(proc['pid'], sig)
                proc['signal'] = name
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(p['pid']) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
    left = [p['pid'] for p in procs if _alive(p['pid'])]
    if left:
        raise LabError(f'processes {left} did not exit after SIGKILL')


def run_absent(lab, spec, result):
    prefix = spec.prefix + '-'
    names = [n for n in lab.list_netns() if n.startswith(prefix)]
    state_dir_exists = os.path.lexists(spec.state_dir)
    killed = pidfile_processes(spec.state_dir)
    if not lab.module.check_mode:
        stop(killed, lab.module.params['stop_timeout'])
    # anything still inside a lab namespace would keep it (and its veths) alive after `netns del`
    strays = netns_processes(names, skip={p['pid'] for p in killed})
    if not lab.module.check_mode:
        stop(strays, lab.module.params['stop_timeout'])
    killed += strays
    result['killed'] = killed
    result['diff'] = {
        'before': {'namespaces': names, 'processes': [f"{p['pid']} {p['cmdline']}" for p in killed],
                   'state_dir': spec.state_dir if state_dir_exists else None},
        'after': {'namespaces': [], 'processes': [], 'state_dir': None},
    }
    if names:
        lab.batch(None, [f'netns del {n}' for n in names])
        result['removed'] += [f'netns {n}' for n in names]
    if state_dir_exists:
        if not lab.module.check_mode:
            if os.path.isdir(spec.state_dir) and not os.path.islink(spec.state_dir):
                shutil.rmtree(spec.state_dir)
            else:
                os.unlink(spec.state_dir)
        result['removed'].append(f'directory {spec.state_dir}')
    result['changed'] = bool(names or state_dir_exists or killed)
