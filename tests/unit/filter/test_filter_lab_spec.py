from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico_lab.plugins.filter.lab_spec import lab_spec

ROOT = Path(__file__).resolve().parents[3]

LAB = {'lab_prefix': 'nf', 'lab_state_dir': '/run/netfleet/nf'}


def _fleet(**overrides):
    hostvars = {
        'host-a': dict(LAB, lab_segment='192.168.100.0/24', calico_node_ip='192.168.100.100',
                       ansible_netns='nf-host-a'),
        'host-b': dict(LAB, lab_segment='192.168.100.0/24', calico_node_ip='192.168.100.101'),
        'host-10': dict(LAB, lab_segment='192.168.200.0/24', calico_node_ip='192.168.200.10',
                        lab_gateway='192.168.200.254'),
    }
    for host, changes in overrides.items():
        hostvars[host].update(changes)
    groups = {'calico_nodes': ['host-a', 'host-b', 'host-10'], 'rack1': ['host-a', 'host-b'], 'rack2': ['host-10']}
    return hostvars, groups


def test_spec_from_racks():
    hostvars, groups = _fleet()
    spec = lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    assert spec['prefix'] == 'nf' and spec['state_dir'] == '/run/netfleet/nf'
    assert spec['segments'] == [{'name': 'rack1', 'cidr': '192.168.100.0/24'},
                                {'name': 'rack2', 'cidr': '192.168.200.0/24', 'gateway': '192.168.200.254'}]
    assert spec['hosts'] == [  # natural name order
        {'name': 'host-10', 'netns': 'nf-host-10', 'address': '192.168.200.10', 'segment': 'rack2'},
        {'name': 'host-a', 'netns': 'nf-host-a', 'address': '192.168.100.100', 'segment': 'rack1'},
        {'name': 'host-b', 'netns': 'nf-host-b', 'address': '192.168.100.101', 'segment': 'rack1'},
    ]


def test_teardown_needs_only_prefix_and_state_dir():
    hostvars, groups = _fleet(**{'host-a': {'calico_node_ip': 'garbage'}})
    assert lab_spec(hostvars, groups, racks=['rack1', 'rack2'], wiring=False) == {
        'prefix': 'nf', 'state_dir': '/run/netfleet/nf'}


@pytest.mark.parametrize('overrides, racks, message', [
    ({'host-b': {'calico_node_ip': '10.0.0.5'}}, ['rack1', 'rack2'],
     "netfleet.calico_lab.lab_spec: host 'host-b': calico_node_ip 10.0.0.5 is outside rack 'rack1' lab_segment "
     "192.168.100.0/24 — "),
    ({'host-10': {'lab_segment': None}}, ['rack1', 'rack2'],
     "netfleet.calico_lab.lab_spec: rack 'rack2': has no lab_segment — set lab_segment"),
    ({'host-b': {'lab_segment': '192.168.101.0/24'}}, ['rack1', 'rack2'],
     "netfleet.calico_lab.lab_spec: rack 'rack1': hosts disagree on lab_segment"),
    ({'host-a': {'lab_segment': '192.168.100.0/33'}, 'host-b': {'lab_segment': '192.168.100.0/33'}},
     ['rack1', 'rack2'],
     "netfleet.calico_lab.lab_spec: rack 'rack1': lab_segment '192.168.100.0/33' is not an IPv4 network"),
    ({'host-b': {'calico_node_ip': None}}, ['rack1', 'rack2'],
     "netfleet.calico_lab.lab_spec: host 'host-b': has no calico_node_ip"),
    ({}, {'rack1': ['host-a', 'host-b'], 'rack2': ['host-10', 'host-a']},
     "netfleet.calico_lab.lab_spec: host 'host-a': is in two racks ('rack1' and 'rack2')"),
    ({}, ['rack1'], "netfleet.calico_lab.lab_spec: host 'host-10': is in no rack and has no lab_segment"[:40]),
])
def test_errors_are_one_line(overrides, racks, message):
    hostvars, groups = _fleet(**overrides)
    if racks == ['rack1']:  # host-10 outside every rack but with a lab_segment: a segment of its own
        spec = lab_spec(hostvars, groups, racks=racks)
        assert {'name': '192.168.200.0_24', 'cidr': '192.168.200.0/24'} in spec['segments']
        assert spec['hosts'][0] == {'name': 'host-10', 'netns': 'nf-host-10', 'address': '192.168.200.10',
                                    'segment': '192.168.200.0_24'}
        hostvars['host-10'].pop('lab_segment')
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups, racks=racks)
    assert str(err.value.message).startswith(message), err.value.message
    assert '\n' not in str(err.value.message)


def test_plain_groups_cannot_show_racks():
    hostvars, groups = _fleet()
    groups['calico_racks'] = ['host-a']
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups)
    assert err.value.message == (
        "netfleet.calico_lab.lab_spec: group 'calico_racks': its child groups (the racks) cannot be seen in a plain "
        "groups mapping — pass racks=['rack1', ...] to netfleet.calico_lab.lab_spec")


def test_templating_error_keeps_lab_spec_words():
    class Boom(dict):
        def get(self, key, default=None):
            if key == 'lab_segment':
                raise ValueError("'nope' is undefined")
            return super().get(key, default)

    hostvars, groups = _fleet()
    hostvars['host-b'] = Boom(hostvars['host-b'])
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    assert err.value.message == ("netfleet.calico_lab.lab_spec: host 'host-b': cannot evaluate lab_segment: 'nope' is "
                                 "undefined — fix the definition of lab_segment")


# --------------------------------------------------------------------------------------------- racks with reflectors

SPINE = {'lab_spine_segment': '10.255.0.0/24'}


def _racks_fleet(**overrides):
    """rack1: rr1a, rr1b, h1; rack2: rr2, h2; rack3 (no reflector): h3; spine 10.255.0.0/24."""
    def host(segment, ip, **kw):
        return dict(LAB, **SPINE, lab_segment=segment, calico_node_ip=ip, **kw)

    hostvars = {
        'rr1a': host('192.168.101.0/24', '192.168.101.1', calico_rr_spine_ip='10.255.0.11'),
        'rr1b': host('192.168.101.0/24', '192.168.101.2', calico_rr_spine_ip='10.255.0.12'),
        'h1': host('192.168.101.0/24', '192.168.101.11'),
        'rr2': host('192.168.102.0/24', '192.168.102.1', calico_rr_spine_ip='10.255.0.21'),
        'h2': host('192.168.102.0/24', '192.168.102.11'),
        'h3': host('192.168.103.0/24', '192.168.103.11'),
    }
    for name, changes in overrides.items():
        hostvars[name].update(changes)
    groups = {'calico_nodes': ['h1', 'h2', 'h3'], 'calico_route_reflectors': ['rr1b', 'rr1a', 'rr2'],
              'rack1': ['rr1a', 'rr1b', 'h1'], 'rack2': ['rr2', 'h2'], 'rack3': ['h3']}
    return hostvars, groups


RACKS = ['rack1', 'rack2', 'rack3']


def test_spine_wiring():
    hostvars, groups = _racks_fleet()
    spec = lab_spec(hostvars, groups, racks=RACKS)
    assert spec['spine'] == {'cidr': '10.255.0.0/24'}
    assert spec['segments'] == [
        {'name': 'rack1', 'cidr': '192.168.101.0/24', 'gateway': '192.168.101.1', 'router': False},  # first reflector
        {'name': 'rack2', 'cidr': '192.168.102.0/24', 'gateway': '192.168.102.1', 'router': False},
        {'name': 'rack3', 'cidr': '192.168.103.0/24'},  # no reflector: the router's
    ]
    by_name = {h['name']: h for h in spec['hosts']}
    assert by_name['rr1a'] == {'name': 'rr1a', 'netns': 'nf-rr1a', 'address': '192.168.101.1', 'segment': 'rack1',
                               'spine_address': '10.255.0.11'}
    assert by_name['rr2']['spine_address'] == '10.255.0.21'
    assert 'spine_address' not in by_name['h1']


def test_spine_gateway_override_and_spine_router_address():
    hostvars, groups = _racks_fleet(rr1a={'lab_gateway': '192.168.101.2'}, rr1b={'lab_gateway': '192.168.101.2'},
                                    h1={'lab_gateway': '192.168.101.2'}, h2={'lab_spine_gateway': '10.255.0.254'})
    spec = lab_spec(hostvars, groups, racks=RACKS)
    assert spec['segments'][0] == {'name': 'rack1', 'cidr': '192.168.101.0/24', 'gateway': '192.168.101.2',
                                   'router': False}  # rr1b by lab_gateway
    assert spec['spine'] == {'cidr': '10.255.0.0/24', 'gateway': '10.255.0.254'}


def test_without_spine_reflectors_are_plain_hosts():
    hostvars, groups = _racks_fleet()
    for hv in hostvars.values():
        hv.pop('lab_spine_segment')
    spec = lab_spec(hostvars, groups, racks=RACKS)
    assert 'spine' not in spec
    assert all('gateway' not in s and 'router' not in s for s in spec['segments'])
    assert all('spine_address' not in h for h in spec['hosts'])


@pytest.mark.parametrize('overrides, message', [
    ({'h2': {'lab_spine_segment': '10.254.0.0/24'}},
     "host 'h2': lab_spine_segment 10.254.0.0/24 differs from 10.255.0.0/24 on host 'h1' — set lab_spine_segment "
     "once, for the whole lab (group_vars/all or calico_racks)"),
    ({n: {'lab_spine_segment': '10.255.0.0/33'} for n in ('rr1a', 'rr1b', 'h1', 'rr2', 'h2', 'h3')},
     "host 'h1': lab_spine_segment '10.255.0.0/33' is not an IPv4 network"),
    ({'rr2': {'calico_rr_spine_ip': '10.254.0.21'}},
     "host 'rr2': calico_rr_spine_ip 10.254.0.21 is not an address inside lab_spine_segment 10.255.0.0/24 — set "
     "calico_rr_spine_ip to the reflector's address on the spine, inside 10.255.0.0/24 (not its network or "
     "broadcast address)"),
    ({'rr2': {'calico_rr_spine_ip': '10.255.0.255'}},
     "host 'rr2': calico_rr_spine_ip 10.255.0.255 is not an address inside lab_spine_segment"),
    ({'rr2': {'calico_rr_spine_ip': None}},
     "host 'rr2': route reflector has no calico_rr_spine_ip and its calico_node_ip 192.168.102.1 is not inside "
     "lab_spine_segment 10.255.0.0/24 — set calico_rr_spine_ip"),
    ({n: {'lab_gateway': '192.168.101.11'} for n in ('rr1a', 'rr1b', 'h1')},
     "rack 'rack1': lab_gateway 192.168.101.11 is not the calico_node_ip of one of its route reflectors (rr1a "
     "192.168.101.1, rr1b 192.168.101.2) — drop lab_gateway"),
    ({'h2': {'lab_spine_gateway': '10.9.9.9'}},
     "host 'h2': lab_spine_gateway '10.9.9.9' is not an address inside lab_spine_segment 10.255.0.0/24"),
    ({'h2': {'lab_spine_gateway': '10.255.0.1'}, 'h3': {'lab_spine_gateway': '10.255.0.2'}},
     "host 'h3': lab_spine_gateway 10.255.0.2 differs from 10.255.0.1 on host 'h2'"),
])
def test_spine_errors(overrides, message):
    hostvars, groups = _racks_fleet(**overrides)
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups, racks=RACKS)
    assert str(err.value.message).startswith('netfleet.calico_lab.lab_spec: ' + message), err.value.message
    assert '\n' not in str(err.value.message)


def test_lab_racks_inventory_through_ansible(tmp_path):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    source = ROOT / 'inventories' / 'lab-racks'
    (tmp_path / 'group_vars' / 'all').mkdir(parents=True)
    (tmp_path / 'hosts.yml').write_text((source / 'hosts.yml').read_text())
    # the lab's lab_prefix reads NETFLEET_LAB_PREFIX through a lookup, which needs a running Ansible: pin it
    (tmp_path / 'group_vars' / 'all' / 'lab.yml').write_text(
        (source / 'group_vars' / 'all' / 'lab.yml').read_text().replace(
            "lab_prefix: \"{{ lookup('ansible.builtin.env', 'NETFLEET_LAB_PREFIX') | default('nf', true) }}\"",
            'lab_prefix: nf'))
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(tmp_path)])
    hostvars = HostVars(inventory, VariableManager(loader=loader, inventory=inventory), loader)
    spec = lab_spec(hostvars, inventory.get_groups_dict())
    assert (spec['prefix'], spec['state_dir'], spec['spine']) == ('nf', '/run/netfleet/nf', {'cidr': '10.255.0.0/24'})
    assert spec['segments'] == [
        {'name': f'rack{i}', 'cidr': f'192.168.10{i}.0/24', 'gateway': f'192.168.10{i}.1', 'router': False}
        for i in (1, 2, 3)]
    spine = {h['name']: h.get('spine_address') for h in spec['hosts']}
    assert spine == {'r1h1': None, 'r1h2': None, 'r1h3': None, 'r2h1': None, 'r2h2': None, 'r2h3': None,
                     'r3h1': None, 'r3h2': None, 'r3h3': None, 'rr1a': '10.255.0.11', 'rr1b': '10.255.0.12',
                     'rr2': '10.255.0.21', 'rr3': '10.255.0.31'}
    assert {h['name']: h['netns'] for h in spec['hosts']}['rr1a'] == 'nf-rr1a'


def test_lab_dualstack_inventory_puts_the_ipv6_addresses_on_the_hosts(tmp_path):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    source = ROOT / 'inventories' / 'lab-dualstack'
    (tmp_path / 'group_vars' / 'all').mkdir(parents=True)
    (tmp_path / 'hosts.yml').write_text((source / 'hosts.yml').read_text())
    (tmp_path / 'group_vars' / 'all' / 'lab.yml').write_text('lab_prefix: nf\nlab_state_dir: /run/netfleet/nf\n')
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(tmp_path)])
    hostvars = HostVars(inventory, VariableManager(loader=loader, inventory=inventory), loader)
    hosts = {h['name']: h for h in lab_spec(hostvars, inventory.get_groups_dict())['hosts']}
    assert {name: h['address6'] for name, h in hosts.items()} == {
        'r1h1': 'fd00:101::11', 'r1h2': 'fd00:101::12', 'r2h1': 'fd00:102::11', 'r2h2': 'fd00:102::12',
        'rr1': 'fd00:101::1', 'rr2': 'fd00:102::1'}
    assert {name: h.get('spine_address6') for name, h in hosts.items() if name.startswith('rr')} == {
        'rr1': 'fd00:255::11', 'rr2': 'fd00:255::21'}


# --- lab_ssh: a management leg per segment and an sshd per host -----------------------------------------------

def _ssh_fleet(**overrides):
    hostvars, groups = _fleet(**overrides)
    for hv in hostvars.values():
        hv.setdefault('lab_ssh', True)
        hv.setdefault('ansible_host', hv['calico_node_ip'])
        hv.setdefault('ansible_user', 'netfleet-lab')
    return hostvars, groups


def test_ssh_spec():
    hostvars, groups = _ssh_fleet(**{'host-10': {'lab_mgmt_address': '192.168.200.9', 'ansible_port': '2222',
                                                 'ansible_user': None}})
    spec = lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    assert spec['mgmt'] == {'legs': [{'segment': 'rack1', 'address': '192.168.100.254'},   # last usable address
                                     {'segment': 'rack2', 'address': '192.168.200.9'}]}
    assert spec['ssh'] == {'hosts': [
        {'name': 'host-10', 'netns': 'nf-host-10', 'address': '192.168.200.10', 'port': 2222, 'user': 'root'},
        {'name': 'host-a', 'netns': 'nf-host-a', 'address': '192.168.100.100', 'port': 22, 'user': 'netfleet-lab'},
        {'name': 'host-b', 'netns': 'nf-host-b', 'address': '192.168.100.101', 'port': 22, 'user': 'netfleet-lab'}]}
    # without lab_ssh (or with false) the spec has neither
    hostvars, groups = _ssh_fleet(**{h: {'lab_ssh': False} for h in ('host-a', 'host-b', 'host-10')})
    assert 'ssh' not in lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    hostvars, groups = _fleet()
    assert 'mgmt' not in lab_spec(hostvars, groups, racks=['rack1', 'rack2'])


@pytest.mark.parametrize('overrides, message', [
    ({'host-a': {'lab_ssh': 'maybe'}, 'host-b': {'lab_ssh': 'maybe'}, 'host-10': {'lab_ssh': 'maybe'}},
     "host 'host-10': lab_ssh 'maybe' is not a boolean"),
    ({'host-b': {'lab_ssh': False}}, "host 'host-b': lab_ssh False differs from True on host 'host-10'"),
    ({'host-b': {'ansible_user': 'a b'}}, "host 'host-b': ansible_user 'a b' is not a user name"),
    ({'host-b': {'ansible_host': '10.1.1.1'}}, "host 'host-b': ansible_host 10.1.1.1 is not the host's lab address "
     "192.168.100.101 — set ansible_host to calico_node_ip"),
    ({'host-b': {'ansible_port': 'ssh'}}, "host 'host-b': ansible_port 'ssh' is not a TCP port"),
    ({'host-a': {'lab_mgmt_address': '10.0.0.1'}}, "rack 'rack1': lab_mgmt_address '10.0.0.1' is not an address "
     "inside its lab_segment 192.168.100.0/24"),
])
def test_bad_ssh_spec(overrides, message):
    hostvars, groups = _ssh_fleet(**overrides)
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(hostvars, groups, racks=['rack1', 'rack2'])
    assert message in str(err.value)


# --- lab_machines: systemd machines, reached over ssh from the management namespace -----------------------------

def _machine_fleet(**overrides):
    hostvars, groups = _ssh_fleet(**overrides)
    for hv in hostvars.values():
        hv.pop('lab_ssh')
        hv.setdefault('lab_machines', True)
        if hv['ansible_user'] == 'netfleet-lab':
            hv['ansible_user'] = 'netfleet'
    return hostvars, groups


def test_machines_spec():
    spec = lab_spec(*_machine_fleet(), racks=['rack1', 'rack2'])
    assert spec['machines'] == {'user': 'netfleet', 'packages': ['bird2', 'iproute2', 'iptables'], 'hosts': [
        {'name': 'host-10', 'netns': 'nf-host-10'}, {'name': 'host-a', 'netns': 'nf-host-a'},
        {'name': 'host-b', 'netns': 'nf-host-b'}]}
    # the management legs as in an SSH lab; no sshd per namespace (the machines run their own)
    assert [leg['address'] for leg in spec['mgmt']['legs']] == ['192.168.100.254', '192.168.200.254']
    assert 'ssh' not in spec


@pytest.mark.parametrize('overrides, message', [
    ({'host-b': {'ansible_user': 'admin'}}, 'lab_machines: the hosts log in as admin, netfleet — set one ansible_user'),
    ({h: {'ansible_user': 'root'} for h in ('host-a', 'host-b', 'host-10')}, 'the hosts log in as root'),
    ({h: {'lab_machines': 'yes please'} for h in ('host-a', 'host-b', 'host-10')},
     "lab_machines 'yes please' is not a boolean"),
])
def test_bad_machines_spec(overrides, message):
    with pytest.raises(AnsibleFilterError) as err:
        lab_spec(*_machine_fleet(**overrides), racks=['rack1', 'rack2'])
    assert message in str(err.value)


def test_spine_routers_from_calico_spines():
    hostvars, groups = _racks_fleet()
    hostvars['sp1'] = dict(LAB, **SPINE, calico_node_ip='10.255.0.2', ansible_netns_prefix='nf-',
                           calico_node_ip_v6='fd00:255::2')  # dual stack: its IPv6 address on the spine too
    hostvars['sp2'] = dict(LAB, **SPINE, ansible_host='10.255.0.3')
    groups['calico_spines'] = ['sp2', 'sp1']
    spec = lab_spec(hostvars, groups, racks=RACKS)
    assert spec['spine']['routers'] == [{'name': 'sp1', 'netns': 'nf-sp1', 'address': '10.255.0.2',
                                         'address6': 'fd00:255::2'},
                                        {'name': 'sp2', 'netns': 'nf-sp2', 'address': '10.255.0.3'}]
    assert 'sp1' not in {h['name'] for h in spec['hosts']}
    hostvars['sp2']['ansible_host'] = '10.254.0.3'
    with pytest.raises(AnsibleFilterError, match="host 'sp2': spine router address '10.254.0.3' is not an address "
                                                 "inside lab_spine_segment 10.255.0.0/24"):
        lab_spec(hostvars, groups, racks=RACKS)


def test_spine_routers_are_machines_with_frr_and_a_management_leg():
    hostvars, groups = _racks_fleet()
    hostvars['sp1'] = dict(LAB, **SPINE, calico_node_ip='10.255.0.2')
    groups['calico_spines'] = ['sp1']
    for hv in hostvars.values():
        hv.update(lab_machines=True, ansible_user='netfleet')
    spec = lab_spec(hostvars, groups, racks=RACKS)
    assert spec['machines']['hosts'][-1] == {'name': 'sp1', 'netns': 'nf-sp1'}
    assert spec['machines']['packages'] == ['bird2', 'iproute2', 'iptables', 'frr', 'frr-pythontools']
    assert spec['mgmt']['spine_address'] == '10.255.0.254'
    hostvars['sp1']['ansible_user'] = 'admin'
    with pytest.raises(AnsibleFilterError, match='the hosts log in as admin, netfleet'):
        lab_spec(hostvars, groups, racks=RACKS)
