# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.fabric -- the composed fabric plan plus the full preflight (docs: fabric.yml)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred, values


def fabric(hostvars, groups, racks=None, pool=None, block_prefix=values.DEFAULT_BLOCK_PREFIX,
           topology=values.DEFAULT_TOPOLOGY, ipip_mode=values.DEFAULT_IPIP_MODE,
           as_number=values.DEFAULT_AS_NUMBER):
    """``hostvars | netfleet.calico.fabric(groups)``: the plan, or one preflight error line."""
    planner = deferred.load('fabric')
    return planner.build_fabric(hostvars, groups, racks=racks, pool=pool, block_prefix=block_prefix,
                                topology=topology, ipip_mode=ipip_mode, as_number=as_number)


class FilterModule:
    """netfleet.calico fabric planning filter."""

    def filters(self):
        return {'fabric': fabric}
