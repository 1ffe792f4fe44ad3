"""bird.conf of every host of every shipped inventory, rendered by the role's own template and variables on the
controller (tests/playbooks/render_bird.yml), is accepted by the real `bird -p`; so are variants with a BGP
password, with IPIP and with routers outside the fleet. A config `bird -p` refuses proves the check is real."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from netfleet_render import render as render_configs

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / 'tests/playbooks/render_bird.yml'
INVENTORIES = sorted(p.name for p in (REPO / 'inventories').iterdir() if (p / 'hosts.yml').exists())
# (inventory, extra vars): a password with every character the password check lets through, and the tunnel modes
VARIANTS = {
    **{name: (name, {}) for name in INVENTORIES},
    'example+password+ipip+bfd': ('example', {'calico_bgp_password': "p@ss w'rd$%{}#;!~",
                                              'calico_ipip_mode': 'cross_subnet',
                                              'calico_bgp_bfd': {'interval': 50, 'multiplier': 4},
                                              'calico_node_bgp_hold_time': 9}),
    'lab-ipip+always': ('lab-ipip', {'calico_ipip_mode': 'always'}),
    # dual stack in a full mesh (inventories/lab-dualstack has racks): an IPv6 address per host from its IPv4 one,
    # /126 blocks (three automatic addresses), so four workloads take two of them
    'lab+v6': ('lab', {'calico_pool_v6': 'fd00:17::/48', 'calico_block_prefix_v6': 126, 'calico_max_blocks_per_host': 2,
                       'calico_node_ip_v6': "fd00:100::{{ calico_node_ip.split('.')[-1] }}",
                       'calico_workloads': [{'name': f'w{i}'} for i in range(4)]}),
    # 30 workloads on every host, /28 blocks (13 automatic addresses each): three blocks per host
    'lab+3blocks': ('lab', {'calico_block': '', 'calico_block_prefix': 28, 'calico_max_blocks_per_host': 3,
                            'calico_workloads': [{'name': f'w{i}'} for i in range(30)]}),
    # routers outside the fleet on every host and reflector (further away: multihop): a password of its own, BFD
    # without the fleet's, a router importing nothing (inventories/example has a direct one with GTSM)
    'lab-racks+peers': ('lab-racks', {'calico_bgp_peers': [
        {'ip': '192.168.101.254', 'as_number': 65100, 'name': 'dc-router', 'password': "r0uter p@ss'{}#;",
         'bfd': True, 'import_default': True, 'import_prefixes': ['198.51.100.0/24'], 'multihop': True},
        {'ip': '10.99.0.1', 'as_number': 65101, 'multihop': 4}]}),
    # dual stack, a reflector's kept session from its spine address: its ipv6 channel keeps that next hop
    'lab-dualstack+lingering': ('lab-dualstack', {'_calico_node_bgp_lingering': [
        {'name': 'Global_10_255_0_99', 'description': 'old', 'ip': '10.255.0.99', 'as_number': 65009,
         'local_as': 65002, 'passive': False, 'connect_delay_offset': 0, 'local_ip': '10.255.0.21', 'type': 'ebgp',
         'direct': True}]}),
    # IPv6 sessions beside the IPv4 ones; and while they come up (turned on), the IPv4 sessions of rack1's
    # reflector and its clients still carrying the IPv6 routes
    'lab-dualstack+v6sessions': ('lab-dualstack', {'calico_bgp_ipv6_sessions': True}),
    'lab-dualstack+v6sessions+carry': ('lab-dualstack', {'calico_bgp_ipv6_sessions': True, '_calico_node_bgp_carry6': [
        'RR_192_168_101_1', 'Client_192_168_101_11', 'Client_192_168_101_12']}),
    # moving to the spine: a reflector's old eBGP sessions kept as they ran (spine address, direct or multihop)
    'lab-spine+lingering': ('lab-spine', {'_calico_node_bgp_lingering': [
        {'name': 'Global_10_255_0_11', 'description': 'rr1a', 'ip': '10.255.0.11', 'as_number': 65001,
         'local_as': 65002, 'passive': True, 'connect_delay_offset': 0, 'local_ip': '10.255.0.21', 'type': 'ebgp',
         'direct': True},
        {'name': 'Global_10_254_0_31', 'description': 'rr3', 'ip': '10.254.0.31', 'as_number': 65003,
         'local_as': 65002, 'passive': False, 'connect_delay_offset': 0, 'local_ip': '10.255.0.21', 'type': 'ebgp',
         'direct': False}]}),
    # one aggregate per rack between reflectors (no spine), and on a spine fleet with a router outside it
    'lab-racks+aggregates': ('lab-racks', {'calico_rack_block_pool': 20}),
    'lab-spine+peers': ('lab-spine', {'calico_bgp_peers': [{'ip': '10.99.0.1', 'as_number': 65101, 'multihop': 4}]}),
    # a router with an IPv6 address (inventories/lab-spine is dual stack): a session over IPv6, IPv6 only
    'lab-spine+peers6': ('lab-spine', {'calico_bgp_peers': [
        {'ip': 'fd00:99::1', 'as_number': 65101, 'multihop': 4, 'import_default': True, 'password': "v6 p@ss'{}"}]}),
    # BFD on the spine's sessions (GTSM, direct): FRR runs it multihop, so the reflectors' sessions run multihop 1
    'lab-spine+bfd': ('lab-spine', {'calico_bgp_bfd': {'interval': 50, 'multiplier': 4},
                                    'calico_node_bgp_hold_time': 9}),
}
# the reflectors' racks and the /20 share each rack gets (calico_rack_block_pool 20 of 172.17.0.0/16)
SHARES = {'rack1': '172.17.0.0/20', 'rack2': '172.17.16.0/20', 'rack3': '172.17.32.0/20', 'rack4': '172.17.48.0/20'}
REFLECTOR_RACK = {'rr1a': 'rack1', 'rr1b': 'rack1', 'rr2': 'rack2', 'rr3': 'rack3', 'rr4': 'rack4'}


def bird():
    found = shutil.which('bird') or shutil.which('bird', path='/usr/sbin:/sbin')
    assert found, 'bird (Debian package bird2) is needed: scripts/setup installs it'
    return found


def render(variant, out):
    inventory, extra = VARIANTS[variant]
    return render_configs(PLAYBOOK, REPO / 'inventories' / inventory, extra, out)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    base = tmp_path_factory.mktemp('bird')
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(VARIANTS, pool.map(lambda v: render(v, base / v), VARIANTS)))
    return base, procs


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_every_host_config_passes_bird_p(rendered, variant):
    base, procs = rendered
    proc = procs[variant]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    configs = sorted((base / variant).glob('*.conf'))
    assert len(configs) >= 3, configs
    for conf in configs:
        check = subprocess.run([bird(), '-p', '-c', str(conf)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, f'{conf.name}: {check.stderr.strip()}'
    text = '\n'.join(c.read_text() for c in configs)
    assert 'protocol bgp' in text
    if VARIANTS[variant][1].get('calico_bgp_bfd'):
        assert 'protocol bfd calico_bfd' in text and 'bfd on;' in text and 'interval 50 ms;' in text
        assert 'hold time 9;' in text and 'keepalive time 3;' in text
    if variant == 'lab+3blocks':
        for conf in configs:  # one blackhole per block, and every peer may announce its three blocks
            static = conf.read_text().split('protocol static calico_block {', 1)[1].split('}', 1)[0]
            assert static.count(' blackhole;') == 3, f'{conf.name}: {static}'
            accepted = [line for line in conf.read_text().splitlines() if line.strip().startswith('if net ~ [')]
            assert len(accepted) == 2 and all(line.count('/28') == 3 for line in accepted), accepted
    if variant in ('lab+v6', 'lab-dualstack'):  # every session of the fleet carries IPv6 too
        for conf in configs:
            one = conf.read_text()
            assert 'define CALICO_POOL6 = [ fd00:17::/48+ ];' in one and 'protocol kernel kernel6 {' in one
            assert one.count('\n  ipv6 {\n') == one.count('\nprotocol bgp ') + 2, conf.name  # + template, kernel6
    if variant == 'lab+v6':
        for conf in configs:  # two IPv6 blocks per host, both accepted from it by each peer
            static = conf.read_text().split('protocol static calico_block6 {', 1)[1].split('}', 1)[0]
            assert static.count(' blackhole;') == 2, f'{conf.name}: {static}'
            assert len(re.findall(r'if net ~ \[ fd00:17::\w*/126, fd00:17::\w+/126 \] then accept;',
                                  conf.read_text())) == 2, conf.name
    if variant == 'lab-dualstack+lingering':
        kept = (base / variant / 'rr2.conf').read_text().split('protocol bgp Global_10_255_0_99', 1)[1]
        assert 'ipv6 {\n    next hop address fd00:255::21;\n  };' in kept.split('\n}', 1)[0], kept
    if variant == 'lab-dualstack':  # a reflector's eBGP session: its spine address as the IPv6 next hop
        rr2 = (base / variant / 'rr2.conf').read_text()
        assert 'local 10.255.0.21 as 65002;' in rr2 and 'next hop address fd00:255::21;' in rr2
        assert 'if net ~ [ fd00:17::/48{122,122} ] then accept;' in rr2
        # the web workload's floating IPs: r1h1 announces the /128 as it announces the /32, every speaker takes it
        r1h1 = (base / variant / 'r1h1.conf').read_text()
        assert 'protocol static calico_floating6 {\n  ipv6;\n  route fd00:99::10/128 blackhole;\n}' in r1h1
        assert 'protocol static calico_floating {\n  ipv4;\n  route 10.99.0.10/32 blackhole;\n}' in r1h1
        assert 'if proto = "calico_floating6" then accept;' in r1h1.split('filter calico_export6 {', 1)[1]
        for conf in configs:
            one = conf.read_text()
            assert 'define CALICO_FLOATING6 = [ fd00:99::10/128 ];' in one, conf.name
            assert 'if net ~ CALICO_FLOATING6 then accept;' in one.split('filter calico_import6 {', 1)[1]
            assert ('calico_floating6' in one) == (conf.stem == 'r1h1'), conf.name
        assert 'if net ~ CALICO_FLOATING6 then accept;' in rr2.split('filter calico_export6 {', 1)[1].split('}')[0]
        # from another rack's reflector: any floating IP, in the ipv6 channel too
        session = rr2.split('protocol bgp Global_10_255_0_11 from calico_peer {', 1)[1].split('\n}', 1)[0]
        assert session.split('ipv6 {', 1)[1].count('if net ~ CALICO_FLOATING6 then accept;') == 1, session
    if variant.startswith('lab-dualstack+v6sessions'):
        for conf in configs:
            one = conf.read_text()
            sessions = one.split('\nprotocol bgp ')[1:]
            four = [b for b in sessions if ' from calico_peer {' in b.split('\n', 1)[0]]
            six = [b for b in sessions if ' from calico_peer6 {' in b.split('\n', 1)[0]]
            assert four and len(four) == len(six), conf.name
            for body in six:  # between the IPv6 addresses, IPv6 routes only
                assert '\n  ipv4 {' not in body and re.search(r'\n  neighbor fd00:[0-9a-f:]+ as \d+;', body), body
                assert re.search(r'\n  local fd00:[0-9a-f:]+ as \d+;', body) and 'import filter {' in body, body
            carried = [b for b in four if 'import none;\n    export none;' not in b.split('\n  ipv6 {', 1)[1]]
            if variant.endswith('+carry') and conf.stem in ('rr1', 'r1h1', 'r1h2'):
                assert len(carried) == (2 if conf.stem == 'rr1' else 1), conf.name
            else:
                assert carried == [], conf.name
        rr2 = (base / variant / 'rr2.conf').read_text()
        body = rr2.split('protocol bgp Global_fd00_255__11 from calico_peer6 {', 1)[1].split('\n}', 1)[0]
        assert 'local fd00:255::21 as 65002;\n  neighbor fd00:255::11 as 65001;' in body, body
        assert 'ttl security on;' in body and 'if ! calico_origin_ok6() then reject;' in body, body
        body = rr2.split('protocol bgp Client_fd00_102__11 from calico_peer6 {', 1)[1].split('\n}', 1)[0]
        assert 'rr client;\n  rr cluster id 192.168.102.1;' in body, body
        assert 'template bgp calico_peer6 {' in rr2 and 'next hop self ebgp;' in rr2.split('calico_peer6 {', 1)[1]
    if variant == 'example':  # a rack whose ToR is a router of the data centre, directly connected (GTSM)
        assert 'protocol bgp External_10_10_2_1 from calico_external' in text and 'ttl security on;' in text
    if variant == 'lab-spine+lingering':
        assert 'protocol bgp Global_10_254_0_31 from calico_peer {' in text and 'local 10.255.0.21 as 65002;' in text
        assert 'multihop;\n  ipv4 {\n    gateway recursive;' in text and 'passive on;\n  ttl security on;' in text
    if variant == 'lab-spine+bfd':
        for conf in configs:
            one = conf.read_text()
            spine_sessions = [one.split(f'protocol bgp {p} from calico_peer {{', 1)[1].split('\n}', 1)[0]
                              for p in ('Global_10_255_0_1', 'Global_10_255_0_2') if p in one]
            assert len(spine_sessions) == (2 if conf.stem in REFLECTOR_RACK else 0), conf.name
            for body in spine_sessions:
                assert 'multihop 1;' in body and 'direct;' not in body and 'ttl security on;' in body, body
                assert 'gateway recursive;\n    igp table calico_spine4;' in body, body
            assert ('protocol direct calico_spine_leg' in one) == (conf.stem in REFLECTOR_RACK), conf.name
        rr2 = (base / variant / 'rr2.conf').read_text()
        assert 'ipv4 { table calico_spine4; import where 10.255.0.21 ~ net; };' in rr2
        assert rr2.count('\n  direct;\n') == 1  # its session with its rack's host stays direct
        # dual stack: the IPv6 next hops of the spine sessions resolve through the spine leg's IPv6 subnet
        assert 'ipv6 { table calico_spine6; import where fd00:255::21 ~ net; };' in rr2
        assert rr2.count('gateway recursive;\n    igp table calico_spine6;\n    next hop address fd00:255::21;') == 2
    if VARIANTS[variant][1].get('calico_bgp_password'):
        assert 'password CALICO_BGP_PASSWORD;' in text and list((base / variant).glob('*.secrets'))
    if variant == 'lab-racks+peers':
        for conf in configs:
            one = conf.read_text()
            assert 'protocol bgp External_192_168_101_254 from calico_external' in one, conf.name
            assert 'password CALICO_PEER_PASSWORD_192_168_101_254;' in one and 'gateway recursive;' in one
            assert 'if net ~ [ 0.0.0.0/0, 198.51.100.0/24 ] then accept;' in one
            assert 'multihop 4;' in one and 'protocol bfd calico_bfd' in one and 'bfd on;' in one
            assert 'learn on;' in one  # next hops of routers further away resolve through the kernel's routes
            # the router's password is in the include only; the fleet has none
            assert "r0uter p@ss" not in one and 'password CALICO_BGP_PASSWORD;' not in one
            assert conf.with_suffix('.secrets').read_text() == \
                'define CALICO_PEER_PASSWORD_192_168_101_254 = "r0uter p@ss\'{}#;";\n'

    if variant == 'lab-spine+peers6':
        for conf in configs:
            one = conf.read_text()
            body = one.split('protocol bgp External_fd00_99__1 from calico_external {', 1)[1].split('\n}', 1)[0]
            assert '\n  ipv6 {' in body and '\n  ipv4 {' not in body, body
            assert 'neighbor fd00:99::1 as 65101;' in body and 'multihop 4;' in body, body
            assert 'if net ~ CALICO_POOL6 then reject;\n      if net ~ [ ::/0 ] then accept;' in body, body
            assert 'export filter calico_export6;' in body and 'gateway recursive;' in body, body
            assert 'password CALICO_PEER_PASSWORD_fd00_99__1;' in body, body
            kernel4 = one.split('protocol kernel kernel4 {', 1)[1].split('\n}', 1)[0]
            kernel6 = one.split('protocol kernel kernel6 {', 1)[1].split('\n}', 1)[0]
            assert 'learn off;' in kernel4 and 'learn on;' in kernel6, (kernel4, kernel6)
            assert conf.with_suffix('.secrets').read_text() == \
                'define CALICO_PEER_PASSWORD_fd00_99__1 = "v6 p@ss\'{}";\n'
        r1h1 = (base / variant / 'r1h1.conf').read_text()
        assert 'local fd00:101::11 as 65001;\n  neighbor fd00:99::1 as 65101;' in r1h1


def origin_rules(text, function='calico_origin_ok'):
    body = text.split(f'function {function}()\n{{\n', 1)[1].split('\n}', 1)[0]
    return [line.split('#')[0].strip() for line in body.splitlines()]


def test_the_ipv6_blocks_of_a_spine_fleet_come_from_their_racks_as(rendered):
    """inventories/lab-spine (dual stack): a reflector takes another rack's IPv6 block from a spine only with that
    rack's origin AS, and never its own rack's; its hosts have no origin check (their reflector's job)."""
    base, _procs = rendered
    blocks6 = {'rack1': 'fd00:17::/122', 'rack2': 'fd00:17::40/122', 'rack3': 'fd00:17::80/122',
               'rack4': 'fd00:17::c0/122'}
    for conf in sorted((base / 'lab-spine').glob('*.conf')):
        text = conf.read_text()
        if conf.stem not in REFLECTOR_RACK:
            assert 'calico_origin_ok6' not in text, conf.name
            continue
        assert origin_rules(text, 'calico_origin_ok6') == [
            f'if net ~ [ {block} ] then return bgp_path.last = {65000 + int(rack[-1])};'
            for rack, block in blocks6.items()] + ['return true;']
        for proto in text.split('protocol bgp ')[1:]:
            v6 = proto.split('\n  ipv6 {', 1)[1].split('\n  };', 1)[0]
            assert ('if ! calico_origin_ok6() then reject;' in v6) == proto.startswith('Global_'), proto
            if proto.startswith('Global_'):
                assert f'if net ~ [ {blocks6[REFLECTOR_RACK[conf.stem]]}+ ] then reject;' in v6, v6


@pytest.mark.parametrize('variant', ['lab-spine', 'lab-racks+aggregates', 'lab-spine+peers'])
def test_a_racks_reflectors_announce_its_aggregate_outside_it(rendered, variant):
    base, _procs = rendered
    configs = {conf.stem: conf.read_text() for conf in sorted((base / variant).glob('*.conf'))}
    racks = sorted({REFLECTOR_RACK[name] for name in configs if name in REFLECTOR_RACK})
    for name, text in configs.items():
        if name not in REFLECTOR_RACK:  # a host: its blocks, no aggregate, no origin check (its reflector's job)
            assert 'calico_aggregate' not in text and 'calico_origin_ok' not in text, name
            continue
        share = SHARES[REFLECTOR_RACK[name]]
        assert f'protocol static calico_aggregate {{\n  ipv4;\n  route {share} blackhole;\n}}' in text, name
        assert 'if proto = "calico_aggregate" then accept;   # the rack\'s share' in text  # into the kernel
        out = text.split('filter calico_export_out {\n', 1)[1].split('\n}', 1)[0]
        assert f'if net ~ [ {share}{{21,32}} ] then reject;' in out, out
        assert out.index('calico_aggregate') < out.index('{21,32}') < out.index('CALICO_POOL'), out
        # the rack's own hosts never get the aggregate
        export = text.split('filter calico_export {\n', 1)[1].split('\n}', 1)[0]
        assert export.index('if proto = "calico_aggregate" then reject;') < export.index('CALICO_POOL'), export
        # every session to a spine or another rack sends the aggregate; sessions inside the rack do not
        for proto in text.split('protocol bgp ')[1:]:
            outward = proto.startswith('Global_') or proto.startswith('External_')
            assert ('export filter calico_export_out;' in proto) == outward, proto
            assert ('if ! calico_origin_ok() then reject;' in proto) == proto.startswith('Global_'), proto
            if proto.startswith('Global_'):  # the other racks' aggregates, never its own
                others = ', '.join(SHARES[r] for r in racks if r != REFLECTOR_RACK[name])
                assert f'if net ~ [ {others} ] then accept;' in proto, proto
                assert f'{share} ] then reject;' in proto, proto
        # the first match decides: each rack's share with everything inside it from that rack's AS only
        assert origin_rules(text) == [
            f'if net ~ [ {SHARES[r]}+ ] then return bgp_path.last = {65000 + int(r[-1])};' for r in racks
        ] + ['return true;'], text


def test_without_aggregates_blocks_come_from_their_racks_as(rendered):
    base, _procs = rendered
    for conf in sorted((base / 'lab-racks').glob('*.conf')):
        text = conf.read_text()
        assert 'calico_aggregate' not in text and 'calico_export_out' not in text
        if conf.stem not in REFLECTOR_RACK:
            assert 'calico_origin_ok' not in text
            continue
        rules = origin_rules(text)
        assert rules[-1] == 'return true;' and len(rules) == 4, rules  # three racks
        for rule in rules[:-1]:  # a rack's blocks, exactly, from its AS
            assert rule.startswith('if net ~ [ 172.17.') and '/24 ] then return bgp_path.last = 6500' in rule, rule
        sessions = text.split('protocol bgp ')[1:]
        assert all(('if ! calico_origin_ok() then reject;' in p) == p.startswith('Global_') for p in sessions)


def test_bird_p_refuses_a_broken_config(rendered, tmp_path):
    base = rendered[0]
    conf = sorted((base / 'lab').glob('*.conf'))[0]
    broken = tmp_path / 'broken.conf'
    broken.write_text(conf.read_text().replace('protocol bgp', 'protocol bgpx', 1))
    assert subprocess.run([bird(), '-p', '-c', str(broken)], capture_output=True, check=False).returncode != 0
