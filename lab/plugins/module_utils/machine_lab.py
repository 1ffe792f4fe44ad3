# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The machine lab while it runs (module lab_machines): one machine's supervisor, nspawn and leader processes and
how it stops, and the lab's convergence: base image and repository, keys, each machine's files, (re)boots and the
wait until systemd is up. The pieces that need no running machine are in lab_machine."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine as lm
from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_spec import NAME_RE

MACHINES = 'machines'


def _read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _read_int(path):
    text = _read_text(path)
    return int(text) if text and text.isascii() and text.isdigit() else None


def _remove_cgroup(path):
    """Remove a machine's cgroup and what its systemd left below it (empty cgroups, deepest first), then the
    lab's parent cgroup if no machine is left in it."""
    if not os.path.isdir(path):
        return
    for here, _dirs, _files in os.walk(path, topdown=False):
        try:
            os.rmdir(here)
        except OSError:
            return
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _write(path, text, mode, uid=0, gid=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Machine:
    """One lab machine: its directory, supervisor and leader."""

    def __init__(self, module, spec_dir, name, prefix):
        self.module = module
        self.name = name
        self.machine_name = f'{prefix}-{name}'
        self.dir = os.path.join(spec_dir, name)
        self.script = os.path.join(self.dir, 'supervisor.sh')
        self.pidfile = os.path.join(self.dir, 'supervisor.pid')
        self.nspawn_pidfile = os.path.join(self.dir, 'nspawn.pid')
        self.console = os.path.join(self.dir, 'console.log')
        self.digest_file = os.path.join(self.dir, 'files.digest')

    def supervisor(self):
        """The live supervisor's pid (its pid file names a process running this machine's script), or None."""
        pid = _read_int(self.pidfile)
        return pid if pid and self.script in lm.cmdline(pid) else None

    def nspawn(self):
        return lm.nspawn_pid(self.dir)

    def leader(self):
        return lm.leader(self.dir)

    def system_state(self):
        leader = self.leader()
        if leader is None:
            return None
        _unused, out, _unused = self.module.run_command(['nsenter', '-t', str(leader), '-m', '-u', '-i', '-n', '-p',
                                                         'systemctl', 'is-system-running'])
        return out.strip() or None

    def stop(self, timeout):
        """Power the machine off (nspawn halts it on SIGTERM); SIGKILL what is left after timeout."""
        sup, nspawn = self.supervisor(), self.nspawn()
        if nspawn:
            os.kill(nspawn, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while sup and self.supervisor() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.supervisor():
            for pid in (self.leader(), self.nspawn(), self.supervisor()):
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            while self.supervisor() and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        for path in (self.pidfile, self.nspawn_pidfile):
            if os.path.lexists(path):
                os.unlink(path)
        for cg in lm.CGROUP_ROOTS:
            _remove_cgroup(os.path.join(cg, 'netfleet-lab', self.machine_name))


class Lab:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.p = p
        self.check = module.check_mode
        self.mdir = os.path.join(p['state_dir'], MACHINES)
        self.result = {'changed': False, 'hosts': {}, 'created': [], 'updated': [], 'removed': []}

    def note(self, kind, text):
        self.result[kind].append(text)
        self.result['changed'] = True

    def validate(self):
        p = self.p
        if not NAME_RE.match(p['prefix']):
            raise lm.MachineError(f"prefix {p['prefix']!r} must be letters, digits, '.', '_' or '-'")
        if not os.path.isabs(p['state_dir']) or p['prefix'] not in os.path.basename(p['state_dir'].rstrip('/')):
            raise lm.MachineError(f"state_dir {p['state_dir']} must be absolute and its last part name the prefix "
                                  f"{p['prefix']!r}")
        if not lm.USER_RE.match(p['user']):
            raise lm.MachineError(f"user {p['user']!r} is not a user name")
        seen = set()
        routers = (p['spine'] or {}).get('routers') or {}
        for host in p['hosts']:
            name, netns = host['name'], host['netns']
            if not NAME_RE.match(name) or name in seen:
                raise lm.MachineError(f'host {name!r}: not a host name, or listed twice')
            seen.add(name)
            if not NAME_RE.match(netns) or not netns.startswith(p['prefix'] + '-'):
                raise lm.MachineError(f"host {name!r}: netns {netns!r} must be a name starting with '{p['prefix']}-'")
            if not os.path.exists(os.path.join('/run/netns', netns)):
                raise lm.MachineError(f'host {name!r}: network namespace {netns} does not exist: run '
                                      'netfleet.calico_lab.lab_fabric (netfleet.calico_lab.lab_up) first')
            net = p['networks'].get(name)
            if net is None and name in routers:  # a spine router: its spine leg only
                net = {'spine_address': routers[name].get('address')}
            host['network'] = lm.check_network(name, net)

    def machines_on_disk(self):
        if not os.path.isdir(self.mdir):
            return []
        return sorted(e for e in os.listdir(self.mdir) if os.path.isdir(os.path.join(self.mdir, e)))

    def remove(self, name):
        machine = Machine(self.module, self.mdir, name, self.p['prefix'])
        self.note('removed', f'machine {name}')
        if not self.check:
            machine.stop(self.p['stop_timeout'])
            shutil.rmtree(machine.dir)

    def absent(self):
        for name in self.machines_on_disk():
            self.remove(name)
        if os.path.isdir(self.mdir) and not self.check:
            shutil.rmtree(self.mdir)

    def keygen(self, path, comment):
        if os.path.exists(path) and os.path.exists(path + '.pub'):
            return False
        if not self.check:
            for p in (path, path + '.pub'):
                if os.path.lexists(p):
                    os.unlink(p)
            lm.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path])
        return True

    def present(self):
        p = self.p
        if not os.path.isdir(p['state_dir']):
            raise lm.MachineError(f"{p['state_dir']} does not exist: run netfleet.calico_lab.lab_fabric "
                                  '(netfleet.calico_lab.lab_up) first')
        base = lm.base_path(p['cache_dir'], p['suite'], p['mirror'], p['user'])
        repo = lm.repo_path(p['cache_dir'], p['repo_packages'])
        if self.check:
            for what, path in (('base image', base), ('apt repository', repo)):
                if not os.path.exists(os.path.join(path, lm.READY)):
                    self.note('created', f'{what} {path}')
        else:
            base, built = lm.build_base(p['cache_dir'], p['suite'], p['mirror'], p['user'])
            if built:
                self.note('created', f'base image {base}')
            repo, built = lm.build_repo(p['cache_dir'], p['repo_packages'])
            if built:
                self.note('created', f'apt repository {repo}')
        self.result.update(base=base, repo=repo)

        ssh_dir = os.path.join(p['state_dir'], 'ssh')
        client_key = os.path.join(ssh_dir, 'id_ed25519')
        if not self.check:
            os.makedirs(os.path.join(ssh_dir, 'cp'), mode=0o700, exist_ok=True)
            os.chmod(ssh_dir, 0o755)
        if self.keygen(client_key, f"netfleet-lab-{p['prefix']}"):
            self.note('created', f'key {client_key}')

        wanted = {h['name']: h for h in p['hosts']}
        for name in self.machines_on_disk():
            if name not in wanted:
                self.remove(name)
        if not self.check:
            os.makedirs(self.mdir, mode=0o755, exist_ok=True)
        booting, known = [], []
        for name, host in wanted.items():
            machine = Machine(self.module, self.mdir, name, self.p['prefix'])
            if self.converge(machine, host, base, repo, client_key):
                booting.append(machine)
            key = os.path.join(machine.dir, 'ssh_host_ed25519_key.pub')
            if os.path.exists(key):
                with open(key) as f:
                    keytext = ' '.join(f.read().split()[:2])
                for address in (host['network'].get('address'), host['network'].get('spine_address')):
                    if address:
                        known.append(f"{address.split('/')[0]} {keytext}\n")
        if not self.check:
            _write(os.path.join(ssh_dir, 'known_hosts'), ''.join(known), 0o644)
            for machine in booting:
                self.wait_booted(machine)
        for name, host in wanted.items():
            machine = Machine(self.module, self.mdir, name, self.p['prefix'])
            self.result['hosts'][name] = {'leader': machine.leader(), 'netns': host['netns'],
                                          'console': machine.console}

    def converge(self, machine, host, base, repo, client_key):
        """Write the machine's files and (re)boot it when they changed or it is not running; True if booting."""
        p, name = self.p, machine.name
        net = host['network']
        script = lm.supervisor_script(name, machine.machine_name, host['netns'], machine.dir, base, repo,
                                      lm.legs(net))
        with open(client_key + '.pub') as f:
            authorized = f.read().strip()
        want = lm.digest([script, net, p['user'], authorized])
        running = machine.supervisor() is not None
        if running and _read_text(machine.digest_file) == want:
            return False
        self.note('updated' if running else 'created', f'machine {name} ({host["netns"]})')
        if self.check:
            return False
        if running:
            machine.stop(p['stop_timeout'])
        base_file = os.path.join(machine.dir, 'base')
        if _read_text(base_file) not in (None, base):
            # another base image: what the old one's upper directory holds (dpkg's database, ...) would not match
            for sub in ('upper', 'work'):
                shutil.rmtree(os.path.join(machine.dir, sub), ignore_errors=True)
        for sub in ('upper', 'work', 'root'):
            os.makedirs(os.path.join(machine.dir, sub), mode=0o755, exist_ok=True)
        _write(base_file, base, 0o644)
        host_key = os.path.join(machine.dir, 'ssh_host_ed25519_key')
        self.keygen(host_key, f"{p['prefix']}-{name}")
        id_file = os.path.join(machine.dir, 'machine-id')
        if not os.path.exists(id_file):
            _write(id_file, uuid.uuid4().hex + '\n', 0o644)
        with open(id_file) as f:
            machine_id = f.read().strip()
        files = lm.machine_files(name, net, lm.login_ids(base, p['user']), authorized, machine_id)
        for suffix, mode in (('', 0o600), ('.pub', 0o644)):
            with open(host_key + suffix) as f:
                files['/etc/ssh/ssh_host_ed25519_key' + suffix] = (f.read(), mode, 0, 0)
        upper = os.path.join(machine.dir, 'upper')
        for path, (text, mode, uid, gid) in files.items():
            _write(upper + path, text, mode, uid, gid)
        login = lm.login_ids(base, p['user'])
        # the upper directory's copies of the home and .ssh hide the base's: the login user owns both (Ansible
        # makes its ~/.ansible/tmp there for every file it copies)
        home = upper + f"/home/{p['user']}"
        for path, mode in ((home, 0o755), (home + '/.ssh', 0o700)):
            os.chown(path, login[1], login[2])
            os.chmod(path, mode)
        wants = upper + '/etc/systemd/system/multi-user.target.wants'
        os.makedirs(wants, exist_ok=True)
        link = os.path.join(wants, lm.NETWORK_UNIT)
        if not os.path.lexists(link):
            os.symlink('/etc/systemd/system/' + lm.NETWORK_UNIT, link)
        _write(machine.script, script, 0o755)
        _write(machine.digest_file, want + '\n', 0o644)
        if os.path.lexists(machine.pidfile):
            os.unlink(machine.pidfile)
        # detached (setsid -f: a session of its own, this module does not wait for it); the script writes its pid
        # file first thing, and its output goes to the console log, never to this module's pipes
        rc, out, err = self.module.run_command(['setsid', '-f', '/bin/sh', '-c', 'exec "$0" >>"$1" 2>&1 </dev/null',
                                                machine.script, machine.console])
        if rc != 0:
            raise lm.MachineError(f'starting machine {name} failed: {(err or out).strip()}')
        return True

    def wait_booted(self, machine):
        deadline = time.monotonic() + self.p['boot_timeout']
        state, started = None, time.monotonic()
        while time.monotonic() < deadline:
            # the detached supervisor writes its pid file within moments; without one after that, it ended
            if machine.supervisor() is None and time.monotonic() - started > 5:
                break
            state = machine.system_state()
            if state in ('running', 'degraded'):
                return
            time.sleep(0.2)
        tail = ''
        try:
            with open(machine.console, errors='replace') as f:
                tail = ' | '.join(line.strip() for line in f.read().splitlines()[-4:])
        except OSError:
            pass
        raise lm.MachineError(f'machine {machine.name} did not boot within {self.p["boot_timeout"]} s (state '
                              f'{state or "none"}; {machine.console}: {tail})')
