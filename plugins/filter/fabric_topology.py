# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fabric_topology: the fabric picture (Graphviz source and its data) from every host's status.

Docs: fabric_topology.yml; the logic is plugin_utils.fabric_status (analysis) and plugin_utils.topology (drawing).
"""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred


def build_topology(statuses, plan=None, title="netfleet.calico fabric"):
    analysis = deferred.load('fabric_status').analyse(statuses, plan)
    keep = ("hosts", "racks", "sessions", "problems", "problem_hosts", "converged", "summary", "sessions_total",
            "sessions_established", "topology")
    return dict({k: analysis[k] for k in keep}, dot=deferred.load('topology').render_dot(analysis, title), title=title)


def fabric_topology(hostvars, hosts, plan=None, var="calico_node_status", title="netfleet.calico fabric"):
    return build_topology(deferred.load('fabric_status').collect_statuses(hostvars, hosts, var), plan, title)


class FilterModule:
    def filters(self):
        return {"fabric_topology": fabric_topology}
