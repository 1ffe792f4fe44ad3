# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.fabric_inputs -- the preflight's input check alone (docs: fabric_inputs.yml)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred


def fabric_inputs(hostvars, groups, racks=None):
    """``hostvars | netfleet.calico.fabric_inputs(groups)``: ``{hosts, racks}`` checked, or one preflight line."""
    return deferred.load('fabric').check_inputs(hostvars, groups, racks=racks)


class FilterModule:
    """netfleet.calico inventory input check."""

    def filters(self):
        return {'fabric_inputs': fabric_inputs}
