# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.ifname -- Calico's host-side interface name for a workload (docs: ifname.yml)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred
from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError


def ifname(workload_id, prefix='cali'):
    """``prefix`` + first 11 hex chars of sha1(workload id); at most 15 characters."""
    try:
        return deferred.load('inputs').interface_name(workload_id, prefix)
    except FabricError as err:
        raise err.with_prefix('netfleet.calico.ifname') from None


class FilterModule:
    """netfleet.calico interface name filter."""

    def filters(self):
        return {'ifname': ifname}
