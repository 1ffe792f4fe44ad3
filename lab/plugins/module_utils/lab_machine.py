# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The machine lab's pieces that need no running machine: the cached base image (a debootstrap of Debian with
systemd, sshd, sudo and Python), the local apt repository the machines install from, the files that make one
machine out of the base (hostname, keys, its network configuration) and the supervisor that boots it."""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess

# What the base image has besides Debian's required packages: what a freshly installed Debian server has that
# site.yml relies on (systemd as init, sshd, sudo, Python and python3-apt for Ansible, iproute2 for the host's own
# network configuration). BIRD and iptables are not here: site.yml installs them from the lab's repository.
BASE_PACKAGES = ('systemd', 'systemd-sysv', 'openssh-server', 'sudo', 'python3', 'python3-apt', 'iproute2', 'procps',
                 'iputils-ping')
REPO_MOUNT = '/srv/netfleet-apt'
READY = '.netfleet-ready'
# Changes with what customize_base does, so that a changed customization builds a new base image.
BASE_REVISION = 1
NETWORK_UNIT = 'netfleet-lab-network.service'
# Where a machine's supervisor makes its cgroup (those of them that are cgroup hierarchies on this machine).
CGROUP_ROOTS = ('/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified', '/sys/fs/cgroup')
# Timers and units that reach for the network or the disk on a schedule: a lab machine has no archive to reach.
MASKED_UNITS = ('apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'e2scrub_reap.service',
                'dpkg-db-backup.timer', 'fstrim.timer')
USER_RE = re.compile(r'[a-z_][a-z0-9_-]{0,31}\Z')
DEB_NAME_RE = re.compile(r'[a-z0-9][a-z0-9+.-]+\Z')


class MachineError(Exception):
    """One line for the module's fail_json."""


def run(argv, cwd=None, env=None):
    """Run a command; its output or a MachineError naming it."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                          env=dict(os.environ, LC_ALL='C', DEBIAN_FRONTEND='noninteractive', **(env or {})))
    if proc.returncode != 0:
        tail = ' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise MachineError(f"{' '.join(argv[:3])} ... failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def digest(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


class CacheLock:
    """flock on <cache_dir>/.lock: two labs building the same image wait for each other."""

    def __init__(self, cache_dir):
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        self.path = os.path.join(cache_dir, '.lock')
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _fresh(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def base_path(cache_dir, suite, mirror, user):
    return os.path.join(cache_dir, f'base-{suite}-{digest([suite, mirror, user, BASE_PACKAGES, BASE_REVISION])}')


def cached(cache_dir, final, fill, stamp):
    """Build the cache entry `final` once: fill(tmp) builds it in a scratch directory that is renamed into place
    with a READY stamp, under the cache lock (two labs wait for each other); returns (final, built)."""
    if os.path.exists(os.path.join(final, READY)):
        return final, False
    with CacheLock(cache_dir):
        if os.path.exists(os.path.join(final, READY)):
            return final, False
        tmp = final + '.build'
        _fresh(tmp)
        fill(tmp)
        with open(os.path.join(tmp, READY), 'w') as f:
            f.write(stamp + '\n')
        _fresh(final)
        os.rename(tmp, final)
    return final, True


def build_base(cache_dir, suite, mirror, user):
    """The base root filesystem, built once per (suite, mirror, user, package list); returns (path, built)."""
    def fill(tmp):
        run(['debootstrap', '--variant=minbase', '--include=' + ','.join(BASE_PACKAGES), suite, tmp, mirror])
        customize_base(tmp, user)
    return cached(cache_dir, base_path(cache_dir, suite, mirror, user), fill, f'{suite} {mirror} {user}')


def build_repo(cache_dir, packages):
    """A flat apt repository (Packages index + .debs) of the packages and their dependencies, fetched once with
    this machine's apt; returns (path, built)."""
    for name in packages:
        if not DEB_NAME_RE.match(name):
            raise MachineError(f'repo package {name!r} is not a Debian package name')

    def fill(tmp):
        os.makedirs(tmp, mode=0o755)
        names = repo_closure(packages)
        try:
            run(['apt-get', 'download', *names], cwd=tmp)
        except MachineError:  # package lists older than the mirror: refresh them once
            run(['apt-get', 'update', '-qq'])
            run(['apt-get', 'download', *names], cwd=tmp)
        index = run(['dpkg-scanpackages', '--multiversion', '.', '/dev/null'], cwd=tmp)
        with open(os.path.join(tmp, 'Packages'), 'w') as f:
            f.write(index)
        with open(os.path.join(tmp, 'Release'), 'w') as f:
            f.write(release_file(index))
        os.chmod(tmp, 0o755)
    return cached(cache_dir, repo_path(cache_dir, packages), fill, ' '.join(sorted(packages)))


def customize_base(root, user):
    """What every machine shares: the login user with passwordless sudo (a fleet's deploy user), sshd taking
    keys only, apt pointed at the lab's repository only, no machine identity (each machine gets its own)."""
    run(['chroot', root, 'useradd', '--create-home', '--shell', '/bin/bash', '--user-group', user])
    sudoers = os.path.join(root, 'etc/sudoers.d', user)
    with open(sudoers, 'w') as f:
        f.write(f'{user} ALL=(ALL:ALL) NOPASSWD: ALL\n')
    os.chmod(sudoers, 0o440)
    with open(os.path.join(root, 'etc/ssh/sshd_config.d/netfleet-lab.conf'), 'w') as f:
        f.write('# lab machine: keys only, one host key (made per machine), no DNS lookups\n'
                'HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n'
                'PermitRootLogin no\nUseDNS no\n')
    for name in os.listdir(os.path.join(root, 'etc/ssh')):
        if name.startswith('ssh_host_'):
            os.unlink(os.path.join(root, 'etc/ssh', name))
    with open(os.path.join(root, 'etc/apt/sources.list'), 'w') as f:
        f.write(f'deb [trusted=yes] file:{REPO_MOUNT} ./\n')
    lists = os.path.join(root, 'var/lib/apt/lists')
    for name in os.listdir(lists):
        path = os.path.join(lists, name)
        if os.path.isfile(path) and name != 'lock':
            os.unlink(path)
    os.utime(lists, (0, 0))  # no package lists yet: apt's cache_valid_time must see them as stale
    for unit in MASKED_UNITS:
        link = os.path.join(root, 'etc/systemd/system', unit)
        if not os.path.lexists(link):
            os.symlink('/dev/null', link)
    open(os.path.join(root, 'etc/machine-id'), 'w').close()


def repo_closure(packages):
    """The packages and everything they depend on: the unindented lines of ``apt-cache depends --recurse`` (virtual
    names, in angle brackets, dropped)."""
    out = run(['apt-cache', 'depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts',
               '--no-breaks', '--no-replaces', '--no-enhances', *packages])
    return sorted({line for line in out.splitlines() if DEB_NAME_RE.match(line)})


def release_file(index):
    """A Release file for the flat repository (apt wants one; the machines trust the repository, so unsigned)."""
    data = index.encode()
    return ('Origin: netfleet-lab\nLabel: netfleet-lab\nSuite: lab\nCodename: lab\n'
            f'SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} Packages\n')


def repo_path(cache_dir, packages):
    return os.path.join(cache_dir, f'repo-{digest(sorted(packages))}')


ROUTE_RE = re.compile(r'(?P<dst>[0-9./]+) via (?P<via>[0-9.]+) dev eth[01]\Z')


def check_network(host, net):
    """A host's lab addresses and routes (lab_fabric's hosts.<host>), checked: they become the commands of the
    machine's network unit."""
    def fail(what):
        raise MachineError(f'host {host!r}: networks: {what} (pass lab_fabric\'s hosts result)')
    if not isinstance(net, dict) or not (net.get('address') or net.get('spine_address')):
        fail('no address')
    checks = [(key, ipaddress.IPv4Interface, 'an IPv4 address with its prefix length')
              for key in ('address', 'spine_address') if net.get(key)]
    if net.get('gateway'):
        checks.append(('gateway', ipaddress.IPv4Address, 'an IPv4 address'))
    for key, kind, what in checks:
        try:
            kind(str(net[key]))
        except ValueError:
            fail(f'{key} {net[key]!r} is not {what}')
    for route in net.get('routes') or []:
        m = ROUTE_RE.match(str(route))
        try:
            ok = m is not None and ipaddress.IPv4Network(m['dst']) and ipaddress.IPv4Address(m['via'])
        except ValueError:
            ok = False
        if not ok:
            fail(f'route {route!r} is not "<cidr> via <address> dev eth0|eth1"')
    return net


def network_script(net):
    """The host's own network configuration (what /etc/network/interfaces is on a real host): the lab legs'
    addresses, the default route and the reflector's routes to other racks, applied at every boot. A spine
    router has its spine leg (eth1) only."""
    lines = ['ip link set lo up']
    if net.get('address'):
        lines += ['ip link set eth0 up', f"ip addr replace {net['address']} dev eth0"]
    if net.get('spine_address'):
        lines += ['ip link set eth1 up', f"ip addr replace {net['spine_address']} dev eth1"]
    if net.get('gateway'):
        dev = 'eth1' if net.get('spine_address') else 'eth0'
        lines.append(f"ip route replace default via {net['gateway'].split('/')[0]} dev {dev}")
    lines += [f'ip route replace {route} proto static' for route in net.get('routes') or []]
    return lines


def network_unit(net):
    body = ''.join(f'ExecStart=/sbin/{line}\n' for line in network_script(net))
    return ('[Unit]\nDescription=Lab network configuration (addresses and routes of the lab legs)\n'
            'DefaultDependencies=no\nWants=network.target\nBefore=network.target\nAfter=local-fs.target\n\n'
            '[Service]\nType=oneshot\nRemainAfterExit=yes\n' + body
            + '\n[Install]\nWantedBy=multi-user.target\n')


def legs(net):
    """The lab legs a machine's network namespace keeps across reboots."""
    return (['eth0'] if net.get('address') else []) + (['eth1'] if net.get('spine_address') else [])


def machine_files(name, net, login, authorized_key, machine_id):
    """Files written into a machine's upper directory before it boots: path -> (text, mode, uid, gid).
    login is (user, uid, gid) of the base image's login user."""
    user, uid, gid = login
    return {
        '/etc/hostname': (name + '\n', 0o644, 0, 0),
        '/etc/hosts': (f'127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n', 0o644, 0, 0),
        '/etc/machine-id': (machine_id + '\n', 0o444, 0, 0),
        f'/etc/systemd/system/{NETWORK_UNIT}': (network_unit(net), 0o644, 0, 0),
        f'/home/{user}/.ssh/authorized_keys': (authorized_key + '\n', 0o600, uid, gid),
    }


def login_ids(base, user):
    """(user, uid, gid) of the login user in the base image's /etc/passwd."""
    with open(os.path.join(base, 'etc/passwd')) as f:
        for line in f:
            fields = line.split(':')
            if fields[0] == user:
                return user, int(fields[2]), int(fields[3])
    raise MachineError(f'user {user!r} is not in the base image {base} (remove the image to rebuild it)')


SUPERVISOR = r'''#!/bin/sh
# netfleet lab machine {name}: boots its root (the shared base under its own upper directory, mounted in a
# private mount namespace per boot) with systemd-nspawn inside network namespace {netns}. A reboot inside
# the machine (nspawn exits 133) boots it again in a fresh network namespace that keeps only the lab legs,
# as a real host comes back from a reboot with a fresh kernel: no routes, no iptables rules, default sysctls.
set -u
dir={dir}
echo $$ > "$dir/supervisor.pid"
# a cgroup of its own in every hierarchy systemd may use (v1 name=systemd, the hybrid unified one, or pure
# v2): machines sharing one would create their units' cgroups in the same place
for cg in {cgroups}; do
  if [ -e "$cg/cgroup.procs" ]; then
    mkdir -p "$cg/netfleet-lab/{machine}" && echo $$ > "$cg/netfleet-lab/{machine}/cgroup.procs" || exit 1
  fi
done
fresh_netns() {{
  ip netns add {netns}.boot || return 1
  for leg in {legs}; do
    ip -n {netns} link set "$leg" down 2>/dev/null || continue
    ip -n {netns} link set "$leg" netns {netns}.boot || return 1
  done
  ip netns del {netns} && ip netns add {netns} || return 1
  for leg in {legs}; do
    ip -n {netns}.boot link set "$leg" netns {netns} 2>/dev/null
  done
  ip netns del {netns}.boot
  # a kernel boots with forwarding off, whatever this machine's root namespace has
  ip netns exec {netns} sh -c 'echo 0 > /proc/sys/net/ipv4/ip_forward'
}}
while :; do
  fresh_netns || {{ echo "netfleet: could not renew network namespace {netns}" >&2; exit 1; }}
  echo "netfleet: booting {name} at $(date +%s.%N)" >&2
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=network unshare --mount --propagation private /bin/sh -c '
    mount -t overlay overlay -o lowerdir={base},upperdir="$1/upper",workdir="$1/work" "$1/root" || exit 1
    shift; exec "$@"' boot "$dir" \
    systemd-nspawn --quiet -D "$dir/root" -M {machine} --hostname={name} -b \
    --register=no --keep-unit --network-namespace-path=/run/netns/{netns} --capability=CAP_NET_ADMIN \
    --console=read-only --resolv-conf=off --timezone=off --link-journal=no \
    --bind-ro={repo}:{repo_mount} &
  echo $! > "$dir/nspawn.pid"
  wait $!
  rc=$?
  rm -f "$dir/nspawn.pid"
  [ "$rc" -eq 133 ] || break
done
echo "netfleet: {name} stopped (systemd-nspawn exit $rc)" >&2
exit "$rc"
'''


def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def nspawn_pid(hostdir):
    """The machine's systemd-nspawn (its pid file names a live nspawn of this machine's root), or None."""
    try:
        with open(os.path.join(hostdir, 'nspawn.pid')) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    text = cmdline(pid)
    return pid if 'systemd-nspawn' in text and hostdir in text else None


def leader(hostdir):
    """PID 1 of the machine (systemd-nspawn's child), or None when it does not run."""
    pid = nspawn_pid(hostdir)
    if pid is None:
        return None
    try:
        with open(f'/proc/{pid}/task/{pid}/children') as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def netns_dir(machines_dir, host):
    """Where a host's named network namespaces are seen from this machine: inside its machine when it runs one,
    else /run/netns."""
    pid = leader(os.path.join(machines_dir, host)) if machines_dir else None
    return f'/proc/{pid}/root/run/netns' if pid else '/run/netns'


def supervisor_script(name, machine, netns, hostdir, base, repo, legs):
    return SUPERVISOR.format(cgroups=' '.join(CGROUP_ROOTS), name=name, machine=machine, netns=netns, dir=hostdir,
                             base=base, repo=repo, repo_mount=REPO_MOUNT, legs=' '.join(legs))
