# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run tasks inside a named network namespace of the controller machine."""

from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace on the controller
description:
  - Executes tasks inside a named Linux network namespace (C(ip netns add NAME)) of the machine that runs
    Ansible. The netfleet.calico lab uses it to treat every namespace as one host of the fleet.
  - Every command runs as C(nsenter --net=/run/netns/NAME unshare --mount --propagation unchanged /bin/sh -c
    COMMAND), built as an argument list (no shell string ever contains the namespace name);
    C(ansible_shell_executable) replaces C(/bin/sh).
  - Like C(ip netns exec) it remounts C(/sys) (privately) for the namespace, so C(/sys/class/net) and
    C(/proc/sys/net) show the namespace's interfaces and settings. Unlike C(ip netns exec) it keeps mount
    propagation, so a namespace a task creates with C(ip netns add) (a workload's) is visible to every
    later task and to the machine.
  - The namespace shares the controller's filesystem, users and processes; only the network stack
    differs. File transfer (M(ansible.builtin.copy), M(ansible.builtin.template), M(ansible.builtin.fetch))
    is therefore a plain local copy.
  - Modeled on ansible-core's P(ansible.builtin.local#connection) plugin.
author: netfleet.calico developers (!UNKNOWN)
version_added: 0.1.0
options:
  netns:
    description:
      - Name of the network namespace to run in, as listed by C(ip netns list) (a file in C(/run/netns)).
      - When unset, the namespace is O(netns_prefix) followed by the host's address (C(ansible_host), else the
        inventory hostname).
    type: string
    vars:
      - name: ansible_netns
  netns_prefix:
    description:
      - Prefix of the namespace name when O(netns) is unset, for example C(nf-) for the lab's C(nf-host-a).
      - Unlike an C(ansible_netns) built from C(inventory_hostname), this follows C(delegate_to) to another lab host.
        Ansible templates a delegated host's variables with the B(original) host's C(inventory_hostname), so
        C(ansible_netns="{{ lab_prefix }}-{{ inventory_hostname }}") would run a delegated task in the original
        host's namespace; the host address used here is the delegated host's.
    type: string
    default: ''
    vars:
      - name: ansible_netns_prefix
extends_documentation_fragment:
  - connection_pipelining
notes:
  - Needs root on the controller (entering a namespace and remounting C(/sys)), and C(nsenter) and
    C(unshare) from util-linux; a clear
    error says so otherwise.
  - >-
    If the namespace does not exist the host is reported unreachable with
    C(network namespace 'NAME' does not exist: run netfleet.calico_lab.lab_up first).
  - The remote user is ignored; tasks run as the user running Ansible (root).
  - Privilege escalation (C(become)) is passed through when it needs no password (for example
    C(sudo) as root); become methods that wait for a password prompt are not supported.
  - Enable pipelining (C(ANSIBLE_PIPELINING=true), the lab's C(ansible.cfg) does) to run modules without
    temporary files.
seealso:
  - name: ip-netns(8)
    description: The iproute2 command this plugin wraps.
    link: https://man7.org/linux/man-pages/man8/ip-netns.8.html
"""

EXAMPLES = r"""
# inventory: every lab host is a namespace named <prefix>-<host>
all:
  vars:
    ansible_connection: netfleet.calico_lab.netns
    ansible_netns: "nf-{{ inventory_hostname }}"
  hosts:
    host-a:
    host-b:

# ad hoc:
#   ansible -i inventories/lab host-a -m ansible.builtin.command -a 'ip -j addr'
#   ansible -c netfleet.calico_lab.netns -i nf-host-a, all -m ansible.builtin.ping
"""

import os
import re
import shutil
import subprocess
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display
from ansible.utils.path import unfrackpath

display = Display()

# Where iproute2 keeps the bind mounts of named namespaces (NETNS_RUN_DIR).
NETNS_RUN_DIR = '/run/netns'
# A namespace name is a file name in NETNS_RUN_DIR; refuse anything that could escape it or read as an option.
_NETNS_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.@:+=-]{0,254}$')
_IP_CANDIDATES = ('/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip')
# Run inside the new mount namespace: make /sys private there (never propagate back), mount the
# network namespace's sysfs on it, then run the task's command ($1 -c $2).
_SYSFS_WRAPPER = 'mount --make-rprivate /sys && mount -t sysfs sysfs /sys && exec "$1" -c "$2"'


def find_ip() -> str:
    """Absolute path of the iproute2 `ip` binary."""
    found = shutil.which('ip')
    if found:
        return found
    for candidate in _IP_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise AnsibleConnectionFailure("netns connection: the iproute2 'ip' command was not found (install iproute2)")


class Connection(ConnectionBase):
    """Run commands in a network namespace (nsenter + a mount namespace with its own /sys)."""

    transport = 'netfleet.calico_lab.netns'
    has_pipelining = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.cwd: str | None = None
        self._netns: str | None = None
        self._ip: str | None = None
        self._nsenter: str | None = None
        self._unshare: str | None = None
        self.default_user = 'root'

    # -- helpers -----------------------------------------------------------------------------------------

    def _namespace(self) -> str:
        name = self.get_option('netns') or f"{self.get_option('netns_prefix') or ''}{self._play_context.remote_addr}"
        if not name:
            raise AnsibleConnectionFailure('netns connection: no namespace given (set ansible_netns)')
        name = to_text(name)
        if not _NETNS_NAME.match(name) or name in ('.', '..'):
            raise AnsibleConnectionFailure(f'netns connection: invalid network namespace name {name!r}')
        return name

    def _argv(self, cmd: str) -> list[str]:
        """nsenter into the network namespace, then a new mount namespace that keeps mount propagation
        (so a namespace the task creates with `ip netns add` appears in /run/netns for everyone, which
        `ip netns exec` would hide: it makes every mount a slave) with a private /sys remounted for this
        network namespace (so /sys/class/net is the namespace's, as under `ip netns exec`)."""
        executable = self._play_context.executable or '/bin/sh'
        return [self._nsenter, '--net=' + os.path.join(NETNS_RUN_DIR, self._netns), '--',
                self._unshare, '--mount', '--propagation', 'unchanged', '--',
                '/bin/sh', '-c', _SYSFS_WRAPPER, 'netns-exec', executable, cmd]

    # -- connection API ----------------------------------------------------------------------------------

    def _connect(self) -> Connection:
        if self._connected:
            return self
        netns = self._namespace()
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure(
                f"netns connection: entering network namespace '{netns}' needs root on the controller "
                f'(running as uid {os.geteuid()}); run ansible as root')
        if not os.path.exists(os.path.join(NETNS_RUN_DIR, netns)):
            raise AnsibleConnectionFailure(
                f"network namespace '{netns}' does not exist: run netfleet.calico_lab.lab_up first")
        self._ip = find_ip()
        self._nsenter = shutil.which('nsenter') or '/usr/bin/nsenter'
        self._unshare = shutil.which('unshare') or '/usr/bin/unshare'
        self._netns = netns
        # the user running Ansible is the user inside the namespace
        self._play_context.remote_user = self.default_user
        display.vvv(f'ESTABLISH NETNS CONNECTION TO {netns}', host=self._play_context.remote_addr)
        self._connected = True
        return self

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        """Run a command in the namespace; in_data (pipelining) goes to stdin."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)

        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleConnectionFailure(
                f"netns connection: become method '{self.become.name}' waits for a password prompt, which this "
                'connection does not support; the lab runs as root, so drop become or use one that needs no password')

        argv = self._argv(to_text(cmd))
        display.vvv(f'EXEC {argv!r}', host=self._play_context.remote_addr)
        try:
            proc = subprocess.Popen(argv, cwd=self.cwd, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as ex:
            raise AnsibleConnectionFailure(f'netns connection: failed to run {argv[0]}: {ex}') from ex
        stdout, stderr = proc.communicate(in_data)
        if proc.returncode != 0 and not os.path.exists(os.path.join(NETNS_RUN_DIR, self._netns)):
            # the namespace disappeared under us (lab_down ran concurrently)
            raise AnsibleConnectionFailure(
                f"network namespace '{self._netns}' does not exist: run netfleet.calico_lab.lab_up first")
        return proc.returncode, stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        """Copy a file: the namespace shares the controller's filesystem."""
        super().put_file(in_path, out_path)

        in_path = unfrackpath(in_path, basedir=self.cwd)
        out_path = unfrackpath(out_path, basedir=self.cwd)
        display.vvv(f'PUT {in_path} TO {out_path}', host=self._play_context.remote_addr)
        if not os.path.exists(to_bytes(in_path, errors='surrogate_or_strict')):
            raise AnsibleFileNotFound(f'file or module does not exist: {to_native(in_path)}')
        try:
            shutil.copyfile(to_bytes(in_path, errors='surrogate_or_strict'),
                            to_bytes(out_path, errors='surrogate_or_strict'))
        except shutil.SameFileError as ex:
            raise AnsibleError(f'failed to copy: {in_path} and {out_path} are the same') from ex
        except OSError as ex:
            raise AnsibleError(f'failed to transfer file to {out_path!r}: {ex}') from ex

    def fetch_file(self, in_path: str, out_path: str) -> None:
        """Copy a file back: same filesystem, so the same local copy."""
        super().fetch_file(in_path, out_path)
        display.vvv(f'FETCH {in_path} TO {out_path}', host=self._play_context.remote_addr)
        self.put_file(in_path, out_path)

    def reset(self) -> None:
        """Nothing persistent to reset."""
        self.close()

    def close(self) -> None:
        """Nothing to tear down: every command enters the namespace on its own."""
        self._connected = False
