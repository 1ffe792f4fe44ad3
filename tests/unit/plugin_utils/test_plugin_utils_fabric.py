"""Pure planning logic of plugins/plugin_utils/fabric.py: blocks, workload addresses, peers, helpers."""

from __future__ import annotations

import hashlib
import random

import netaddr
import pytest

from ansible_collections.netfleet.calico.plugins.plugin_utils import blocks as block_plan
from ansible_collections.netfleet.calico.plugins.plugin_utils import errors, inputs, inventory
from ansible_collections.netfleet.calico.plugins.plugin_utils import peers as peer_plan
from ansible_collections.netfleet.calico.plugins.plugin_utils import workloads as workload_plan
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing

POOL = netaddr.IPNetwork('172.17.0.0/16')


def msg(excinfo):
    return str(excinfo.value)


def alloc(hosts, pool=POOL, prefix=24):
    return block_plan.allocate_blocks(pool, prefix, hosts)


def blocks_of(result):
    return {name: block for name, (block, _source) in result.items()}


# --------------------------------------------------------------------------------------------- helpers

def test_natural_order():
    names = ['host-10', 'host-2', 'host-1', 'rack2-h1', 'host-01', 'a', 'host-']
    assert inventory.natural_sorted(names) == ['a', 'host-', 'host-01', 'host-1', 'host-2', 'host-10', 'rack2-h1']


def test_ifname_rule():
    assert inputs.interface_name('a1') == 'cali' + hashlib.sha1(b'a1').hexdigest()[:11]
    assert inputs.interface_name('a1') == 'calif29bc91bbda'
    assert len(inputs.interface_name('x' * 500)) == 15
    assert inputs.interface_name('a1', 'tap').startswith('tap') and len(inputs.interface_name('a1', 'tap')) == 14
    with pytest.raises(errors.FabricError) as exc:
        inputs.interface_name('a1', 'toolong')
    assert msg(exc) == ("netfleet.calico preflight: input: interface prefix 'toolong' makes 'toolongf29bc91bbda' "
                        "longer than 15 characters — use a prefix of at most 4 characters")


def test_ifname_matches_module_utils():
    """The planner and the modules name interfaces by one rule."""
    from ansible_collections.netfleet.calico.plugins.module_utils import iproute
    for wid in ('a1', 'b2', 'default.web-0', 'x' * 64):
        assert inputs.interface_name(wid) == iproute.workload_ifname(wid)


def test_fabric_error_is_one_line_and_reprefixable():
    err = errors.FabricError("host 'h'", 'is broken', 'fix it')
    assert str(err) == "netfleet.calico preflight: host 'h': is broken — fix it"
    assert '\n' not in str(err)
    assert str(err.with_prefix('netfleet.calico.x')) == "netfleet.calico.x: host 'h': is broken — fix it"


def test_normalize_current_blocks_shapes():
    assert block_plan.normalize_current_blocks(None) == []
    assert block_plan.normalize_current_blocks('') == []
    assert block_plan.normalize_current_blocks('172.17.8.0/24') == ['172.17.8.0/24']
    normalize = block_plan.normalize_current_blocks
    assert normalize(['172.17.8.0/24', ' 172.17.9.0/24 ']) == ['172.17.8.0/24', '172.17.9.0/24']
    assert normalize([{'dst': '10.0.0.0/24'}, {'cidr': '10.0.1.0/24'}, {'block': '10.0.2.0/24'},
                      {'other': 1}, 7]) == ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24']


def test_normalize_current_workloads_shapes():
    assert workload_plan.normalize_current_workloads(None) == {}
    assert workload_plan.normalize_current_workloads({'a1': '172.17.8.2', 'a2': {'ip': '172.17.8.3'}, 'a3': 5}) == {
        'a1': '172.17.8.2', 'a2': '172.17.8.3'}
    current = [{'name': 'a1', 'ip': '172.17.8.2/32'}, 'junk', {'name': 'a2'}]
    assert workload_plan.normalize_current_workloads(current) == {'a1': '172.17.8.2/32'}


@pytest.mark.parametrize('value, expected', [
    (64512, 64512), ('65001', 65001), (1, 1), (4294967295, 4294967295),
])
def test_as_number_valid(value, expected):
    assert inputs.parse_as_number(value, "rack 'r'") == expected


@pytest.mark.parametrize('value, problem', [
    (0, 'calico_as_number 0 is not a valid AS number'),
    (23456, 'calico_as_number 23456 is not a valid AS number'),
    (4294967296, 'calico_as_number 4294967296 is not a valid AS number'),
    ('abc', "calico_as_number 'abc' is not a number"),
    (' 64512 ', "calico_as_number ' 64512 ' is not a number"),  # values are taken exactly as written
    (-5, 'calico_as_number -5 is not a valid AS number'),
    (True, "calico_as_number True is not a number"),
    (None, "calico_as_number None is not a number"),
])
def test_as_number_invalid(value, problem):
    with pytest.raises(errors.FabricError) as exc:
        inputs.parse_as_number(value, "rack 'r'")
    assert msg(exc) == (f"netfleet.calico preflight: rack 'r': {problem} — use 1-4294967295 except 23456 (AS_TRANS), "
                        "e.g. a private AS from 64512-65534 or 4200000000-4294967294")


@pytest.mark.parametrize('value, expected', [
    ('never', 'never'), ('Always', 'always'), ('CrossSubnet', 'cross_subnet'), ('cross_subnet', 'cross_subnet'),
    ('cross-subnet', 'cross_subnet'),
])
def test_ipip_aliases(value, expected):
    assert inputs.parse_ipip_mode(value) == expected


def test_cluster_id_forms():
    assert inputs.parse_cluster_id('10.255.0.1', "rack 'r'") == '10.255.0.1'
    assert inputs.parse_cluster_id(1, "rack 'r'") == '0.0.0.1'
    assert inputs.parse_cluster_id('4294967295', "rack 'r'") == '255.255.255.255'
    for bad in ('0.0.0.0', 'x', 0, '1.2.3'):
        with pytest.raises(errors.FabricError) as exc:
            inputs.parse_cluster_id(bad, "rack 'r'")
        assert msg(exc) == (f"netfleet.calico preflight: rack 'r': calico_rr_cluster_id {bad!r} is not a cluster id — "
                            "use a dotted quad such as 10.255.0.1, or drop it (defaults to the lowest reflector IP)")


# --------------------------------------------------------------------------------------------- blocks

def test_blocks_priority_pinned_current_new():
    result = alloc([
        {'name': 'a', 'block': '172.17.8.0/24', 'current': '172.17.3.0/24'},  # pin wins over current
        {'name': 'b', 'current': ['172.17.9.0/24']},
        {'name': 'c'},
        {'name': 'd', 'current': '10.0.0.0/24'},   # outside the pool: ignored
        {'name': 'e', 'current': '172.17.4.0/25'},  # wrong size: ignored
    ])
    assert result == {
        'a': ('172.17.8.0/24', 'pinned'),
        'b': ('172.17.9.0/24', 'current'),
        'c': ('172.17.0.0/24', 'allocated'),
        'd': ('172.17.1.0/24', 'allocated'),
        'e': ('172.17.2.0/24', 'allocated'),  # 172.17.3.0/24 is still a's on its kernel: not handed out yet
    }


def test_blocks_in_list_order_without_pins_or_facts():
    assert blocks_of(alloc([{'name': 'x'}, {'name': 'y'}, {'name': 'z'}])) == {
        'x': '172.17.0.0/24', 'y': '172.17.1.0/24', 'z': '172.17.2.0/24'}


def test_blocks_current_taken_twice_split_brain_second_moves():
    result = alloc([{'name': 'a', 'current': '172.17.5.0/24'}, {'name': 'b', 'current': '172.17.5.0/24'}])
    assert result == {'a': ('172.17.5.0/24', 'current'), 'b': ('172.17.0.0/24', 'allocated')}


def test_blocks_pin_over_current_of_pinned_owner_split_brain():
    # both kernels hold .5; a pins it: a keeps it, b moves (no error, the fleet was already inconsistent)
    result = alloc([{'name': 'a', 'block': '172.17.5.0/24', 'current': '172.17.5.0/24'},
                    {'name': 'b', 'current': '172.17.5.0/24'}])
    assert blocks_of(result) == {'a': '172.17.5.0/24', 'b': '172.17.0.0/24'}


def test_blocks_multiple_current_keeps_lowest_free():
    result = alloc([{'name': 'a', 'current': ['172.17.7.0/24', '172.17.6.0/24']}, {'name': 'b'}])
    assert result == {'a': ('172.17.6.0/24', 'current'), 'b': ('172.17.0.0/24', 'allocated')}


def test_blocks_stale_current_used_only_when_nothing_else_left():
    pool = netaddr.IPNetwork('10.0.0.0/23')
    # a moved to a pinned block; its old block is the only one left, so c gets it
    result = block_plan.allocate_blocks(pool, 24, [{'name': 'a', 'block': '10.0.1.0/24', 'current': '10.0.0.0/24'},
                                                   {'name': 'c'}])
    assert blocks_of(result) == {'a': '10.0.1.0/24', 'c': '10.0.0.0/24'}


def test_blocks_exhausted_names_host():
    pool = netaddr.IPNetwork('10.0.0.0/23')
    with pytest.raises(errors.FabricError) as exc:
        block_plan.allocate_blocks(pool, 24, [{'name': 'a'}, {'name': 'b'}, {'name': 'c'}])
    assert msg(exc) == ("netfleet.calico preflight: host 'c': no free /24 left in calico_pool 10.0.0.0/23 "
                        "(2 blocks, all in use) — enlarge calico_pool or raise calico_block_prefix")


def test_blocks_duplicate_host():
    with pytest.raises(errors.FabricError) as exc:
        alloc([{'name': 'a'}, {'name': 'a'}])
    assert msg(exc) == "netfleet.calico preflight: host 'a': appears twice in the host list — list each host once"


@pytest.mark.parametrize('pin, problem, fix', [
    ('bogus', "calico_block 'bogus' is not a valid IPv4 CIDR",
     'set calico_block to a /24 inside 172.17.0.0/16 or drop calico_block'),
    ('172.17.8.1/24', 'calico_block 172.17.8.1/24 has host bits set', 'use 172.17.8.0/24'),
    ('10.9.0.0/24', 'calico_block 10.9.0.0/24 is outside calico_pool 172.17.0.0/16',
     'pick a block inside the pool or drop calico_block'),
    ('172.17.8.0/25', 'calico_block 172.17.8.0/25 is not a /24 (calico_block_prefix)',
     'pin a /24 inside 172.17.0.0/16 or drop calico_block'),
    ('172.17.0.0/16', 'calico_block 172.17.0.0/16 is not a /24 (calico_block_prefix)',
     'pin a /24 inside 172.17.0.0/16 or drop calico_block'),
    ('172.16.0.0/15', 'calico_block 172.16.0.0/15 is outside calico_pool 172.17.0.0/16',
     'pick a block inside the pool or drop calico_block'),
])
def test_blocks_bad_pin(pin, problem, fix):
    with pytest.raises(errors.FabricError) as exc:
        alloc([{'name': 'a'}, {'name': 'host-c', 'block': pin}])
    assert msg(exc) == f"netfleet.calico preflight: host 'host-c': {problem} — {fix}"


def test_blocks_pin_overlaps_pin():
    with pytest.raises(errors.FabricError) as exc:
        alloc([{'name': 'a', 'block': '172.17.8.0/24'}, {'name': 'b', 'block': '172.17.8.0/24'}])
    assert msg(exc) == ("netfleet.calico preflight: host 'b': calico_block 172.17.8.0/24 overlaps the block of "
                        "host 'a' — pin a different block or drop calico_block")


def test_blocks_pin_takes_running_block_of_unpinned_host():
    with pytest.raises(errors.FabricError) as exc:
        alloc([{'name': 'a', 'current': '172.17.8.0/24'}, {'name': 'new', 'block': '172.17.8.0/24'}])
    assert msg(exc) == ("netfleet.calico preflight: host 'new': calico_block 172.17.8.0/24 is the running block of "
                        "host 'a' — pin a free block for 'new', or pin another block for 'a' too")


def test_blocks_pin_may_take_block_its_owner_leaves_by_pin():
    result = alloc([{'name': 'a', 'block': '172.17.1.0/24', 'current': '172.17.8.0/24'},
                    {'name': 'b', 'block': '172.17.8.0/24'}])
    assert blocks_of(result) == {'a': '172.17.1.0/24', 'b': '172.17.8.0/24'}


def _random_name(rng, taken):
    while True:
        name = f"{rng.choice(['host', 'node', 'a', 'zz', 'rack1-h', 'h'])}-{rng.randint(0, 999)}"
        if name not in taken:
            return name


@pytest.mark.parametrize('seed', range(40))
def test_blocks_stable_when_hosts_are_added_anywhere_in_a_running_fleet(seed):
    rng = random.Random(seed)
    pool = netaddr.IPNetwork('10.0.0.0/20')
    names = set()
    fleet = []
    for _unused in range(rng.randint(1, 10)):
        name = _random_name(rng, names)
        names.add(name)
        entry = {'name': name}
        if rng.random() < 0.3:
            entry['block'] = f'10.0.{rng.randrange(0, 16)}.0/24'
            if any(e.get('block') == entry['block'] for e in fleet):
                del entry['block']
        fleet.append(entry)
    fleet = [fleet[i] for i in sorted(range(len(fleet)), key=lambda i: inventory.natural_key(fleet[i]['name']))]
    before = blocks_of(block_plan.allocate_blocks(pool, 24, fleet))
    running = [dict(e, current=before[e['name']]) for e in fleet]
    for _unused in range(rng.randint(1, 5)):
        name = _random_name(rng, names)
        names.add(name)
        running.insert(rng.randint(0, len(running)), {'name': name})
        rng.shuffle(running) if rng.random() < 0.3 else None  # even the order may change
        after = blocks_of(block_plan.allocate_blocks(pool, 24, running))
        for host, block in before.items():
            assert after[host] == block
        assert len(set(after.values())) == len(after)
        running = [dict(e, current=after[e['name']]) for e in running]


@pytest.mark.parametrize('seed', range(20))
def test_blocks_stable_when_all_pinned_without_facts(seed):
    rng = random.Random(1000 + seed)
    pool = netaddr.IPNetwork('10.0.0.0/16')
    fleet = [{'name': f'h{i}', 'block': f'10.0.{b}.0/24'} for i, b in enumerate(rng.sample(range(256), 8))]
    before = blocks_of(block_plan.allocate_blocks(pool, 24, fleet))
    for i in range(5):
        fleet.insert(rng.randint(0, len(fleet)), {'name': f'new{i}'})
        after = blocks_of(block_plan.allocate_blocks(pool, 24, fleet))
        assert all(after[h] == b for h, b in before.items())


def test_blocks_large_pool_is_fast_enough():
    pool = netaddr.IPNetwork('10.0.0.0/8')
    hosts = [{'name': f'h{i}'} for i in range(2000)]
    result = block_plan.allocate_blocks(pool, 26, hosts)
    assert result['h1999'] == ('10.1.243.192/26', 'allocated')  # 1999 * 64 addresses in


# --------------------------------------------------------------------------------------------- workloads

BLOCK = netaddr.IPNetwork('172.17.8.0/24')


def ips(entries):
    return {e['name']: e['ip'] for e in entries}


def test_workloads_article_numbering():
    out = workload_plan.assign_workload_ips(BLOCK, [{'name': 'a1'}, {'name': 'a2'}])
    assert out == [{'name': 'a1', 'ip': '172.17.8.2'}, {'name': 'a2', 'ip': '172.17.8.3'}]


def test_workloads_priority_and_extra_keys_kept():
    out = workload_plan.assign_workload_ips(
        BLOCK,
        [{'name': 'new'}, {'name': 'pinned', 'ip': '172.17.8.2/32', 'policy': 'web'}, {'name': 'running'},
         {'name': 'moved'}, 'plain'],
        current={'running': '172.17.8.3', 'moved': '172.17.9.5', 'gone': '172.17.8.4', 'pinned': '172.17.8.9'},
    )
    assert out == [
        {'name': 'new', 'ip': '172.17.8.4'},
        {'name': 'pinned', 'ip': '172.17.8.2', 'policy': 'web'},
        {'name': 'running', 'ip': '172.17.8.3'},
        {'name': 'moved', 'ip': '172.17.8.5'},
        {'name': 'plain', 'ip': '172.17.8.6'},
    ]


def test_workloads_current_loses_to_explicit_of_another():
    out = workload_plan.assign_workload_ips(BLOCK, [{'name': 'a'}, {'name': 'b', 'ip': '172.17.8.2'}],
                                            current={'a': '172.17.8.2'})
    assert ips(out) == {'a': '172.17.8.3', 'b': '172.17.8.2'}


def test_workloads_never_network_or_broadcast_automatically():
    block = netaddr.IPNetwork('10.0.0.0/29')  # .0 net, .7 broadcast: automatic .2-.6
    wanted = [{'name': f'w{i}'} for i in range(5)] + [{'name': 'one', 'ip': '10.0.0.1'}]
    out = workload_plan.assign_workload_ips(block, wanted, current={'w0': '10.0.0.0', 'w1': '10.0.0.7'})
    assert ips(out) == {'w0': '10.0.0.2', 'w1': '10.0.0.3', 'w2': '10.0.0.4', 'w3': '10.0.0.5', 'w4': '10.0.0.6',
                        'one': '10.0.0.1'}


def test_workloads_empty():
    assert workload_plan.assign_workload_ips(BLOCK, None) == []
    assert workload_plan.assign_workload_ips(BLOCK, []) == []


@pytest.mark.parametrize('workloads, problem, fix', [
    ('a1', 'calico_workloads is not a list', 'set calico_workloads to a list of {name, ip?}'),
    ({'name': 'a1'}, 'calico_workloads is not a list', 'set calico_workloads to a list of {name, ip?}'),
    ([7], 'calico_workloads[0] is not a mapping', 'set calico_workloads to a list of {name, ip?}'),
    ([{'name': 'a1'}, {'ip': '172.17.8.9'}], 'calico_workloads[1] has no name', 'give every workload a name'),
    ([{'name': 'bad name'}], "workload name 'bad name' is not allowed",
     "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ([{'name': '-x'}], "workload name '-x' is not allowed",
     "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ([{'name': 'a1'}, {'name': 'a1'}], "workload name 'a1' appears twice in calico_workloads",
     'give each workload of a host its own name'),
    ([{'name': 'a1', 'ip': 'x'}], "workload 'a1' ip 'x' is not an IPv4 address",
     'fix ip, or drop it to get the next free address of the block'),
    ([{'name': 'a1', 'ip': '172.17.8.2/24'}], "workload 'a1' ip '172.17.8.2/24' is not an IPv4 address",
     'fix ip, or drop it to get the next free address of the block'),
    ([{'name': 'a1', 'ip': 17}], "workload 'a1' ip 17 is not an IPv4 address",
     'fix ip, or drop it to get the next free address of the block'),
    ([{'name': 'a1', 'ip': '172.17.9.2'}], "workload 'a1' ip 172.17.9.2 is outside the host's block 172.17.8.0/24",
     'pick an address inside 172.17.8.0/24 or drop ip'),
    ([{'name': 'a1', 'ip': '172.17.8.0'}], "workload 'a1' ip 172.17.8.0 is the network address of block "
     '172.17.8.0/24', 'pick an address in 172.17.8.1-172.17.8.254 or drop ip'),
    ([{'name': 'a1', 'ip': '172.17.8.255'}], "workload 'a1' ip 172.17.8.255 is the broadcast address of block "
     '172.17.8.0/24', 'pick an address in 172.17.8.1-172.17.8.254 or drop ip'),
    ([{'name': 'a1', 'ip': '172.17.8.7'}, {'name': 'a2', 'ip': '172.17.8.7/32'}],
     "workload 'a2' ip 172.17.8.7 is also used by workload 'a1'",
     'give each workload its own ip, or drop ip to get the next free address'),
])
def test_workloads_errors(workloads, problem, fix):
    with pytest.raises(errors.FabricError) as exc:
        workload_plan.assign_workload_ips(BLOCK, workloads, subject="host 'host-a'")
    assert msg(exc) == f"netfleet.calico preflight: host 'host-a': {problem} — {fix}"


def test_workloads_block_full():
    block = netaddr.IPNetwork('172.17.8.0/30')
    assert ips(workload_plan.assign_workload_ips(block, [{'name': 'a1'}, {'name': 'a2', 'ip': '172.17.8.1'}])) == {
        'a1': '172.17.8.2', 'a2': '172.17.8.1'}
    with pytest.raises(errors.FabricError) as exc:
        workload_plan.assign_workload_ips(block, [{'name': 'a1'}, {'name': 'a2'}], subject="host 'host-a'")
    assert msg(exc) == ("netfleet.calico preflight: host 'host-a': block 172.17.8.0/30 is full, no address left for "
                        "workload 'a2' — run fewer workloads on this host or use bigger blocks "
                        "(lower calico_block_prefix)")


@pytest.mark.parametrize('seed', range(30))
def test_workloads_stable_when_added_anywhere(seed):
    rng = random.Random(seed)
    block = netaddr.IPNetwork('10.1.2.0/26')
    workloads = [{'name': f'w{i}'} for i in range(rng.randint(1, 20))]
    before = ips(workload_plan.assign_workload_ips(block, workloads))
    for n in range(rng.randint(1, 15)):
        workloads.insert(rng.randint(0, len(workloads)), {'name': f'new{n}'})
        if rng.random() < 0.2 and len(workloads) > 1:  # remove a new one now and then
            victim = rng.choice([w for w in workloads if w['name'].startswith('new')])
            workloads.remove(victim)
        after = ips(workload_plan.assign_workload_ips(block, workloads, current=before))
        assert all(after[name] == ip for name, ip in before.items() if name in after)
        assert len(set(after.values())) == len(after)
        assert all(netaddr.IPAddress(ip) not in (block.network, block.broadcast) for ip in after.values())
        before = after


# --------------------------------------------------------------------------------------------- peers

def node(ip, as_number=64512, rack=None, reflector=False):
    return {'ip': ip, 'as_number': as_number, 'rack': rack, 'reflector': reflector}


def dials_not(local, remote):
    """Passive flag of a session that is not reflector-client (plugin_utils.bgp's rule)."""
    return session_timing(local, remote)[0]


def test_peers_full_mesh_passive_rule_one_side_dials():
    nodes = {f'h{i}': node(f'10.0.0.{i}') for i in (5, 1, 3, 12)}
    peers = peer_plan.compute_peers(nodes, 'full_mesh')
    assert [p['name'] for p in peers['h3']] == ['h1', 'h5', 'h12']
    for me, lst in peers.items():
        for p in lst:
            back = next(q for q in peers[p['name']] if q['name'] == me)
            assert p['passive'] != back['passive']  # exactly one side dials
            assert (p['passive'], p['connect_delay_offset']) == session_timing(nodes[me]['ip'], p['ip'])
            assert p['connect_delay_offset'] == back['connect_delay_offset']
            assert p['type'] == 'ibgp' and p['rr_client'] is False and p['rr_cluster_id'] is None


def test_peers_full_mesh_mixed_as_is_ebgp():
    peers = peer_plan.compute_peers({'a': node('10.0.0.1', 65001), 'b': node('10.0.0.2', 65002)}, 'full_mesh')
    assert peers['a'] == [{'name': 'b', 'ip': '10.0.0.2', 'local_ip': '10.0.0.1', 'as_number': 65002, 'type': 'ebgp',
                           'direct': None, 'passive': session_timing('10.0.0.1', '10.0.0.2')[0],
                           'connect_delay_offset': session_timing('10.0.0.1', '10.0.0.2')[1],
                           'rr_client': False, 'rr_cluster_id': None}]


def rr_nodes():
    return {
        'rr1': node('10.1.0.1', 65001, 'rack1', True),
        'h1': node('10.1.0.11', 65001, 'rack1'),
        'h2': node('10.1.0.12', 65001, 'rack1'),
        'rr2a': node('10.2.0.2', 65002, 'rack2', True),
        'rr2b': node('10.2.0.1', 65002, 'rack2', True),
        'h3': node('10.2.0.11', 65002, 'rack2'),
    }


def test_peers_route_reflector():
    nodes = rr_nodes()
    ids = peer_plan.default_cluster_ids(nodes)
    assert ids == {'rack1': '10.1.0.1', 'rack2': '10.2.0.1'}  # lowest reflector IP, not first name
    peers = peer_plan.compute_peers(nodes, 'route_reflector', ids)

    def short(lst):
        return [(p['name'], p['type'], p['as_number'], p['passive'], p['rr_client'], p['rr_cluster_id']) for p in lst]

    assert short(peers['h1']) == [('rr1', 'ibgp', 65001, True, False, None)]  # the client waits
    assert short(peers['h3']) == [('rr2a', 'ibgp', 65002, True, False, None),
                                  ('rr2b', 'ibgp', 65002, True, False, None)]
    assert short(peers['rr1']) == [
        ('h1', 'ibgp', 65001, False, True, '10.1.0.1'),
        ('h2', 'ibgp', 65001, False, True, '10.1.0.1'),
        ('rr2a', 'ebgp', 65002, dials_not('10.1.0.1', '10.2.0.2'), False, None),
        ('rr2b', 'ebgp', 65002, dials_not('10.1.0.1', '10.2.0.1'), False, None),
    ]
    assert short(peers['rr2b']) == [
        ('h3', 'ibgp', 65002, False, True, '10.2.0.1'),
        ('rr1', 'ebgp', 65001, dials_not('10.2.0.1', '10.1.0.1'), False, None),
        ('rr2a', 'ibgp', 65002, dials_not('10.2.0.1', '10.2.0.2'), False, None),  # same-rack reflector: not a client
    ]
    # every session is configured on both ends, and exactly one end dials
    for me, lst in peers.items():
        for p in lst:
            back = next(q for q in peers[p['name']] if q['name'] == me)
            assert p['passive'] != back['passive']
            assert p['type'] == back['type']


def test_peers_cluster_id_override():
    ids = peer_plan.default_cluster_ids(rr_nodes(), {'rack2': '10.255.0.2', 'rack9': '1.1.1.1'})
    assert ids == {'rack1': '10.1.0.1', 'rack2': '10.255.0.2'}


def test_check_peer_plan_errors():
    nodes = rr_nodes()
    peer_plan.check_peer_plan(nodes, 'route_reflector')
    peer_plan.check_peer_plan({'x': node('10.0.0.1')}, 'full_mesh')  # nothing to check in a mesh

    bad = dict(nodes, h9=node('10.9.0.9', 65009))
    with pytest.raises(errors.FabricError) as exc:
        peer_plan.check_peer_plan(bad, 'route_reflector')
    assert msg(exc) == ("netfleet.calico preflight: host 'h9': host is not in any rack — add it to a child group of "
                        "calico_racks (route_reflector topology)")

    bad = dict(nodes, h9=node('10.9.0.9', 65001, 'rack9'))
    with pytest.raises(errors.FabricError) as exc:
        peer_plan.check_peer_plan(bad, 'route_reflector')
    assert msg(exc) == ("netfleet.calico preflight: rack 'rack9': calico_as_number 65001 is also used by rack "
                        "'rack1' — give each rack its own calico_as_number (route_reflector: racks peer by eBGP)")

    bad = dict(nodes, h9=node('10.9.0.9', 65009, 'rack9'), h10=node('10.9.0.10', 65009, 'rack9'))
    with pytest.raises(errors.FabricError) as exc:
        peer_plan.check_peer_plan(bad, 'route_reflector')
    assert msg(exc) == ("netfleet.calico preflight: rack 'rack9': has nodes (h9, h10) but no route reflector — "
                        "add a host of rack 'rack9' to calico_route_reflectors")

    # a rack of reflectors only (a spine) is fine
    peer_plan.check_peer_plan(dict(nodes, s1=node('10.9.0.1', 65009, 'spine', True)), 'route_reflector')


@pytest.mark.parametrize('a, a_len, b, b_len, expected', [
    ('10.0.0.1', 24, '10.0.0.200', 24, True),
    ('10.0.0.1', 24, '10.0.1.1', 24, False),
    ('10.0.0.1', None, '10.0.1.1', 16, True),   # one known prefix length decides, for both ends alike
    ('10.0.0.1', 30, '10.0.0.9', 24, False),    # every known prefix length must contain the other end
    ('10.0.0.1', None, '10.0.0.2', None, None),  # unknown
    ('10.0.0.1', 0, '192.0.2.1', None, True),
    ('10.0.0.1', 32, '10.0.0.1', 32, True),
])
def test_same_subnet(a, a_len, b, b_len, expected):
    assert inputs.same_subnet(a, a_len, b, b_len) is expected
    assert inputs.same_subnet(b, b_len, a, a_len) is expected


def test_peers_route_reflector_over_the_spine():
    nodes = rr_nodes()
    for name in nodes:
        nodes[name]['prefixlen'] = 24
    nodes['rr1'].update(spine_ip='10.255.0.1', spine_prefixlen=24)
    nodes['rr2a'].update(spine_ip='10.255.0.22', spine_prefixlen=24)
    # rr2b: no spine_ip, so its node IP (10.2.0.1/24) -- not on rr1's spine subnet
    peers = peer_plan.compute_peers(nodes, 'route_reflector')

    def ends(lst):
        return [(p['name'], p['ip'], p['local_ip'], p['type'], p['direct'], p['passive']) for p in lst]

    assert ends(peers['rr1']) == [
        ('h1', '10.1.0.11', '10.1.0.1', 'ibgp', True, False),
        ('h2', '10.1.0.12', '10.1.0.1', 'ibgp', True, False),
        ('rr2a', '10.255.0.22', '10.255.0.1', 'ebgp', True, dials_not('10.255.0.1', '10.255.0.22')),
        ('rr2b', '10.2.0.1', '10.255.0.1', 'ebgp', False, dials_not('10.255.0.1', '10.2.0.1')),
    ]
    assert ends(peers['rr2a']) == [
        ('h3', '10.2.0.11', '10.2.0.2', 'ibgp', True, False),
        ('rr1', '10.255.0.1', '10.255.0.22', 'ebgp', True, dials_not('10.255.0.22', '10.255.0.1')),
        ('rr2b', '10.2.0.1', '10.2.0.2', 'ibgp', True, dials_not('10.2.0.2', '10.2.0.1')),  # node IPs, not spine
    ]
    assert ends(peers['h1']) == [('rr1', '10.1.0.1', '10.1.0.11', 'ibgp', True, True)]
    for me, lst in peers.items():
        for p in lst:
            back = next(q for q in peers[p['name']] if q['name'] == me)
            assert (back['ip'], back['local_ip'], back['direct']) == (p['local_ip'], p['ip'], p['direct'])
            assert back['passive'] != p['passive']
    # a full mesh never uses the spine
    mesh = peer_plan.compute_peers(nodes, 'full_mesh')
    assert {p['ip'] for p in mesh['rr1']} == {nodes[n]['ip'] for n in nodes if n != 'rr1'}
    assert {p['local_ip'] for p in mesh['rr1']} == {'10.1.0.1'}
