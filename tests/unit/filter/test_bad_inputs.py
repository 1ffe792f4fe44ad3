"""Hostile and malformed inventory values (inventories come from CMDBs and scripts written by many people):
each one ends in one preflight line naming the host or group, the variable and the fix, before any plan (and
so any file or command) exists."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import bird_string

RACKS = ('rack1', 'rack2')


def fleet():
    common = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_bgp_topology': 'route_reflector',
              'calico_node_prefixlen': 24}
    hostvars = {
        'rr1': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.1', calico_rr_spine_ip='10.255.0.11'),
        'h1': dict(common, calico_as_number=65001, calico_node_ip='192.168.101.11',
                   calico_workloads=[{'name': 'web1', 'labels': {'app': 'web'}}]),
        'rr2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.1', calico_rr_spine_ip='10.255.0.21'),
        'h2': dict(common, calico_as_number=65002, calico_node_ip='192.168.102.11', calico_workloads=[{'name': 'db1'}]),
    }
    groups = {'calico_nodes': ['h1', 'h2'], 'calico_route_reflectors': ['rr1', 'rr2'], 'rack1': ['rr1', 'h1'],
              'rack2': ['rr2', 'h2'], 'calico_racks': ['rr1', 'h1', 'rr2', 'h2']}
    return hostvars, groups


def refused(hostvars, groups, racks=RACKS):
    with pytest.raises(FabricError) as err:
        fabric(hostvars, groups, racks=racks)
    text = str(err.value)
    assert '\n' not in text and text.startswith('netfleet.calico preflight: '), text
    return text


def test_the_base_fleet_plans():
    plan = fabric(*fleet(), racks=RACKS)
    assert sorted(plan['hosts']) == ['h1', 'h2', 'rr1', 'rr2']


# (host, variable, value, what the one line must say)
VALUES = [
    # numbers: ASCII digits only
    ('h1', 'calico_as_number', '٦٥٠٠١', "calico_as_number '٦٥٠٠١' is not a number"),
    ('rr1', 'calico_as_number', '6500²', "is not a number"),
    ('*', 'calico_block_prefix', '2⁴', "calico_block_prefix '2⁴' is not an integer"),
    ('*', 'calico_block_prefix', True, 'is not an integer'),
    ('*', 'calico_block_prefix', '1e1', 'is not an integer'),
    ('h1', 'calico_block_prefix', '25', "host 'h2': calico_block_prefix 24 differs from 25 on host 'h1'"),
    ('h1', 'calico_as_number', -5, 'differs from'),
    # addresses
    ('h1', 'calico_node_ip', '192.168.101.011x', 'is not an IPv4 address'),
    ('h1', 'calico_node_ip', '::1', 'is not an IPv4 address'),
    ('h1', 'calico_router_id', '1.2.3.4; rm -rf /', 'calico_router_id'),
    ('rr1', 'calico_rr_spine_ip', '10.255.0.300', 'calico_rr_spine_ip'),
    # the IPIP device name goes into bird.conf and ip commands
    ('h1', 'calico_ipip_device', 'x";print"', "calico_ipip_device 'x\";print\"' is not a valid interface name"),
    ('h1', 'calico_ipip_device', 'tün0', 'is not a valid interface name'),
    ('h1', 'calico_ipip_device', '../../etc', 'is not a valid interface name'),
    # role variables that reach files, units and commands
    ('h1', 'calico_node_bird_config', '/etc/bird/../shadow', 'calico_node_bird_config'),
    ('h1', 'calico_node_bird_config', 'bird.conf', 'use an absolute path'),
    ('h1', 'calico_node_bird_config', '/etc/bird/bird.conf\n', 'use an absolute path'),
    ('h1', 'calico_node_bird_socket', '/run/bird/bird ctl', 'use an absolute path'),
    ('h1', 'calico_node_state_dir', '/var/lib/x"y', 'use an absolute path'),
    ('h1', 'calico_node_sysctl_file', '/etc/sysctl.d/$(id).conf', 'use an absolute path'),
    ('h1', 'calico_node_boot_lib_dir', '~/lib', 'use an absolute path'),
    ('h1', 'calico_node_cni_bin_dir', '/opt/cni/bin;reboot', 'use an absolute path'),
    ('h1', 'calico_node_bird_binary', 'bird -c /tmp/x', 'use a program name'),
    ('h1', 'calico_node_birdc_binary', '`birdc`', 'use a program name'),
    ('h1', 'calico_node_service_name', 'bird.service; reboot', 'use a systemd unit name'),
    ('h1', 'calico_node_workload_netns_prefix', '../', "calico_node_workload_netns_prefix '../' is not allowed"),
    ('h1', 'calico_node_workload_netns_prefix', 'calico-\n', 'is not allowed'),
    ('h1', 'calico_node_ipip_chain', 'INPUT', "use a chain name starting with 'cali-'"),
    ('h1', 'calico_node_ipip_chain', 'cali-x\n-A INPUT -j ACCEPT', "starting with 'cali-'"),
    ('h1', 'calico_node_ipip_chain', 'cali-' + 'x' * 30, "at most 28 characters"),
    ('h1', 'calico_node_route_protocol', 2, 'other than 12 (BIRD)'),
    ('h1', 'calico_node_route_protocol', 12, 'other than 12 (BIRD)'),
    ('h1', 'calico_node_route_protocol', '٨٠', 'calico_node_route_protocol'),
    ('h1', 'calico_node_bgp_connect_delay', '2s', 'whole number'),
    ('h1', 'calico_node_bgp_connect_retry', 0, 'whole number from 1'),
    ('h1', 'calico_node_bgp_error_wait', '5,30', 'use two whole numbers'),
    ('h1', 'calico_node_bgp_transition_wait', -1, 'whole number'),
    ('h1', 'calico_node_workload_mtu', 70000, 'use an MTU from 576'),
    ('h1', 'calico_node_failsafe_inbound_ports', ['tcp:22', 'sctp:9'], "'tcp:<port>'"),
    ('h1', 'calico_failsafe_inbound_ports', ['tcp:70000'], "'tcp:<port>'"),
    ('h1', 'calico_node_packages', ['bird2', 'x;y'], 'Debian package names'),
    ('h1', 'calico_node_cni_packages', ['-oDpkg::Pre-Invoke=x'], 'Debian package names'),
    ('h1', 'calico_node_host_sysctls', {'net.ipv4.ip_forward\nkernel.x': 1}, 'sysctl names'),
    ('h1', 'calico_node_host_sysctls', {'net.ipv4.ip_forward': '1\nkernel.panic = 1'}, 'sysctl names'),
    ('h1', 'calico_node_bird_log', 'syslog; protocol static evil {}', 'use syslog, stderr or a quoted'),
    ('h1', 'calico_bgp_password', 'pw";include "/etc/shadow', 'printable ASCII characters without "'),
    ('h1', 'calico_node_bgp_password', 'pw\nx', 'printable ASCII'),
    ('h1', 'calico_bgp_password', 'x' * 81, 'printable ASCII'),
    ('h1', 'calico_node_service_manager', 'init', 'use one of systemd, pidfile'),
    ('h1', 'calico_endpoint_to_host_action', 'ACCEPT\n-A INPUT', 'use one of drop, accept'),
    ('h1', 'calico_node_install_packages', 'maybe', 'use true or false'),
    ('h1', 'calico_node_workload_netns_paths', ['/run/../proc/1/ns/net'], 'calico_node_workload_netns_paths'),
    ('h1', 'calico_node_workload_netns_paths', '/run/docker/netns/*', 'calico_node_workload_netns_paths'),
]


@pytest.mark.parametrize('host, var, value, message', VALUES, ids=[f'{v[1]}={v[2]!r}'[:60] for v in VALUES])
def test_bad_value_is_one_preflight_line(host, var, value, message):
    hostvars, groups = fleet()
    if var in ('calico_as_number',) and value != '65001 ' and not isinstance(value, int):
        hostvars['rr1' if host == 'h1' else 'h1'][var] = value  # the rack agrees, the value is still bad
    for name in (hostvars if host == '*' else [host]):  # '*': a fleet-wide setting, set everywhere
        hostvars[name][var] = value
    text = refused(hostvars, groups)
    assert message in text, text
    assert f"host '{'h1' if host == '*' else host}'" in text or 'rack' in text, text


# (workload entry, what the one line must say)
WORKLOADS = [
    ({'name': 'web\n'}, "workload name 'web\\n' is not allowed"),
    ({'name': 'a b'}, 'is not allowed'),
    ({'name': 'wéb'}, 'is not allowed'),
    ({'name': '-rf'}, 'is not allowed'),
    ({'name': 'x' * 64}, 'is not allowed'),
    ({'name': 'w', 'netns': 'default'}, "workload 'w' netns 'default' is not allowed — use a plain name starting"),
    ({'name': 'w', 'netns': 'nf-fabric'}, 'is not allowed'),
    ({'name': 'w', 'netns': 'calico-../../x'}, 'is not allowed'),
    ({'name': 'w', 'netns_path': '/proc/1/ns/net'}, "workload 'w' netns_path '/proc/1/ns/net' is not allowed"),
    ({'name': 'w', 'netns_path': '/run/netns/nf-fabric'}, 'calico_node_workload_netns_paths'),
    ({'name': 'w', 'mtu': 'jumbo'}, "workload 'w' mtu 'jumbo' is not allowed"),
    ({'name': 'w', 'floating_ip': '0.0.0.0'}, 'is the unspecified address'),
    ({'name': 'w', 'floating_ip': '127.0.0.1'}, 'is a loopback address'),
    ({'name': 'w', 'floating_ip': '224.0.0.5'}, 'is a multicast address'),
    ({'name': 'w', 'floating_ip': '255.255.255.255'}, 'is the broadcast address'),
    ({'name': 'w', 'floating_ip': '169.254.1.1'}, "is link-local (169.254.0.0/16, the workloads' gateway"),
    ({'name': 'w', 'floating_ip': '240.0.0.1'}, 'is reserved'),
    ({'name': 'w', 'floating_ip': '192.168.101.1'}, "is the node IP of host 'rr1'"),
    ({'name': 'w', 'floating_ip': '10.255.0.21'}, "is the spine address of host 'rr2'"),
    ({'name': 'w', 'floating_ip': '192.168.102.255'}, "is the broadcast address of host"),
    ({'name': 'w', 'floating_ip': '192.168.101.0'}, "is the network address of host"),
    ({'name': 'w', 'floating_ip': '10.99.0.1\n-A'}, 'is not an IPv4 address'),
]


@pytest.mark.parametrize('entry, message', WORKLOADS, ids=[repr(w[0])[:50] for w in WORKLOADS])
def test_bad_workload_is_one_preflight_line(entry, message):
    hostvars, groups = fleet()
    hostvars['h1']['calico_workloads'] = [copy.deepcopy(entry)]
    text = refused(hostvars, groups)
    assert message in text, text
    assert "host 'h1'" in text, text


@pytest.mark.parametrize('name', ['x";password "pwned";description "y', 'h1\nprotocol static evil { }', 'h 1',
                                  'hö', 'h1\n', '-h1', ''])
def test_bad_host_name_is_one_preflight_line(name):
    hostvars, groups = fleet()
    hostvars[name] = hostvars.pop('h1')
    groups = {g: [name if h == 'h1' else h for h in hosts] for g, hosts in groups.items()}
    text = refused(hostvars, groups)
    assert f'host {name!r}: the host name is not allowed' in text, text


@pytest.mark.parametrize('rack', ['rack 1', 'rack1\n', 'räck'])
def test_bad_rack_name_is_one_preflight_line(rack):
    hostvars, groups = fleet()
    groups[rack] = groups.pop('rack1')
    text = refused(hostvars, groups, racks=(rack, 'rack2'))
    assert f'rack {rack!r}: the group name is not allowed' in text, text


@pytest.mark.parametrize('policy, message', [
    ({'name': 'web\n', 'selector': "app == 'web'"}, 'has no valid name'),
    ({'name': 'a"b', 'selector': "app == 'web'"}, 'has no valid name'),
])
def test_bad_policy_name_is_one_preflight_line(policy, message):
    hostvars, groups = fleet()
    for hv in hostvars.values():
        hv['calico_policies'] = [policy]
    assert message in refused(hostvars, groups)


@pytest.mark.parametrize('value', ['x";', 'a\nb', 'back\\slash', 'ünï', 'x' * 256, None, True])
def test_bird_string_refuses_what_could_end_the_literal(value):
    with pytest.raises(FabricError, match='netfleet.calico.bird_string: input: .* cannot be a BIRD string'):
        bird_string(value)


def test_bird_string_quotes():
    assert bird_string('r1h1') == '"r1h1"' and bird_string(64512) == '"64512"'
