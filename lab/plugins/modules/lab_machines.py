#!/usr/bin/python
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot one systemd machine (systemd-nspawn) per lab host, inside the host's lab network namespace."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_machines
short_description: Lab hosts as Debian machines booted with systemd (systemd-nspawn)
version_added: 0.1.0
description:
  - "Turns the hosts of a netfleet.calico lab into real Debian systems: each host's network namespace (made by
    M(netfleet.calico_lab.lab_fabric)) gets a machine booted by C(systemd-nspawn) with systemd as PID 1 and a
    filesystem of its own, reached over SSH as a non-root user with C(sudo), that installs packages with apt from
    the lab's local repository, runs BIRD as C(bird.service) and reboots. C(netfleet.calico_lab.lab_up) runs it when the
    inventory sets C(lab_machines: true) (C(inventories/lab-machines))."
  - "Base image: a C(debootstrap --variant=minbase) of Debian O(suite) with systemd, OpenSSH, sudo, Python and
    iproute2 plus the login user O(user) (C(NOPASSWD) sudo), built once under O(cache_dir) and kept there (keyed by
    suite, mirror, user and package list). Every machine mounts it read-only under an overlay upper directory of its
    own, C(<state_dir>/machines/<host>/upper)."
  - "Local apt repository: O(repo_packages) and their dependencies, fetched once with this machine's
    C(apt-get download), indexed with C(dpkg-scanpackages), cached under O(cache_dir) and bind-mounted read-only into
    every machine as its only apt source (the machines have no route to an archive)."
  - "Per machine: host name, machine id, an ed25519 host key (listed in C(<state_dir>/ssh/known_hosts)), the lab's
    controller key (C(<state_dir>/ssh/id_ed25519)) in the login user's C(authorized_keys), and its network
    configuration (the lab legs' addresses and routes from the O(hosts) C(network) entries) as a unit that runs at
    every boot before C(network.target)."
  - "A supervisor (C(<state_dir>/machines/<host>/supervisor.sh), pid file C(supervisor.pid)) mounts the overlay in a
    private mount namespace, moves itself into a cgroup of its own and runs C(systemd-nspawn -b --register=no
    --keep-unit --network-namespace-path=...). When the machine reboots, the supervisor renews the host's network
    namespace (only the lab legs move over) before it boots the machine again: a reboot loses routes, iptables
    rules and sysctls as a real one does."
  - "A machine whose files changed is powered off and booted again. Hosts no longer listed and, with
    O(state=absent), all machines are powered off (C(SIGTERM) to C(systemd-nspawn), which halts the machine; after
    O(stop_timeout) C(SIGKILL) by pid file) and their directories removed. The cache is kept."
author: netfleet.calico contributors (!UNKNOWN)
options:
  prefix:
    description: The lab's name prefix (as for M(netfleet.calico_lab.lab_fabric)).
    type: str
    required: true
  state_dir:
    description: The lab's state directory (it must exist; M(netfleet.calico_lab.lab_fabric) makes it).
    type: path
    required: true
  state:
    description: V(present) boots a machine per host of O(hosts); V(absent) powers every machine of the lab off.
    type: str
    choices: [present, absent]
    default: present
  hosts:
    description: The lab hosts (C(machines.hosts) of P(netfleet.calico_lab.lab_spec#filter)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory hostname (the machine's host name).
        type: str
        required: true
      netns:
        description: The host's lab network namespace (must start with C(<prefix>-) and exist).
        type: str
        required: true
  networks:
    description:
      - Per host name, its lab addresses and routes, as M(netfleet.calico_lab.lab_fabric) returns them in C(hosts)
        (C(address), C(gateway), and for a reflector C(spine_address) and C(routes)). Every host of O(hosts) needs one,
        but a spine router of O(spine).
    type: dict
    default: {}
  spine:
    description:
      - The spine as M(netfleet.calico_lab.lab_fabric) returns it in C(spine). A host of O(hosts) that is one of its
        C(routers) (the inventory's C(calico_spines)) gets its spine leg (C(eth1)) and address only.
    type: dict
  user:
    description: The login user of every machine (C(NOPASSWD) sudo); the inventory's C(ansible_user).
    type: str
    default: netfleet
  suite:
    description: Debian suite of the base image.
    type: str
    default: bookworm
  mirror:
    description: Debian mirror that C(debootstrap) fetches the base image from.
    type: str
    default: http://deb.debian.org/debian
  cache_dir:
    description: Where the base image and the apt repository are kept between labs and runs.
    type: path
    default: /var/cache/netfleet-lab
  repo_packages:
    description: Packages (with their dependencies) that the machines can install from the lab's repository.
    type: list
    elements: str
    default: [bird2, iproute2, iptables]
  boot_timeout:
    description: Seconds to wait for a booted machine to reach C(running) (C(systemctl is-system-running)).
    type: int
    default: 90
  stop_timeout:
    description: Seconds to wait for a machine to power off before C(SIGKILL).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description: Reports which images, machines and files would be built, booted or removed.
  diff_mode:
    support: none
    description: Reports changes as lists (C(created), C(updated), C(removed)).
notes:
  - Needs root, C(debootstrap), C(systemd-nspawn) (Debian C(systemd-container)), C(dpkg-scanpackages) (C(dpkg-dev)),
    C(ssh-keygen), C(unshare) and C(ip); the first run needs Debian's archive (the base image and the packages).
  - Each machine costs about 20 MB of memory; booting one takes about a second.
seealso:
  - module: netfleet.calico_lab.lab_fabric
"""

EXAMPLES = r"""
- name: A systemd machine per lab host
  netfleet.calico_lab.lab_machines:
    prefix: nf
    state_dir: /run/netfleet/nf
    hosts:
      - {name: host-a, netns: nf-host-a}
    networks:
      host-a: {address: 192.168.100.100/24, gateway: 192.168.100.1}

- name: Power every machine of the lab off and remove their directories
  netfleet.calico_lab.lab_machines:
    prefix: nf
    state_dir: /run/netfleet/nf
    state: absent
"""

RETURN = r"""
hosts:
  description: Per booted machine, its leader (PID 1 of the machine, as seen from this machine) and files.
  returned: success
  type: dict
  sample: {host-a: {leader: 4242, netns: nf-host-a, console: /run/netfleet/nf/machines/host-a/console.log}}
base:
  description: The base image's directory.
  returned: when state is present
  type: str
repo:
  description: The local apt repository's directory.
  returned: when state is present
  type: str
created:
  description: What was built or booted.
  returned: always
  type: list
  elements: str
updated:
  description: Machines booted again because their files changed.
  returned: always
  type: list
  elements: str
removed:
  description: Machines powered off and removed.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine as lm
from ansible_collections.netfleet.calico_lab.plugins.module_utils.machine_lab import Lab


def main():
    module = AnsibleModule(
        argument_spec={
            'prefix': {'type': 'str', 'required': True},
            'state_dir': {'type': 'path', 'required': True},
            'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
            'hosts': {'type': 'list', 'elements': 'dict', 'default': [], 'options': {
                'name': {'type': 'str', 'required': True},
                'netns': {'type': 'str', 'required': True},
            }},
            'networks': {'type': 'dict', 'default': {}},
            'spine': {'type': 'dict'},
            'user': {'type': 'str', 'default': 'netfleet'},
            'suite': {'type': 'str', 'default': 'bookworm'},
            'mirror': {'type': 'str', 'default': 'http://deb.debian.org/debian'},
            'cache_dir': {'type': 'path', 'default': '/var/cache/netfleet-lab'},
            'repo_packages': {'type': 'list', 'elements': 'str', 'default': ['bird2', 'iproute2', 'iptables']},
            'boot_timeout': {'type': 'int', 'default': 90},
            'stop_timeout': {'type': 'int', 'default': 30},
        },
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg='lab_machines needs root (mounts, network namespaces, systemd-nspawn)')
    lab = Lab(module)
    try:
        lab.validate()
        if module.params['state'] == 'absent':
            lab.absent()
        else:
            lab.present()
    except (lm.MachineError, OSError) as exc:
        module.fail_json(msg=f'lab_machines: {exc}', **lab.result)
    module.exit_json(**lab.result)


if __name__ == '__main__':
    main()
