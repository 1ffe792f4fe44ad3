#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_node_state
short_description: Bring one Calico node (host or route reflector) to its planned state in one call
version_added: 0.1.0
description:
  - Applies, in this order and in one module run, what the modules M(netfleet.calico.calico_sysctl),
    M(netfleet.calico.calico_tunnel), M(netfleet.calico.calico_routes), M(netfleet.calico.calico_workloads) and
    M(netfleet.calico.calico_bird) do one by one; the same code (module_utils) does the work, so the results are
    the same.
  - "Why one call: each module run costs a round trip and a Python start on the host. On a fleet this
    halves the time of a run with nothing to change (and on the namespace lab, where every host shares two
    CPUs, it is what keeps a 60-host C(site.yml) within a minute)."
  - BIRD's configuration is given as text (rendered by the role's template on the controller). It is
    checked with C(bird -p -c) before it replaces the installed file; BIRD is started if it is not running,
    otherwise reloaded with C(birdc configure) only when its configuration or secrets changed, so
    unchanged sessions stay up.
  - With O(bird), every new BIRD configuration is first checked with C(bird -p -c) before any part changes, so a
    host whose configuration BIRD rejects is left exactly as it was (site.yml's roll-out stops at it). When the
    secrets file changes in the same run, this early check is left to the check after the secrets are written.
  - "Make before break: with O(bird.transition_config) the module first installs that configuration
    (old and new sessions side by side), reloads, waits until every session in O(bird.wait_for) is
    Established, and only then installs O(bird.config)."
  - Each part is skipped when its option is omitted.
author:
  - netfleet.calico contributors (!UNKNOWN)
options:
  sysctls:
    description:
      - Host sysctls (name to value), as M(netfleet.calico.calico_sysctl)
        O(netfleet.calico.calico_sysctl#module:sysctls).
    type: dict
  sysctl_persist_file:
    description: Also write O(sysctls) to this sysctl.d file.
    type: path
  tunnel:
    description:
      - The IPIP device and its host-protection chain, as M(netfleet.calico.calico_tunnel) (same options). Applied
        before the workload endpoints (they take its MTU) and BIRD (whose kernel export names the device). Omit to
        leave both alone.
    type: dict
    suboptions:
      name: {description: Tunnel device (at most 15 characters)., type: str, default: tun0}
      state:
        description: C(present) creates or reconciles the device and the chain, C(absent) removes both.
        type: str
        choices: [present, absent]
        default: present
      local:
        description: The node IP (an address of this host), the tunnel's local end. Required with C(present).
        type: str
      mtu: {description: Tunnel MTU; null is the MTU of the interface holding O(tunnel.local) minus 20., type: int}
      firewall: {description: Manage the chain that accepts IP protocol 4 only from O(tunnel.allow_from)., type: bool,
                 default: true}
      allow_from:
        description: Addresses allowed to send IPIP to this host (the fabric's other node IPs).
        type: list
        elements: str
        default: []
      chain: {description: 'Host-protection chain (C(cali-*), at most 28 characters).', type: str,
              default: cali-INPUT-ipip}
      workload_mtu:
        description:
          - Give every workload veth RV(tunnel.workload_mtu) (the tunnel MTU while the device exists, the parent's MTU
            without it), instead of O(mtu), so no path black-holes large packets.
        type: bool
        default: true
  routes:
    description:
      - Routes owned by O(protocol) other than workload routes (the block blackhole), as
        M(netfleet.calico.calico_routes) O(netfleet.calico.calico_routes#module:routes). Omit to leave them alone.
    type: list
    elements: dict
    suboptions:
      dest: {description: Destination prefix., type: str, required: true}
      type:
        description: Route type.
        type: str
        default: unicast
        choices: [unicast, blackhole, unreachable, prohibit]
      via: {description: Gateway., type: str}
      dev: {description: Device., type: str}
      onlink: {description: Gateway is on-link., type: bool, default: false}
      metric: {description: Metric., type: int}
  endpoints:
    description:
      - The complete list of workload endpoints, as M(netfleet.calico.calico_workloads)
        O(netfleet.calico.calico_workloads#module:endpoints). Omit on hosts without workloads (reflectors).
    type: list
    elements: dict
    suboptions:
      name: {description: Workload id., type: str, required: true}
      ip: {description: 'IPv4 address of the workload (a /32); an endpoint has ip, ip6 or both.', type: str}
      ip6: {description: IPv6 address of the workload (a /128)., type: str, version_added: 0.1.0}
      netns: {description: Namespace name., type: str}
      netns_path: {description: Namespace path (never created or deleted)., type: path}
      mtu: {description: MTU of this endpoint's veth., type: int}
  mtu:
    description: MTU of every workload veth (unless an endpoint sets its own); null keeps the kernel default.
    type: int
  boot:
    description:
      - The boot-time restore of this host's kernel parts, in this run (what M(netfleet.calico.calico_boot) does
        on its own). After the kernel parts converged (not in check mode), their arguments (O(sysctls),
        O(tunnel), O(routes), O(endpoints), O(mtu)) are recorded in C(<state_dir>/node.json); the program
        C(netfleet-calico-restore) and, with O(boot.service_manager=systemd), C(netfleet-calico-restore.service)
        (before BIRD's unit) are installed. At boot they apply the records again, before BIRD announces the
        block.
      - Reported as part C(boot); a host whose BIRD configuration is rejected is left untouched, this included.
    type: dict
    version_added: 0.1.0
    suboptions:
      state:
        description: V(absent) removes the program, its unit and the records.
        type: str
        choices: [present, absent]
        default: present
      state_dir:
        description: Where the records are kept.
        type: path
        default: /var/lib/netfleet-calico/boot
      lib_dir:
        description: Where the program and its code are installed.
        type: path
        default: /usr/lib/netfleet-calico-restore
      python:
        description: Interpreter of the program.
        type: path
        default: /usr/bin/python3
      service_manager:
        description: V(systemd) installs and enables the unit; V(pidfile) installs the program only.
        type: str
        choices: [systemd, pidfile]
        default: systemd
      unit_dir:
        description: Where the unit is written.
        type: path
        default: /etc/systemd/system
      bird_service:
        description: BIRD's unit; the restore runs before it.
        type: str
        default: bird
  bird:
    description: BIRD's configuration and daemon. Omit to leave BIRD alone.
    type: dict
    suboptions:
      config:
        description: The complete text of bird.conf.
        type: str
        required: true
      config_path:
        description: Where bird.conf lives.
        type: path
        default: /etc/bird/bird.conf
      group:
        description: Group owning bird.conf and the secrets file (mode 0640); the daemon's group under systemd.
        type: str
        default: root
      secrets:
        description: Text of a file bird.conf includes (the BGP password). Never logged.
        type: str
      secrets_path:
        description: Where O(bird.secrets) is written. Required with O(bird.secrets).
        type: path
      transition_config:
        description: A configuration to run first, until O(bird.wait_for) are Established (make before break).
        type: str
      wait_for:
        description:
          - BGP protocol names that must be Established before O(bird.config) replaces
            O(bird.transition_config).
        type: list
        elements: str
        default: []
      wait_timeout:
        description:
          - Seconds to wait for O(bird.wait_for), and then for the routes of O(bird.lingering) to be brought by
            other sessions too. When the routes do not come in time, the module warns and goes on.
        type: float
        default: 60
      lingering:
        description:
          - The old BGP protocols that O(bird.transition_config) keeps beside the new ones. Before O(bird.config)
            drops them, every prefix they bring must also come through another Established session (the same
            prefix or a shorter one containing it; not a default route).
          - C(<name>:ipv6) stands for the IPv6 routes of protocol C(<name>) only, an IPv4 session whose ipv6
            channel stops carrying them (C(calico_bgp_ipv6_sessions) turned on).
        type: list
        elements: str
        default: []
      transition_only:
        description:
          - Stop after the make-before-break step, old and new sessions side by side. A later run with
            O(bird.config) drops the old ones. Run it on every host of a batch before any host drops its old
            sessions, because dropping a session also cuts it for the peer.
        type: bool
        default: false
      manager:
        description: C(systemd) (the distribution's unit) or C(pidfile) (a daemon tracked by its pid file; the lab).
        type: str
        choices: [systemd, pidfile]
        default: systemd
      service:
        description: systemd unit.
        type: str
        default: bird
      enabled:
        description: Enable the systemd unit at boot (O(bird.manager=systemd)).
        type: bool
        default: true
      socket:
        description: Control socket.
        type: path
        default: /run/bird/bird.ctl
      pidfile:
        description: Pid file (O(bird.manager=pidfile)).
        type: path
      bird_binary: {description: C(bird) binary., type: str, default: bird}
      birdc_binary: {description: C(birdc) binary., type: str, default: birdc}
      timeout: {description: Seconds to wait for a started daemon to answer., type: float, default: 10}
extends_documentation_fragment:
  - netfleet.calico.route_protocol
  - netfleet.calico.workloads.netns
attributes:
  check_mode:
    support: full
    description: Computes every change, validates the new BIRD configuration with C(bird -p), changes nothing.
  diff_mode:
    support: full
    description: One diff per part (sysctls, tunnel device and chain, owned routes, workload endpoints, bird.conf,
      BIRD daemon).
  platform:
    platforms: linux
    support: full
    description: Linux hosts with iproute2 and BIRD 2 (systemd unit or pid-file daemon).
notes:
  - Runs in the host's network namespace without a private mount namespace, like M(netfleet.calico.calico_workloads).
seealso:
  - module: netfleet.calico.calico_sysctl
  - module: netfleet.calico.calico_tunnel
  - module: netfleet.calico.calico_routes
  - module: netfleet.calico.calico_workloads
  - module: netfleet.calico.calico_bird
"""

EXAMPLES = r"""
- name: Converge this node from its fabric plan
  netfleet.calico.calico_node_state:
    sysctls: {net.ipv4.ip_forward: 1}
    sysctl_persist_file: /etc/sysctl.d/60-netfleet-calico.conf
    routes:
      - {dest: 172.17.8.0/24, type: blackhole}
    endpoints:
      - {name: web-1, ip: 172.17.8.2}
      - {name: web-2, ip: 172.17.8.3}
    bird:
      config: "{{ lookup('ansible.builtin.template', 'bird.conf.j2') }}"
      group: bird

- name: Dual stack (the IPv6 block's blackhole next to the IPv4 one; IPv6 forwarding on)
  netfleet.calico.calico_node_state:
    sysctls: {net.ipv4.ip_forward: 1, net.ipv6.conf.all.forwarding: 1}
    routes:
      - {dest: 172.17.8.0/24, type: blackhole}
      - {dest: "2001:db8:8::/122", type: blackhole}
    endpoints:
      - {name: web-1, ip: 172.17.8.2, ip6: "2001:db8:8::2"}

- name: The same with an IPIP tunnel (workload veths get its MTU)
  netfleet.calico.calico_node_state:
    tunnel:
      local: 192.168.100.100
      allow_from: [192.168.200.101, 192.168.200.103]
    routes:
      - {dest: 172.17.8.0/24, type: blackhole}
    endpoints:
      - {name: web-1, ip: 172.17.8.2}
    bird:
      config: "{{ lookup('ansible.builtin.template', 'bird.conf.j2') }}"

- name: A route reflector (no workloads, no block)
  netfleet.calico.calico_node_state:
    sysctls: {net.ipv4.ip_forward: 1}
    bird:
      config: "{{ lookup('ansible.builtin.template', 'bird.conf.j2') }}"
"""

RETURN = r"""
sysctl:
  description: Result of the sysctl part (see M(netfleet.calico.calico_sysctl)); absent when skipped.
  returned: when O(sysctls) is given
  type: dict
tunnel:
  description: Result of the tunnel part (see M(netfleet.calico.calico_tunnel)).
  returned: when O(tunnel) is given
  type: dict
  contains:
    device: {description: The device after the run (null when absent)., type: dict, returned: always}
    workload_mtu:
      description: The MTU for workload veths (tunnel MTU when present, else the MTU of the interface holding local).
      type: int
      returned: always
  sample: {device: {kind: ipip, local: 192.168.100.100, remote: any, mtu: 1480, up: true}, workload_mtu: 1480}
workload_mtu:
  description: The MTU given to workload veths (the tunnel's while one is managed, else O(mtu)); null = kernel default.
  returned: always
  type: int
  sample: 1480
  version_added: 0.1.0
routes:
  description: Result of the owned-routes part (see M(netfleet.calico.calico_routes)).
  returned: when O(routes) is given
  type: dict
workloads:
  description: Result of the endpoints part (see M(netfleet.calico.calico_workloads)).
  returned: when O(endpoints) is given
  type: dict
bird:
  description: What happened to BIRD.
  returned: when O(bird) is given
  type: dict
  contains:
    action: {description: 'none, start, reload (or what check mode would do).', type: str, returned: always}
    config_changed: {description: bird.conf was (or would be) rewritten., type: bool, returned: always}
    secrets_changed: {description: The secrets file was (or would be) rewritten., type: bool, returned: always}
    transition: {description: The make-before-break step ran and its sessions came up., type: bool, returned: always}
    old_sessions_kept:
      description: With O(bird.transition_only), the old sessions still run beside the new ones for a later run
        to drop.
      type: bool
      returned: when the make-before-break step stopped there
    uncovered:
      description: Prefixes the old sessions brought that no new session brought when they were dropped.
      type: list
      elements: str
      returned: when the make-before-break step timed out waiting for them
    pid: {description: Pid of the daemon (pid-file manager)., type: int, returned: always}
  sample: {action: reload, config_changed: true, secrets_changed: false, transition: false, pid: 4242}
changed_parts:
  description: The parts that changed.
  returned: always
  type: list
  elements: str
  sample: [workloads, bird]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils import (
    bird_apply,
    boot_install,
    files,
    host_state,
    iproute,
    routes,
    tunnel,
)
from ansible_collections.netfleet.calico.plugins.module_utils.bird import Bird
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff
from ansible_collections.netfleet.calico.plugins.module_utils.workloads import ENDPOINTS_SPEC, WorkloadReconciler

SYSCTL_ROOT = iproute.PROC_SYS


def make_ip(module):
    """The ip runner (unit tests replace this function)."""
    return iproute.IpCommand(ip_bin=module.get_bin_path('ip', required=True),
                             nsenter_bin=module.get_bin_path('nsenter') or 'nsenter')


def make_tunnel_runner(module):
    """The runner of ip/iptables for the tunnel part (unit tests replace this function)."""
    return tunnel.default_runner


def make_reconciler(ip, settings):
    """The workload reconciler (unit tests replace this function)."""
    return WorkloadReconciler(ip, settings, sysctl_root=SYSCTL_ROOT)


def make_bird(module, params):
    """The BIRD driver (unit tests replace this function). Bird's ``config`` is the file, ours the text."""
    return Bird(module, dict(params, config=params['config_path']))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysctls=dict(type='dict'),
            sysctl_persist_file=dict(type='path'),
            routes=dict(type='list', elements='dict', options=routes.ROUTE_OPTIONS),
            protocol=dict(type='int', default=iproute.CALICO_PROTOCOL),
            endpoints=ENDPOINTS_SPEC,
            netns_prefix=dict(type='str', default=iproute.DEFAULT_NETNS_PREFIX),
            netns_paths=dict(type='list', elements='str', default=[]),
            mtu=dict(type='int'),
            tunnel=dict(type='dict', options=dict(tunnel.OPTIONS, workload_mtu=dict(type='bool', default=True)),
                        required_if=[('state', 'present', ['local'])]),
            boot=dict(type='dict', options=dict(boot_install.OPTIONS)),
            bird=dict(type='dict', options=dict(bird_apply.OPTIONS),
                      required_if=[('manager', 'pidfile', ['pidfile'])]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    result, diffs, changed_parts = {}, [], []

    def done(part, part_result):
        diff = part_result.pop('diff', None)
        if diff:
            diffs.extend(diff if isinstance(diff, list) else [diff])
        result[part] = part_result
        for warning in part_result.get('warnings') or []:
            module.warn(warning)
        if part_result['changed']:
            changed_parts.append(part)

    driver = make_bird(module, p['bird']) if p['bird'] is not None else None
    if p['bird'] is not None and not check:
        # a configuration BIRD rejects stops the run before the host is touched (check mode validates below)
        try:
            bird_apply.prevalidate(module, p['bird'], driver)
        except OSError as exc:
            module.fail_json(msg='bird: %s' % exc)

    runners = host_state.Runners(
        make_ip=lambda: make_ip(module), make_reconciler=make_reconciler,
        tunnel_runner=make_tunnel_runner(module),
        tunnel_bins=lambda firewall: tunnel.binaries(module.get_bin_path, firewall),
        atomic_move=module.atomic_move, sysctl_root=SYSCTL_ROOT)
    try:
        mtu = host_state.apply(p, check, runners, done)
    except host_state.PartError as exc:
        module.fail_json(msg=exc.msg, changed_parts=changed_parts, **exc.details)

    if p['boot'] is not None:
        try:
            done('boot', boot_install.converge_with_record(dict(p['boot']), p, check, module.run_command))
        except (files.InstallError, OSError) as exc:
            module.fail_json(msg='boot: %s' % (getattr(exc, 'strerror', None) or exc), changed_parts=changed_parts)

    if p['bird'] is not None:
        try:
            bird_result, bird_diffs = bird_apply.converge(module, p['bird'], check, driver)
        except (OSError, ValueError) as exc:
            module.fail_json(msg='bird: %s' % exc, changed_parts=changed_parts)
        bird_result['diff'] = bird_diffs
        bird_result['changed'] = bird_result['action'] != 'none' or bird_result['config_changed'] or \
            bird_result['secrets_changed']
        done('bird', bird_result)

    result['workload_mtu'] = mtu
    result['changed_parts'] = changed_parts
    result['changed'] = bool(changed_parts)
    result['diff'] = diffs
    exit_with_diff(module, result)


if __name__ == '__main__':
    main()
