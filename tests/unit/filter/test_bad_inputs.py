"""Hostile and malformed inventory values (inventories come from CMDBs and scripts written by many people):
each one ends in one preflight line naming the host or group, the variable and the fix, before any plan (and
so any file or command) exists."""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import os
import re
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.filter.fabric_inputs import fabric_inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.inputs import ROLE_VARS
from ansible_collections.netfleet.calico.plugins.plugin_utils.values import bird_string

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


@contextlib.contextmanager
def sealed():
    """Fail the test if the code inside starts a process or writes, creates, renames or removes a file."""
    def refuse(what):
        def call(*args, **kwargs):
            raise AssertionError(f'{what} called during the preflight')
        return call

    real_open, real_os_open = builtins.open, os.open

    def read_only_open(file, mode='r', *args, **kwargs):
        if any(flag in mode for flag in 'wax+'):
            raise AssertionError(f'open({file!r}, {mode!r}) during the preflight')
        return real_open(file, mode, *args, **kwargs)

    def read_only_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            raise AssertionError(f'os.open({path!r}) for writing during the preflight')
        return real_os_open(path, flags, *args, **kwargs)

    patches = [mock.patch.object(subprocess.Popen, '__init__', refuse('subprocess.Popen')),
               mock.patch.object(builtins, 'open', read_only_open), mock.patch.object(io, 'open', read_only_open),
               mock.patch.object(os, 'open', read_only_os_open)]
    patches += [mock.patch.object(os, name, refuse(f'os.{name}')) for name in (
        'system', 'popen', 'posix_spawn', 'posix_spawnp', 'fork', 'execv', 'execve', 'execvp', 'mkdir', 'makedirs',
        'rename', 'replace', 'remove', 'unlink', 'rmdir', 'symlink', 'link', 'chmod', 'chown', 'mkfifo', 'mknod')]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def test_the_seal_catches_a_file_and_a_command(tmp_path):
    with sealed(), pytest.raises(AssertionError, match='open'):
        (tmp_path / 'x').write_text('x')
    with sealed(), pytest.raises(AssertionError, match='Popen'):
        subprocess.run(['true'], check=False)
    assert not (tmp_path / 'x').exists()


def refused(hostvars, groups, racks=RACKS):
    """The one preflight line for a bad fleet; the plan neither starts a process nor writes a file first."""
    with sealed(), pytest.raises(FabricError) as err:
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
    ('*', 'calico_max_blocks_per_host', 0, 'calico_max_blocks_per_host 0 is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', 65, 'is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', -1, 'is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', '3\n', 'is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', '３', 'is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', True, 'is not an integer 1-64'),
    ('*', 'calico_max_blocks_per_host', [2], 'is not an integer 1-64'),
    ('h1', 'calico_max_blocks_per_host', '7\n', "calico_max_blocks_per_host '7\\n' is not an integer 1-64"),
    # a rack's share of the pool (prefix length between the pool's /16 and the blocks' /24)
    ('*', 'calico_rack_block_pool', '20\n', "calico_rack_block_pool '20\\n' is not an integer"),
    ('*', 'calico_rack_block_pool', '２０', 'is not an integer'),
    ('*', 'calico_rack_block_pool', True, 'is not an integer'),
    ('*', 'calico_rack_block_pool', '/20', 'is not an integer'),
    ('*', 'calico_rack_block_pool', 16, 'calico_rack_block_pool 16 is not between calico_pool /16 and '
                                        'calico_block_prefix /24'),
    ('*', 'calico_rack_block_pool', 24, 'is not between'),
    ('*', 'calico_rack_block_pool', 33, 'is not between'),
    ('h2', 'calico_rack_block_pool', '20; x', "calico_rack_block_pool '20; x' is not an integer"),
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
    ('h1', 'ipip_chain', 'INPUT', "use a chain name starting with 'cali-'"),
    ('h1', 'ipip_chain', 'cali-x\n-A INPUT -j ACCEPT', "starting with 'cali-'"),
    ('h1', 'ipip_chain', 'cali-' + 'x' * 30, "at most 28 characters"),
    ('h1', 'calico_node_route_protocol', 2, 'other than 12 (BIRD)'),
    ('h1', 'calico_node_route_protocol', 12, 'other than 12 (BIRD)'),
    ('h1', 'calico_node_route_protocol', '٨٠', 'calico_node_route_protocol'),
    ('h1', 'calico_node_bgp_connect_delay', '2s', 'whole number'),
    ('h1', 'calico_node_bgp_connect_retry', 0, 'whole number from 1'),
    ('h1', 'calico_node_bgp_error_wait', '5,30', 'use two whole numbers'),
    ('h1', 'calico_node_bgp_transition_wait', -1, 'whole number'),
    ('h1', 'calico_node_bgp_hold_time', 2, 'from 3 to 65535'),
    ('h1', 'calico_node_bgp_hold_time', '9s', 'from 3 to 65535'),
    ('*', 'calico_bgp_bfd', 'fast', "calico_bgp_bfd 'fast' is not valid"),
    ('*', 'calico_bgp_bfd', {'interval': 5}, 'calico_bgp_bfd interval 5 is not valid'),
    ('*', 'calico_bgp_bfd', {'interval': 100, 'multiplier': '٣'}, 'calico_bgp_bfd multiplier'),
    ('*', 'calico_bgp_bfd', {'interval': 100, 'detect': 3}, 'is not valid'),
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
    ('h1', 'calico_node_bgp_graceful_restart', 'on\n', 'use true or false'),
    ('h1', 'calico_node_bgp_onlink', 2, 'use true or false'),
    ('h1', 'calico_node_bgp_ttl_security', 'yes please', 'use true or false'),
    ('h1', 'calico_node_bgp_password_file', 'secrets.conf', "use an absolute path"),
    ('h1', 'calico_node_bird_pidfile', '/run/bird/bird.pid /tmp/x', 'use an absolute path'),
    ('h1', 'calico_node_boot_restore', 'sometimes', 'use true or false'),
    ('h1', 'calico_node_boot_state_dir', '/var/lib/../../etc', 'use an absolute path'),
    ('h1', 'calico_node_chain_insert_mode', 'top', 'use one of insert, append'),
    ('h1', 'calico_node_cni_agent', 'always', 'use true or false'),
    ('h1', 'calico_node_cni_agent_pidfile', 'agent.pid', 'use an absolute path'),
    ('h1', 'calico_node_cni_agent_socket', '/run/x\0y', 'use an absolute path'),
    ('h1', 'calico_node_cni_conf_dir', '/etc/cni/net.d ', 'use an absolute path'),
    ('h1', 'calico_node_cni_config', "/etc/cni/'x'.json", 'use an absolute path'),
    ('h1', 'calico_node_cni_data_dir', '/var/lib/ünï', 'use an absolute path'),
    ('h1', 'calico_node_cni_lib_dir', '//usr/lib/$HOME', 'use an absolute path'),
    ('h1', 'calico_node_cni_log', '/var/log/cni.log;id', 'use an absolute path'),
    ('h1', 'calico_node_cni_python', 'python3 -c import os', 'use a program name or an absolute path'),
    ('h1', 'calico_node_cni_version', '0.3.1', 'use one of 0.4.0, 1.0.0, 1.1.0'),
    ('h1', 'calico_node_endpoint_to_host_action', 'RETURN', 'use one of drop, accept'),
    ('h1', 'ipip_firewall', 'off-ish', 'use true or false'),
    ('h1', 'ipip_manage_mtu', [], 'use true or false'),
    ('h1', 'ipip_apply', 'later', 'use true or false'),
    ('h1', 'calico_node_iptables_backend', 'nft; iptables -F', 'use one of auto, nft, legacy'),
    ('h1', 'calico_iptables_backend', 'xtables', 'use one of auto, nft, legacy'),
    ('h1', 'calico_node_nat_outgoing', 'masquerade', 'use true or false'),
    ('h1', 'calico_nat_outgoing', 'masquerade', 'use true or false'),
    ('h1', 'calico_node_status_wait', 'forever', 'whole number'),
    ('h1', 'calico_node_sysctl_persist', 'always', 'use true or false'),
    ('rr1', 'route_reflector_sysctls', {'net.ipv4.ip_forward': '1\nkernel.panic=1'}, 'sysctl names'),
    # fleet-wide settings and rack settings
    ('*', 'calico_pool', '172.17.0.0/16\n', 'calico_pool'),
    ('*', 'calico_pool', '172.17.0.0/٢٤', 'calico_pool'),
    ('*', 'calico_bgp_topology', 'mesh;', 'calico_bgp_topology'),
    ('*', 'calico_ipip_mode', 'Always\n', 'calico_ipip_mode'),
    ('h1', 'calico_block', '172.17.1.0/24 ', 'calico_block'),
    ('h1', 'calico_node_prefixlen', '24\n', 'calico_node_prefixlen'),
    ('rr1', 'calico_rr_spine_prefixlen', '٢٤', 'calico_rr_spine_prefixlen'),
    ('rr1', 'calico_rr_cluster_id', '1.2.3.4\n', 'calico_rr_cluster_id'),
    # routers outside the fleet: addresses, AS numbers, passwords and names reach bird.conf and its secrets file
    ('h1', 'calico_bgp_peers', '192.168.101.254', "calico_bgp_peers '192.168.101.254' is not a list"),
    ('h1', 'calico_bgp_peers', ['192.168.101.254'], "calico_bgp_peers entry 1 '192.168.101.254' is not a mapping"),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254;', 'as_number': 65000}], 'ip \'192.168.101.254;\' is not an'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254\n', 'as_number': 65000}], 'is not an IPv4 or IPv6 address'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.0254', 'as_number': 65000}], 'is not an IPv4 or IPv6 address'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254', 'as_number': 65000}],
     'ip is IPv6 but calico_pool_v6 is not set'),
    ('h1', 'calico_bgp_peers', [{'ip': '224.0.0.5', 'as_number': 65000}], '(224.0.0.5) ip is a multicast address'),
    ('h1', 'calico_bgp_peers', [{'ip': '0.0.0.0', 'as_number': 65000}], 'is the unspecified address'),
    ('h1', 'calico_bgp_peers', [{'ip': '169.254.1.1', 'as_number': 65000}], 'is link-local'),
    ('h1', 'calico_bgp_peers', [{'ip': '172.17.0.1', 'as_number': 65000}], 'is inside calico_pool 172.17.0.0/16'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.102.11', 'as_number': 65000}], "ip is the node IP of host 'h2'"),
    ('h1', 'calico_bgp_peers', [{'ip': '10.255.0.21', 'as_number': 65000}], "the spine address of host 'rr2'"),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254'}], 'has no as_number'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': '6500x'}], 'as_number \'6500x\' is not a'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 23456}], 'as_number 23456 is not a valid AS'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'password': 'pw";include "/etc/x'}],
     'password is not allowed'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'password': 'x' * 81}],
     'password is not allowed'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'name': 'dc"; protocol x'}],
     'name \'dc"; protocol x\' is not allowed'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'multihop': 256}],
     'multihop 256 is not valid — use true, false or a TTL'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'multihop': '2; bfd'}],
     'multihop'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'multihop': 2, 'ttl_security': True}],
     'sets both ttl_security and multihop'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'bfd': 'fast'}],
     "bfd 'fast' is not a boolean"),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'import_default': 'all'}],
     "import_default 'all' is not a boolean"),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'import_prefixes': '10.0.0.0/8'}],
     'import_prefixes \'10.0.0.0/8\' is not a list'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'import_prefixes': ['10.0.0.1/8']}],
     'has host bits set'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'import_prefixes': ['0.0.0.0/0']}],
     'use import_default: true'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'import_prefixes': ['172.17.0.0/24']}],
     'import_prefixes 172.17.0.0/24 is inside calico_pool'),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000, 'export': 'all'}],
     "has unknown key 'export'"),
    ('h1', 'calico_bgp_peers', [{'ip': '192.168.101.254', 'as_number': 65000},
                                {'ip': '192.168.101.254', 'as_number': 65001}], 'is already entry 1'),
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


def fleet_with_spines():
    """fleet() with two spine routers (calico_spines)."""
    hostvars, groups = fleet()
    common = {'calico_pool': '172.17.0.0/16', 'calico_bgp_topology': 'route_reflector', 'calico_node_prefixlen': 24,
              'calico_spine_as_number': 65100}
    for name in hostvars:
        hostvars[name]['calico_spine_as_number'] = 65100
    hostvars['sp1'] = dict(common, calico_node_ip='10.255.0.1')
    hostvars['sp2'] = dict(common, calico_node_ip='10.255.0.2')
    groups['calico_spines'] = ['sp1', 'sp2']
    return hostvars, groups


# the L3 spine's variables, on a spine ('*': every host of the fleet with spines)
SPINE_VALUES = [
    ('*', 'calico_spine_as_number', '6510٠', "calico_spine_as_number '6510٠' is not a number"),
    ('*', 'calico_spine_as_number', 23456, 'calico_spine_as_number 23456 is not a valid AS number'),
    ('sp1', 'spine_bgp_password', 'pass word', 'spine_bgp_password'),
    ('sp1', 'spine_bgp_password', 'pass"\nline', 'spine_bgp_password'),
    ('sp1', 'spine_packages', ['frr; rm -rf /'], 'use Debian package names'),
    ('sp1', 'spine_service_name', 'frr --now; reboot', 'use a systemd unit name'),
    ('sp1', 'spine_vtysh_binary', 'vtysh -c "clear bgp *"', 'use a program name'),
    ('sp1', 'spine_frr_config', '/etc/frr/../shadow', 'use an absolute path'),
    ('sp1', 'spine_frr_daemons', 'etc/frr/daemons', 'use an absolute path'),
    ('sp1', 'spine_install_packages', 'maybe', 'use true or false'),
    ('sp1', 'spine_service_manager', 'watchfrr', 'use one of systemd, pidfile'),
    ('sp1', 'spine_state_dir', '/run/x y', 'use an absolute path'),
]


@pytest.mark.parametrize('host, var, value, message', SPINE_VALUES,
                         ids=[f'{v[1]}={v[2]!r}'[:60] for v in SPINE_VALUES])
def test_bad_spine_value_is_one_preflight_line(host, var, value, message):
    hostvars, groups = fleet_with_spines()
    for name in (hostvars if host == '*' else [host]):
        hostvars[name][var] = value
    text = refused(hostvars, groups)
    assert message in text, text
    assert "host '" in text, text


@pytest.mark.parametrize('host, var, value, message', [v for v in SPINE_VALUES if v[1] in ROLE_VARS],
                         ids=[f'{v[1]}={v[2]!r}'[:60] for v in SPINE_VALUES if v[1] in ROLE_VARS])
def test_site_first_check_refuses_spine_role_variables_alone(host, var, value, message):
    hostvars, groups = fleet_with_spines()
    hostvars[host][var] = value
    with sealed(), pytest.raises(FabricError) as err:
        fabric_inputs(hostvars, groups, racks=RACKS)
    assert message in str(err.value) and f"host '{host}'" in str(err.value), str(err.value)


def fleet_v6():
    """fleet() in dual stack: an IPv6 pool, every host and reflector an IPv6 node address."""
    hostvars, groups = fleet()
    for name in hostvars:
        hostvars[name]['calico_pool_v6'] = 'fd00:10::/48'
    for name, addr in (('rr1', 'fd00:101::1'), ('h1', 'fd00:101::11'), ('rr2', 'fd00:102::1'), ('h2', 'fd00:102::11')):
        hostvars[name]['calico_node_ip_v6'] = addr
    hostvars['rr1']['calico_rr_spine_ip_v6'] = 'fd00:255::11'
    hostvars['rr2']['calico_rr_spine_ip_v6'] = 'fd00:255::21'
    return hostvars, groups


# dual stack ('*': every host)
V6_VALUES = [
    ('*', 'calico_pool_v6', 'fd00:10::/48\n', "calico_pool_v6 'fd00:10::/48\\n' is not a valid IPv6 CIDR"),
    ('*', 'calico_pool_v6', 'fd00:10::/٤٨', 'is not a valid IPv6 CIDR'),
    ('*', 'calico_pool_v6', '172.18.0.0/16', 'is not a valid IPv6 CIDR'),
    ('*', 'calico_pool_v6', '::ffff:172.18.0.0/112', 'is not a valid IPv6 CIDR'),
    ('*', 'calico_pool_v6', 'fd00:10::1/48', 'has host bits set — use fd00:10::/48'),
    ('*', 'calico_pool_v6', 'fe80::/64', 'is not a global unicast or unique local network'),
    ('*', 'calico_pool_v6', 'ff02::/16', 'is not a global unicast or unique local network'),
    ('*', 'calico_pool_v6', 'fd00:10::/129', 'is not a valid IPv6 CIDR'),
    ('*', 'calico_pool_v6', ['fd00:10::/48'], 'is not a valid IPv6 CIDR'),
    ('h1', 'calico_pool_v6', 'fd00:11::/48', "calico_pool_v6 fd00:10::/48 differs from fd00:11::/48 on host 'h1'"),
    ('*', 'calico_block_prefix_v6', '12²', "calico_block_prefix_v6 '12²' is not an integer"),
    ('*', 'calico_block_prefix_v6', True, 'is not an integer'),
    ('*', 'calico_block_prefix_v6', 64, 'makes blocks of more than 4096 addresses'),
    ('*', 'calico_block_prefix_v6', 128, 'leaves no workload addresses in a block'),
    ('h1', 'calico_node_ip_v6', None, "has no calico_node_ip_v6 but calico_pool_v6 is set"),
    ('h1', 'calico_node_ip_v6', 'fd00:101::11\n', "calico_node_ip_v6 'fd00:101::11\\n' is not an IPv6 address"),
    ('h1', 'calico_node_ip_v6', 'fd00:101::11%eth0', 'is not an IPv6 address'),
    ('h1', 'calico_node_ip_v6', 'fd00:101::11/64', 'is not an IPv6 address'),
    ('h1', 'calico_node_ip_v6', '192.168.101.11', 'is not an IPv6 address'),
    ('h1', 'calico_node_ip_v6', 'fe80::11', 'is not a global unicast or unique local address'),
    ('h1', 'calico_node_ip_v6', 'fd00:10::11', 'is inside calico_pool_v6 fd00:10::/48'),
    ('h2', 'calico_node_ip_v6', 'fd00:101::11', "calico_node_ip_v6 fd00:101::11 is also used by host 'h1'"),
    ('rr1', 'calico_rr_spine_ip_v6', 'fd00:255::11"; x', "calico_rr_spine_ip_v6 'fd00:255::11\"; x' is not allowed"),
    ('rr1', 'calico_rr_spine_ip_v6', None, 'has calico_rr_spine_ip but no calico_rr_spine_ip_v6'),
    ('rr1', 'calico_rr_spine_ip_v6', 'fe80::1', 'is not allowed'),
    ('h1', 'calico_rr_spine_ip_v6', 'fd00:255::99', 'calico_rr_spine_ip_v6 is set but the host is not a route'),
    ('rr2', 'calico_rr_spine_ip_v6', 'fd00:101::11', "calico_rr_spine_ip_v6 fd00:101::11 is also used by host 'h1'"),
    # IPv6 sessions beside the IPv4 ones
    ('*', 'calico_bgp_ipv6_sessions', 'maybe', "calico_bgp_ipv6_sessions 'maybe' is not a boolean"),
    ('*', 'calico_bgp_ipv6_sessions', 'true\n', "calico_bgp_ipv6_sessions 'true\\n' is not a boolean"),
    ('*', 'calico_bgp_ipv6_sessions', ['true'], 'is not a boolean'),
    ('*', 'calico_bgp_ipv6_sessions', 2, 'is not a boolean'),
    ('h1', 'calico_bgp_ipv6_sessions', 'on; x', "calico_bgp_ipv6_sessions 'on; x' is not a boolean"),
    # a router outside the fleet with an IPv6 address (a session over IPv6, IPv6 routes only)
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254\n', 'as_number': 65000}], 'is not an IPv4 or IPv6 address'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254%eth0', 'as_number': 65000}], 'is not an IPv4 or IPv6 address'),
    ('h1', 'calico_bgp_peers', [{'ip': 'FD00:101::254', 'as_number': 65000}],
     "ip 'FD00:101::254' is not written plainly — write it as fd00:101::254"),
    ('h1', 'calico_bgp_peers', [{'ip': 'fe80::1', 'as_number': 65000}],
     'ip fe80::1 is not a global unicast or unique local IPv6 address'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:10::5', 'as_number': 65000}], 'ip is inside calico_pool_v6 fd00:10::/48'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:102::11', 'as_number': 65000}],
     "ip is the calico_node_ip_v6 of host 'h2'"),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254', 'as_number': 65000, 'import_prefixes': ['10.0.0.0/8']}],
     "import_prefixes entry '10.0.0.0/8' is not an IPv6 CIDR"),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254', 'as_number': 65000, 'import_prefixes': ['2001:db8::1/64']}],
     'import_prefixes entry 2001:db8::1/64 has host bits set — use 2001:db8::/64'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254', 'as_number': 65000, 'import_prefixes': ['::/0']}],
     'use import_default: true'),
    ('h1', 'calico_bgp_peers', [{'ip': 'fd00:101::254', 'as_number': 65000, 'import_prefixes': ['fd00:10::/64']}],
     'import_prefixes fd00:10::/64 is inside calico_pool_v6 fd00:10::/48'),
]


@pytest.mark.parametrize('host, var, value, message', V6_VALUES, ids=[f'{v[1]}={v[2]!r}'[:60] for v in V6_VALUES])
def test_bad_v6_value_is_one_preflight_line(host, var, value, message):
    hostvars, groups = fleet_v6()
    for name in (hostvars if host == '*' else [host]):
        hostvars[name][var] = value
    text = refused(hostvars, groups)
    assert message in text, text
    assert "host '" in text, text


def test_the_dual_stack_fleet_plans():
    plan = fabric(*fleet_v6(), racks=RACKS)
    assert plan['pool_v6'] == 'fd00:10::/48' and plan['hosts']['h1']['workloads'][0]['ip6'] == 'fd00:10::1'


@pytest.mark.parametrize('entry, message', [
    ({'name': 'w', 'ip6': 'fd00:10::1\n'}, "workload 'w' ip6 'fd00:10::1\\n' is not an IPv6 address"),
    ({'name': 'w', 'ip6': '::ffff:10.0.0.1'}, 'is not an IPv6 address'),
    ({'name': 'w', 'ip6': 'fd00:99::1'}, "workload 'w' ip6 fd00:99::1 is outside the host's IPv6 block"),
    ({'name': 'w', 'ip6': 'fd00:10::'}, 'is the Subnet-Router anycast address of block fd00:10::/122'),
])
def test_bad_workload_ip6_is_one_preflight_line(entry, message):
    hostvars, groups = fleet_v6()
    hostvars['h1']['calico_workloads'] = [entry]
    text = refused(hostvars, groups)
    assert message in text and "host 'h1'" in text, text


# (workload entry on h1 of the dual-stack fleet, what the one line must say)
FLOATING_IP6 = [
    ({'name': 'w', 'floating_ip6': 'fd00:99::10\n-A'},
     "workload 'w' floating_ip6 'fd00:99::10\\n-A' is not an IPv6 address — set floating_ip6 to"),
    ({'name': 'w', 'floating_ip6': '10.99.0.10'}, 'is not an IPv6 address — put an IPv4 address in floating_ip'),
    ({'name': 'w', 'floating_ip6': 'fd00:99::10%eth0'}, 'is not an IPv6 address'),
    ({'name': 'w', 'floating_ip6': 'fd00:99::/64'}, 'is not an IPv6 address'),
    ({'name': 'w', 'floating_ip6': 'fd00:99::１０'}, 'is not an IPv6 address'),
    ({'name': 'w', 'floating_ip6': ['fd00:99::10']}, 'is not an IPv6 address'),
    ({'name': 'w', 'floating_ip6': '::'}, 'floating_ip6 :: is the unspecified address — set floating_ip6 to'),
    ({'name': 'w', 'floating_ip6': '::1'}, 'is the loopback address'),
    ({'name': 'w', 'floating_ip6': 'ff02::1'}, 'is a multicast address'),
    ({'name': 'w', 'floating_ip6': 'fe80::1'}, "is link-local (fe80::/10, the workloads' gateway is one)"),
    ({'name': 'w', 'floating_ip6': '::ffff:a63:a'}, 'is an IPv4-mapped address'),
    ({'name': 'w', 'floating_ip6': '100::1'}, 'is not a global unicast or unique local address'),
    ({'name': 'w', 'floating_ip6': 'fd00:10::5'}, 'floating_ip6 fd00:10::5 is inside calico_pool_v6 fd00:10::/48'),
    ({'name': 'w', 'floating_ip6': 'fd00:102::11'}, "is the calico_node_ip_v6 of host 'h2'"),
    ({'name': 'w', 'floating_ip6': 'fd00:255::21'}, "is the calico_rr_spine_ip_v6 of host 'rr2'"),
    ({'name': 'w', 'floating_ip': 'fd00:99::10'}, "floating_ip 'fd00:99::10' is not an IPv4 address — put an IPv6 "
                                                  'address in floating_ip6'),
]


@pytest.mark.parametrize('entry, message', FLOATING_IP6, ids=[repr(w[0])[:50] for w in FLOATING_IP6])
def test_bad_floating_ip6_is_one_preflight_line(entry, message):
    hostvars, groups = fleet_v6()
    hostvars['h1']['calico_workloads'] = [copy.deepcopy(entry)]
    text = refused(hostvars, groups)
    assert message in text and "host 'h1'" in text, text


def test_a_floating_ip6_on_two_workloads_is_refused():
    hostvars, groups = fleet_v6()
    hostvars['h1']['calico_workloads'][0]['floating_ip6'] = 'fd00:99::10'
    hostvars['h2']['calico_workloads'][0]['floating_ip6'] = 'fd00:99:0::10/128'
    assert refused(hostvars, groups) == (
        "netfleet.calico preflight: host 'h2': workload 'db1' floating_ip6 fd00:99::10 is also the floating_ip6 of "
        "workload 'web1' on host 'h1' — give each workload its own floating_ip6")


@pytest.mark.parametrize('host, var, value, message', [
    ('h1', 'calico_workloads', [{'name': 'w', 'ip6': 'fd00:10::2'}], "workload 'w' has ip6 but calico_pool_v6 is not"),
    ('h1', 'calico_workloads', [{'name': 'w', 'floating_ip6': 'fd00:99::10'}],
     "workload 'w' has floating_ip6 but calico_pool_v6 is not set — set calico_pool_v6 for a dual-stack fleet, or "
     'drop floating_ip6'),
    ('h1', 'calico_block_prefix_v6', 120, 'calico_block_prefix_v6 is set but calico_pool_v6 is not'),
    ('h1', 'calico_bgp_ipv6_sessions', True, 'calico_bgp_ipv6_sessions is true but calico_pool_v6 is not set'),
])
def test_v6_values_without_a_v6_pool_are_refused(host, var, value, message):
    hostvars, groups = fleet()
    hostvars[host][var] = value
    assert message in refused(hostvars, groups)


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


# (where: 'policy' for a calico_policies entry on every host, 'cni' for calico_cni_networks with calico_cni on h1,
#  'labels' for h1's workload labels; the value; what the one line must say)
FABRIC_LISTS = [
    ('policy', {'name': 'db', 'selector': "app == 'db'\n-A INPUT -j ACCEPT"}, 'selector'),
    ('policy', {'name': 'db', 'selector': 'app == "db'}, 'is malformed'),
    ('policy', {'name': 'db', 'selector': "app == 'db'", 'ingress': [{'action': 'allow', 'from': {
        'cidr': ['10.0.0.0/8 -j ACCEPT']}}]}, "cidr '10.0.0.0/8 -j ACCEPT' is not an IPv4 CIDR"),
    ('policy', {'name': 'db', 'selector': "app == 'db'", 'ingress': [{'action': 'ACCEPT'}]}, 'use allow or deny'),
    ('policy', {'name': 'db', 'selector': "app == 'db'", 'ingress': [{'protocol': 'tcp', 'ports': ['80;']}]},
     "use ports 1-65535 or ranges like '8000:8080'"),
    ('policy', {'name': 'db', 'selector': "app == 'db'", 'ingress': [{'protocol': 'tcp', 'ports': ['٨٠']}]},
     "use ports 1-65535"),
    ('policy', {'name': 'db', 'selector': "app == 'db'", 'order': '1٠٠'}, "order '1٠٠' is not a number"),
    ('cni', [{'name': 'web\n', 'labels': {'app': 'web'}}], 'has no valid name'),
    ('cni', [{'name': 'web', 'labels': {'app\n': 'web'}}], "label name 'app\\n' is not valid"),
    ('cni', [{'name': 'web', 'labels': {'app': 'web"x'}}], 'is not valid'),
    ('labels', {'app': "web' || app == 'db"}, 'is not valid'),
    ('labels', {'a b': 'web'}, "label name 'a b' is not valid"),
]


@pytest.mark.parametrize('where, value, message', FABRIC_LISTS, ids=[f'{w[0]}={w[1]!r}'[:60] for w in FABRIC_LISTS])
def test_bad_policy_cni_or_label_is_one_preflight_line(where, value, message):
    hostvars, groups = fleet()
    if where == 'policy':
        for hv in hostvars.values():
            hv['calico_policies'] = [value]
    elif where == 'cni':
        for hv in hostvars.values():
            hv['calico_cni_networks'] = value
        hostvars['h1']['calico_cni'] = True
    else:
        hostvars['h1']['calico_workloads'] = [{'name': 'web1', 'labels': value}]
    assert message in refused(hostvars, groups)


@pytest.mark.parametrize('value', ['x";', 'a\nb', 'back\\slash', 'ünï', 'x' * 256, None, True])
def test_bird_string_refuses_what_could_end_the_literal(value):
    with pytest.raises(FabricError, match='netfleet.calico.bird_string: input: .* cannot be a BIRD string'):
        bird_string(value)


def test_bird_string_quotes():
    assert bird_string('r1h1') == '"r1h1"' and bird_string(64512) == '"64512"'


# --- every documented variable has hostile values above ------------------------------------------------------

REPO = Path(__file__).resolve().parents[3]
# variables that no inventory sets, so no inventory value can be hostile
NOT_FROM_THE_INVENTORY = {
    'calico_node_fabric': 'the plan itself, which the preflight computes',
    'spine_fabric': 'the plan itself, which the preflight computes',
}
# tested with their own filter: the roll-out batches (tests/unit/filter/test_rollout.py)
ROLLOUT = ('calico_serial', 'calico_rr_serial', 'calico_max_fail_percentage')


def documented_variables():
    names = set(re.findall(r'^\| `([a-z][a-z0-9_]+)` \|', (REPO / 'docs/variables.md').read_text(), re.M))
    page = (REPO / 'docs/inventory.md').read_text()
    inventory = page[page.index('\n## Inventory variables'):]
    inventory = inventory[:inventory.index('\n## ', 1)]
    names |= set(re.findall(r'^\| `(calico_[a-z0-9_]+)` \|', inventory, re.M))
    return sorted(names)


def test_the_inventory_variables_table_is_read():
    assert {'calico_pool', 'calico_ipip_mode', 'calico_serial'} <= set(documented_variables())


def corpus_variables():
    covered = {var for _host, var, _value, _message in VALUES + SPINE_VALUES + V6_VALUES}
    covered |= {'calico_workloads'} | {'calico_policies', 'calico_cni_networks'}
    rollout_tests = (REPO / 'tests/unit/filter/test_rollout.py').read_text()
    covered |= {var for var in ROLLOUT if var in rollout_tests}
    return covered


@pytest.mark.parametrize('var', documented_variables())
def test_every_documented_variable_has_hostile_values(var):
    assert var in corpus_variables() or var in NOT_FROM_THE_INVENTORY, \
        f'{var}: add a hostile or malformed value to VALUES (docs/variables.md or docs/inventory.md lists it)'


def test_every_checked_role_variable_has_hostile_values():
    assert sorted(set(ROLE_VARS) - corpus_variables()) == []


@pytest.mark.parametrize('host, var, value, message', [v for v in VALUES if v[1] in ROLE_VARS],
                         ids=[f'{v[1]}={v[2]!r}'[:60] for v in VALUES if v[1] in ROLE_VARS])
def test_site_first_check_refuses_role_variables_alone(host, var, value, message):
    """site.yml's first play (netfleet.calico.fabric_inputs) refuses them before any host is contacted."""
    hostvars, groups = fleet()
    hostvars[host][var] = value
    with sealed(), pytest.raises(FabricError) as err:
        fabric_inputs(hostvars, groups, racks=RACKS)
    assert message in str(err.value) and f"host '{host}'" in str(err.value), str(err.value)
