# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory values as the planner accepts them: strict, whole-value patterns (ASCII only; ``fullmatch``, so a
trailing newline never passes) for everything that reaches a configuration file, a command or a path, and the
role variables an inventory may override, checked once in preflight before any host changes.

Inventories come from CMDBs and dynamic inventory scripts: a value is rejected with one line naming the host
or rack, the variable and the fix, never repaired."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.module_utils.iproute import workload_ifname
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.values import is_unset

try:
    import netaddr
except ImportError as _exc:  # pragma: no cover - exercised by a monkeypatched test
    netaddr = None
    NETADDR_IMPORT_ERROR = _exc
else:
    NETADDR_IMPORT_ERROR = None

IFNAME_MAX = 15  # IFNAMSIZ - 1
TOPOLOGIES = ('full_mesh', 'route_reflector')
IPIP_MODES = ('never', 'always', 'cross_subnet')
# Calico spells the modes Never / Always / CrossSubnet; accept those spellings too.
_IPIP_ALIASES = {'never': 'never', 'always': 'always', 'cross_subnet': 'cross_subnet',
                 'crosssubnet': 'cross_subnet', 'cross-subnet': 'cross_subnet'}

MAX_BLOCK_PREFIX = 30  # a /30 still leaves one automatic workload address (network + 2)
MAX_BLOCKS_PER_HOST = 64  # each block is one blackhole, one static route and one BGP prefix per peer

AS_TRANS = 23456  # RFC 6793: never a real AS
AS_MAX = 4294967295


# Names that end up in bird.conf, iptables chains, namespace and interface names, file names.
NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}')
HOST = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,252}')
GROUP = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}')
IFNAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,14}')
CHAIN = re.compile(r'cali-[A-Za-z0-9_-]{1,23}')
UNIT = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.@:-]{0,250}')
PROGRAM = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}')
PATH = re.compile(r'/[A-Za-z0-9_.@+:/-]{0,4094}')
PATH_PATTERN = re.compile(r'/[A-Za-z0-9_.@+:/*?\[\]-]{0,4094}')  # fnmatch patterns of absolute paths
PACKAGE = re.compile(r'[a-z0-9][a-z0-9+.-]{1,127}')
SYSCTL_KEY = re.compile(r'[a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+){1,6}')
SYSCTL_VALUE = re.compile(r'[A-Za-z0-9_ .:-]{0,64}')
# TCP-MD5 keys are at most 80 bytes; BIRD strings have no escapes, so no '"' or '\'.
PASSWORD = re.compile(r'[ !#-\[\]-~]{1,80}')
FRR_PASSWORD = re.compile(r'[!#-\[\]-~]{1,80}')
DIGITS = re.compile(r'[0-9]{1,12}')
DOTTED_QUAD = re.compile(r'[0-9]{1,3}(?:\.[0-9]{1,3}){3}')
LABEL_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9_./-]{0,252}')
LABEL_VALUE = re.compile(r'[A-Za-z0-9_.-]{0,63}')
CIDR = re.compile(r'[0-9]{1,3}(?:\.[0-9]{1,3}){3}/[0-9]{1,2}')
BIRD_LOG = re.compile(r'syslog|stderr|"/[A-Za-z0-9_.@+:/-]{0,4094}"')

NAME_FIX = "use 1-63 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"


def as_int(value):
    """int for ints and strings of ASCII digits; None otherwise (bools, '²', '٦٤٥١٢', '1e3' are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and DIGITS.fullmatch(value):
        return int(value)
    return None


def matches(pattern, value):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_path(value):
    """An absolute path of plain characters with no '..' component (it reaches files, units and commands)."""
    return matches(PATH, value) and '..' not in value.split('/')


def check_host_name(name):
    if not matches(HOST, name):
        raise FabricError(f'host {name!r}', 'the host name is not allowed (it names BGP peers, files and sessions)',
                          "rename the host: 1-253 ASCII letters, digits, '.', '_' or '-', starting with a letter or "
                          'digit (ansible_host can still be any address)')


def check_group_name(name, what='rack'):
    if not matches(GROUP, name):
        raise FabricError(f'{what} {name!r}', 'the group name is not allowed',
                          "rename the group: 1-63 ASCII letters, digits, '.', '_' or '-'")


def check_name(value, subject, var, pattern=NAME, fix=NAME_FIX):
    """A name that reaches a file, command or configuration, returned as a str."""
    if not matches(pattern, value):
        raise FabricError(subject, f'{var} {value!r} is not allowed', fix)
    return value


def _int_between(low, high):
    def check(value):
        number = as_int(value)
        return number is not None and low <= number <= high
    return check, f'set it to a whole number from {low} to {high} (ASCII digits)'


def _list_of(check_one, fix):
    def check(value):
        return (isinstance(value, (list, tuple)) and not isinstance(value, str)
                and all(check_one(item) for item in value))
    return check, fix


def _sysctls(value):
    return isinstance(value, Mapping) and all(
        matches(SYSCTL_KEY, k) and (as_int(v) is not None or matches(SYSCTL_VALUE, v)) for k, v in value.items())


def _failsafe_port(value):
    proto, _sep, port = str(value).partition(':') if isinstance(value, str) else ('tcp', ':', value)
    return proto in ('tcp', 'udp') and _int_between(1, 65535)[0](port)


def _program(value):
    return matches(PROGRAM, value) or is_path(value)


def _choice(*choices):
    return (lambda value: value in choices), f"use one of {', '.join(choices)}"


_PATH = (is_path, "use an absolute path of ASCII letters, digits and '_.@+:-/' (no '..', no spaces or quotes)")
_PATH_OR_EMPTY = (lambda v: v == '' or is_path(v), _PATH[1] + ", or ''")
_BOOL = ((lambda v: isinstance(v, bool) or v in ('true', 'false', 'yes', 'no', 'True', 'False')), 'use true or false')

# Role variables an inventory may override that reach a file, a command or bird.conf. (Their role defaults are
# safe; an inventory value is checked here once, before any host changes.)
ROLE_VARS = {
    **{var: _PATH for var in (
        'calico_node_bird_config', 'calico_node_bird_socket', 'calico_node_bird_pidfile', 'calico_node_sysctl_file',
        'calico_node_boot_state_dir', 'calico_node_boot_lib_dir', 'calico_node_cni_bin_dir',
        'calico_node_cni_conf_dir', 'calico_node_cni_config', 'calico_node_cni_data_dir', 'calico_node_cni_lib_dir',
        'calico_node_cni_log', 'calico_node_cni_agent_socket', 'calico_node_cni_agent_pidfile')},
    'calico_node_state_dir': _PATH_OR_EMPTY,
    'calico_node_bgp_password_file': _PATH_OR_EMPTY,
    'calico_node_cni_python': (_program, 'use a program name or an absolute path'),
    'calico_node_bird_binary': (_program, 'use a program name (bird) or an absolute path'),
    'calico_node_birdc_binary': (_program, 'use a program name (birdc) or an absolute path'),
    'calico_node_service_name': ((lambda v: matches(UNIT, v)), 'use a systemd unit name such as bird'),
    'calico_node_workload_netns_prefix': ((lambda v: matches(NAME, v)), NAME_FIX),
    'ipip_chain': ((lambda v: matches(CHAIN, v)), "use a chain name starting with 'cali-', at most 28 characters"),
    # 0-4 are the kernel's own (connected, static, ...) and 12 is BIRD's: owning those would delete others' routes
    'calico_node_route_protocol': ((lambda v: _int_between(5, 254)[0](v) and as_int(v) != 12),
                                   'use a route protocol number from 5 to 254 other than 12 (BIRD), e.g. 80'),
    'calico_node_bgp_connect_delay': _int_between(0, 65535),
    'calico_node_bgp_connect_retry': _int_between(1, 65535),
    'calico_node_bgp_error_wait': _list_of(_int_between(0, 65535)[0], 'use two whole numbers, e.g. [5, 30]'),
    'calico_node_bgp_transition_wait': _int_between(1, 3600),
    'calico_node_bgp_hold_time': ((lambda v: v in (None, '') or _int_between(3, 65535)[0](v)),
                                  'use a whole number of seconds from 3 to 65535, or leave it empty'),
    'calico_node_status_wait': _int_between(0, 3600),
    'calico_node_workload_mtu': ((lambda v: v in (None, '') or _int_between(576, 65535)[0](v)),
                                 'use an MTU from 576 to 65535, or leave it empty'),
    'calico_node_failsafe_inbound_ports': _list_of(_failsafe_port,
                                                   "use a list of 'tcp:<port>' or 'udp:<port>' (1-65535)"),
    'calico_failsafe_inbound_ports': _list_of(_failsafe_port, "use a list of 'tcp:<port>' or 'udp:<port>' (1-65535)"),
    'calico_node_packages': _list_of(lambda v: matches(PACKAGE, v), 'use Debian package names'),
    'calico_node_cni_packages': _list_of(lambda v: matches(PACKAGE, v), 'use Debian package names'),
    'calico_node_host_sysctls': (_sysctls, 'use a mapping of sysctl names (net.ipv4.ip_forward) to plain values'),
    'route_reflector_sysctls': (_sysctls, 'use a mapping of sysctl names (net.ipv4.ip_forward) to plain values'),
    'calico_node_cni_version': _choice('0.4.0', '1.0.0', '1.1.0'),
    'calico_node_bird_log': ((lambda v: matches(BIRD_LOG, v)),
                             'use syslog, stderr or a quoted absolute path ("/var/log/bird.log")'),
    'calico_bgp_password': ((lambda v: v == '' or matches(PASSWORD, v)),
                            'use 1-80 printable ASCII characters without " or \\'),
    'calico_node_bgp_password': ((lambda v: v == '' or matches(PASSWORD, v)),
                                 'use 1-80 printable ASCII characters without " or \\'),
    # role spine (FRR): its password is one word (FRR's neighbor password takes no spaces)
    'spine_bgp_password': ((lambda v: v == '' or matches(FRR_PASSWORD, v)),
                           'use 1-80 printable ASCII characters without spaces, " or \\'),
    'spine_packages': _list_of(lambda v: matches(PACKAGE, v), 'use Debian package names'),
    'spine_service_name': ((lambda v: matches(UNIT, v)), 'use a systemd unit name such as frr'),
    'spine_vtysh_binary': (_program, 'use a program name (vtysh) or an absolute path'),
    'spine_frr_config': _PATH,
    'spine_frr_daemons': _PATH,
    'spine_install_packages': _BOOL,
    'spine_service_manager': _choice('systemd', 'pidfile'),
    'spine_state_dir': _PATH_OR_EMPTY,
    'calico_node_service_manager': _choice('systemd', 'pidfile'),
    'calico_endpoint_to_host_action': _choice('drop', 'accept'),
    'calico_iptables_backend': _choice('auto', 'nft', 'legacy'),
    'calico_nat_outgoing': _BOOL,
    'calico_node_iptables_backend': _choice('auto', 'nft', 'legacy'),
    'calico_node_chain_insert_mode': _choice('insert', 'append'),
    'calico_node_endpoint_to_host_action': _choice('drop', 'accept'),
    **{var: _BOOL for var in (
        'calico_node_install_packages', 'calico_node_sysctl_persist', 'calico_node_bgp_graceful_restart',
        'calico_node_bgp_onlink', 'calico_node_bgp_ttl_security', 'ipip_firewall', 'ipip_manage_mtu',
        'ipip_apply', 'calico_node_nat_outgoing', 'calico_node_boot_restore',
        'calico_node_cni_agent')},
}


def check_role_vars(reader, hosts):
    """Every role variable of ROLE_VARS that the inventory sets, per host: one line naming the first bad one."""
    for name in hosts:
        for var, (check, fix) in ROLE_VARS.items():
            value = reader.get(name, var)
            if value is None:
                continue
            if not check(value):
                shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + '...')
                raise FabricError(f"host '{name}'", f'{var} {shown} is not allowed', fix)


def require_netaddr(who):
    """Fail like ansible.utils' ipaddr filters do when netaddr is not installed on the controller."""
    if netaddr is None:
        raise AnsibleFilterError(
            f'{who} requires the Python library netaddr on the Ansible controller, but it failed to import '
            f'({NETADDR_IMPORT_ERROR}) on Python {sys.executable} — install it there: '
            f'{sys.executable} -m pip install netaddr'
        )


def network_or_none(value):
    """IPv4 IPNetwork for a CIDR string of ASCII digits (``a.b.c.d/n``, nothing around it), else None."""
    if not isinstance(value, str) or not CIDR.fullmatch(value):
        return None
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return net if net.version == 4 else None


def address_or_none(value, allow_slash32=False):
    """IPv4 IPAddress for a dotted quad (optionally ``x/32``), else None (no exceptions)."""
    if not isinstance(value, str):
        return None
    text = value
    if allow_slash32 and text.endswith('/32'):
        text = text[:-3]
    if not DOTTED_QUAD.fullmatch(text):
        return None
    try:
        addr = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return addr


def interface_name(workload_id, prefix='cali'):
    """Calico's host-side interface name (module_utils.iproute.workload_ifname, the one copy of the
    rule that the modules use too), with its error turned into a preflight line."""
    if not isinstance(prefix, str) or not prefix:
        raise FabricError('input', f'interface prefix {prefix!r} is not a non-empty string',
                          "use the default prefix 'cali'")
    if len(prefix) + 11 > IFNAME_MAX:
        name = prefix + workload_ifname(workload_id)[4:]
        raise FabricError('input', f"interface prefix '{prefix}' makes '{name}' longer than {IFNAME_MAX} characters",
                          f'use a prefix of at most {IFNAME_MAX - 11} characters')
    try:
        return workload_ifname(workload_id, prefix)
    except ValueError as e:
        raise FabricError('input', str(e), "use the default prefix 'cali'") from e


def same_subnet(a, a_prefixlen, b, b_prefixlen):
    """True when addresses ``a`` and ``b`` share a subnet, False when not, None when no prefix length is known.

    Every known prefix length is applied (ours and the peer's): both sides of a session compute the same
    answer, which matters for settings that must agree on both ends (GTSM, ``direct``)."""
    lengths = [length for length in (a_prefixlen, b_prefixlen) if length is not None]
    if not lengths:
        return None
    a, b = int(netaddr.IPAddress(a)), int(netaddr.IPAddress(b))
    return all((a ^ b) >> (32 - length) == 0 for length in lengths)


# ---------------------------------------------------------------------------------------------
# small parsers (strict ones raise FabricError, lenient ones return None)
# ---------------------------------------------------------------------------------------------

def parse_network(value, subject, var, fix):
    """A strict IPv4 CIDR with no host bits set."""
    net = network_or_none(value)
    if net is None:
        raise FabricError(subject, f'{var} {value!r} is not a valid IPv4 CIDR', fix)
    if net.ip != net.network:
        raise FabricError(subject, f'{var} {value} has host bits set', f'use {net.cidr}')
    return net.cidr


def parse_pool(value, subject='input'):
    if is_unset(value):
        raise FabricError(subject, 'calico_pool is not set',
                          'set calico_pool (e.g. 172.17.0.0/16) once for the whole fleet in group_vars/all')
    return parse_network(value, subject, 'calico_pool', 'set calico_pool to an IPv4 network like 172.17.0.0/16')


def parse_block_prefix(value, pool, subject='input'):
    fix = f'set calico_block_prefix between {pool.prefixlen} and {MAX_BLOCK_PREFIX}'
    prefix = as_int(value)
    if prefix is None:
        raise FabricError(subject, f'calico_block_prefix {value!r} is not an integer', fix)
    if prefix < pool.prefixlen:
        raise FabricError(subject, f'calico_block_prefix {prefix} is shorter than calico_pool {pool}', fix)
    if prefix > MAX_BLOCK_PREFIX:
        raise FabricError(subject, f'calico_block_prefix {prefix} leaves no workload addresses in a block', fix)
    return prefix


def parse_max_blocks(value, subject='input'):
    """``calico_max_blocks_per_host``: how many blocks of the pool a host may hold, 1 to MAX_BLOCKS_PER_HOST."""
    number = as_int(value)
    if number is None or not 1 <= number <= MAX_BLOCKS_PER_HOST:
        raise FabricError(subject, f'calico_max_blocks_per_host {value!r} is not an integer 1-{MAX_BLOCKS_PER_HOST}',
                          'set calico_max_blocks_per_host to how many blocks a host may hold (default 1)')
    return number


def parse_as_number(value, subject, var='calico_as_number'):
    number = as_int(value)
    fix = ('use 1-4294967295 except 23456 (AS_TRANS), e.g. a private AS from 64512-65534 '
           'or 4200000000-4294967294')
    if number is None:
        raise FabricError(subject, f'{var} {value!r} is not a number', fix)
    if number < 1 or number == AS_TRANS or number > AS_MAX:
        raise FabricError(subject, f'{var} {number} is not a valid AS number', fix)
    return number


def parse_topology(value, subject='input'):
    text = value.lower() if isinstance(value, str) else value
    if text not in TOPOLOGIES:
        raise FabricError(subject, f'calico_bgp_topology {value!r} is not supported',
                          'use full_mesh or route_reflector')
    return text


def parse_ipip_mode(value, subject='input'):
    text = _IPIP_ALIASES.get(value.lower()) if isinstance(value, str) else None
    if text is None:
        raise FabricError(subject, f'calico_ipip_mode {value!r} is not valid',
                          'use never, always or cross_subnet')
    return text


def parse_bool(value, subject, var):
    """A boolean written as YAML or Ansible write them (true/yes/on/1, false/no/off/0); unset is false."""
    if is_unset(value):
        return False
    if isinstance(value, bool):
        return value
    text = value.lower() if isinstance(value, str) else value
    if text in ('true', 'yes', 'on', '1', 1):
        return True
    if text in ('false', 'no', 'off', '0', 0):
        return False
    raise FabricError(subject, f'{var} {value!r} is not a boolean', f'set {var}: true or false')


def parse_labels(value, subject, where):
    """Labels (workloads, container networks) as Kubernetes writes them: ``{name: value}`` of plain strings."""
    if is_unset(value):
        return {}
    if not isinstance(value, Mapping):
        raise FabricError(subject, f'{where} labels is not a mapping', 'write labels as {app: web}')
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise FabricError(subject, f'{where} label name {key!r} is not valid',
                              'use label names of letters, digits, _ . / - (at most 253)')
        if isinstance(val, bool) or not isinstance(val, (str, int)) or not LABEL_VALUE.fullmatch(str(val)):
            raise FabricError(subject, f'{where} label {key} value {val!r} is not valid',
                              'use values of letters, digits, _ . - (at most 63)')
        out[key] = str(val)
    return out


BFD_DEFAULTS = {'interval': 100, 'multiplier': 3}


def parse_bfd(value, subject='input'):
    """``calico_bgp_bfd``: off (unset, false), on with BIRD's interval/multiplier defaults of this collection
    (true), or ``{interval: <ms>, multiplier: <n>}``. Returns None or ``{'interval': ms, 'multiplier': n}``."""
    fix = 'use true, false, or {interval: 100, multiplier: 3} (interval 10-10000 ms, multiplier 1-255)'
    if is_unset(value) or value is False or (isinstance(value, str) and value.lower() in ('false', 'no', 'off')):
        return None
    if value is True or (isinstance(value, str) and value.lower() in ('true', 'yes', 'on')):
        return dict(BFD_DEFAULTS)
    if not isinstance(value, Mapping) or not set(value) <= set(BFD_DEFAULTS):
        raise FabricError(subject, f'calico_bgp_bfd {value!r} is not valid', fix)
    out = dict(BFD_DEFAULTS)
    for key, (low, high) in (('interval', (10, 10000)), ('multiplier', (1, 255))):
        if key in value:
            number = as_int(value[key])
            if number is None or not low <= number <= high:
                raise FabricError(subject, f'calico_bgp_bfd {key} {value[key]!r} is not valid', fix)
            out[key] = number
    return out


def speaker_address(reader, name, missing, fix, nonzero=False):
    """A BGP speaker's own IPv4 address: ``calico_node_ip``, else ``ansible_host``. ``missing`` is the problem
    when neither is set, ``fix`` what to set; ``nonzero`` also refuses 0.0.0.0."""
    subject = host_subject(name)
    raw, var = reader.get(name, 'calico_node_ip'), 'calico_node_ip'
    if is_unset(raw):
        raw, var = reader.get(name, 'ansible_host'), 'ansible_host'
    if is_unset(raw):
        raise FabricError(subject, missing, f'set calico_node_ip (or ansible_host) to {fix}')
    addr = address_or_none(raw if isinstance(raw, str) else None)
    if addr is None or (nonzero and int(addr) == 0):
        raise FabricError(subject, f'{var} {raw!r} is not an IPv4 address', f'set calico_node_ip to {fix}')
    return addr


def parse_router_id(reader, name, default, default_name):
    """A speaker's ``calico_router_id`` (a dotted quad, not 0.0.0.0), else ``default`` (its address)."""
    raw = reader.get(name, 'calico_router_id')
    if is_unset(raw):
        return default
    rid = address_or_none(raw if isinstance(raw, str) else None)
    if rid is None or int(rid) == 0:
        raise FabricError(host_subject(name), f'calico_router_id {raw!r} is not an IPv4 address',
                          f'set calico_router_id to a dotted quad, or drop it (defaults to the {default_name})')
    return rid


def parse_cluster_id(value, subject):
    """A route-reflector cluster id: dotted quad or a 32-bit integer, returned as a dotted quad."""
    number = as_int(value)
    if number is not None and 0 < number <= AS_MAX:
        return str(netaddr.IPAddress(number, 4))
    addr = address_or_none(value)
    if addr is None or int(addr) == 0:
        raise FabricError(subject, f'calico_rr_cluster_id {value!r} is not a cluster id',
                          'use a dotted quad such as 10.255.0.1, or drop it (defaults to the lowest reflector IP)')
    return str(addr)
