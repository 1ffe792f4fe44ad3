#!/usr/bin/python
# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build or destroy the netfleet.calico lab: network namespaces wired by Linux bridges (the logic is in
module_utils fabric_spec, fabric_plan and fabric_apply)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_fabric
short_description: Build or destroy the lab's network-namespace fabric
version_added: 0.1.0
description:
  - Reconciles the wiring of the netfleet.calico lab on the machine that runs it (the controller, as root);
    every lab host is a Linux network namespace, every rack segment a Linux bridge.
  - With O(state=present) it creates a fabric namespace C(<prefix>-fabric) holding one bridge per segment
    (the L2 switches; no bridge lives in the root namespace), a router namespace C(<prefix>-router) with one leg
    per segment carrying the segment's gateway address and C(net.ipv4.ip_forward=1) (it knows only its
    connected routes, so it forwards host addresses and nothing of the container routes), and per host a
    namespace with C(lo) up, C(eth0) (a veth whose peer is a port of the segment's bridge) carrying the host's
    address, and C(default via <segment gateway>) (proxy-ARP for 169.254.1.1 needs a default route).
  - "Racks with route reflectors: with O(spine), a bridge C(spine) joins the hosts that have a
    O(hosts[].spine_address) (the reflectors) on their C(eth1). A segment with O(segments[].router=false) gets no
    router leg: its O(segments[].gateway) must be the address of one of its hosts with a spine address, the rack's
    gateway (ToR). Each such reflector has C(default via) the router's spine leg (O(spine.gateway)) if there is a
    router, else no default route, and a C(proto static) route to every other reflector-gated segment via that
    segment's gateway reflector's spine address; the router has the same routes on its spine leg. The router
    namespace exists only if some segment has O(segments[].router=true) (always without O(spine)); one no longer
    needed is deleted. The lab sets no sysctl on reflectors: forwarding is the route_reflector role's job."
  - Wiring in the fabric and router namespaces is owned entirely by this module, so anything there that the spec
    does not describe (a removed host's port, a removed segment's bridge, a route added by hand to the router)
    is deleted. In a host namespace only C(lo), C(eth0), the IPv4 addresses of C(eth0) and the default route are
    managed (on a reflector also C(eth1), its addresses and the C(proto static) routes); workload interfaces,
    BIRD routes and everything else the roles add are left alone. A host removed from the spec is unplugged (its
    fabric ports, C(eth0) and C(eth1), go) but its namespace stays until O(state=absent).
  - It raises C(net.ipv4.neigh.default.gc_thresh1/2/3) in the root namespace (the neighbour table is shared by
    all namespaces and overflows at the default 1024 entries once a lab has about 35 hosts in full mesh); it
    only ever raises them. Nothing else is created in the root namespace (no interface, address or route).
  - Changes are applied with one C(ip -batch) per namespace that needs a change (plus one for creating and
    deleting namespaces), then read back; a lab that does not converge is a failure.
  - It needs root with C(CAP_SYS_ADMIN) and C(CAP_NET_ADMIN); without them it fails with one line saying to run it
    as root, before anything is created.
  - With O(state=absent) it stops every daemon whose pid file is under O(state_dir) (only if the process's
    command line names that pid file or O(state_dir); C(SIGTERM), then C(SIGKILL) after O(stop_timeout)), then
    any process still running inside one of the lab's namespaces, deletes every namespace whose name starts
    with C(<prefix>-) (hosts, workload namespaces C(<prefix>-<host>-<workload>), fabric, router) and removes
    O(state_dir).
author: netfleet.calico developers (!UNKNOWN)
options:
  prefix:
    description:
      - Short name of this lab run; every namespace of the lab is named C(<prefix>-...).
      - 1 to 16 letters, digits or underscores. C(-) is not allowed, so that one lab's prefix is never the start
        of another lab's namespace names.
    type: str
    required: true
  state:
    description:
      - V(present) builds or repairs the lab; V(absent) stops its daemons and deletes it.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description:
      - Directory of the lab's run-time files (BIRD configs, sockets, pid files), for example C(/run/netfleet/<prefix>).
        Created with O(state=present), removed with O(state=absent).
      - Must be absolute and its last component must contain O(prefix), so that O(state=absent) can never remove
        an unrelated directory.
    type: path
    required: true
  segments:
    description:
      - The lab's L2 segments (one per rack). Each becomes a bridge in the fabric namespace and a router leg.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Segment name (letters, digits, C(.), C(_), C(-)); usually the rack group's name.
        type: str
        required: true
      cidr:
        description: IPv4 network of the segment, for example C(192.168.100.0/24) (prefix length 30 or shorter).
        type: str
        required: true
      gateway:
        description:
          - Address of the router's leg on this segment and the hosts' default gateway, with or without the
            prefix length. Defaults to the first usable address (C(192.168.100.1) for C(192.168.100.0/24)).
          - With O(segments[].router=false), the address of the segment's reflector that is its gateway.
        type: str
      router:
        description:
          - Whether the router has a leg on this segment. V(false) (needs O(spine)) makes a reflector of the segment
            its gateway.
        type: bool
        default: true
  spine:
    description:
      - The spine segment joining the route reflectors (a bridge C(spine) in the fabric namespace). Ignored with
        O(state=absent).
    type: dict
    suboptions:
      cidr:
        description: IPv4 network of the spine, for example C(10.255.0.0/24); must not overlap a segment.
        type: str
        required: true
      gateway:
        description:
          - Address of the router's leg on the spine (when there is a router); the reflectors' default gateway.
            Defaults to the first usable address.
        type: str
      routers:
        description:
          - Spine routers (the inventory's C(calico_spines)), each a namespace with one leg, C(eth1), on the spine
            bridge and its address there. Their routes are their own BGP daemon's (FRR), never the lab's.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: Inventory hostname.
            type: str
            required: true
          address:
            description: Address on the spine, inside O(spine.cidr).
            type: str
            required: true
          address6:
            description:
              - Dual stack (C(calico_node_ip_v6) of the spine) - an IPv6 address of its C(eth1) besides
                O(spine.routers[].address), as O(hosts[].address6).
            type: str
          netns:
            description: Namespace name (must start with O(prefix) and C(-)); default C(<prefix>-<name>).
            type: str
  hosts:
    description:
      - The lab's hosts. Each becomes a namespace plugged into its segment's bridge.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory hostname (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      netns:
        description:
          - Namespace of the host (what the P(netfleet.calico_lab.netns#connection) connection enters); must start
            with C(<prefix>-) and must not be the fabric's or router's name.
          - Defaults to C(<prefix>-<name>).
        type: str
      address:
        description:
          - IPv4 address of the host's C(eth0) (its C(calico_node_ip)), with or without the segment's prefix length.
        type: str
        required: true
      segment:
        description: Name of the host's segment (one of O(segments)).
        type: str
        required: true
      spine_address:
        description:
          - A route reflector's address on the spine (its C(eth1)), with or without the spine's prefix length.
            Needs O(spine).
        type: str
      address6:
        description:
          - Dual stack (C(calico_node_ip_v6)) - an IPv6 address of the host's C(eth0) besides O(hosts[].address), with
            a prefix length or as a C(/64); added without duplicate address detection (C(nodad)).
        type: str
      spine_address6:
        description:
          - Dual stack (C(calico_rr_spine_ip_v6)) - a reflector's IPv6 address on the spine, as O(hosts[].address6).
        type: str
  mgmt:
    description:
      - "The management namespace C(<prefix>-mgmt) of an SSH lab (C(lab_ssh: true)): the controller's place in the
        lab. It gets one leg per listed segment, a veth C(mg-<segment>) (same name on both ends) whose fabric end is a
        port of the segment's bridge, carrying O(mgmt.legs[].address). Run C(ansible-playbook) inside it
        (C(ip netns exec <prefix>-mgmt ansible-playbook ...)) and the standard C(ssh) connection reaches every host's
        fabric address directly on its segment, while the root namespace holds none of the lab's addresses or routes."
      - It has no default route and no forwarding, so it never joins two racks. Without O(mgmt), a management
        namespace left by an earlier run is deleted. Ignored with O(state=absent) (the namespace goes with the lab).
    type: dict
    suboptions:
      legs:
        description: One leg per segment.
        type: list
        elements: dict
        required: true
        suboptions:
          segment:
            description: A segment of O(segments).
            type: str
            required: true
          address:
            description:
              - The leg's address on that segment (with or without the prefix length); not a host's address nor
                the router's gateway.
            type: str
            required: true
      spine_address:
        description:
          - A leg on the spine too (C(mg-spine) on the spine bridge) with this address, for spine routers that are
            reached over SSH (C(lab_machines)). Needs O(spine); not a reflector's, a spine router's nor the
            router's address there.
        type: str
  neigh_gc_thresh:
    description:
      - Minimum values of C(net.ipv4.neigh.default.gc_thresh1), C(gc_thresh2) and C(gc_thresh3) in the root
        namespace. Values already higher are kept.
    type: list
    elements: int
    default: [4096, 16384, 32768]
  stop_timeout:
    description: Seconds to wait for a daemon to exit after C(SIGTERM) before sending C(SIGKILL) (O(state=absent)).
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Reports what would be created or removed, and the commands, without running them.
  diff_mode:
    support: full
    description: Shows the lab's wiring (per namespace) before and after.
notes:
  - Needs root and iproute2 on the machine it runs on; run it on C(localhost) with C(connection=local).
  - Interface names in the fabric and router namespaces are C(br-<segment>) (bridge), C(gw-<segment>) (router leg,
    same name on both ends), C(h-<host>) (host port), C(spine) (spine bridge), C(rt-spine) (router leg on the
    spine), C(s-<host>) (a reflector's spine port) and C(mg-<segment>) (the management leg, same name on both
    ends); a name longer than 15 characters is replaced by the kind
    and a hash of the name. The fabric port's alias (C(ip link show)) names its host's namespace.
seealso:
  - plugin: netfleet.calico_lab.netns
    plugin_type: connection
"""

EXAMPLES = r"""
- name: Build the lab of the article's picture
  netfleet.calico_lab.lab_fabric:
    prefix: nf
    state_dir: /run/netfleet/nf
    segments:
      - {name: rack1, cidr: 192.168.100.0/24}
      - {name: rack2, cidr: 192.168.200.0/24, gateway: 192.168.200.254}
    hosts:
      - {name: host-a, netns: nf-host-a, address: 192.168.100.100, segment: rack1}
      - {name: host-b, netns: nf-host-b, address: 192.168.100.101, segment: rack1}
      - {name: host-c, netns: nf-host-c, address: 192.168.200.101, segment: rack2}

- name: Racks whose route reflectors are their gateways, joined by a spine (no router namespace)
  netfleet.calico_lab.lab_fabric:
    prefix: rr
    state_dir: /run/netfleet/rr
    spine: {cidr: 10.255.0.0/24}
    segments:
      - {name: rack1, cidr: 192.168.101.0/24, gateway: 192.168.101.1, router: false}
      - {name: rack2, cidr: 192.168.102.0/24, gateway: 192.168.102.1, router: false}
    hosts:
      - {name: rr1, address: 192.168.101.1, segment: rack1, spine_address: 10.255.0.11}
      - {name: r1h1, address: 192.168.101.11, segment: rack1}
      - {name: rr2, address: 192.168.102.1, segment: rack2, spine_address: 10.255.0.21}
      - {name: r2h1, address: 192.168.102.11, segment: rack2}

- name: An SSH lab - the controller's namespace nf-mgmt with a leg on rack1 (then run lab_sshd)
  netfleet.calico_lab.lab_fabric:
    prefix: nf
    state_dir: /run/netfleet/nf
    segments: [{name: rack1, cidr: 192.168.100.0/24}]
    hosts: [{name: host-a, address: 192.168.100.100, segment: rack1}]
    mgmt: {legs: [{segment: rack1, address: 192.168.100.254}]}

- name: Destroy it (daemons by pid file, every nf-* namespace, the state directory)
  netfleet.calico_lab.lab_fabric:
    prefix: nf
    state: absent
    state_dir: /run/netfleet/nf
"""

RETURN = r"""
created:
  description: Objects created (or that would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["netns nf-host-a", "bridge nf-fabric/br-rack1", "veth nf-fabric/h-host-a <-> nf-host-a/eth0",
           "address nf-host-a/eth0 192.168.100.100/24", "route nf-host-a default via 192.168.100.1 dev eth0"]
removed:
  description: Objects removed (or that would be), one line each.
  returned: always
  type: list
  elements: str
  sample: ["link nf-fabric/h-host-z", "netns nf-host-a", "directory /run/netfleet/nf"]
updated:
  description: Objects changed in place (link set up, port moved to another bridge, sysctl raised).
  returned: always
  type: list
  elements: str
  sample: ["sysctl net.ipv4.neigh.default.gc_thresh3 1024 -> 32768", "link nf-host-a/lo up"]
killed:
  description: Processes stopped by O(state=absent).
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    reason:
      description: C(pidfile) (named by a pid file under O(state_dir)) or C(netns) (still inside a lab namespace).
      type: str
    pidfile:
      description: The pid file, for RV(killed[].reason=pidfile).
      type: str
    netns:
      description: The namespace it ran in, for RV(killed[].reason=netns).
      type: str
    cmdline:
      description: Its command line.
      type: str
    signal:
      description: Last signal sent, C(TERM) or C(KILL) (nothing is sent in check mode).
      type: str
  sample: [{pid: 4242, reason: pidfile, pidfile: /run/netfleet/nf/host-a/bird.pid,
            cmdline: "bird -c /run/netfleet/nf/host-a/bird.conf -P /run/netfleet/nf/host-a/bird.pid", signal: TERM}]
commands:
  description:
    - The C(ip -batch) inputs run (or that would be, in check mode), in order, as C({netns, lines}); C(netns) is null
      for the root namespace (creating and deleting namespaces only).
    - Setting C(ip_forward) in the router is the one C({netns, exec}) entry (C(ip netns exec NETNS EXEC...)).
  returned: always
  type: list
  elements: dict
  sample: [{netns: null, lines: ["netns add nf-fabric"]}, {netns: nf-fabric, lines: ["link add br-rack1 type bridge"]}]
namespaces:
  description: The lab's namespaces after the run (fabric, router, management, hosts); empty after O(state=absent).
  returned: always
  type: list
  elements: str
  sample: [nf-fabric, nf-router, nf-host-a, nf-host-b]
fabric_netns:
  description: Name of the fabric namespace (the bridges).
  returned: always
  type: str
  sample: nf-fabric
router_netns:
  description: Name of the router namespace; null when the lab has none (every segment's gateway is a reflector).
  returned: always
  type: str
  sample: nf-router
segments:
  description: The segments as built, by name.
  returned: when O(state=present)
  type: dict
  sample: {rack1: {cidr: 192.168.100.0/24, gateway: 192.168.100.1/24, bridge: br-rack1, router_port: gw-rack1,
                   router: true}}
mgmt_netns:
  description: Name of the management namespace; null without O(mgmt).
  returned: always
  type: str
  sample: nf-mgmt
mgmt:
  description: The management namespace as built (C(netns), C(legs) by segment), or null without O(mgmt).
  returned: when O(state=present)
  type: dict
  sample: {netns: nf-mgmt, legs: {rack1: {address: 192.168.100.254/24, port: mg-rack1, bridge: br-rack1}}}
spine:
  description: The spine as built (C(gateway) and C(router_port) null without a router), or null without O(spine).
  returned: when O(state=present)
  type: dict
  sample: {cidr: 10.255.0.0/24, gateway: null, bridge: spine, router_port: null}
hosts:
  description: The hosts as built, by name (C(address6), C(spine_address6) where given).
  returned: when O(state=present)
  type: dict
  sample: {host-a: {netns: nf-host-a, address: 192.168.100.100/24, gateway: 192.168.100.1, segment: rack1,
                    bridge: br-rack1, fabric_port: h-host-a},
           rr2: {netns: nf-rr2, address: 192.168.102.1/24, gateway: null, segment: rack2, bridge: br-rack2,
                 fabric_port: h-rr2, spine_address: 10.255.0.21/24, spine_port: s-rr2,
                 routes: ["192.168.101.0/24 via 10.255.0.11 dev eth1"]}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_apply import (
    Lab,
    check_privileges,
    run_absent,
    run_present,
)
from ansible_collections.netfleet.calico_lab.plugins.module_utils.fabric_spec import LabError, Spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            state_dir=dict(type='path', required=True),
            segments=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                cidr=dict(type='str', required=True),
                gateway=dict(type='str'),
                router=dict(type='bool', default=True),
            )),
            spine=dict(type='dict', options=dict(
                cidr=dict(type='str', required=True),
                gateway=dict(type='str'),
                routers=dict(type='list', elements='dict', default=[], options=dict(
                    name=dict(type='str', required=True),
                    address=dict(type='str', required=True),
                    address6=dict(type='str'),
                    netns=dict(type='str'),
                )),
            )),
            hosts=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                netns=dict(type='str'),
                address=dict(type='str', required=True),
                address6=dict(type='str'),
                segment=dict(type='str', required=True),
                spine_address=dict(type='str'),
                spine_address6=dict(type='str'),
            )),
            mgmt=dict(type='dict', options=dict(
                legs=dict(type='list', elements='dict', required=True, options=dict(
                    segment=dict(type='str', required=True),
                    address=dict(type='str', required=True),
                )),
                spine_address=dict(type='str'),
            )),
            neigh_gc_thresh=dict(type='list', elements='int', default=[4096, 16384, 32768]),
            stop_timeout=dict(type='int', default=10),
        ),
        supports_check_mode=True,
    )
    state = module.params['state']
    result = dict(changed=False, created=[], removed=[], updated=[], killed=[], commands=[], namespaces=[])
    try:
        spec = Spec(module.params, state)
        result.update(fabric_netns=spec.fabric, router_netns=spec.router if spec.router_wanted else None,
                      mgmt_netns=spec.mgmt_netns if spec.mgmt else None)
        check_privileges()  # before anything is created: one line instead of a failing `ip netns add`
        lab = Lab(module)
        try:
            if state == 'present':
                run_present(lab, spec, result)
            else:
                run_absent(lab, spec, result)
        finally:
            result['commands'] = lab.commands
    except LabError as ex:
        result.pop('diff', None)
        module.fail_json(msg=str(ex), **result)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
