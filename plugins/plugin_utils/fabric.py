# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side planning for netfleet.calico: the one place where the fabric is computed.

Everything the roles need to know about the fleet -- which host owns which block of the
pool, which address each workload gets, which BGP sessions each BIRD opens -- is computed
here, on the controller, from the inventory, and checked before any host is touched.
This module composes the planner's parts, each of its own concern (imports go one way, from here down):
``inputs`` (strict values and parsers), ``inventory`` (variables, groups, racks), ``blocks``,
``workloads``, ``peers`` and ``bgp`` (sessions and what each may import), ``external_peers`` (routers outside
the fleet), ``spines`` (the L3 spine's FRR plan), ``rack_shares`` (one aggregate per rack, origin AS), ``cni``,
``policy`` and ``floating``, ``ipip``,
all raising ``errors.FabricError``. The filter plugins in ``plugins/filter/`` are thin wrappers around them.

Errors are :class:`FabricError` (an ``AnsibleFilterError``) whose message is ONE line::

    netfleet.calico preflight: <subject>: <problem> — <fix>

where ``<subject>`` is ``host 'NAME'``, ``rack 'NAME'``, ``group 'NAME'`` or ``input`` (the
stand-alone filters' own arguments).  The stand-alone filters use
``netfleet.calico.<filter>`` instead of ``netfleet.calico preflight`` as the prefix.

The order of the preflight checks of :func:`build_fabric` (the first failure is reported, hosts and racks in
natural name order) is listed in docs/architecture.md, "The preflight's order of checks".
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs, rack_shares, values
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import plan_imports
from ansible_collections.netfleet.calico.plugins.plugin_utils.blocks import allocate_blocks, grow_blocks
from ansible_collections.netfleet.calico.plugins.plugin_utils.cni import plan_cni, workload_shares
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject, rack_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.external_peers import parse_peers, plan_external_peers
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import (
    address_or_none,
    as_int,
    interface_name,
    is_unset,
    network_or_none,
    parse_as_number,
    parse_bfd,
    parse_block_prefix,
    parse_cluster_id,
    parse_ipip_mode,
    parse_max_blocks,
    parse_pool,
    parse_router_id,
    parse_topology,
    require_netaddr,
    speaker_address,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import (
    GROUP_NODES,
    GROUP_REFLECTORS,
    VarReader,
    fleet_setting,
    group,
    natural_sorted,
    rack_members,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.ipip import plan_ipip
from ansible_collections.netfleet.calico.plugins.plugin_utils.peers import (
    check_peer_plan,
    compute_peers,
    default_cluster_ids,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.policy import plan_policy
from ansible_collections.netfleet.calico.plugins.plugin_utils.spines import (
    GROUP_SPINES,
    check_passwords,
    check_spine_group,
    check_spines,
    plan_spines,
    spine_speakers,
)
from ansible_collections.netfleet.calico.plugins.plugin_utils.v6 import plan_dual_stack, plan_imports_v6, v6_view
from ansible_collections.netfleet.calico.plugins.plugin_utils.workloads import (
    assign_workload_ips,
    current_addresses,
    explicit_addresses,
    workload_namespaces,
)

DEFAULT_MAX_BLOCKS = 1  # a host holds one block unless calico_max_blocks_per_host says more
IFNAME_MAX = 15  # IFNAMSIZ - 1


def run_filter(filter_name, func, *args, **kwargs):
    """Run ``func`` for the stand-alone filter ``filter_name``: netaddr check, messages prefixed with its name."""
    require_netaddr(f'netfleet.calico.{filter_name}')
    try:
        return func(*args, **kwargs)
    except FabricError as err:
        raise err.with_prefix(f'netfleet.calico.{filter_name}') from None


# ---------------------------------------------------------------------------------------------
# the fabric
# ---------------------------------------------------------------------------------------------

def _prefixlen(reader, name, var, what, lab_var, lab_fix):
    """A host's prefix length: ``var`` (0-32), else the prefix length of the CIDR ``lab_var``, else None."""
    subject = host_subject(name)
    raw = reader.get(name, var)
    if not is_unset(raw):
        length = as_int(raw)
        if length is None or not 0 <= length <= 32:
            raise FabricError(subject, f'{var} {raw!r} is not a prefix length 0-32',
                              f'set it to the prefix length of {what}, or drop it')
        return length
    segment = reader.get(name, lab_var)
    if is_unset(segment):
        return None
    net = network_or_none(segment if isinstance(segment, str) else None)
    if net is None:
        raise FabricError(subject, f'{lab_var} {segment!r} is not a valid IPv4 CIDR', lab_fix)
    return net.prefixlen


def _spine_addresses(reader, hosts, is_reflector, node_ip, node_prefixlen):
    """Each reflector's address toward other racks' reflectors (``calico_rr_spine_ip``, default its node IP)
    and that address's prefix length; None for every other host. Preflight step 4, after the node IPs."""
    spine_ip, spine_prefixlen = {}, {}
    for name in hosts:
        subject = host_subject(name)
        raw = reader.get(name, 'calico_rr_spine_ip')
        if name not in is_reflector:
            if not is_unset(raw):
                raise FabricError(subject, f'calico_rr_spine_ip {raw} is set but the host is not a route reflector',
                                  'drop calico_rr_spine_ip, or add the host to calico_route_reflectors')
            spine_ip[name] = spine_prefixlen[name] = None
            continue
        if is_unset(raw):
            spine_ip[name], spine_prefixlen[name] = node_ip[name], node_prefixlen[name]
            continue
        addr = address_or_none(raw if isinstance(raw, str) else None)
        if addr is None or int(addr) == 0:
            raise FabricError(subject, f'calico_rr_spine_ip {raw!r} is not an IPv4 address',
                              "set calico_rr_spine_ip to the reflector's address toward other racks' reflectors, "
                              'or drop it (defaults to calico_node_ip)')
        spine_ip[name] = addr
        if addr == node_ip[name]:
            spine_prefixlen[name] = node_prefixlen[name]
        else:
            spine_prefixlen[name] = _prefixlen(reader, name, 'calico_rr_spine_prefixlen', "the reflector's spine "
                                               'subnet', 'lab_spine_segment', 'set lab_spine_segment to the '
                                               "spine's subnet, e.g. 10.255.0.0/24")
    owner = {node_ip[name]: (name, 'node IP') for name in hosts}
    for name in hosts:
        addr = spine_ip[name]
        if addr is None or addr == node_ip[name]:
            continue
        if addr in owner:
            other, kind = owner[addr]
            raise FabricError(host_subject(name), f"spine IP {addr} is also the {kind} of host '{other}'",
                              'give each reflector a calico_rr_spine_ip that no other host uses')
        owner[addr] = (name, 'spine IP')
    return spine_ip, spine_prefixlen


def _check_names_and_role_vars(reader, hosts, members_of, spines=()):
    for name in list(hosts) + list(spines):
        inputs.check_host_name(name)
    for rack in natural_sorted(members_of):
        inputs.check_group_name(rack)
    inputs.check_role_vars(reader, list(hosts) + list(spines))
    for name in hosts:
        parse_peers(reader.get(name, 'calico_bgp_peers'), host_subject(name))


def check_inputs(hostvars, groups, racks=None):
    """The first preflight step alone: host and rack names and every role variable the inventory sets.

    site.yml runs it before its first play contacts a host (that play passes role variables to a module);
    :func:`build_fabric` runs it again as its own first step. Returns how many hosts and racks were checked.
    """
    reader = VarReader(hostvars)
    hosts = natural_sorted(set(group(groups, GROUP_NODES)) | set(group(groups, GROUP_REFLECTORS)))
    members_of = rack_members(hostvars, groups, racks)
    spines = natural_sorted(group(groups, GROUP_SPINES))
    _check_names_and_role_vars(reader, hosts, members_of, spines)
    return {'hosts': len(hosts), 'racks': len(members_of), 'spines': len(spines)}


def build_fabric(hostvars, groups, racks=None, pool=None, block_prefix=values.DEFAULT_BLOCK_PREFIX,
                 topology=values.DEFAULT_TOPOLOGY, ipip_mode=values.DEFAULT_IPIP_MODE,
                 as_number=values.DEFAULT_AS_NUMBER):
    """Compose the whole plan (see the module docstring for the preflight order)."""
    require_netaddr('netfleet.calico.fabric')
    reader = VarReader(hostvars)
    node_group = group(groups, GROUP_NODES)
    reflector_group = group(groups, GROUP_REFLECTORS)
    hosts = natural_sorted(set(node_group) | set(reflector_group))
    if not hosts:
        raise FabricError(f"group '{GROUP_NODES}'", 'has no hosts (nor has calico_route_reflectors)',
                          'add the hosts that run workloads to calico_nodes')
    is_node = set(node_group)
    is_reflector = set(reflector_group)
    # 1b. names and the role variables an inventory overrides: strict, before anything is planned from them
    members_of = rack_members(hostvars, groups, racks)
    spine_names = natural_sorted(group(groups, GROUP_SPINES))
    _check_names_and_role_vars(reader, hosts, members_of, spine_names)
    check_spine_group(spine_names, hosts)

    # 2. fleet-wide settings
    def subject_of(source, var):
        return host_subject(source) if source else f'{var} (filter argument)'

    value, source = fleet_setting(reader, hosts, 'calico_bgp_topology', topology)
    topology = parse_topology(value, subject_of(source, 'calico_bgp_topology'))
    value, source = fleet_setting(reader, hosts, 'calico_ipip_mode', ipip_mode)
    ipip_mode = parse_ipip_mode(value, subject_of(source, 'calico_ipip_mode'))
    value, source = fleet_setting(reader, hosts, 'calico_bgp_bfd', None)
    bfd = parse_bfd(value, subject_of(source, 'calico_bgp_bfd'))
    value, source = fleet_setting(reader, hosts, 'calico_pool', pool)
    if is_unset(value):
        raise FabricError(f"group '{GROUP_NODES}'", 'calico_pool is not set',
                          'set calico_pool (e.g. 172.17.0.0/16) once for the whole fleet in group_vars/all')
    pool_net = parse_pool(value, subject_of(source, 'calico_pool'))
    value, source = fleet_setting(reader, hosts, 'calico_block_prefix', block_prefix)
    prefix_len = parse_block_prefix(value, pool_net, subject_of(source, 'calico_block_prefix'))
    value, source = fleet_setting(reader, hosts, 'calico_max_blocks_per_host', DEFAULT_MAX_BLOCKS)
    max_blocks = parse_max_blocks(value, subject_of(source, 'calico_max_blocks_per_host'))
    value, share_source = fleet_setting(reader, hosts, 'calico_rack_block_pool', None)
    share_len = rack_shares.parse_rack_block_pool(value, pool_net, prefix_len,
                                                  subject_of(share_source, 'calico_rack_block_pool'))

    # 3. racks
    rack_of = {}
    for name in hosts:
        mine = natural_sorted(r for r, members in members_of.items() if name in members)
        if len(mine) > 1:
            raise FabricError(host_subject(name), f"is in two racks ({', '.join(mine)})",
                              'put each host in exactly one child group of calico_racks')
        rack_of[name] = mine[0] if mine else None
    if topology == 'route_reflector':
        for name in hosts:
            if name in is_reflector and rack_of[name] is None:
                raise FabricError(host_subject(name), 'route reflector is not in any rack',
                                  'add it to the child group of calico_racks it reflects for')
        for name in hosts:
            if rack_of[name] is None:
                raise FabricError(host_subject(name), 'is not in any rack',
                                  'add it to a child group of calico_racks (route_reflector topology)')
    rack_shares.check_racks(share_len, topology, share_source, {rack for rack in rack_of.values() if rack})

    # 4. addressing and identity
    node_ip, node_prefixlen, router_id = {}, {}, {}
    for name in hosts:
        addr = speaker_address(reader, name, 'has no node IP', "the host's fabric IPv4 address")
        node_ip[name] = addr

        node_prefixlen[name] = _prefixlen(reader, name, 'calico_node_prefixlen', "the host's fabric subnet",
                                          'lab_segment', "set the rack's lab_segment to its subnet, "
                                                         'e.g. 192.168.100.0/24')

        router_id[name] = str(parse_router_id(reader, name, addr, 'node IP'))
    seen = {}
    for name in hosts:
        if node_ip[name] in seen:
            raise FabricError(host_subject(name),
                              f"node IP {node_ip[name]} is also used by host '{seen[node_ip[name]]}'",
                              'give each host its own calico_node_ip')
        seen[node_ip[name]] = name
    seen = {}
    for name in hosts:
        if router_id[name] in seen:
            raise FabricError(host_subject(name), f"router id {router_id[name]} is also used by host "
                                                  f"'{seen[router_id[name]]}'",
                              'set a unique calico_router_id (it defaults to the node IP)')
        seen[router_id[name]] = name
    spine_ip, spine_prefixlen = _spine_addresses(reader, hosts, is_reflector, node_ip, node_prefixlen)

    # 5. AS numbers, racks, cluster ids
    as_of = {}
    rack_info = {}
    for rack in natural_sorted(members_of):
        members = [h for h in hosts if rack_of[h] == rack]
        if not members:
            continue  # a rack with no BGP speakers yet: nothing to plan
        first_value, first_host = None, None
        for name in members:
            value = reader.get(name, 'calico_as_number')
            if is_unset(value):
                continue
            if first_host is None:
                first_value, first_host = value, name
            elif str(value).strip() != str(first_value).strip():
                raise FabricError(host_subject(name), f"calico_as_number {value} differs from {first_value} of rack "
                                                      f"'{rack}' (host '{first_host}')",
                                  'set calico_as_number on the rack group only')
        if first_host is not None and any(is_unset(reader.get(n, 'calico_as_number')) for n in members):
            missing = next(n for n in members if is_unset(reader.get(n, 'calico_as_number')))
            raise FabricError(host_subject(missing), f"has no calico_as_number but rack '{rack}' uses {first_value}",
                              'set calico_as_number on the rack group only')
        if first_host is None:
            if topology == 'route_reflector':
                raise FabricError(rack_subject(rack), 'calico_as_number is not set',
                                  "set calico_as_number in the rack group's vars (each rack is one AS)")
            number = parse_as_number(as_number, 'calico_as_number (filter argument)')
        else:
            number = parse_as_number(first_value, rack_subject(rack))
        cluster_raw = None
        for name in members:
            value = reader.get(name, 'calico_rr_cluster_id')
            if not is_unset(value):
                cluster_raw = value
                break
        rack_info[rack] = {
            'as_number': number,
            'hosts': members,
            'reflectors': [h for h in members if h in is_reflector],
            'cluster_raw': cluster_raw,
        }
        for name in members:
            as_of[name] = number
    for name in hosts:
        if name in as_of:
            continue
        value = reader.get(name, 'calico_as_number')
        if is_unset(value):
            as_of[name] = parse_as_number(as_number, 'calico_as_number (filter argument)')
        else:
            as_of[name] = parse_as_number(value, host_subject(name))

    speakers = {name: {'ip': str(node_ip[name]), 'as_number': as_of[name], 'rack': rack_of[name],
                       'reflector': name in is_reflector, 'prefixlen': node_prefixlen[name],
                       'spine_ip': None if spine_ip[name] is None else str(spine_ip[name]),
                       'spine_prefixlen': spine_prefixlen[name]} for name in hosts}
    check_peer_plan(speakers, topology)
    cluster_ids = {}
    if topology == 'route_reflector':
        overrides = {}
        used = {}
        for rack in natural_sorted(rack_info):
            if rack_info[rack]['cluster_raw'] is not None:
                overrides[rack] = parse_cluster_id(rack_info[rack]['cluster_raw'], rack_subject(rack))
        cluster_ids = default_cluster_ids(speakers, overrides)
        for rack in natural_sorted(cluster_ids):
            cid = cluster_ids[rack]
            if cid in used:
                raise FabricError(rack_subject(rack), f"route-reflector cluster id {cid} is also used by rack "
                                                      f"'{used[cid]}'",
                                  'give each rack its own calico_rr_cluster_id (racks sharing one lose routes)')
            used[cid] = rack
    # 5b. the spines (route_reflector): their addresses, AS and the password both ends of a session share
    spines = check_spines(reader, spine_names, hosts, topology,
                          {rack: info['as_number'] for rack, info in rack_info.items()}, node_ip, spine_ip, router_id)
    check_passwords(reader, spines, [name for name in hosts if name in is_reflector])

    # 6. blocks
    for name in hosts:
        if name in is_node:
            continue
        if not is_unset(reader.get(name, 'calico_block')):
            raise FabricError(host_subject(name), 'has calico_block but is not in calico_nodes',
                              'add it to calico_nodes or drop calico_block')
        if reader.get(name, 'calico_workloads'):
            raise FabricError(host_subject(name), 'has calico_workloads but is not in calico_nodes',
                              'add it to calico_nodes or drop calico_workloads')
    facts = {name: reader.get(name, 'calico_node_facts') for name in hosts}
    facts = {name: (value if isinstance(value, Mapping) else {}) for name, value in facts.items()}
    block_hosts = [{'name': name, 'block': reader.get(name, 'calico_block'), 'current': facts[name].get('blocks'),
                    'addresses': current_addresses(facts[name].get('workloads')),
                    'explicit': explicit_addresses(reader.get(name, 'calico_workloads'))}
                   for name in hosts if name in is_node]
    shares_of_racks, regions = rack_shares.plan_shares(
        share_len, pool_net, prefix_len, {rack: info['hosts'] for rack, info in rack_info.items()}, rack_of,
        block_hosts)
    first_blocks = allocate_blocks(pool_net, prefix_len, block_hosts, regions)

    # 7. workloads, per host in its blocks (a host whose workloads do not fit gets more, up to max_blocks)
    shares = workload_shares(reader, hosts, prefix_len)  # CNI hosts: their workloads' part of the first block

    def fit(name, nets):
        return assign_workload_ips(nets, reader.get(name, 'calico_workloads'), facts[name].get('workloads'),
                                   subject=host_subject(name), namespaces=workload_namespaces(reader, name),
                                   first_share=shares.get(name))

    grown = grow_blocks(pool_net, prefix_len, block_hosts, first_blocks, max_blocks, fit, regions)
    workloads = {}
    owner_of_ip = {}
    for name in hosts:
        planned = grown[name][1] if name in grown else []
        for entry in planned:
            entry['ifname'] = interface_name(entry['name'])
        workloads[name] = planned
    for name in hosts:
        for entry in workloads[name]:
            if entry['ip'] in owner_of_ip:
                other_host, other = owner_of_ip[entry['ip']]
                raise FabricError(host_subject(name), f"workload '{entry['name']}' ip {entry['ip']} is also used by "
                                                      f"workload '{other}' on host '{other_host}'",
                                  'give each workload its own ip, or drop ip to get the next free address')
            owner_of_ip[entry['ip']] = (name, entry['name'])
        ifnames = {}
        for entry in workloads[name]:
            if entry['ifname'] in ifnames:  # sha1 prefix collision: astronomically unlikely, still checked
                raise FabricError(host_subject(name), f"workloads '{ifnames[entry['ifname']]}' and '{entry['name']}' "
                                                      f"map to one interface name {entry['ifname']}",
                                  'rename one of the workloads')
            ifnames[entry['ifname']] = entry['name']

    # 8. peers and the plan
    peers = compute_peers(speakers, topology, cluster_ids, spines=spine_speakers(spines))
    plan_hosts = {}
    for name in hosts:
        block, source = first_blocks.get(name, (None, None))
        plan_hosts[name] = {
            'node_ip': str(node_ip[name]),
            'node_prefixlen': node_prefixlen[name],
            'router_id': router_id[name],
            'as_number': as_of[name],
            'rack': rack_of[name],
            'role': 'reflector' if name in is_reflector else 'node',
            'spine_ip': speakers[name]['spine_ip'],
            'spine_prefixlen': spine_prefixlen[name],
            'block': block,
            'blocks': grown[name][0] if name in grown else [],
            'block_source': source,
            'workloads': workloads[name],
            'peers': peers[name],
        }
    # dual stack (calico_pool_v6): IPv6 blocks, workload ip6 (policy peers too), the sessions' ipv6 channel
    dual_stack = plan_dual_stack(reader, hosts, plan_hosts, facts, topology, max_blocks, spines,
                                 {name: share - prefix_len for name, share in shares.items()})
    # per host: cni (networks, ranges; IPv6 ranges too with dual stack)
    cni_members = plan_cni(reader, hosts, plan_hosts, prefix_len, facts, (dual_stack or {}).get('block_prefix_v6'))
    pool_v6 = None if dual_stack is None else inputs.netaddr.IPNetwork(dual_stack['pool_v6'])
    floating_ips, floating_ips_v6 = plan_policy(reader, hosts, plan_hosts, pool_net, cni_members, pool_v6)
    if dual_stack:  # what each peer may announce in the ipv6 channel: IPv6 blocks and floating IPs
        plan_imports_v6(plan_hosts, topology, dual_stack['pool_v6'], dual_stack['block_prefix_v6'], floating_ips_v6)
        dual_stack['floating_ips_v6'] = floating_ips_v6
    plan_ipip(reader, hosts, plan_hosts, ipip_mode)  # per host: ipip (tunnel next hops, allowed sources)
    # per host: sessions to routers outside the fleet (calico_bgp_peers) and the BFD protocol's timers
    plan_external_peers(reader, hosts, plan_hosts, pool_net, floating_ips + floating_ips_v6, bfd,
                        (dual_stack or {}).get('pool_v6'))
    plan_racks = {
        rack: {
            'as_number': info['as_number'],
            'hosts': info['hosts'],
            'reflectors': info['reflectors'],
            'cluster_id': cluster_ids.get(rack),
        }
        for rack, info in ((r, rack_info[r]) for r in natural_sorted(rack_info))
    }
    rack_shares.plan_aggregates(plan_hosts, plan_racks, shares_of_racks)  # per rack: share; per reflector: aggregate
    # per session: what that peer may announce (nothing else is imported)
    plan_imports(plan_hosts, topology, str(pool_net), prefix_len, floating_ips,
                 {rack: str(share) for rack, share in shares_of_racks.items()})
    plan = {
        'pool': str(pool_net),
        'block_prefix': prefix_len,
        'max_blocks_per_host': max_blocks,
        'topology': topology,
        'ipip_mode': ipip_mode,
        'bfd': bfd,
        'hosts': plan_hosts,
        'racks': plan_racks,
        'floating_ips': floating_ips,
        **(dual_stack or {}),
    }
    if topology == 'route_reflector':  # the origin AS a reflector requires of a rack's prefixes from outside it
        plan['origins'] = rack_shares.plan_origins(plan_hosts, plan_racks, shares_of_racks)
        if dual_stack:  # IPv6 blocks are never aggregated: each comes with its rack's origin AS
            plan['origins_v6'] = rack_shares.plan_origins(v6_view(plan_hosts), plan_racks, {})
    if share_len is not None:
        plan['rack_block_pool'] = share_len
    if spines:  # per spine router (calico_spines): its FRR configuration
        plan['spines'] = plan_spines(reader, spines, plan_hosts, plan_racks, str(pool_net), prefix_len,
                                     floating_ips, bfd, dual_stack)
    return plan
