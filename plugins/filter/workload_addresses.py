# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.workload_addresses -- fill each workload's /32 (docs: workload_addresses.yml)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject


def _assign(workloads, block, current, host):
    inputs = deferred.load('inputs')
    subject = host_subject(host) if host else 'input'
    if inputs.is_unset(block):
        raise FabricError(subject, 'no block given', "pass the host's block, e.g. workload_addresses(block)")
    net = inputs.parse_network(block, subject, 'block', 'pass the host block as a CIDR such as 172.17.8.0/24')
    if net.prefixlen > inputs.MAX_BLOCK_PREFIX:
        raise FabricError(subject, f'block {net} has no room for workloads',
                          f'use a block of /{inputs.MAX_BLOCK_PREFIX} or bigger')
    return deferred.load('workloads').assign_workload_ips(net, workloads, current, subject=subject)


def workload_addresses(workloads, block, current=None, host=None):
    """Return the workload list with ``ip`` filled: explicit > current > next free from network + 2."""
    return deferred.load('fabric').run_filter('workload_addresses', _assign, workloads, block, current, host)


class FilterModule:
    """netfleet.calico workload address filter."""

    def filters(self):
        return {'workload_addresses': workload_addresses}
