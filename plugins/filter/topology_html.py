# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""topology_html: a self-contained HTML page of the fabric picture (docs: topology_html.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred


def topology_html(topology, svg, generated=None):
    if not isinstance(topology, dict) or "hosts" not in topology or "sessions" not in topology:
        raise AnsibleFilterError("netfleet.calico.topology_html: expects the result of netfleet.calico.fabric_topology")
    return deferred.load('topology').render_html(topology, svg, title=topology.get("title") or "netfleet.calico fabric",
                                                 generated=generated)


class FilterModule:
    def filters(self):
        return {"topology_html": topology_html}
