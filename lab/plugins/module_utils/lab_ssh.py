# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's sshds (module lab_sshd): one per lab host namespace, its keys, config and known_hosts, started,
checked and stopped by their own pid files. ``System`` is everything that touches the machine (processes,
users, files under /proc), so the logic is tested on a fake one."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_file, read_pid
from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_spec import NAME_RE, NETNS_RE, PREFIX_RE

NETNS_RUN_DIR = '/run/netns'
PRIVSEP_DIR = '/run/sshd'
USER_RE = re.compile(r'[a-z_][a-z0-9_.-]{0,31}\Z')
HOST_KEY = 'ssh_host_ed25519_key'
CLIENT_KEY = 'id_ed25519'
# As the netns connection enters a namespace: a private /sys remounted for the network namespace, mount
# propagation kept (workload namespaces created over SSH appear in /run/netns for everyone). A constant: the
# arguments ("$@") never pass through a shell string.
SYSFS_WRAPPER = 'mount --make-rprivate /sys && mount -t sysfs sysfs /sys && exec "$@"'


class LabSshError(Exception):
    """A one-line error for fail_json."""


# --------------------------------------------------------------------------------------------- pure helpers


def render_config(host, hostdir):
    """sshd_config of one lab host: its lab address only, root by key only."""
    listen = f"{host['address']}:{host['port']}"
    user = host.get('user') or 'root'
    return '\n'.join([
        f"# netfleet.calico lab: sshd of {host['name']} in network namespace {host['netns']} (module lab_sshd;",
        f'# edits are overwritten). Public-key authentication only, for {user} only, with the lab\'s key only.',
        f'ListenAddress {listen}',
        f'HostKey {hostdir}/{HOST_KEY}',
        f'PidFile {hostdir}/sshd.pid',
        f'AuthorizedKeysFile {hostdir}/authorized_keys',
        'AuthorizedPrincipalsFile none',
        f'AllowUsers {user}',
        'PermitRootLogin ' + ('prohibit-password' if user == 'root' else 'no'),
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'HostbasedAuthentication no',
        'UsePAM no',
        'UseDNS no',
        'StrictModes yes',
        'PrintMotd no',
        'PrintLastLog no',
        'X11Forwarding no',
        'AllowAgentForwarding no',
        'PermitTunnel no',
        'MaxStartups 64:30:128',
        'LogLevel INFO',
        'Subsystem sftp internal-sftp',
        '',
    ])


def known_hosts_line(address, port, public_key):
    """One known_hosts line: `addr keytype key` (port 22) or `[addr]:port keytype key`."""
    fields = public_key.split()
    if len(fields) < 2:
        raise LabSshError(f'public key {public_key!r} is malformed')
    name = address if port == 22 else f'[{address}]:{port}'
    return f'{name} {fields[0]} {fields[1]}'


def listen_key(address, port):
    """The local_address field of /proc/net/tcp for a socket bound to address:port."""
    packed = socket.inet_aton(address)
    return f'{int.from_bytes(packed, "little"):08X}:{port:04X}'


def listening(tcp_table, address, port):
    """Whether a /proc/<pid>/net/tcp table holds a LISTEN socket on address:port."""
    key = listen_key(address, port)
    for line in tcp_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == key and fields[3] == '0A':
            return True
    return False


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- spec


class Spec:
    def __init__(self, params):
        self.prefix = params['prefix']
        if not PREFIX_RE.match(self.prefix or ''):
            raise LabSshError(f'prefix {self.prefix!r} is invalid: use 1-16 letters, digits or underscores')
        norm = os.path.normpath(params['state_dir'] or '')
        if not os.path.isabs(norm) or self.prefix not in os.path.basename(norm) or norm.count('/') < 2:
            raise LabSshError(f"state_dir {params['state_dir']!r} must be an absolute path below a top-level "
                              f'directory whose last component contains the prefix {self.prefix!r} '
                              f'(e.g. /run/netfleet/{self.prefix})')
        self.state_dir = norm
        self.ssh_dir = os.path.join(norm, 'ssh')
        self.client_key = os.path.join(self.ssh_dir, CLIENT_KEY)
        self.known_hosts = os.path.join(self.ssh_dir, 'known_hosts')
        self.hosts = {}
        listens = {}
        for host in params['hosts'] if params['state'] == 'present' else []:
            name = host['name']
            if not NAME_RE.match(name) or name in ('cp',):
                raise LabSshError(f'host {name!r}: name must be letters, digits, ".", "_" or "-" (and not "cp")')
            if name in self.hosts:
                raise LabSshError(f'host {name!r} is listed twice')
            netns = host['netns']
            if not NETNS_RE.match(netns) or not netns.startswith(self.prefix + '-'):
                raise LabSshError(f"host {name!r}: netns {netns!r} must be a namespace name starting with "
                                  f"'{self.prefix}-'")
            try:
                address = str(ipaddress.IPv4Address(str(host['address']).split('/', maxsplit=1)[0].strip()))
            except ValueError:
                raise LabSshError(f"host {name!r}: address {host['address']!r} is not an IPv4 address") from None
            port = host.get('port') or 22
            if not 0 < port < 65536:
                raise LabSshError(f'host {name!r}: port {port} is not a TCP port (1-65535)')
            if (address, port) in listens:
                raise LabSshError(f'hosts {listens[(address, port)]!r} and {name!r} both listen on {address}:{port}')
            listens[(address, port)] = name
            user = host.get('user') or 'root'
            if not USER_RE.match(user):
                raise LabSshError(f'host {name!r}: user {user!r} is not a user name')
            hostdir = os.path.join(self.ssh_dir, name)
            self.hosts[name] = {'name': name, 'netns': netns, 'address': address, 'port': port, 'dir': hostdir,
                                'user': user,
                                'config': os.path.join(hostdir, 'sshd_config'),
                                'pidfile': os.path.join(hostdir, 'sshd.pid'),
                                'log': os.path.join(hostdir, 'sshd.log'),
                                'host_key': os.path.join(hostdir, HOST_KEY)}


# --------------------------------------------------------------------------------------------- the system


class System:
    """Processes, files and commands (one place, so unit tests can replace it)."""

    def __init__(self, module):
        self.module = module
        self._bins = {}

    def bin(self, name):
        """An executable, looked up on first use (state=absent needs none: a lab without OpenSSH still tears down)."""
        if name not in self._bins:
            path = self.module.get_bin_path(name, opt_dirs=['/usr/sbin', '/sbin', '/usr/bin'])
            if not path:
                raise LabSshError(f'{name} was not found: install openssh-server, openssh-client and util-linux')
            self._bins[name] = path
        return self._bins[name]

    @staticmethod
    def run(argv):
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, LC_ALL='C'), check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def keygen_run(self, path, comment):
        rc, out, err = self.run([self.bin('ssh-keygen'), '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path])
        if rc != 0:
            raise LabSshError(f'ssh-keygen for {path} failed: {err.strip() or out.strip()}')

    def check_config(self, config):
        rc, out, err = self.run([self.bin('sshd'), '-t', '-f', config])
        if rc != 0:
            raise LabSshError(f'sshd -t -f {config} rejects the configuration: {err.strip() or out.strip()}')

    def start(self, host):
        argv = [self.bin('nsenter'), f"--net={os.path.join(NETNS_RUN_DIR, host['netns'])}", '--',
                self.bin('unshare'), '--mount', '--propagation', 'unchanged', '--',
                '/bin/sh', '-c', SYSFS_WRAPPER, 'lab-sshd', self.bin('sshd'), '-f', host['config'], '-E', host['log']]
        rc, out, err = self.run(argv)
        if rc != 0:
            raise LabSshError(f"starting sshd of {host['name']} in {host['netns']} failed: "
                              f'{err.strip() or out.strip()}')

    @staticmethod
    def user_exists(user):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return False
        return True

    @staticmethod
    def netns_id(netns):
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, netns))
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @staticmethod
    def process(pid):
        """(cmdline, net namespace id, /proc/<pid>/net/tcp) of a live process, or None."""
        try:
            with open(f'/proc/{pid}/stat') as f:
                if f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X'):
                    return None
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
            st = os.stat(f'/proc/{pid}/ns/net')
            with open(f'/proc/{pid}/net/tcp') as f:
                tcp = f.read()
        except (OSError, IndexError):
            return None
        return cmdline, (st.st_dev, st.st_ino), tcp

    def alive(self, pid):
        return self.process(pid) is not None

    def kill(self, pid, sig):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def sleep(seconds):
        time.sleep(seconds)


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _write(path, text, mode=0o600):
    tmp = f'{path}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Lab:
    def __init__(self, module, system, spec):
        self.module, self.sys, self.spec = module, system, spec
        self.check = module.check_mode
        self.result = dict(changed=False, created=[], updated=[], removed=[], hosts={}, ssh_dir=spec.ssh_dir,
                           private_key=spec.client_key, known_hosts=spec.known_hosts)
        self.before, self.after = {}, {}

    def note(self, kind, line):
        self.result[kind].append(line)
        self.result['changed'] = True

    # -- daemons --------------------------------------------------------------------------------------------

    def running(self, pidfile, config, netns=None):
        """The pid of the live sshd that pidfile names, if its command line names config (and it runs in netns)."""
        pid = read_pid(pidfile)
        if pid is None:
            return None, None
        proc = self.sys.process(pid)
        if proc is None or config not in proc[0] or 'sshd' not in proc[0]:
            return None, None
        if netns is not None and proc[1] != self.sys.netns_id(netns):
            return None, None
        return pid, proc

    def stop(self, pid):
        timeout = self.module.params['stop_timeout']
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            if not self.sys.alive(pid):
                return
            self.sys.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.sys.alive(pid) and time.monotonic() < deadline:
                self.sys.sleep(0.05)
        if self.sys.alive(pid):
            raise LabSshError(f'sshd {pid} did not exit after SIGKILL')

    def stop_dir(self, name, hostdir):
        pid, _unused = self.running(os.path.join(hostdir, 'sshd.pid'), os.path.join(hostdir, 'sshd_config'))
        if pid is not None:
            if not self.check:
                self.stop(pid)
            self.note('removed', f'sshd {name} stopped (pid {pid})')
        if not self.check:
            shutil.rmtree(hostdir, ignore_errors=True)
        self.note('removed', f'directory {hostdir}')

    # -- present --------------------------------------------------------------------------------------------

    def directory(self, path, mode):
        if not os.path.isdir(path):
            self.note('created', f'directory {path}')
            if not self.check:
                os.makedirs(path, exist_ok=True)
                os.chmod(path, mode)
        elif os.stat(path).st_mode & 0o7777 != mode:
            self.note('updated', f'directory {path} mode {mode:o}')
            if not self.check:
                os.chmod(path, mode)

    def key(self, path, comment, label):
        """An ed25519 key pair at path; returns (public key text or None in check mode, created)."""
        if os.path.exists(path) and os.path.exists(path + '.pub'):
            return read_file(path + '.pub', absent=OSError).strip(), False
        self.note('created', label)
        if self.check:
            return None, True
        for p in (path, path + '.pub'):
            if os.path.lexists(p):
                os.unlink(p)
        self.sys.keygen_run(path, comment)
        return read_file(path + '.pub', absent=OSError).strip(), True

    def present(self):
        spec = self.spec
        if not os.path.isdir(spec.state_dir):
            raise LabSshError(f'{spec.state_dir} does not exist: run netfleet.calico_lab.lab_fabric '
                              '(netfleet.calico_lab.lab_up) first')
        for name, host in spec.hosts.items():
            if not self.sys.user_exists(host['user']):
                raise LabSshError(f"host {name!r}: user {host['user']!r} does not exist on this machine (the lab's "
                                  "hosts share its users): run scripts/setup, which creates the lab's login user "
                                  'netfleet-lab')
            if self.sys.netns_id(host['netns']) is None:
                raise LabSshError(f"host {name!r}: network namespace {host['netns']!r} does not exist: run "
                                  'netfleet.calico_lab.lab_fabric (netfleet.calico_lab.lab_up) first')
        self.directory(spec.ssh_dir, 0o755)  # sshd reads a host's authorized_keys as the login user
        self.directory(os.path.join(spec.ssh_dir, 'cp'), 0o700)  # the lab's ssh ControlPath sockets
        if not os.path.isdir(PRIVSEP_DIR):
            self.note('created', f'directory {PRIVSEP_DIR}')
            if not self.check:
                os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)

        client_pub, _unused = self.key(spec.client_key, f'netfleet-lab-{spec.prefix}', f'key {spec.client_key}')

        # hosts no longer in the lab: their sshd stops, their directory goes
        if os.path.isdir(spec.ssh_dir):
            for entry in sorted(os.listdir(spec.ssh_dir)):
                hostdir = os.path.join(spec.ssh_dir, entry)
                if entry not in spec.hosts and entry != 'cp' and os.path.isdir(hostdir) \
                        and not os.path.islink(hostdir):
                    self.before[entry] = 'sshd (a host no longer in the lab)'
                    self.stop_dir(entry, hostdir)

        known = []
        for host in spec.hosts.values():
            host_pub = self.host(host, client_pub)
            if host_pub is not None:
                known.append(known_hosts_line(host['address'], host['port'], host_pub))
        if len(known) < len(spec.hosts):  # check mode: some host key is not made yet
            self.note('updated', f'file {spec.known_hosts}')
        else:
            text = ''.join(line + '\n' for line in known)
            old = read_file(spec.known_hosts, absent=OSError)
            if old != text:
                self.note('created' if old is None else 'updated', f'file {spec.known_hosts}')
                if not self.check:
                    _write(spec.known_hosts, text, 0o644)

    def host(self, host, client_pub):
        """Files and daemon of one host; returns its public host key (None in check mode when not yet made)."""
        name, hostdir = host['name'], host['dir']
        self.directory(hostdir, 0o755)
        pid, proc = self.running(host['pidfile'], host['config'], host['netns'])
        listens = proc is not None and listening(proc[2], host['address'], host['port'])
        old_config = read_file(host['config'], absent=OSError)
        self.before[name] = {'address': f"{host['address']}:{host['port']}", 'running': bool(pid and listens),
                             'config': digest(old_config) if old_config is not None else None}

        host_pub, new_key = self.key(host['host_key'], f"{self.spec.prefix}-{name}", f'host key {name}')
        restart = new_key
        config = render_config(host, hostdir)
        if old_config != config or _mode(host['config']) != 0o644:
            self.note('created' if old_config is None else 'updated', f'config {name}')
            restart = True
            if not self.check:
                _write(host['config'], config, 0o644)
                self.sys.check_config(host['config'])
        authorized = (client_pub + '\n') if client_pub else None
        keys_file = os.path.join(hostdir, 'authorized_keys')
        if authorized is None or read_file(keys_file, absent=OSError) != authorized or _mode(keys_file) != 0o644:
            self.note('updated', f'authorized_keys {name}')
            if not self.check:
                _write(keys_file, authorized, 0o644)

        where = f"({host['netns']} {host['address']}:{host['port']})"
        if pid is not None and listens and not restart:
            self.result['hosts'][name] = self._info(host, pid)
        else:
            if pid is not None:
                if not self.check:
                    self.stop(pid)
                self.note('updated', f'sshd {name} restarted {where}')
            else:
                self.note('updated', f'sshd {name} started {where}')
            new_pid = None if self.check else self.launch(host)
            self.result['hosts'][name] = self._info(host, new_pid)
        self.after[name] = {'address': f"{host['address']}:{host['port']}", 'running': True, 'config': digest(config)}
        return host_pub

    def launch(self, host):
        pidfile = host['pidfile']
        if os.path.lexists(pidfile):
            os.unlink(pidfile)
        self.sys.start(host)
        deadline = time.monotonic() + self.module.params['start_timeout']
        while True:
            pid, proc = self.running(pidfile, host['config'], host['netns'])
            if pid is not None and listening(proc[2], host['address'], host['port']):
                return pid
            if time.monotonic() > deadline:
                log = (read_file(host['log'], absent=OSError) or '').strip().splitlines()[-3:]
                raise LabSshError(f"sshd of {host['name']} did not listen on {host['address']}:{host['port']} in "
                                  f"{host['netns']} within {self.module.params['start_timeout']} s"
                                  + (f" (sshd.log: {' | '.join(log)})" if log else ''))
            self.sys.sleep(0.05)

    @staticmethod
    def _info(host, pid):
        return {'netns': host['netns'], 'address': host['address'], 'port': host['port'], 'pid': pid,
                'pidfile': host['pidfile'], 'log': host['log'], 'config': host['config']}

    # -- absent ---------------------------------------------------------------------------------------------

    def absent(self):
        spec = self.spec
        if not os.path.lexists(spec.ssh_dir):
            return
        if os.path.isdir(spec.ssh_dir) and not os.path.islink(spec.ssh_dir):
            for entry in sorted(os.listdir(spec.ssh_dir)):
                hostdir = os.path.join(spec.ssh_dir, entry)
                if entry != 'cp' and os.path.isdir(hostdir) and not os.path.islink(hostdir):
                    pid, _unused = self.running(os.path.join(hostdir, 'sshd.pid'),
                                                os.path.join(hostdir, 'sshd_config'))
                    self.before[entry] = {'running': pid is not None}
                    if pid is not None:
                        if not self.check:
                            self.stop(pid)
                        self.note('removed', f'sshd {entry} stopped (pid {pid})')
            if not self.check:
                shutil.rmtree(spec.ssh_dir)
        elif not self.check:
            os.unlink(spec.ssh_dir)
        self.note('removed', f'directory {spec.ssh_dir}')
