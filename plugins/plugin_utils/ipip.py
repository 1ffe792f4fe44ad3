# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IPIP planning: which next hops each BGP speaker reaches through ``tun0``.

Called once by :func:`plugins.plugin_utils.fabric.build_fabric` after the peers are planned;
adds ``ipip`` to every host's plan::

    {'mode': 'never'|'always'|'cross_subnet', 'enabled': bool, 'device': 'tun0',
     'local': <node ip>, 'tunnel_next_hops': [<ip>, ...], 'direct_next_hops': [<ip>, ...],
     'allow_from': [<node ip of every other speaker>, ...]}

A route learned by BGP carries the address of the host (or reflector) that owns or reflects it
as ``bgp_next_hop``; BIRD's kernel export sends routes whose next hop is in ``tunnel_next_hops``
through ``tun0`` (``ifname``/``onlink``), every other one stays direct. Candidates are
every other speaker's node IP and spine IP (a reflector of another rack is the next hop of that
rack's blocks):

* ``always``: every candidate goes through the tunnel;
* ``cross_subnet``: only candidates outside this host's own subnet (its node IP and prefix
  length, Calico's CrossSubnet rule) -- same-subnet peers stay direct on the fabric interface;
* ``never``: none; the device is removed.

Preflight errors (one line each, :class:`FabricError`):

* the tunnel name (``calico_ipip_device``, default ``tun0``) longer than 15 characters;
* a node IP that is on no interface of the host (only when the host's ``calico_node_facts``
  report its addresses, i.e. site.yml has read the host) -- the tunnel's ``local`` would be wrong.
An invalid ``calico_ipip_mode`` is rejected by the fabric's fleet-wide settings check.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject

DEFAULT_DEVICE = 'tun0'
IFNAME_MAX = 15
IPIP_OVERHEAD = 20  # outer IPv4 header


def _ip_key(ip):
    return tuple(int(part) for part in str(ip).split('.'))


def check_device(value, subject):
    if inputs.is_unset(value):
        return DEFAULT_DEVICE
    name = str(value).strip()
    if len(name) > IFNAME_MAX:
        raise FabricError(subject, f"calico_ipip_device {name!r} is longer than {IFNAME_MAX} characters",
                          f'use an interface name of at most {IFNAME_MAX} characters (default tun0)')
    if not inputs.matches(inputs.IFNAME, name):
        raise FabricError(subject, f'calico_ipip_device {name!r} is not a valid interface name',
                          "use a plain name such as tun0 (ASCII letters, digits, '.', '_' or '-')")
    return name


def check_node_ip_present(name, node_ip, facts):
    """Fail when the host's read addresses do not include its node IP (skipped without facts)."""
    if not isinstance(facts, Mapping) or not isinstance(facts.get('addresses'), list):
        return
    addresses = [a.get('address') for a in facts['addresses'] if isinstance(a, Mapping)]
    if str(node_ip) not in addresses:
        shown = ', '.join(str(a) for a in addresses if a and not str(a).startswith('127.')) or 'none'
        raise FabricError(host_subject(name),
                          f'node IP {node_ip} is not on any interface of the host (it has {shown})',
                          "set calico_node_ip to one of the host's own addresses (the tunnel's local end)")


def needs_tunnel(mode, own_ends, remote):
    """True when traffic toward next hop ``remote`` goes through the tunnel in ``mode``.

    ``own_ends``: this host's ``(address, prefixlen)`` pairs (node IP, and spine IP for a reflector);
    in cross_subnet a next hop inside any of their subnets stays direct."""
    if mode == 'always':
        return True
    if mode == 'cross_subnet':
        for local, prefixlen in own_ends:
            if local and prefixlen is not None and inputs.same_subnet(local, prefixlen, remote, None):
                return False
        return True  # outside every own subnet (or subnet unknown): a router between would drop it
    return False


def plan_ipip(reader, hosts, plan_hosts, mode):
    """Add ``ipip`` to every host's plan (see the module docstring)."""
    device = DEFAULT_DEVICE
    source = None
    for name in hosts:
        value = reader.get(name, 'calico_ipip_device')
        if inputs.is_unset(value):
            continue
        checked = check_device(value, host_subject(name))
        if source is not None and checked != device:
            raise FabricError(host_subject(name),
                              f"calico_ipip_device '{checked}' differs from '{device}' of host '{source}'",
                              'set calico_ipip_device once for the whole fleet (group_vars/all)')
        device, source = checked, name
    if mode != 'never':
        for name in hosts:
            check_node_ip_present(name, plan_hosts[name]['node_ip'], reader.get(name, 'calico_node_facts'))
    for name in hosts:
        me = plan_hosts[name]
        candidates = []
        for other in hosts:
            if other == name:
                continue
            for ip in (plan_hosts[other]['node_ip'], plan_hosts[other].get('spine_ip')):
                if ip and ip not in candidates:
                    candidates.append(ip)
        own = {me['node_ip'], me.get('spine_ip')}
        candidates = sorted((ip for ip in candidates if ip not in own), key=_ip_key)
        ends = [(me['node_ip'], me['node_prefixlen']), (me.get('spine_ip'), me.get('spine_prefixlen'))]
        tunnel = [ip for ip in candidates if needs_tunnel(mode, ends, ip)]
        me['ipip'] = {
            'mode': mode,
            'enabled': mode != 'never',
            'device': device,
            'local': me['node_ip'],
            'tunnel_next_hops': tunnel,
            'direct_next_hops': [ip for ip in candidates if ip not in tunnel],
            'allow_from': sorted((plan_hosts[o]['node_ip'] for o in hosts if o != name), key=_ip_key),
        }
