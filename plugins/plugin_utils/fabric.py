# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side planning for netfleet.calico: the one place where the fabric is computed.

Everything the roles need to know about the fleet -- which host owns which block of the
pool, which address each workload gets, which BGP sessions each BIRD opens -- is computed
here, on the controller, from the inventory, and checked before any host is touched.
The filter plugins in ``plugins/filter/`` are thin wrappers around the functions below.

Errors are :class:`FabricError` (an ``AnsibleFilterError``) whose message is ONE line::

    netfleet.calico preflight: <subject>: <problem> — <fix>

where ``<subject>`` is ``host 'NAME'``, ``rack 'NAME'``, ``group 'NAME'`` or ``input`` (the
stand-alone filters' own arguments).  The stand-alone filters use
``netfleet.calico.<filter>`` instead of ``netfleet.calico preflight`` as the prefix.

Order of the preflight checks done by :func:`build_fabric` (the first failure is reported,
hosts and racks are always visited in natural name order, ``host-2`` before ``host-10``):

1. at least one host in ``calico_nodes`` / ``calico_route_reflectors``;
2. fleet-wide settings, each one first for agreement between hosts and then for validity:
   ``calico_bgp_topology``, ``calico_ipip_mode``, ``calico_pool``, ``calico_block_prefix``;
3. rack membership: a host in two racks; then (route_reflector) a reflector in no rack,
   then any other host in no rack;
4. per host: node IP, node prefix length, router id; then duplicate node IPs, then duplicate
   router ids; then per host the spine address (``calico_rr_spine_ip`` on a host that is not a
   reflector; a reflector's spine IP and its prefix length, ``calico_rr_spine_prefixlen`` else
   ``lab_spine_segment``); then spine IPs used by another host (as node or spine IP);
5. AS numbers: per rack (agreement between the rack's hosts, presence in route_reflector,
   validity), then per rack-less host; then (route_reflector) two racks with one AS, a rack
   with nodes but no reflector, route-reflector cluster ids (validity, uniqueness);
6. blocks: pinned ``calico_block`` (valid, aligned, inside the pool, right size, not
   overlapping another pin, not taking the running block of an unpinned host), ``calico_block``
   or ``calico_workloads`` on a host that is not in ``calico_nodes``; then pool exhaustion;
7. workloads, per host: list shape, names (valid, unique), explicit IPs (valid, inside the
   block, not its network/broadcast address, unique), a full block; then duplicate workload
   IPs across the fleet.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from jinja2 import Undefined

from ansible_collections.netfleet.calico.plugins.module_utils.iproute import workload_ifname
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing

try:
    import netaddr
except ImportError as _exc:  # pragma: no cover - exercised by a monkeypatched test
    netaddr = None
    NETADDR_IMPORT_ERROR = _exc
else:
    NETADDR_IMPORT_ERROR = None

PREFLIGHT = 'netfleet.calico preflight'

TOPOLOGIES = ('full_mesh', 'route_reflector')
IPIP_MODES = ('never', 'always', 'cross_subnet')
# Calico spells the modes Never / Always / CrossSubnet; accept those spellings too.
_IPIP_ALIASES = {'never': 'never', 'always': 'always', 'cross_subnet': 'cross_subnet',
                 'crosssubnet': 'cross_subnet', 'cross-subnet': 'cross_subnet'}

DEFAULT_BLOCK_PREFIX = 26  # Calico's default block size; the article (and the lab) use 24
DEFAULT_TOPOLOGY = 'full_mesh'
DEFAULT_IPIP_MODE = 'never'
DEFAULT_AS_NUMBER = 64512
MAX_BLOCK_PREFIX = 30  # a /30 still leaves one automatic workload address (network + 2)

AS_TRANS = 23456  # RFC 6793: never a real AS
AS_MAX = 4294967295

GROUP_NODES = 'calico_nodes'
GROUP_RACKS = 'calico_racks'
GROUP_REFLECTORS = 'calico_route_reflectors'

IFNAME_MAX = 15  # IFNAMSIZ - 1
WORKLOAD_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')


class FabricError(AnsibleFilterError):
    """A one-line, actionable planning/preflight error: ``<prefix>: <subject>: <problem> — <fix>``."""

    def __init__(self, subject, problem, fix, prefix=PREFLIGHT):
        self.subject = subject
        self.problem = problem
        self.fix = fix
        self.prefix = prefix
        super().__init__(f'{prefix}: {subject}: {problem} — {fix}', show_content=False)

    def with_prefix(self, prefix):
        return FabricError(self.subject, self.problem, self.fix, prefix=prefix)


def require_netaddr(who):
    """Fail like ansible.utils' ipaddr filters do when netaddr is not installed on the controller."""
    if netaddr is None:
        raise AnsibleFilterError(
            f'{who} requires the Python library netaddr on the Ansible controller, but it failed to import '
            f'({NETADDR_IMPORT_ERROR}) on Python {sys.executable} — install it there: '
            f'{sys.executable} -m pip install netaddr'
        )


def run_filter(filter_name, func, *args, **kwargs):
    """Run ``func`` for the stand-alone filter ``filter_name``: netaddr check, messages prefixed with its name."""
    require_netaddr(f'netfleet.calico.{filter_name}')
    try:
        return func(*args, **kwargs)
    except FabricError as err:
        raise err.with_prefix(f'netfleet.calico.{filter_name}') from None


def host_subject(name):
    return f"host '{name}'"


def rack_subject(name):
    return f"rack '{name}'"


def natural_key(name):
    """Sort key: ``host-2`` before ``host-10``; ties (``host-01`` vs ``host-1``) broken by the raw string."""
    name = str(name)
    parts = re.split(r'([0-9]+)', name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def natural_sorted(names):
    return sorted(names, key=natural_key)


def _ifname(workload_id, prefix='cali'):
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


# ---------------------------------------------------------------------------------------------
# small parsers (strict ones raise FabricError, lenient ones return None)
# ---------------------------------------------------------------------------------------------

def _is_unset(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _as_int(value):
    """int for ints and digit strings; None otherwise (bools are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _network_or_none(value):
    """IPv4 IPNetwork for a CIDR string, else None (no exceptions)."""
    if not isinstance(value, str) or '/' not in value:
        return None
    try:
        net = netaddr.IPNetwork(value.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return net if net.version == 4 else None


def _address_or_none(value, allow_slash32=False):
    """IPv4 IPAddress for a dotted quad (optionally ``x/32``), else None (no exceptions)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if allow_slash32 and text.endswith('/32'):
        text = text[:-3]
    if not re.match(r'^[0-9]{1,3}(\.[0-9]{1,3}){3}$', text):
        return None
    try:
        addr = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return addr


def parse_network(value, subject, var, fix):
    """A strict IPv4 CIDR with no host bits set."""
    net = _network_or_none(value)
    if net is None:
        raise FabricError(subject, f'{var} {value!r} is not a valid IPv4 CIDR', fix)
    if net.ip != net.network:
        raise FabricError(subject, f'{var} {value} has host bits set', f'use {net.cidr}')
    return net.cidr


def parse_pool(value, subject='input'):
    if _is_unset(value):
        raise FabricError(subject, 'calico_pool is not set',
                          'set calico_pool (e.g. 172.17.0.0/16) once for the whole fleet in group_vars/all')
    return parse_network(value, subject, 'calico_pool', 'set calico_pool to an IPv4 network like 172.17.0.0/16')


def parse_block_prefix(value, pool, subject='input'):
    fix = f'set calico_block_prefix between {pool.prefixlen} and {MAX_BLOCK_PREFIX}'
    prefix = _as_int(value)
    if prefix is None:
        raise FabricError(subject, f'calico_block_prefix {value!r} is not an integer', fix)
    if prefix < pool.prefixlen:
        raise FabricError(subject, f'calico_block_prefix {prefix} is shorter than calico_pool {pool}', fix)
    if prefix > MAX_BLOCK_PREFIX:
        raise FabricError(subject, f'calico_block_prefix {prefix} leaves no workload addresses in a block', fix)
    return prefix


def parse_as_number(value, subject, var='calico_as_number'):
    number = _as_int(value)
    fix = ('use 1-4294967295 except 23456 (AS_TRANS), e.g. a private AS from 64512-65534 '
           'or 4200000000-4294967294')
    if number is None:
        raise FabricError(subject, f'{var} {value!r} is not a number', fix)
    if number < 1 or number == AS_TRANS or number > AS_MAX:
        raise FabricError(subject, f'{var} {number} is not a valid AS number', fix)
    return number


def parse_topology(value, subject='input'):
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text not in TOPOLOGIES:
        raise FabricError(subject, f'calico_bgp_topology {value!r} is not supported',
                          'use full_mesh or route_reflector')
    return text


def parse_ipip_mode(value, subject='input'):
    text = _IPIP_ALIASES.get(str(value).strip().lower()) if isinstance(value, str) else None
    if text is None:
        raise FabricError(subject, f'calico_ipip_mode {value!r} is not valid',
                          'use never, always or cross_subnet')
    return text


def parse_cluster_id(value, subject):
    """A route-reflector cluster id: dotted quad or a 32-bit integer, returned as a dotted quad."""
    number = _as_int(value)
    if number is not None and 0 < number <= AS_MAX:
        return str(netaddr.IPAddress(number, 4))
    addr = _address_or_none(value)
    if addr is None or int(addr) == 0:
        raise FabricError(subject, f'calico_rr_cluster_id {value!r} is not a cluster id',
                          'use a dotted quad such as 10.255.0.1, or drop it (defaults to the lowest reflector IP)')
    return str(addr)


# ---------------------------------------------------------------------------------------------
# facts coming back from the hosts (calico_node_facts): accept a few shapes, ignore junk
# ---------------------------------------------------------------------------------------------

def normalize_current_blocks(value):
    """Blocks a host owns today (its proto-80 blackhole routes): a CIDR string, a list of them,
    or a list of dicts with ``block``/``cidr``/``dst``. Unparseable entries are dropped."""
    if _is_unset(value):
        return []
    items = [value] if isinstance(value, (str, Mapping)) else list(value)
    out = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get('block') or item.get('cidr') or item.get('dst')
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
    return out


def normalize_current_workloads(value):
    """Workload -> IP a host has today: ``{name: ip}``, ``{name: {ip: ...}}`` or ``[{name, ip}]``."""
    if _is_unset(value):
        return {}
    out = {}
    if isinstance(value, Mapping):
        pairs = value.items()
    else:
        pairs = [(item.get('name'), item) for item in value if isinstance(item, Mapping)]
    for name, ip in pairs:
        if isinstance(ip, Mapping):
            ip = ip.get('ip') or ip.get('address')
        if isinstance(name, str) and isinstance(ip, str):
            out[name] = ip.strip()
    return out


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------

def allocate_blocks(pool, block_prefix, hosts):
    """Give every host one block of ``pool``; return ``{name: (block_cidr_str, source)}`` in input order.

    ``hosts`` is a list (in a stable order) of ``{name, block?, current?}``: ``block`` the pinned
    ``calico_block``, ``current`` the block(s) the host owns now (from its kernel). ``source`` is
    ``pinned``, ``current`` or ``allocated``.

    Priority: pinned > current (inside the pool, right size, not pinned by another host) > lowest
    free block, handed out in list order. Blocks any host still owns are never handed to a new host
    in the same run (unless the pool has nothing else left). A pin on the running block of an
    unpinned host is an overlap error: that host's block would have to move.
    """
    size = 1 << (32 - block_prefix)
    count = 1 << (block_prefix - pool.prefixlen)
    base = int(pool.first)

    def to_cidr(idx):
        return f'{netaddr.IPAddress(base + idx * size, 4)}/{block_prefix}'

    def index_of(net):
        if net is None or net.prefixlen != block_prefix or net.ip != net.network:
            return None
        if net.first < pool.first or net.last > pool.last:
            return None
        return (int(net.first) - base) // size

    names = []
    for entry in hosts:
        name = entry['name']
        if name in names:
            raise FabricError(host_subject(name), 'appears twice in the host list', 'list each host once')
        names.append(name)

    result = {}
    owner = {}  # block index -> host name
    fix_pin = 'pick a block inside the pool or drop calico_block'

    # 1. pins
    for entry in hosts:
        name, pin = entry['name'], entry.get('block')
        if _is_unset(pin):
            continue
        subject = host_subject(name)
        net = parse_network(pin, subject, 'calico_block', f'set calico_block to a /{block_prefix} inside {pool} '
                                                          'or drop calico_block')
        if net.first < pool.first or net.last > pool.last:
            raise FabricError(subject, f'calico_block {net} is outside calico_pool {pool}', fix_pin)
        if net.prefixlen != block_prefix:
            raise FabricError(subject, f'calico_block {net} is not a /{block_prefix} (calico_block_prefix)',
                              f'pin a /{block_prefix} inside {pool} or drop calico_block')
        idx = index_of(net)
        if idx in owner:
            raise FabricError(subject, f"calico_block {net} overlaps the block of host '{owner[idx]}'",
                              'pin a different block or drop calico_block')
        owner[idx] = name
        result[name] = (idx, 'pinned')

    # 2. running blocks
    current = {}
    everything_current = set()
    for entry in hosts:
        found = (index_of(_network_or_none(b)) for b in normalize_current_blocks(entry.get('current')))
        idxs = sorted({i for i in found if i is not None})
        current[entry['name']] = idxs
        everything_current.update(idxs)
    for entry in hosts:
        name = entry['name']
        if name in result or not current[name]:
            continue
        free = [i for i in current[name] if i not in owner]
        if not free:
            pinned_by = owner[current[name][0]]
            if result[pinned_by][1] == 'pinned' and current[name][0] not in current[pinned_by]:
                raise FabricError(
                    host_subject(pinned_by),
                    f"calico_block {to_cidr(current[name][0])} is the running block of host '{name}'",
                    f"pin a free block for '{pinned_by}', or pin another block for '{name}' too")
            continue  # claimed by an earlier host's running block: split brain, this one moves
        owner[free[0]] = name
        result[name] = (free[0], 'current')

    # 3. new hosts: lowest free block, in list order
    cursor = 0
    for entry in hosts:
        name = entry['name']
        if name in result:
            continue
        while cursor < count and (cursor in owner or cursor in everything_current):
            cursor += 1
        idx = cursor
        if idx >= count:  # nothing left but blocks some host still holds: take the lowest unowned one
            idx = next((i for i in sorted(everything_current) if i not in owner), None)
        if idx is None:
            raise FabricError(host_subject(name),
                              f'no free /{block_prefix} left in calico_pool {pool} ({count} blocks, all in use)',
                              'enlarge calico_pool or raise calico_block_prefix')
        owner[idx] = name
        result[name] = (idx, 'allocated')

    return {name: (to_cidr(result[name][0]), result[name][1]) for name in names}


# ---------------------------------------------------------------------------------------------
# workload addresses
# ---------------------------------------------------------------------------------------------

def _workload_entries(workloads, subject):
    """Validate the shape of a calico_workloads list; return a list of dict copies."""
    fix = 'set calico_workloads to a list of {name, ip?}'
    if _is_unset(workloads):
        return []
    if isinstance(workloads, (str, Mapping)) or not hasattr(workloads, '__iter__'):
        raise FabricError(subject, 'calico_workloads is not a list', fix)
    entries = []
    seen = set()
    for pos, item in enumerate(workloads):
        if isinstance(item, str):
            item = {'name': item}
        if not isinstance(item, Mapping):
            raise FabricError(subject, f'calico_workloads[{pos}] is not a mapping', fix)
        name = item.get('name')
        if _is_unset(name):
            raise FabricError(subject, f'calico_workloads[{pos}] has no name', 'give every workload a name')
        name = str(name)
        if not WORKLOAD_NAME_RE.match(name):
            raise FabricError(subject, f'workload name {name!r} is not allowed',
                              "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if name in seen:
            raise FabricError(subject, f"workload name '{name}' appears twice in calico_workloads",
                              'give each workload of a host its own name')
        seen.add(name)
        entry = dict(item)
        entry['name'] = name
        entries.append(entry)
    return entries


def assign_workload_ips(block, workloads, current=None, subject='input'):
    """Fill ``ip`` for every workload of one host: explicit > current (inside the block, free) > next free.

    Automatic addresses start at block network + 2 (the article numbers workloads .2, .3) and never
    use the block's network or broadcast address. Returns the list in input order, each entry a
    copy of the input mapping with ``name`` and ``ip`` (a plain address, no /32).
    """
    entries = _workload_entries(workloads, subject)
    current = normalize_current_workloads(current)
    first, last = int(block.first), int(block.last)
    lowest_manual, highest = first + 1, last - 1
    span = f'{netaddr.IPAddress(lowest_manual, 4)}-{netaddr.IPAddress(highest, 4)}'
    used = {}  # int ip -> workload name

    for entry in entries:
        value = entry.get('ip')
        if _is_unset(value):
            entry.pop('ip', None)
            continue
        name = entry['name']
        addr = _address_or_none(value if isinstance(value, str) else None, allow_slash32=True)
        if addr is None:
            raise FabricError(subject, f"workload '{name}' ip {value!r} is not an IPv4 address",
                              'fix ip, or drop it to get the next free address of the block')
        if addr not in block:
            raise FabricError(subject, f"workload '{name}' ip {addr} is outside the host's block {block}",
                              f'pick an address inside {block} or drop ip')
        if int(addr) in (first, last):
            kind = 'network' if int(addr) == first else 'broadcast'
            raise FabricError(subject, f"workload '{name}' ip {addr} is the {kind} address of block {block}",
                              f'pick an address in {span} or drop ip')
        if int(addr) in used:
            raise FabricError(subject, f"workload '{name}' ip {addr} is also used by workload '{used[int(addr)]}'",
                              'give each workload its own ip, or drop ip to get the next free address')
        used[int(addr)] = name
        entry['ip'] = str(addr)

    for entry in entries:
        if 'ip' in entry:
            continue
        addr = _address_or_none(current.get(entry['name']), allow_slash32=True)
        if addr is not None and addr in block and first < int(addr) < last and int(addr) not in used:
            used[int(addr)] = entry['name']
            entry['ip'] = str(addr)

    cursor = first + 2
    for entry in entries:
        if 'ip' in entry:
            continue
        while cursor <= highest and cursor in used:
            cursor += 1
        if cursor > highest:
            raise FabricError(subject, f"block {block} is full, no address left for workload '{entry['name']}'",
                              'run fewer workloads on this host or use bigger blocks (lower calico_block_prefix)')
        used[cursor] = entry['name']
        entry['ip'] = str(netaddr.IPAddress(cursor, 4))
    return entries


# ---------------------------------------------------------------------------------------------
# BGP peers
# ---------------------------------------------------------------------------------------------

def default_cluster_ids(nodes, overrides=None):
    """One route-reflector cluster id per rack, shared by all of the rack's reflectors.

    ``overrides`` (rack -> id, from the rack's ``calico_rr_cluster_id``) wins; otherwise the id is the
    numerically lowest node IP among the rack's reflectors. That is distinct per rack (node IPs are
    unique), readable, and stays put when racks or hosts are added; it changes only if a reflector
    with a lower IP joins the rack or the lowest one leaves.
    """
    overrides = overrides or {}
    out = {}
    for name in natural_sorted(nodes):
        node = nodes[name]
        rack = node.get('rack')
        if rack is None or not node.get('reflector'):
            continue
        ip = netaddr.IPAddress(node['ip'])
        if rack not in out or ip < netaddr.IPAddress(out[rack]):
            out[rack] = str(ip)
    out.update({rack: cid for rack, cid in overrides.items() if rack in out})
    return out


def same_subnet(a, a_prefixlen, b, b_prefixlen):
    """True when addresses ``a`` and ``b`` share a subnet, False when not, None when no prefix length is known.

    Every known prefix length is applied (ours and the peer's): both sides of a session compute the same
    answer, which matters for settings that must agree on both ends (GTSM, ``direct``)."""
    lengths = [length for length in (a_prefixlen, b_prefixlen) if length is not None]
    if not lengths:
        return None
    a, b = int(netaddr.IPAddress(a)), int(netaddr.IPAddress(b))
    return all((a ^ b) >> (32 - length) == 0 for length in lengths)


def compute_peers(nodes, topology, cluster_ids=None):
    """BGP sessions per host: ``{host: [peer, ...]}`` with peers in natural name order.

    ``nodes``: ``{name: {ip, as_number, rack, reflector, prefixlen?, spine_ip?, spine_prefixlen?}}`` (already
    validated). Each peer is ``{name, ip, local_ip, as_number, type: ibgp|ebgp, direct, passive, rr_client,
    rr_cluster_id}``. ``ip``/``local_ip`` are the two ends of the session: the node IPs, except between
    reflectors of different racks in ``route_reflector`` (eBGP over the spine), where they are the
    reflectors' ``spine_ip`` (default: the node IP). ``direct`` says whether the two ends share a subnet
    (from ``prefixlen`` / ``spine_prefixlen``; None when neither end's is known). Exactly one side
    of every session dials (the other is ``passive``) and waits ``connect_delay_offset`` seconds more
    than the base connect delay: between a reflector and its clients the reflector dials (one SYN per
    client instead of a burst at the reflector); otherwise ``plugin_utils.bgp.session_timing`` decides
    from the two addresses.
    ``rr_client``/``rr_cluster_id`` are set on the reflector's side of a
    session with a same-rack client only.
    """
    if cluster_ids is None:
        cluster_ids = default_cluster_ids(nodes)
    order = natural_sorted(nodes)
    addr = {name: netaddr.IPAddress(nodes[name]['ip']) for name in order}

    def end(name, spine):
        node = nodes[name]
        if spine and not _is_unset(node.get('spine_ip')):
            return netaddr.IPAddress(node['spine_ip']), node.get('spine_prefixlen')
        return addr[name], node.get('prefixlen')

    def passive(me, other, local, remote):
        # (passive, connect delay offset). A reflector dials its clients and the clients wait: each
        # client's listen queue then sees one SYN, while 60 clients dialling one reflector overflow BIRD's
        # listen backlog of 8 at start-up and wait for SYN retransmits (1 s, 3 s, ...). Other sessions:
        # plugin_utils.bgp.session_timing. Both depend only on the two ends, so adding hosts never
        # changes an existing session.
        if topology == 'route_reflector' and nodes[me]['rack'] == nodes[other]['rack'] \
                and nodes[me]['reflector'] != nodes[other]['reflector']:
            return not nodes[me]['reflector'], 0
        return session_timing(local, remote, spread=topology == 'full_mesh')

    def peer(me, other, client=False):
        spine = (topology == 'route_reflector' and nodes[me]['reflector'] and nodes[other]['reflector']
                 and nodes[me]['rack'] != nodes[other]['rack'])
        local, local_len = end(me, spine)
        remote, remote_len = end(other, spine)
        timing = passive(me, other, local, remote)
        return {
            'name': other,
            'ip': str(remote),
            'local_ip': str(local),
            'as_number': nodes[other]['as_number'],
            'type': 'ibgp' if nodes[other]['as_number'] == nodes[me]['as_number'] else 'ebgp',
            'direct': same_subnet(local, local_len, remote, remote_len),
            'passive': timing[0],
            'connect_delay_offset': timing[1],
            'rr_client': client,
            'rr_cluster_id': cluster_ids.get(nodes[me]['rack']) if client else None,
        }

    out = {}
    for me in order:
        mine = nodes[me]
        if topology == 'full_mesh':
            out[me] = [peer(me, other) for other in order if other != me]
            continue
        peers = []
        for other in order:
            theirs = nodes[other]
            if other == me:
                continue
            same_rack = theirs['rack'] == mine['rack']
            if not mine['reflector']:
                if same_rack and theirs['reflector']:
                    peers.append(peer(me, other))
            elif same_rack:
                peers.append(peer(me, other, client=not theirs['reflector']))
            elif theirs['reflector']:
                peers.append(peer(me, other))
        out[me] = peers
    return out


def check_peer_plan(nodes, topology):
    """Route-reflector structure checks shared by the fabric and the bgp_peers filter."""
    if topology != 'route_reflector':
        return
    order = natural_sorted(nodes)
    for name in order:
        if nodes[name].get('rack') is None:
            what = 'route reflector' if nodes[name]['reflector'] else 'host'
            raise FabricError(host_subject(name), f'{what} is not in any rack',
                              'add it to a child group of calico_racks (route_reflector topology)')
    by_as = {}
    rack_names = natural_sorted({nodes[n]['rack'] for n in order})
    for rack in rack_names:
        members = [n for n in order if nodes[n]['rack'] == rack]
        number = nodes[members[0]]['as_number']
        if number in by_as:
            raise FabricError(rack_subject(rack), f"calico_as_number {number} is also used by rack '{by_as[number]}'",
                              'give each rack its own calico_as_number (route_reflector: racks peer by eBGP)')
        by_as[number] = rack
    for rack in rack_names:
        members = [n for n in order if nodes[n]['rack'] == rack]
        clients = [n for n in members if not nodes[n]['reflector']]
        if clients and len(clients) == len(members):
            raise FabricError(rack_subject(rack), f"has nodes ({', '.join(clients)}) but no route reflector",
                              f"add a host of rack '{rack}' to calico_route_reflectors")


# ---------------------------------------------------------------------------------------------
# the fabric
# ---------------------------------------------------------------------------------------------

class _VarReader:
    """Per-host variable access over Ansible's HostVars (values templated on access) or plain dicts."""

    def __init__(self, hostvars):
        self._hostvars = hostvars
        self._cache = {}

    def host(self, name):
        if name not in self._cache:
            try:
                data = self._hostvars[name]
            except KeyError:
                data = {}
            if not isinstance(data, Mapping):  # an undefined marker for a host missing from the inventory
                data = {}
            self._cache[name] = data
        return self._cache[name]

    def get(self, name, var):
        try:
            value = self.host(name).get(var)
            undefined = _first_undefined(value)
        except Exception as exc:  # templating errors surface here with HostVars
            raise _evaluation_error(name, var, str(exc) or type(exc).__name__) from None
        if undefined is not None:
            # inside a play, HostVars hands back a marker instead of raising: never read it as "unset"
            raise _evaluation_error(name, var, _undefined_text(undefined))
        return value


def _evaluation_error(host, var, text):
    first = text.strip().splitlines()[0] if text.strip() else 'undefined'
    return FabricError(host_subject(host), f'cannot evaluate {var}: {first}',
                       f'fix the definition of {var} for this host')


def _first_undefined(value, depth=0):
    """The first jinja2 Undefined (Ansible 2.19 marker) in ``value``, looking into lists and dicts; else None."""
    if isinstance(value, Undefined):
        return value
    if depth > 8 or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return None
    for item in items:
        found = _first_undefined(item, depth + 1)
        if found is not None:
            return found
    return None


def _undefined_text(value):
    for attr in ('_as_message', '_undefined_message'):
        try:
            text = getattr(value, attr)
            text = text() if callable(text) else text
        except Exception:  # noqa: BLE001 - best effort, any message will do
            continue
        if isinstance(text, str) and text:
            return text
    return 'value is undefined'


def _group(groups, name):
    value = groups.get(name) if isinstance(groups, Mapping) else None
    if _is_unset(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(h) for h in value]


class RackHierarchyUnknown(Exception):
    """``calico_racks`` has hosts, but its child groups (the racks) cannot be seen: plain ``groups``, no ``racks=``."""


def rack_groups(hostvars, groups, racks=None):
    """``{rack: (hosts, rack group vars)}``: the direct child groups of ``calico_racks``.

    ``groups`` is flat, so the hierarchy comes from ``racks=`` when given (a list of rack group names,
    or a mapping rack -> hosts; no group vars then), else from the inventory behind Ansible's HostVars
    (the group vars are the ones set on the group itself in the inventory source). Raises
    :class:`RackHierarchyUnknown` when neither is available but ``calico_racks`` has hosts; each filter
    turns that into its own one-line error. Shared by the fabric plan and the lab's ``lab_spec``.
    """
    if racks is not None:
        if isinstance(racks, Mapping):
            return {str(r): ([str(h) for h in (hosts or [])], {}) for r, hosts in racks.items()}
        if isinstance(racks, str):
            racks = [racks]
        return {str(r): (_group(groups, r), {}) for r in racks}
    inventory = getattr(hostvars, '_inventory', None)
    if inventory is not None:
        parent = inventory.groups.get(GROUP_RACKS)
        if parent is None:
            return {}
        out = {}
        for child in parent.child_groups:
            hosts = _group(groups, child.name) if child.name in groups else [h.name for h in child.get_hosts()]
            out[child.name] = (hosts, dict(child.get_vars()))
        return out
    if _group(groups, GROUP_RACKS):
        raise RackHierarchyUnknown(GROUP_RACKS)
    return {}


def _rack_members(hostvars, groups, racks):
    """``{rack: [hosts]}`` (see :func:`rack_groups`)."""
    try:
        return {rack: hosts for rack, (hosts, _unused) in rack_groups(hostvars, groups, racks).items()}
    except RackHierarchyUnknown:
        raise FabricError(f"group '{GROUP_RACKS}'",
                          'its child groups (the racks) cannot be seen in a plain groups dict',
                          "pass racks=['rack1', ...] (the rack group names) to netfleet.calico.fabric") from None


def _fleet_setting(reader, hosts, var, default):
    """A fleet-wide variable: every host that defines it must agree. Returns (value, host or None)."""
    found, source = None, None
    for name in hosts:
        value = reader.get(name, var)
        if _is_unset(value):
            continue
        if source is None:
            found, source = value, name
        elif str(value).strip() != str(found).strip():
            raise FabricError(host_subject(name), f"{var} {value} differs from {found} on host '{source}'",
                              f'{var} is fleet-wide: set it once in group_vars/all')
    if source is None:
        return default, None
    return found, source


def _prefixlen(reader, name, var, what, lab_var, lab_fix):
    """A host's prefix length: ``var`` (0-32), else the prefix length of the CIDR ``lab_var``, else None."""
    subject = host_subject(name)
    raw = reader.get(name, var)
    if not _is_unset(raw):
        length = _as_int(raw)
        if length is None or not 0 <= length <= 32:
            raise FabricError(subject, f'{var} {raw!r} is not a prefix length 0-32',
                              f'set it to the prefix length of {what}, or drop it')
        return length
    segment = reader.get(name, lab_var)
    if _is_unset(segment):
        return None
    net = _network_or_none(segment if isinstance(segment, str) else None)
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
            if not _is_unset(raw):
                raise FabricError(subject, f'calico_rr_spine_ip {raw} is set but the host is not a route reflector',
                                  'drop calico_rr_spine_ip, or add the host to calico_route_reflectors')
            spine_ip[name] = spine_prefixlen[name] = None
            continue
        if _is_unset(raw):
            spine_ip[name], spine_prefixlen[name] = node_ip[name], node_prefixlen[name]
            continue
        addr = _address_or_none(raw if isinstance(raw, str) else None)
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


def build_fabric(hostvars, groups, racks=None, pool=None, block_prefix=DEFAULT_BLOCK_PREFIX,
                 topology=DEFAULT_TOPOLOGY, ipip_mode=DEFAULT_IPIP_MODE, as_number=DEFAULT_AS_NUMBER):
    """Compose the whole plan (see the module docstring for the preflight order)."""
    require_netaddr('netfleet.calico.fabric')
    reader = _VarReader(hostvars)
    node_group = _group(groups, GROUP_NODES)
    reflector_group = _group(groups, GROUP_REFLECTORS)
    hosts = natural_sorted(set(node_group) | set(reflector_group))
    if not hosts:
        raise FabricError(f"group '{GROUP_NODES}'", 'has no hosts (nor has calico_route_reflectors)',
                          'add the hosts that run workloads to calico_nodes')
    is_node = set(node_group)
    is_reflector = set(reflector_group)

    # 2. fleet-wide settings
    def subject_of(source, var):
        return host_subject(source) if source else f'{var} (filter argument)'

    value, source = _fleet_setting(reader, hosts, 'calico_bgp_topology', topology)
    topology = parse_topology(value, subject_of(source, 'calico_bgp_topology'))
    value, source = _fleet_setting(reader, hosts, 'calico_ipip_mode', ipip_mode)
    ipip_mode = parse_ipip_mode(value, subject_of(source, 'calico_ipip_mode'))
    value, source = _fleet_setting(reader, hosts, 'calico_pool', pool)
    if _is_unset(value):
        raise FabricError(f"group '{GROUP_NODES}'", 'calico_pool is not set',
                          'set calico_pool (e.g. 172.17.0.0/16) once for the whole fleet in group_vars/all')
    pool_net = parse_pool(value, subject_of(source, 'calico_pool'))
    value, source = _fleet_setting(reader, hosts, 'calico_block_prefix', block_prefix)
    prefix_len = parse_block_prefix(value, pool_net, subject_of(source, 'calico_block_prefix'))

    # 3. racks
    rack_members = _rack_members(hostvars, groups, racks)
    rack_of = {}
    for name in hosts:
        mine = natural_sorted(r for r, members in rack_members.items() if name in members)
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

    # 4. addressing and identity
    node_ip, node_prefixlen, router_id = {}, {}, {}
    for name in hosts:
        subject = host_subject(name)
        raw, var = reader.get(name, 'calico_node_ip'), 'calico_node_ip'
        if _is_unset(raw):
            raw, var = reader.get(name, 'ansible_host'), 'ansible_host'
        if _is_unset(raw):
            raise FabricError(subject, 'has no node IP', "set calico_node_ip (or ansible_host) to the host's fabric "
                                                         'IPv4 address')
        addr = _address_or_none(raw if isinstance(raw, str) else None)
        if addr is None:
            raise FabricError(subject, f'{var} {raw!r} is not an IPv4 address',
                              "set calico_node_ip to the host's fabric IPv4 address")
        node_ip[name] = addr

        node_prefixlen[name] = _prefixlen(reader, name, 'calico_node_prefixlen', "the host's fabric subnet",
                                          'lab_segment', "set the rack's lab_segment to its subnet, "
                                                         'e.g. 192.168.100.0/24')

        raw = reader.get(name, 'calico_router_id')
        if _is_unset(raw):
            router_id[name] = str(addr)
        else:
            rid = _address_or_none(raw if isinstance(raw, str) else None)
            if rid is None or int(rid) == 0:
                raise FabricError(subject, f'calico_router_id {raw!r} is not an IPv4 address',
                                  'set calico_router_id to a dotted quad, or drop it (defaults to the node IP)')
            router_id[name] = str(rid)
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
    for rack in natural_sorted(rack_members):
        members = [h for h in hosts if rack_of[h] == rack]
        if not members:
            continue  # a rack with no BGP speakers yet: nothing to plan
        first_value, first_host = None, None
        for name in members:
            value = reader.get(name, 'calico_as_number')
            if _is_unset(value):
                continue
            if first_host is None:
                first_value, first_host = value, name
            elif str(value).strip() != str(first_value).strip():
                raise FabricError(host_subject(name), f"calico_as_number {value} differs from {first_value} of rack "
                                                      f"'{rack}' (host '{first_host}')",
                                  'set calico_as_number on the rack group only')
        if first_host is not None and any(_is_unset(reader.get(n, 'calico_as_number')) for n in members):
            missing = next(n for n in members if _is_unset(reader.get(n, 'calico_as_number')))
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
            if not _is_unset(value):
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
        if _is_unset(value):
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

    # 6. blocks
    for name in hosts:
        if name in is_node:
            continue
        if not _is_unset(reader.get(name, 'calico_block')):
            raise FabricError(host_subject(name), 'has calico_block but is not in calico_nodes',
                              'add it to calico_nodes or drop calico_block')
        if reader.get(name, 'calico_workloads'):
            raise FabricError(host_subject(name), 'has calico_workloads but is not in calico_nodes',
                              'add it to calico_nodes or drop calico_workloads')
    facts = {name: reader.get(name, 'calico_node_facts') for name in hosts}
    facts = {name: (value if isinstance(value, Mapping) else {}) for name, value in facts.items()}
    block_hosts = [{'name': name, 'block': reader.get(name, 'calico_block'), 'current': facts[name].get('blocks')}
                   for name in hosts if name in is_node]
    blocks = allocate_blocks(pool_net, prefix_len, block_hosts)

    # 7. workloads
    workloads = {}
    owner_of_ip = {}
    for name in hosts:
        if name not in blocks:
            workloads[name] = []
            continue
        block = netaddr.IPNetwork(blocks[name][0])
        planned = assign_workload_ips(block, reader.get(name, 'calico_workloads'), facts[name].get('workloads'),
                                      subject=host_subject(name))
        for entry in planned:
            entry['ifname'] = _ifname(entry['name'])
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
    peers = compute_peers(speakers, topology, cluster_ids)
    plan_hosts = {}
    for name in hosts:
        block, source = blocks.get(name, (None, None))
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
            'block_source': source,
            'workloads': workloads[name],
            'peers': peers[name],
        }
    from ansible_collections.netfleet.calico.plugins.plugin_utils.cni import plan_cni
    cni_members = plan_cni(reader, hosts, plan_hosts, prefix_len, facts)  # per host: cni (networks, ranges)
    from ansible_collections.netfleet.calico.plugins.plugin_utils.policy import plan_policy  # issue #5
    floating_ips = plan_policy(reader, hosts, plan_hosts, pool_net, cni_members)  # per host: policy, floating_ips
    from ansible_collections.netfleet.calico.plugins.plugin_utils.ipip import plan_ipip  # issue #4
    plan_ipip(reader, hosts, plan_hosts, ipip_mode)  # per host: ipip (tunnel next hops, allowed sources)
    plan_racks = {
        rack: {
            'as_number': info['as_number'],
            'hosts': info['hosts'],
            'reflectors': info['reflectors'],
            'cluster_id': cluster_ids.get(rack),
        }
        for rack, info in ((r, rack_info[r]) for r in natural_sorted(rack_info))
    }
    return {
        'pool': str(pool_net),
        'block_prefix': prefix_len,
        'topology': topology,
        'ipip_mode': ipip_mode,
        'hosts': plan_hosts,
        'racks': plan_racks,
        'floating_ips': floating_ips,
    }
