#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_cni
short_description: Install the netfleet-calico CNI plugin, its networks and its policy state on a host
version_added: 0.1.0
description:
  - Installs the CNI plugin C(netfleet-calico), the per-host agent that gives every container a runtime starts
    (podman, containerd, CRI-O, kubelet) a C(/32) behind a C(cali) veth with proxy-ARP for C(169.254.1.1), an address
    from this host's block, and the policy chains and ipsets its labels select, and removes them when the container
    goes.
  - Writes the plugin's code (copied from the collection's module_utils, so plugin and converge are one version),
    its executable in O(bin_dir), this host's plan to O(config_path), and one conflist per container network in
    O(conf_dir) (C(10-netfleet-<network>.conflist)); every file is replaced atomically and only when it differs.
  - Then, holding the plugin's store lock, converges the plugin's C(cali-cni-*) chains and C(cali-s-*) ipsets to the
    new plan for the containers already attached, so policy changes reach running containers. Containers keep
    their addresses and endpoints.
  - With O(state=absent), removes the files and the chains and ipsets; refuses while containers are attached.
author:
  - netfleet.calico developers (!UNKNOWN)
options:
  state:
    description: Whether the plugin is installed.
    type: str
    choices: [present, absent]
    default: present
  plan:
    description:
      - This host's CNI plan from the C(netfleet.calico.fabric) filter (C(hosts[<host>].cni)) - C(networks) (name to
        C(range) and C(labels)), C(reserved) (addresses of the static workloads), C(block) and C(policy) (policies
        with canonical selectors, ipsets with their fleet-wide members).
      - On a dual-stack fleet also each network's C(range6) and C(reserved6) (the static workloads' IPv6 addresses),
        so that containers get an IPv6 address too; the plugin then writes its ip6tables chains and the ipsets' IPv6
        twins (C(members6)).
    type: dict
  chains:
    description:
      - Whether the host has the C(cali-*) chain hierarchy (M(netfleet.calico.calico_chains) with
        O(netfleet.calico.calico_chains#module:cni)); without it the plugin writes no chains.
    type: bool
    default: true
  backend:
    description: The iptables backend of the host's C(cali-*) chains (what M(netfleet.calico.calico_chains) returned).
    type: str
    choices: [nft, legacy]
    default: nft
  mtu:
    description:
      - MTU of container veths (the converge's RV(netfleet.calico.calico_node_state#module:workload_mtu)); null keeps
        the kernel default.
    type: int
  protocol:
    description: Route protocol of the containers' host routes (the converge's, Calico's 80).
    type: str
    default: '80'
  cni_version:
    description: C(cniVersion) of the conflists (podman 4 cannot read 1.1.0 results; use 1.0.0 there).
    type: str
    choices: [0.4.0, 1.0.0, 1.1.0]
    default: 1.0.0
  bin_dir:
    description: Directory of CNI plugin executables the runtime searches.
    type: path
    default: /opt/cni/bin
  conf_dir:
    description: Directory of network configurations the runtime reads.
    type: path
    default: /etc/cni/net.d
  config_path:
    description: This host's plan, read by the plugin on every call.
    type: path
    default: /etc/netfleet-calico/cni.json
  data_dir:
    description: The plugin's store (lock, one record per attachment, IPAM state).
    type: path
    default: /var/lib/netfleet-calico/cni
  lib_dir:
    description: Where the plugin's Python code is installed.
    type: path
    default: /usr/lib/netfleet-calico
  log_file:
    description: One line per plugin call (command, container, duration, error).
    type: path
    default: /var/log/netfleet-calico-cni.log
  python:
    description: Interpreter of the plugin and its agent (standard library only; started with C(-I -S)).
    type: path
    default: /usr/bin/python3
  agent:
    description:
      - Keep the plugin's resident agent running. The executable in O(bin_dir) is then a few lines of C(sh) that
        hand each call to the agent with C(nc -U) (package C(netcat-openbsd)); the agent serves the calls that
        arrive together in one batch (one store lock, one C(iptables-restore), endpoints over netlink), which
        is what keeps ADD fast while a runtime starts many containers at once.
      - While no agent answers (or with V(false)) the executable runs the plugin in-process, one interpreter
        per call.
      - The agent is restarted when the plugin's code changes, so it always runs the installed version.
    type: bool
    default: true
    version_added: 0.1.0
  agent_socket:
    description: Unix socket of the agent (mode 0600; only root connects).
    type: path
    default: /run/netfleet-calico/agent.sock
    version_added: 0.1.0
  agent_pidfile:
    description: Pid file of the agent with O(service_manager=pidfile).
    type: path
    default: /run/netfleet-calico/agent.pid
    version_added: 0.1.0
  service_manager:
    description:
      - How the agent is kept running - V(systemd) (unit C(netfleet-calico-agent.service) in O(unit_dir), enabled,
        restarted by systemd if it exits) or V(pidfile) (started detached, found by O(agent_pidfile); hosts with no
        init of their own, such as the lab's).
    type: str
    choices: [systemd, pidfile]
    default: systemd
    version_added: 0.1.0
  unit_dir:
    description: Where the agent's systemd unit is written.
    type: path
    default: /etc/systemd/system
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reports the files, chains and ipsets that would change.
  diff_mode:
    support: full
    description: The files (the plugin's code by size), then the plugin's chains and ipsets.
  platform:
    support: full
    platforms: posix
    description: Linux with iproute2, iptables and ipset; run as root.
seealso:
  - module: netfleet.calico.calico_chains
  - module: netfleet.calico.calico_node_state
  - name: CNI specification
    description: The container network interface the plugin implements (1.1; results for 0.3.0 to 1.0.0 too).
    link: https://www.cni.dev/docs/spec/
"""

EXAMPLES = r"""
- name: Install the CNI plugin with this host's plan
  netfleet.calico.calico_cni:
    plan: "{{ calico_fabric.hosts[inventory_hostname].cni }}"
    backend: "{{ chains_result.backend }}"
    mtu: "{{ converge_result.workload_mtu }}"

- name: Remove it (fails while containers are attached)
  netfleet.calico.calico_cni:
    state: absent
"""

RETURN = r"""
networks:
  description: Container networks installed (one conflist each).
  returned: always
  type: list
  elements: str
  sample: [db, web]
files_changed:
  description: Files written or removed (or that would be).
  returned: always
  type: list
  elements: str
attachments:
  description: Containers attached through the plugin on this host.
  returned: always
  type: int
  sample: 3
sets:
  description: The plugin's ipsets (one per peer selector).
  returned: always
  type: list
  elements: str
  sample: [cali-s-7d1f3a0c9e2b4d61]
chains:
  description: The plugin's chains.
  returned: always
  type: list
  elements: str
  sample: [cali-cni-from-dispatch, cali-cni-to-dispatch]
commands:
  description: The C(ipset restore) and C(iptables-restore) input applied (or that would be), and the ipsets destroyed.
  returned: always
  type: dict
agent:
  description:
    - The agent - C(manager), C(socket), C(running), C(pid) (pid file manager), C(unit) (systemd) and C(action)
      (V(started), V(restarted), V(installed), V(stopped), V(removed) or null).
  returned: always
  type: dict
  sample: {manager: pidfile, running: true, pid: 4242, action: null, socket: /run/netfleet-calico/agent.sock}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import (
    cni_install,
    cni_policy,
    cni_service,
    cni_store,
)
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='present', choices=['present', 'absent']),
            plan=dict(type='dict'),
            chains=dict(type='bool', default=True),
            backend=dict(type='str', default='nft', choices=['nft', 'legacy']),
            mtu=dict(type='int'),
            protocol=dict(type='str', default='80'),
            cni_version=dict(type='str', default='1.0.0', choices=['0.4.0', '1.0.0', '1.1.0']),
            bin_dir=dict(type='path', default='/opt/cni/bin'),
            conf_dir=dict(type='path', default='/etc/cni/net.d'),
            config_path=dict(type='path', default='/etc/netfleet-calico/cni.json'),
            data_dir=dict(type='path', default='/var/lib/netfleet-calico/cni'),
            lib_dir=dict(type='path', default='/usr/lib/netfleet-calico'),
            log_file=dict(type='path', default='/var/log/netfleet-calico-cni.log'),
            python=dict(type='path', default='/usr/bin/python3'),
            agent=dict(type='bool', default=True),
            agent_socket=dict(type='path', default='/run/netfleet-calico/agent.sock'),
            agent_pidfile=dict(type='path', default='/run/netfleet-calico/agent.pid'),
            service_manager=dict(type='str', default='systemd', choices=['systemd', 'pidfile']),
            unit_dir=dict(type='path', default='/etc/systemd/system'),
        ),
        required_if=[('state', 'present', ['plan'])],
        supports_check_mode=True,
    )
    try:
        result = cni_install.converge(dict(module.params), module.check_mode, run=module.run_command)
    except (cni_install.InstallError, cni_service.ServiceError, cni_policy.PolicyError, cni_store.StoreError,
            ValueError, OSError) as exc:
        module.fail_json(msg='calico_cni: %s' % (getattr(exc, 'msg', None) or exc))
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
