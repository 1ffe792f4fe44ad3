#!/usr/bin/python
# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one sshd per lab host namespace, so the lab is reached with the standard ssh connection."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_sshd
short_description: One sshd per lab host namespace (the lab over SSH)
version_added: 0.1.0
description:
  - "Makes a netfleet.calico lab reachable exactly as a real fleet is, with the standard
    P(ansible.builtin.ssh#connection) connection and C(become), instead of the P(netfleet.calico_lab.netns#connection)
    connection. Run it on the controller (C(localhost), as root) after M(netfleet.calico_lab.lab_fabric) has
    built the namespaces; C(netfleet.calico_lab.lab_up) does both when the inventory sets C(lab_ssh: true)."
  - "Keys: a controller key C(<state_dir>/ssh/id_ed25519) (the C(ansible_ssh_private_key_file) of the lab), and per
    host an ed25519 host key, generated once with C(ssh-keygen) and kept while the lab lives;
    C(<state_dir>/ssh/known_hosts) lists every host's address with its host key, so the lab's ssh connections check
    host keys strictly."
  - "Per host, in C(<state_dir>/ssh/<host>/): C(sshd_config) (C(ListenAddress) = the host's lab address only,
    public-key authentication only, root only, no PAM), C(authorized_keys) (the controller key), the host key,
    C(sshd.pid) and C(sshd.log) (sshd's own log: C(Accepted publickey for root from ...) per login)."
  - "The daemon runs inside the host's network namespace as C(sshd -f <dir>/sshd_config -E <dir>/sshd.log), entered
    like the netns connection does (C(nsenter --net=/run/netns/NETNS), a mount namespace of its own that keeps mount
    propagation, C(/sys) remounted for the namespace), so a workload namespace a login creates with C(ip netns add)
    is visible to the whole machine and C(/sys/class/net) is the host's. It is started when it is not running (its pid
    file names no live sshd of this config in this namespace, or that sshd does not listen on the address) and
    restarted when its configuration or host key changed; a new configuration is checked with C(sshd -t) first."
  - "Hosts no longer listed have their sshd stopped (by its pid file) and their directory removed. With
    O(state=absent) every sshd of the lab is stopped by its pid file and C(<state_dir>/ssh) removed
    (M(netfleet.calico_lab.lab_fabric) with C(state=absent) stops them too: every daemon with a pid file under the lab's
    state directory)."
  - Creates sshd's privilege-separation directory C(/run/sshd) if it is missing (what the distribution's service does
    at start). Nothing else outside O(state_dir); no address, route or listener in the root namespace.
author: netfleet.calico contributors (!UNKNOWN)
options:
  prefix:
    description: The lab's name prefix (as for M(netfleet.calico_lab.lab_fabric)).
    type: str
    required: true
  state_dir:
    description:
      - The lab's state directory (C(/run/netfleet/<prefix>)); everything this module writes is under
        C(<state_dir>/ssh).
      - Must be absolute and its last component must contain O(prefix).
    type: path
    required: true
  state:
    description: V(present) runs an sshd per host of O(hosts); V(absent) stops them all and removes C(<state_dir>/ssh).
    type: str
    choices: [present, absent]
    default: present
  hosts:
    description: The lab hosts (C(ssh.hosts) of P(netfleet.calico_lab.lab_spec#filter)). Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory hostname (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      netns:
        description: The host's network namespace (must start with C(<prefix>-) and exist).
        type: str
        required: true
      address:
        description: The IPv4 address sshd listens on (the host's lab address, its C(ansible_host)).
        type: str
        required: true
      port:
        description: TCP port.
        type: int
        default: 22
      user:
        description:
          - The one user sshd admits (by the lab's key); it must exist on this machine. The lab's hosts share this
            machine's users, so C(inventories/lab-ssh) logs in as C(netfleet-lab), a system user with C(NOPASSWD)
            sudo that C(scripts/setup) creates, and becomes root with sudo, as a real fleet's deploy user does.
            With V(root) (C(PermitRootLogin prohibit-password)), Ansible skips C(become) (same user).
        type: str
        default: root
  stop_timeout:
    description: Seconds to wait for an sshd to exit after C(SIGTERM) before C(SIGKILL).
    type: int
    default: 10
  start_timeout:
    description: Seconds to wait for a started sshd to write its pid file and listen.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Reports which keys, files and daemons would be created, changed, started or stopped.
  diff_mode:
    support: full
    description: Shows each host's sshd (address, port, running or not, configuration digest) before and after.
notes:
  - Needs root, OpenSSH's C(sshd) and C(ssh-keygen) (Debian C(openssh-server)), C(nsenter) and C(unshare) (util-linux).
  - The lab's hosts share this machine's users, so the lab logs in as root with the lab's key, and C(become) (sudo)
    from root to root needs no password; a real fleet uses its own user and sudo rules (see C(inventories/example)).
seealso:
  - module: netfleet.calico_lab.lab_fabric
  - plugin: ansible.builtin.ssh
    plugin_type: connection
"""

EXAMPLES = r"""
- name: An sshd in every lab host namespace
  netfleet.calico_lab.lab_sshd:
    prefix: nf
    state_dir: /run/netfleet/nf
    hosts:
      - {name: host-a, netns: nf-host-a, address: 192.168.100.100}
      - {name: host-b, netns: nf-host-b, address: 192.168.100.101}

- name: Stop them (by their pid files) and remove the lab's SSH files
  netfleet.calico_lab.lab_sshd:
    prefix: nf
    state_dir: /run/netfleet/nf
    state: absent
"""

RETURN = r"""
created:
  description: Files and keys created (or that would be), one line each.
  returned: always
  type: list
  elements: str
  sample: ["key /run/netfleet/nf/ssh/id_ed25519", "host key host-a", "file /run/netfleet/nf/ssh/known_hosts"]
updated:
  description: Files rewritten and daemons started or restarted, one line each.
  returned: always
  type: list
  elements: str
  sample: ["sshd host-a started (nf-host-a 192.168.100.100:22)", "config host-b"]
removed:
  description: Daemons stopped and directories removed, one line each.
  returned: always
  type: list
  elements: str
  sample: ["sshd host-z stopped (pid 4242)", "directory /run/netfleet/nf/ssh/host-z"]
ssh_dir:
  description: C(<state_dir>/ssh).
  returned: always
  type: str
  sample: /run/netfleet/nf/ssh
private_key:
  description: The controller's private key (C(ansible_ssh_private_key_file)).
  returned: always
  type: str
  sample: /run/netfleet/nf/ssh/id_ed25519
known_hosts:
  description: The lab's known_hosts file (C(-o UserKnownHostsFile=...)).
  returned: always
  type: str
  sample: /run/netfleet/nf/ssh/known_hosts
hosts:
  description: Per host, the running sshd (with O(state=present); C(pid) is null in check mode before a start).
  returned: always
  type: dict
  sample: {host-a: {netns: nf-host-a, address: 192.168.100.100, port: 22, pid: 4242,
                    pidfile: /run/netfleet/nf/ssh/host-a/sshd.pid, log: /run/netfleet/nf/ssh/host-a/sshd.log}}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico_lab.plugins.module_utils.lab_ssh import Lab, LabSshError, Spec, System


def run(module, system):
    spec = Spec(module.params)
    lab = Lab(module, system, spec)
    if module.params['state'] == 'present':
        lab.present()
    else:
        lab.absent()
    lab.result['diff'] = {'before': lab.before, 'after': lab.after}
    return lab.result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type='str', required=True),
            state_dir=dict(type='path', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            hosts=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                netns=dict(type='str', required=True),
                address=dict(type='str', required=True),
                port=dict(type='int', default=22),
                user=dict(type='str', default='root'),
            )),
            stop_timeout=dict(type='int', default=10),
            start_timeout=dict(type='int', default=10),
        ),
        supports_check_mode=True,
    )
    try:
        if os.geteuid() != 0:
            raise LabSshError('lab_sshd needs root (it starts sshd inside network namespaces); run it as root')
        result = run(module, System(module))
    except LabSshError as ex:
        module.fail_json(msg=str(ex))
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
