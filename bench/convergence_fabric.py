"""The labs of bench/convergence.py: generated inventories (full mesh, two racks with reflectors, racks with
reflectors and FRR spines) and what each speaker holds once the fabric has converged, read from the plan."""

from __future__ import annotations

import ipaddress
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'collections'))   # the checkout's own collection (ansible.cfg's collections_path)

from ansible_collections.netfleet.calico.plugins.plugin_utils import fabric_status  # noqa: E402

LAB_GROUP_VARS = REPO / 'inventories' / 'lab' / 'group_vars'
# the same with the spines' FRR by pid file in each spine's state directory
LAB_SPINE_GROUP_VARS = REPO / 'inventories' / 'lab-spine' / 'group_vars'

SEGMENT = ipaddress.IPv4Network('10.64.0.0/16')        # mesh: one segment for every host
SPINE_SEGMENT = ipaddress.IPv4Network('10.255.0.0/24')
POOL, BLOCK_PREFIX = '172.16.0.0/12', 26                 # 16,384 blocks: any size fits
BASE_AS = 64512                                          # mesh; rack r has BASE_AS + r
SPINE_AS = 65100


def rack_segment(r):
    """Rack r's segment (r from 1): 10.65.0.0/16, 10.66.0.0/16, ..."""
    return ipaddress.IPv4Network('10.%d.0.0/16' % (64 + r))


def host_name(i):
    return 'h%03d' % i


def host_ip(net, i):
    """i-th host address of a segment, from .1.1 (the .0.x range is left to gateways and reflectors)."""
    return str(net.network_address + 256 + (i // 250) * 256 + (i % 250) + 1)


def host_entry(ip, workloads):
    entry = {'calico_node_ip': ip}
    if workloads:
        entry['calico_workloads'] = [{'name': 'w%d' % k} for k in range(1, workloads + 1)]
    return entry


def dump_yaml(data, indent=0):
    """Tiny YAML writer for the inventory (dicts, lists of flat dicts, scalars): no PyYAML dependency."""
    pad = '  ' * indent
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            if value:
                lines.append('%s%s:' % (pad, key))
                lines.extend(dump_yaml(value, indent + 1))
            else:
                lines.append('%s%s: {}' % (pad, key))
        elif isinstance(value, list):
            flows = ['{%s}' % ', '.join('%s: %s' % kv for kv in item.items()) for item in value]
            lines.append('%s%s: [%s]' % (pad, key, ', '.join(flows)))
        else:
            lines.append('%s%s: %s' % (pad, key, value))
    return lines


def mesh_inventory(size, workloads):
    hosts = {host_name(i): host_entry(host_ip(SEGMENT, i - 1), workloads) for i in range(1, size + 1)}
    return {'all': {
        'vars': {'calico_pool': POOL, 'calico_block_prefix': BLOCK_PREFIX, 'calico_bgp_topology': 'full_mesh'},
        'children': {
            'calico_racks': {'children': {'rack1': {
                'vars': {'calico_as_number': BASE_AS, 'lab_segment': str(SEGMENT)}, 'hosts': hosts}}},
            'calico_nodes': {'children': {'rack1': {}}},
        }}}


def rr_inventory(size, workloads):
    """The size hosts split over two racks (each its own segment and AS) with one reflector per rack,
    the rack's ToR: gateway of the rack segment, leg on the spine segment (as inventories/lab-racks)."""
    racks, reflectors = {}, {}
    per_rack = [size // 2 + size % 2, size // 2]
    first = 1
    for r, count in enumerate(per_rack, start=1):
        net = rack_segment(r)
        gateway = str(net.network_address + 1)
        rr = 'rr%d' % r
        hosts = {rr: {'calico_node_ip': gateway, 'calico_rr_spine_ip': str(SPINE_SEGMENT.network_address + r)}}
        for i in range(first, first + count):
            hosts[host_name(i)] = host_entry(host_ip(net, i - first), workloads)
        first += count
        racks['rack%d' % r] = {'vars': {'calico_as_number': BASE_AS + r, 'lab_segment': str(net)}, 'hosts': hosts}
        reflectors[rr] = {}
    return {'all': {
        'vars': {'calico_pool': POOL, 'calico_block_prefix': BLOCK_PREFIX,
                 'calico_bgp_topology': 'route_reflector', 'lab_spine_segment': str(SPINE_SEGMENT)},
        'children': {
            'calico_racks': {'children': racks},
            'calico_route_reflectors': {'hosts': reflectors},
            'calico_nodes': {'hosts': {h: {} for rack in racks.values() for h in rack['hosts']
                                       if h not in reflectors}},
        }}}


def spine_inventory(size, workloads, racks, reflectors_per_rack, spines, rack_block_pool=0):
    """The size hosts split evenly over ``racks`` racks (each its own segment and AS), each rack with
    ``reflectors_per_rack`` reflectors (its ToRs: gateways of the rack segment, legs on the spine segment) that
    peer by eBGP with ``spines`` FRR spines (AS SPINE_AS) on the spine segment (as inventories/lab-spine).
    ``rack_block_pool`` (a prefix length, 0 for none) gives each rack a share of the pool announced as one
    aggregate, as inventories/lab-spine does."""
    if racks < 1 or not 1 <= reflectors_per_rack <= 9 or not 1 <= spines <= 9:
        raise ValueError('spine topology: racks >= 1, 1-9 reflectors per rack, 1-9 spines')
    if racks * reflectors_per_rack > SPINE_SEGMENT.num_addresses - 24:
        raise ValueError('spine topology: %d reflectors do not fit %s' % (racks * reflectors_per_rack, SPINE_SEGMENT))
    groups, reflectors = {}, {}
    first, rr_index = 1, 0
    for r in range(1, racks + 1):
        net = rack_segment(r)
        count = size // racks + (1 if r <= size % racks else 0)
        hosts = {}
        for k in range(reflectors_per_rack):
            name = 'rr%d%s' % (r, 'abcdefghi'[k]) if reflectors_per_rack > 1 else 'rr%d' % r
            rr_index += 1
            hosts[name] = {'calico_node_ip': str(net.network_address + 1 + k),
                           'calico_rr_spine_ip': str(SPINE_SEGMENT.network_address + 16 + rr_index)}
            reflectors[name] = {}
        for i in range(first, first + count):
            hosts[host_name(i)] = host_entry(host_ip(net, i - first), workloads)
        first += count
        groups['rack%d' % r] = {'vars': {'calico_as_number': BASE_AS + r, 'lab_segment': str(net)}, 'hosts': hosts}
    fleet = {'calico_pool': POOL, 'calico_block_prefix': BLOCK_PREFIX, 'calico_bgp_topology': 'route_reflector',
             'calico_spine_as_number': SPINE_AS, 'lab_spine_segment': str(SPINE_SEGMENT)}
    if rack_block_pool:
        fleet['calico_rack_block_pool'] = rack_block_pool
    return {'all': {
        'vars': fleet,
        'children': {
            'calico_spines': {'hosts': {'sp%d' % s: {'calico_node_ip': str(SPINE_SEGMENT.network_address + s)}
                                        for s in range(1, spines + 1)}},
            'calico_racks': {'children': groups},
            'calico_route_reflectors': {'hosts': reflectors},
            'calico_nodes': {'hosts': {h: {} for rack in groups.values() for h in rack['hosts']
                                       if h not in reflectors}},
        }}}


def write_inventory(directory, data):
    """hosts.yml from ``data`` and a copy of the lab's group_vars (inventories/lab-spine's with spines)."""
    directory.mkdir(parents=True, exist_ok=True)
    spines = 'calico_spines' in data['all']['children']
    shutil.copytree(LAB_SPINE_GROUP_VARS if spines else LAB_GROUP_VARS, directory / 'group_vars')
    (directory / 'hosts.yml').write_text('---\n# generated by bench/convergence.py\n'
                                         + '\n'.join(dump_yaml(data)) + '\n')


# ------------------------------------------------------------------------------------------ the plan

def expectations(plan, birds, spines):
    """What every speaker holds once the fabric has converged, read from the fabric plan (site.yml's
    ``calico_fabric``), so that it follows the plan whatever routes it gives (a block per host, an aggregate per
    rack): a host or reflector the routes status.yml's analysis would call missing if it held none at all
    (``fabric_status.analyse``); a spine every prefix its prefix lists accept from the racks' reflectors.
    Sets ``expect`` of every ``Bird`` and ``Frr``."""
    statuses = {b.host: {'bird_running': True, 'reached': True, 'sessions': [],
                         'routes': {'bird': [], 'blackholes': sorted(b.blocks)}} for b in birds}
    analysis = fabric_status.analyse(statuses, plan)
    for bird in birds:
        if bird.host not in plan['hosts']:
            raise RuntimeError('%s runs BIRD but is not in the fabric plan' % bird.host)
        bird.expect = set(analysis['hosts'][bird.host]['missing_blocks'])
    for spine in spines:
        lists = plan['spines'][spine.host]['prefix_lists']
        spine.expect = {e['prefix'] for n in plan['spines'][spine.host]['neighbors'] for e in lists[n['prefix_list_in']]
                        if e['action'] == 'permit' and 'le' not in e and 'ge' not in e}
