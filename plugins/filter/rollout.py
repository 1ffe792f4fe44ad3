# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_checks and rollout: site.yml's host checks and roll-out batches (docs: node_checks.yml, rollout.yml)."""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.netfleet.calico.plugins.plugin_utils import rollout as _rollout
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import bgp_sessions


def node_checks(result, host, bird_binary='bird', install_packages=True, onlink=True, ipip_mode='never',
                iptables_backend='auto', iptables=True):
    """``calico_node_facts_result | netfleet.calico.node_checks(inventory_hostname, ...)``: one-line problems."""
    return _rollout.node_problems(result, host, bird_binary=bird_binary, install_packages=install_packages,
                                  onlink=onlink, ipip_mode=ipip_mode, iptables_backend=iptables_backend,
                                  iptables=iptables)


def rollout(hostvars, plan, serial=None, rr_serial=None, max_fail_percentage=None):
    """``hostvars | netfleet.calico.rollout(calico_fabric, serial=..., ...)``: per play serial and failure limit."""
    hosts = plan.get('hosts', {}) if isinstance(plan, Mapping) else {}
    settings = _rollout.node_settings(hostvars, hosts)
    transition = []
    for name, entry in hosts.items():
        facts = settings[name]['facts']
        status = facts.get('bgp') if isinstance(facts, Mapping) else None
        if status and bgp_sessions(entry, plan.get('topology', 'full_mesh'), status)['needed']:
            transition.append(name)
    out = _rollout.rollout(plan, transition, serial=serial, rr_serial=rr_serial,
                           max_fail_percentage=max_fail_percentage)
    out['nodes'].update(_rollout.node_steps(plan, settings, transition))
    return out


class FilterModule:
    def filters(self):
        return {'node_checks': node_checks, 'rollout': rollout}
