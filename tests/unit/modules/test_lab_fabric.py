"""lab_fabric: spec validation and naming (no kernel needed; the lab itself is tests/integration/test_lab.py)."""

import pytest

from ansible_collections.netfleet.calico_lab.plugins.module_utils import fabric_apply, fabric_plan, fabric_spec

SEGMENTS = [{'name': 'rack1', 'cidr': '192.168.100.0/24', 'gateway': None}]


def params(**kw):
    base = {'prefix': 'nf', 'state_dir': '/run/netfleet/nf', 'segments': SEGMENTS, 'neigh_gc_thresh': [1, 2, 3],
            'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.100', 'segment': 'rack1'}]}
    base.update(kw)
    return base


def test_defaults_and_names():
    spec = fabric_spec.Spec(params(), 'present')
    assert spec.fabric == 'nf-fabric' and spec.router == 'nf-router'
    assert str(spec.segments['rack1']['gateway']) == '192.168.100.1/24'
    host = spec.hosts['host-a']
    assert host['netns'] == 'nf-host-a' and str(host['address']) == '192.168.100.100/24'
    assert host['fabric_port'] == 'h-host-a' and host['bridge'] == 'br-rack1'


def test_long_names_are_hashed_to_15_chars():
    name = fabric_spec.ifname('h-', 'a-very-long-host-name.example.com')
    assert len(name) == 15 and name.startswith('h-')
    assert name == fabric_spec.ifname('h-', 'a-very-long-host-name.example.com')
    assert fabric_spec.ifname('br-', 'rack1') == 'br-rack1'


@pytest.mark.parametrize('changes, message', [
    ({'prefix': 'nf-x'}, "prefix 'nf-x' is invalid"),
    ({'state_dir': '/run'}, "state_dir '/run' must be an absolute path"),
    ({'state_dir': '/run/netfleet'}, "state_dir '/run/netfleet' must be"),
    ({'segments': [{'name': 'rack1', 'cidr': '192.168.100.1/24', 'gateway': None}]}, "cidr '192.168.100.1/24'"),
    ({'segments': SEGMENTS + [{'name': 'rack2', 'cidr': '192.168.100.128/25', 'gateway': None}]}, 'overlap'),
    ({'segments': [{'name': 'rack1', 'cidr': '192.168.100.0/24', 'gateway': '10.0.0.1'}]}, 'outside its segment'),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '10.0.0.1', 'segment': 'rack1'}]},
     "host 'host-a': address 10.0.0.1 is outside its segment 192.168.100.0/24"),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.1', 'segment': 'rack1'}]}, 'gateway'),
    ({'hosts': [{'name': 'host-a', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack9'}]},
     "segment 'rack9' is not defined"),
    ({'hosts': [{'name': 'host-a', 'netns': 'other-a', 'address': '192.168.100.5', 'segment': 'rack1'}]},
     "must start with 'nf-'"),
    ({'hosts': [{'name': 'fabric', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'}]}, 'reserved'),
    ({'hosts': [{'name': 'a', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'},
                {'name': 'b', 'netns': None, 'address': '192.168.100.5', 'segment': 'rack1'}]}, 'share the address'),
])
def test_bad_spec(changes, message):
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(params(**changes), 'present')
    assert message in str(err.value)


def test_absent_ignores_wiring():
    spec = fabric_spec.Spec(params(segments=[{'name': 'x', 'cidr': 'bad', 'gateway': None}]), 'absent')
    assert spec.segments == {} and spec.hosts == {}


# --------------------------------------------------------------------------------------------- spine (reflector racks)

def seg(name, cidr, gateway=None, router=True):
    return {'name': name, 'cidr': cidr, 'gateway': gateway, 'router': router}


def host(name, address, segment, spine_address=None):
    return {'name': name, 'netns': None, 'address': address, 'segment': segment, 'spine_address': spine_address}


def racks_params(**kw):
    """rack1 (rr1a .1 gateway, rr1b, h1), rack2 (rr2, h2) behind reflectors; rack3 (h3) behind the router."""
    base = params(
        segments=[seg('rack1', '192.168.101.0/24', '192.168.101.1', False),
                  seg('rack2', '192.168.102.0/24', '192.168.102.1', False),
                  seg('rack3', '192.168.103.0/24')],
        spine={'cidr': '10.255.0.0/24', 'gateway': None},
        hosts=[host('rr1a', '192.168.101.1', 'rack1', '10.255.0.11'),
               host('rr1b', '192.168.101.2', 'rack1', '10.255.0.12'),
               host('h1', '192.168.101.11', 'rack1'),
               host('rr2', '192.168.102.1', 'rack2', '10.255.0.21'),
               host('h2', '192.168.102.11', 'rack2'),
               host('h3', '192.168.103.11', 'rack3')])
    base.update(kw)
    return base


def test_spine_spec():
    spec = fabric_spec.Spec(racks_params(), 'present')
    assert spec.router_wanted and spec.namespaces()[:2] == ['nf-fabric', 'nf-router']
    assert str(spec.spine['gateway']) == '10.255.0.1/24' and spec.spine['bridge'] == 'spine'
    h = spec.hosts
    assert (str(h['h1']['gateway']), h['h1']['gateway_dev'], h['h1']['routes']) == ('192.168.101.1', 'eth0', [])
    assert str(h['h3']['gateway']) == '192.168.103.1'  # the router's leg
    assert (str(h['rr1b']['gateway']), h['rr1b']['gateway_dev']) == ('10.255.0.1', 'eth1')
    assert h['rr1b']['routes'] == [('192.168.102.0/24', '10.255.0.21', 'eth1')]
    assert h['rr2']['routes'] == [('192.168.101.0/24', '10.255.0.11', 'eth1')]
    assert h['rr1a']['spine_port'] == 's-rr1a' and h['h1']['spine_port'] is None
    assert spec.router_routes == [('192.168.101.0/24', '10.255.0.11', 'rt-spine'),
                                  ('192.168.102.0/24', '10.255.0.21', 'rt-spine')]
    segments, hosts, spine = spec.result()
    assert segments['rack1']['router_port'] is None and segments['rack3']['router_port'] == 'gw-rack3'
    assert hosts['rr2'] == {'netns': 'nf-rr2', 'address': '192.168.102.1/24', 'gateway': '10.255.0.1',
                            'segment': 'rack2', 'bridge': 'br-rack2', 'fabric_port': 'h-rr2',
                            'spine_address': '10.255.0.21/24', 'spine_port': 's-rr2',
                            'routes': ['192.168.101.0/24 via 10.255.0.11 dev eth1']}
    assert spine == {'cidr': '10.255.0.0/24', 'gateway': '10.255.0.1/24', 'bridge': 'spine', 'router_port': 'rt-spine'}


def test_spine_without_router():
    p = racks_params()
    p['segments'] = p['segments'][:2]
    p['hosts'] = [h for h in p['hosts'] if h['name'] != 'h3'] + [host('rr9', '192.168.101.9', 'rack1', '10.255.0.1')]
    spec = fabric_spec.Spec(p, 'present')  # without a router, the spine's .1 is free for a reflector
    assert not spec.router_wanted and 'nf-router' not in spec.namespaces()
    assert spec.hosts['rr1a']['gateway'] is None and spec.hosts['rr1a']['routes'] == [
        ('192.168.102.0/24', '10.255.0.21', 'eth1')]
    assert spec.result()[2]['router_port'] is None


def _kernel_blank(spec):
    return {ns: None for ns in spec.namespaces()}


def test_plan_from_scratch_and_router_removal():
    spec = fabric_spec.Spec(racks_params(), 'present')
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert 'link add spine type bridge' in plan.fabric
    assert 'link add s-rr1a type veth peer name eth1 netns nf-rr1a' in plan.fabric
    assert 'link add rt-spine type veth peer name rt-spine netns nf-router' in plan.fabric
    assert not any('gw-rack1' in line for line in plan.fabric)  # the reflector is rack1's gateway
    assert plan.post['nf-rr1a'][-2:] == ['route add 192.168.102.0/24 via 10.255.0.21 dev eth1 proto static',
                                         'route add default via 10.255.0.1 dev eth1']
    assert 'address add 10.255.0.11/24 brd + dev eth1' in plan.post['nf-rr1a']
    assert plan.post['nf-h1'][-1] == 'route add default via 192.168.101.1 dev eth0'
    assert 'route add 192.168.101.0/24 via 10.255.0.11 dev rt-spine proto static' in plan.post['nf-router']
    assert plan.forward and plan.root_late == []
    desired = fabric_plan.describe_desired(spec, [1, 2, 3])
    assert 'route 192.168.102.0/24 via 10.255.0.21 dev eth1 proto static' in desired['nf-rr1a']
    assert 'veth s-rr1a master spine peer nf-rr1a/eth1 up' in desired['nf-fabric']

    # rack3 goes: no segment needs the router any more, so it is deleted after its fabric legs
    p = racks_params()
    p['segments'] = p['segments'][:2]
    p['hosts'] = [h for h in p['hosts'] if h['name'] != 'h3']
    spec = fabric_spec.Spec(p, 'present')
    router_state = fabric_plan.NsState('nf-router', [{'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP']}])
    fabric_state = fabric_plan.NsState('nf-fabric', [
        {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK']},
        {'ifindex': 7, 'ifname': 'gw-rack3', 'flags': ['UP'], 'linkinfo': {'info_kind': 'veth'}, 'link_index': 2,
         'link_netnsid': 0}], nsids=[{'nsid': 0, 'name': 'nf-router'}])
    states = dict(_kernel_blank(spec), **{'nf-fabric': fabric_state, 'nf-router': router_state})
    plan = fabric_plan.plan_present(spec, states, [1, 2, 3], True)
    assert plan.pre['nf-fabric'] == ['link del gw-rack3']
    assert plan.root_late == ['netns del nf-router'] and 'netns nf-router' in plan.removed
    assert not plan.forward and 'nf-router' not in plan.post


@pytest.mark.parametrize('change, message', [
    (lambda p: p.update(spine=None), "segment 'rack1': router: false (a reflector is its gateway) needs the spine"),
    (lambda p: p['spine'].update(cidr='192.168.101.0/25'), "segment 'rack1' (192.168.101.0/24) and the spine"),
    (lambda p: p['spine'].update(cidr='10.255.0.0/31'), 'spine: 10.255.0.0/31 is too small'),
    (lambda p: p['hosts'][0].update(spine_address='10.254.0.1'),
     "host 'rr1a': spine_address 10.254.0.1 is outside its segment 10.255.0.0/24"),
    (lambda p: p['hosts'][0].update(spine_address='10.255.0.1'),
     "host 'rr1a': spine_address 10.255.0.1 is the spine's gateway"),
    (lambda p: p['hosts'][1].update(spine_address='10.255.0.11'),
     "hosts 'rr1a' and 'rr1b' share the spine address 10.255.0.11"),
    (lambda p: p['segments'][1].update(gateway='192.168.102.11'),
     "segment 'rack2': gateway 192.168.102.11 is not the address of one of its hosts with a spine_address"),
    (lambda p: p['hosts'][3].update(spine_address=None),
     "segment 'rack2': gateway 192.168.102.1 is not the address of one of its hosts with a spine_address"),
    (lambda p: p['hosts'].append(host('spine', '192.168.103.20', 'rack3')), None),  # 'h-spine' is fine
])
def test_bad_spine_spec(change, message):
    p = racks_params()
    change(p)
    if message is None:
        fabric_spec.Spec(p, 'present')
        return
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(p, 'present')
    assert message in str(err.value)


def test_spine_address_needs_the_spine():
    p = params(hosts=[host('rr', '192.168.100.5', 'rack1', '10.255.0.5')])
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(p, 'present')
    assert "host 'rr': spine_address needs the spine option" in str(err.value)


# ------------------------------------------------------------------------------------ management leg (SSH labs)

def test_mgmt_spec_plan_and_removal():
    spec = fabric_spec.Spec(params(mgmt={'legs': [{'segment': 'rack1', 'address': '192.168.100.254'}]}), 'present')
    assert spec.namespaces() == ['nf-fabric', 'nf-router', 'nf-mgmt', 'nf-host-a']
    assert spec.mgmt_result() == {'netns': 'nf-mgmt', 'legs': {'rack1': {
        'address': '192.168.100.254/24', 'port': 'mg-rack1', 'bridge': 'br-rack1'}}}
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert 'link add mg-rack1 type veth peer name mg-rack1 netns nf-mgmt' in plan.fabric
    assert 'link set mg-rack1 alias nf-mgmt master br-rack1 up' in plan.fabric
    assert plan.post['nf-mgmt'] == ['link set lo up', 'link set mg-rack1 up',
                                    'address add 192.168.100.254/24 brd + dev mg-rack1']
    assert not any('route' in line for line in plan.post['nf-mgmt'])  # an end host: connected routes only
    desired = fabric_plan.describe_desired(spec, [1, 2, 3])
    assert desired['nf-mgmt'] == ['lo up', 'veth mg-rack1 peer nf-fabric/mg-rack1 up',
                                  'address mg-rack1 192.168.100.254/24']
    assert 'veth mg-rack1 master br-rack1 peer nf-mgmt/mg-rack1 up' in desired['nf-fabric']

    # lab_ssh turned off: the management namespace goes, after its fabric leg
    spec = fabric_spec.Spec(params(), 'present')
    assert 'nf-mgmt' not in spec.namespaces() and spec.mgmt_result() is None
    fabric_state = fabric_plan.NsState('nf-fabric', [
        {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK']},
        {'ifindex': 9, 'ifname': 'mg-rack1', 'flags': ['UP'], 'linkinfo': {'info_kind': 'veth'}, 'link_index': 2,
         'link_netnsid': 0}], nsids=[{'nsid': 0, 'name': 'nf-mgmt'}])
    mgmt_state = fabric_plan.NsState('nf-mgmt', [{'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP']}])
    states = dict(_kernel_blank(spec), **{'nf-fabric': fabric_state, 'nf-mgmt': mgmt_state})
    plan = fabric_plan.plan_present(spec, states, [1, 2, 3], True)
    assert plan.pre['nf-fabric'] == ['link del mg-rack1']
    assert plan.root_late == ['netns del nf-mgmt'] and 'netns nf-mgmt' in plan.removed


@pytest.mark.parametrize('legs, message', [
    ([], 'mgmt: legs is empty'),
    ([{'segment': 'rack9', 'address': '192.168.100.254'}], "mgmt: segment 'rack9' is not defined"),
    ([{'segment': 'rack1', 'address': '192.168.100.254'}, {'segment': 'rack1', 'address': '192.168.100.253'}],
     "mgmt: segment 'rack1' has two legs"),
    ([{'segment': 'rack1', 'address': '192.168.100.100'}], "address 192.168.100.100 on segment 'rack1' is already "
     "host 'host-a''s"),
    ([{'segment': 'rack1', 'address': '192.168.100.1'}], "is already segment 'rack1''s gateway's"),
    ([{'segment': 'rack1', 'address': '10.0.0.1'}], "mgmt: address on segment 'rack1' 10.0.0.1 is outside"),
])
def test_bad_mgmt_spec(legs, message):
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(params(mgmt={'legs': legs}), 'present')
    assert message in str(err.value)


def test_host_cannot_take_the_mgmt_namespace():
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(params(hosts=[{'name': 'mgmt', 'netns': None, 'address': '192.168.100.5',
                                        'segment': 'rack1'}]), 'present')
    assert 'reserved' in str(err.value)


# --- privileges: one line before anything is created ---------------------------------------------------------

def _status(tmp_path, capeff):
    path = tmp_path / 'status'
    path.write_text(f'Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{capeff}\n')
    return str(path)


def test_privileges_root_with_all_capabilities(tmp_path):
    fabric_apply.check_privileges(euid=0, status_path=_status(tmp_path, '000001ffffffffff'))


def test_privileges_non_root_says_run_as_root(tmp_path):
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_apply.check_privileges(euid=65534, status_path=_status(tmp_path, '0000000000000000'))
    assert str(err.value).startswith('lab_fabric needs root to create network namespaces (running as uid 65534) — '
                                     'run it as root')
    assert '\n' not in str(err.value)


def test_privileges_root_without_cap_sys_admin(tmp_path):
    no_sys_admin = format(0x1ffffffffff & ~(1 << 21), '016x')
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_apply.check_privileges(euid=0, status_path=_status(tmp_path, no_sys_admin))
    assert '(this root process lacks CAP_SYS_ADMIN) — run it as root with full capabilities' in str(err.value)


# ------------------------------------------------------------------------------ spine routers (calico_spines)

def spine_routers_params(*routers):
    p = racks_params()
    p['spine']['routers'] = [{'name': n, 'address': a, 'netns': None} for n, a in routers]
    return p


def test_spine_routers_are_namespaces_on_the_spine_only():
    spec = fabric_spec.Spec(spine_routers_params(('sp1', '10.255.0.2'), ('sp2', '10.255.0.3')), 'present')
    assert spec.namespaces()[-2:] == ['nf-sp1', 'nf-sp2']
    assert spec.result()[2]['routers'] == {
        'sp1': {'netns': 'nf-sp1', 'address': '10.255.0.2/24', 'spine_port': 's-sp1'},
        'sp2': {'netns': 'nf-sp2', 'address': '10.255.0.3/24', 'spine_port': 's-sp2'}}
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert 'link add s-sp1 type veth peer name eth1 netns nf-sp1' in plan.fabric
    # lo and eth1 up with the spine address, and no route of the lab's: the spine's routes are FRR's
    assert plan.post['nf-sp1'] == ['link set lo up', 'link set eth1 up', 'address add 10.255.0.2/24 brd + dev eth1']
    desired = fabric_plan.describe_desired(spec, [1, 2, 3])
    assert desired['nf-sp2'] == ['lo up', 'veth eth1 peer nf-fabric/s-sp2 up', 'address eth1 10.255.0.3/24']
    assert 'veth s-sp2 master spine peer nf-sp2/eth1 up' in desired['nf-fabric']


def test_a_spine_router_of_a_dual_stack_lab_gets_its_ipv6_address_on_the_spine():
    p = spine_routers_params(('sp1', '10.255.0.2'))
    p['spine']['routers'][0]['address6'] = 'fd00:255::2'
    spec = fabric_spec.Spec(p, 'present')
    assert spec.result()[2]['routers']['sp1']['address6'] == 'fd00:255::2/64'
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert plan.post['nf-sp1'] == ['link set lo up', 'link set eth1 up', 'address add 10.255.0.2/24 brd + dev eth1',
                                   'address add fd00:255::2/64 dev eth1 nodad']
    desired = fabric_plan.describe_desired(spec, [1, 2, 3])
    assert desired['nf-sp1'][-1] == 'address eth1 fd00:255::2/64'
    p['spine']['routers'][0]['address6'] = 'fe80::2'
    with pytest.raises(fabric_spec.LabError, match="spine router 'sp1': address6 fe80::2 is not a unicast address"):
        fabric_spec.Spec(p, 'present')


@pytest.mark.parametrize('routers, message', [
    ((('sp1', '10.254.0.2'),), "spine router 'sp1': address 10.254.0.2 is outside its segment 10.255.0.0/24"),
    ((('sp1', '10.255.0.1'),), "spine router 'sp1': address 10.255.0.1 is the spine's gateway"),
    ((('sp1', '10.255.0.11'),), "hosts 'sp1' and 'rr1a' share the spine address 10.255.0.11"),
    ((('sp1', '10.255.0.2'), ('sp2', '10.255.0.2')), "spine routers 'sp1' and 'sp2' share the address 10.255.0.2"),
    ((('sp1', '10.255.0.2'), ('sp1', '10.255.0.3')), "spine router 'sp1' is listed twice"),
    ((('sp 1', '10.255.0.2'),), "spine router 'sp 1': name must be"),
    ((('rr1a', '10.255.0.2'),), "hosts 'rr1a' and 'rr1a' share the netns 'nf-rr1a'"),
])
def test_bad_spine_routers(routers, message):
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(spine_routers_params(*routers), 'present')
    assert message in str(err.value)


def test_mgmt_leg_on_the_spine_for_spine_routers_reached_by_ssh():
    p = spine_routers_params(('sp1', '10.255.0.2'))
    p['mgmt'] = {'legs': [{'segment': 'rack1', 'address': '192.168.101.254'}], 'spine_address': '10.255.0.254'}
    spec = fabric_spec.Spec(p, 'present')
    assert spec.mgmt_result()['legs']['spine'] == {'address': '10.255.0.254/24', 'port': 'mg-spine',
                                                   'bridge': 'spine'}
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert 'link set mg-spine alias nf-mgmt master spine up' in plan.fabric
    assert 'address add 10.255.0.254/24 brd + dev mg-spine' in plan.post['nf-mgmt']


@pytest.mark.parametrize('address, message', [
    ('10.255.0.2', "mgmt: spine_address 10.255.0.2 is already spine router 'sp1''s"),
    ('10.255.0.11', "mgmt: spine_address 10.255.0.11 is already host 'rr1a''s"),
    ('10.255.0.1', "mgmt: spine_address 10.255.0.1 is already the spine's gateway's"),
    ('10.254.0.9', 'mgmt: spine_address 10.254.0.9 is outside its segment 10.255.0.0/24'),
])
def test_bad_mgmt_spine_address(address, message):
    p = spine_routers_params(('sp1', '10.255.0.2'))
    p['mgmt'] = {'legs': [{'segment': 'rack1', 'address': '192.168.101.254'}], 'spine_address': address}
    with pytest.raises(fabric_spec.LabError) as err:
        fabric_spec.Spec(p, 'present')
    assert message in str(err.value)
    p = params(mgmt={'legs': [{'segment': 'rack1', 'address': '192.168.100.254'}], 'spine_address': '10.0.0.1'})
    with pytest.raises(fabric_spec.LabError, match='mgmt: spine_address needs the spine option'):
        fabric_spec.Spec(p, 'present')


def test_dual_stack_addresses():
    """IPv6 addresses (calico_node_ip_v6, calico_rr_spine_ip_v6) go next to the IPv4 ones, /64 unless given,
    without DAD; a second run over what the first built plans nothing for them."""
    p = racks_params()
    p['hosts'][0].update(address6='fd00:101::1', spine_address6='fd00:255::11/112')
    p['hosts'][2].update(address6='fd00:101::11')
    spec = fabric_spec.Spec(p, 'present')
    assert str(spec.hosts['h1']['address6']) == 'fd00:101::11/64' and spec.hosts['h2']['address6'] is None
    plan = fabric_plan.plan_present(spec, _kernel_blank(spec), [1, 2, 3], False)
    assert 'address add fd00:101::11/64 dev eth0 nodad' in plan.post['nf-h1']
    assert 'address add fd00:255::11/112 dev eth1 nodad' in plan.post['nf-rr1a']
    assert not any('fd00' in line for line in plan.post['nf-h2'])
    hosts = spec.result()[1]
    assert hosts['rr1a']['address6'] == 'fd00:101::1/64' and hosts['rr1a']['spine_address6'] == 'fd00:255::11/112'
    assert 'address6' not in hosts['h2']
    assert 'address eth0 fd00:101::11/64' in fabric_plan.describe_desired(spec, [1, 2, 3])['nf-h1']
    # built: the kernel's link-local address is not the lab's, the global one is kept
    built = fabric_plan.NsState('nf-h1', [
        {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP']},
        {'ifindex': 2, 'ifname': 'eth0', 'flags': ['UP'], 'addr_info': [
            {'family': 'inet', 'local': '192.168.101.11', 'prefixlen': 24},
            {'family': 'inet6', 'local': 'fd00:101::11', 'prefixlen': 64, 'scope': 'global'},
            {'family': 'inet6', 'local': 'fe80::1', 'prefixlen': 64, 'scope': 'link'}]}])
    assert built.inet('eth0') == ['192.168.101.11/24', 'fd00:101::11/64']
    plan = fabric_plan.Plan()
    fabric_plan._plan_iface(plan, built, 'eth0', ['192.168.101.11/24', 'fd00:101::11/64'], False)
    assert not plan.post


@pytest.mark.parametrize('change, message', [
    ({'address6': 'fe80::1'}, "host 'h1': address6 fe80::1 is not a unicast address"),
    ({'address6': 'fd00:101::1x'}, "host 'h1': address6 'fd00:101::1x' is not an IPv6 address"),
    ({'address6': 'fd00:101::1', 'spine_address6': 'fd00:255::1'}, "host 'h1': spine_address6 needs spine_address"),
])
def test_bad_dual_stack_addresses(change, message):
    p = racks_params()
    p['hosts'][2].update(change)
    with pytest.raises(fabric_spec.LabError, match=message):
        fabric_spec.Spec(p, 'present')


def test_hosts_sharing_an_ipv6_address():
    p = racks_params()
    p['hosts'][2].update(address6='fd00:101::11')
    p['hosts'][4].update(address6='fd00:101::11/64')
    with pytest.raises(fabric_spec.LabError, match="hosts 'h1' and 'h2' share the IPv6 address fd00:101::11"):
        fabric_spec.Spec(p, 'present')
