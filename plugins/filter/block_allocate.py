# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.block_allocate -- per-host blocks of the container pool (docs: block_allocate.yml)."""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred, values
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError


def _allocate(hosts, pool, block_prefix):
    inputs = deferred.load('inputs')
    pool_net = inputs.parse_pool(pool)
    prefix = inputs.parse_block_prefix(block_prefix, pool_net)
    if inputs.is_unset(hosts):
        return {}
    if isinstance(hosts, (str, Mapping)):
        raise FabricError('input', 'the host list is not a list',
                          'pipe a list of host names or of {name, block?, current?}')
    entries = []
    for pos, item in enumerate(hosts):
        if isinstance(item, str):
            item = {'name': item}
        if not isinstance(item, Mapping) or inputs.is_unset(item.get('name')):
            raise FabricError('input', f'host list item {pos} has no name',
                              'give every item a name: {name, block?, current?}')
        entries.append({'name': str(item['name']), 'block': item.get('block'), 'current': item.get('current')})
    allocated = deferred.load('blocks').allocate_blocks(pool_net, prefix, entries)
    return {name: block for name, (block, _source) in allocated.items()}


def block_allocate(hosts, pool, block_prefix=values.DEFAULT_BLOCK_PREFIX):
    """Return ``{host: block}`` for a list of hosts (pinned > current > lowest free, in list order)."""
    return deferred.load('fabric').run_filter('block_allocate', _allocate, hosts, pool, block_prefix)


class FilterModule:
    """netfleet.calico block allocation filter."""

    def filters(self):
        return {'block_allocate': block_allocate}
