# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Floating IPs of workloads, in both families: ``floating_ip`` (IPv4) and ``floating_ip6`` (dual stack) of a
``calico_workloads`` entry.

A floating IP is DNATed to its workload on the owning host (``cali-fip-dnat`` of iptables / ip6tables) and
announced by that host's BIRD as an exact prefix (``/32``, ``/128``) to the whole fleet, so it must be a routable
unicast address outside the pool of its family, no host's address, and on one workload of the fleet only.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.family import address6_or_none, is_global

FIX_V4 = 'set floating_ip to an address outside calico_pool, or drop it'
FIX_V6 = 'set floating_ip6 to a unique local or global IPv6 address outside calico_pool_v6, or drop it'


def special_address(text, plan_hosts):
    """Why an IPv4 address cannot be a floating IP announced to the whole fabric, or None."""
    addr = ipaddress.IPv4Address(text)
    for test, reason in ((addr.is_unspecified, 'the unspecified address'), (addr.is_loopback, 'a loopback address'),
                         (addr.is_multicast, 'a multicast address'),
                         (addr == ipaddress.IPv4Address('255.255.255.255'), 'the broadcast address'),
                         (addr.is_link_local, "link-local (169.254.0.0/16, the workloads' gateway 169.254.1.1)"),
                         (addr.is_reserved, 'reserved (240.0.0.0/4)')):
        if test:
            return reason
    for name, host in plan_hosts.items():
        if text == host.get('spine_ip'):
            return f"the spine address of host '{name}'"
        for ip_key, len_key in (('node_ip', 'node_prefixlen'), ('spine_ip', 'spine_prefixlen')):
            if host.get(ip_key) and host.get(len_key) and host[len_key] < 31:
                net = ipaddress.IPv4Network(f'{host[ip_key]}/{host[len_key]}', strict=False)
                if addr in (net.network_address, net.broadcast_address):
                    return f"the {'network' if addr == net.network_address else 'broadcast'} address of host " \
                           f"'{name}''s subnet {net}"
    return None


def special_address6(addr, plan_hosts):
    """Why an IPv6 address cannot be a floating IP announced to the whole fabric, or None."""
    ip = ipaddress.IPv6Address(str(addr))
    for test, reason in ((ip.is_unspecified, 'the unspecified address'), (ip.is_loopback, 'the loopback address'),
                         (ip.is_multicast, 'a multicast address'),
                         (ip.is_link_local, "link-local (fe80::/10, the workloads' gateway is one)"),
                         (ip.ipv4_mapped is not None, 'an IPv4-mapped address')):
        if test:
            return reason
    if not is_global(inputs.netaddr.IPNetwork(f'{addr}/128')):
        return 'not a global unicast or unique local address'
    for name, host in plan_hosts.items():
        for key, what in (('node_ip_v6', 'calico_node_ip_v6'), ('spine_ip_v6', 'calico_rr_spine_ip_v6')):
            if host.get(key) == str(addr):
                return f"the {what} of host '{name}'"
    return None


class FloatingIps:
    """Checks every workload's floating IPs, host by host in the order the planner visits them, and keeps who owns
    which. ``pool_v6`` is None in an IPv4-only fleet (v6.check_v4_only refuses ``floating_ip6`` there first)."""

    def __init__(self, plan_hosts, pool, pool_v6=None):
        self.plan_hosts = plan_hosts
        self.pool = pool
        self.pool_v6 = pool_v6
        self.node_ips = {h['node_ip']: name for name, h in plan_hosts.items()}
        self.owner = {4: {}, 6: {}}  # address -> (host, workload)

    def check(self, host, subject, entry):
        """Normalise ``entry['floating_ip']`` / ``entry['floating_ip6']`` (plain addresses) or raise one line."""
        raw = entry.get('floating_ip')
        if not inputs.is_unset(raw):
            entry['floating_ip'] = self._v4(host, subject, entry['name'], raw)
        raw = entry.get('floating_ip6')
        if not inputs.is_unset(raw):
            entry['floating_ip6'] = self._v6(host, subject, entry['name'], raw)

    def _claim(self, version, addr, host, subject, workload, var):
        if addr in self.owner[version]:
            other_host, other = self.owner[version][addr]
            raise FabricError(subject, f"workload '{workload}' {var} {addr} is also the {var} of workload '{other}' "
                                       f"on host '{other_host}'", f'give each workload its own {var}')
        self.owner[version][addr] = (host, workload)
        return addr

    def _v4(self, host, subject, workload, raw):
        addr = inputs.address_or_none(raw if isinstance(raw, str) else None, allow_slash32=True)
        where = f"workload '{workload}' floating_ip"
        if addr is None:
            six = address6_or_none(raw[:-4] if isinstance(raw, str) and raw.endswith('/128') else raw)
            raise FabricError(subject, f'{where} {raw!r} is not an IPv4 address',
                              'put an IPv6 address in floating_ip6' if six is not None else FIX_V4)
        reason = special_address(str(addr), self.plan_hosts)
        if reason:
            raise FabricError(subject, f'{where} {addr} is {reason}',
                              'pick a routable unicast address outside calico_pool that no host uses')
        if addr in self.pool:
            raise FabricError(subject, f'{where} {addr} is inside calico_pool {self.pool}',
                              'pick a floating IP outside the pool (it is NATed to the workload)')
        if str(addr) in self.node_ips:
            raise FabricError(subject, f"{where} {addr} is the node IP of host '{self.node_ips[str(addr)]}'",
                              'pick a floating IP that no host uses')
        return self._claim(4, str(addr), host, subject, workload, 'floating_ip')

    def _v6(self, host, subject, workload, raw):
        where = f"workload '{workload}' floating_ip6"
        text = raw[:-4] if isinstance(raw, str) and raw.endswith('/128') else raw
        addr = address6_or_none(text)
        if addr is None:
            four = inputs.address_or_none(raw if isinstance(raw, str) else None, allow_slash32=True)
            raise FabricError(subject, f'{where} {raw!r} is not an IPv6 address',
                              'put an IPv4 address in floating_ip' if four is not None else FIX_V6)
        reason = special_address6(addr, self.plan_hosts)
        if reason:
            raise FabricError(subject, f'{where} {addr} is {reason}', FIX_V6)
        if addr in self.pool_v6:
            raise FabricError(subject, f'{where} {addr} is inside calico_pool_v6 {self.pool_v6}',
                              'pick a floating IP outside the IPv6 pool (it is NATed to the workload)')
        return self._claim(6, str(addr), host, subject, workload, 'floating_ip6')

    def fleet(self, version):
        """Every floating IP of ``version`` in the fleet as an exact prefix (``/32``, ``/128``), sorted."""
        length = 32 if version == 4 else 128
        return sorted((f'{a}/{length}' for a in self.owner[version]), key=inputs.netaddr.IPNetwork)
