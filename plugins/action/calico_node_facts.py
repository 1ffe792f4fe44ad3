# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of netfleet.calico.calico_node_facts (documented in plugins/modules/calico_node_facts.py).

Reads the host with one shell command and parses the answer here, on the controller
(plugin_utils/node_facts.py): no Python runs on the host. With ``host_checks`` it also refuses a host
that cannot take the fabric (unreachable, BIRD missing or too old, iptables rules in the other backend),
with the one line of plugin_utils/rollout.py's ``node_problems``.
"""

from __future__ import annotations

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

from ansible_collections.netfleet.calico.plugins.module_utils import iproute
from ansible_collections.netfleet.calico.plugins.plugin_utils import node_facts
from ansible_collections.netfleet.calico.plugins.plugin_utils.rollout import node_problems

ARGUMENT_SPEC = {
    'protocol': {'type': 'raw', 'default': iproute.CALICO_PROTOCOL},
    'interface_prefix': {'type': 'str', 'default': iproute.DEFAULT_INTERFACE_PREFIX},
    # paths on the host: never expanded on the controller
    'bird_socket': {'type': 'str'},
    'bird_binary': {'type': 'str', 'default': 'bird'},
    'birdc_binary': {'type': 'str', 'default': 'birdc'},
    'cni_data_dir': {'type': 'str'},
    'host_checks': {'type': 'dict', 'options': {
        'install_packages': {'type': 'bool', 'default': True},
        'onlink': {'type': 'bool', 'default': True},
        'ipip_mode': {'type': 'str', 'default': 'never'},
        'iptables_backend': {'type': 'str', 'default': 'auto'},
        'iptables': {'type': 'bool', 'default': True},
    }},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        prefix = params['interface_prefix']
        try:
            protocol = iproute.normalize_protocol(params['protocol'])
            if not prefix or not iproute.valid_ifname(prefix):
                raise ValueError('invalid interface_prefix %r' % (prefix,))
        except ValueError as exc:
            return dict(result, failed=True, msg=str(exc))
        checks = params['host_checks']
        host = task_vars.get('inventory_hostname', self._task.get_name())
        marker, command = node_facts.script(protocol, bird_binary=params['bird_binary'],
                                            birdc_binary=params['birdc_binary'], bird_socket=params['bird_socket'],
                                            cni_data_dir=params['cni_data_dir'])
        try:
            answer = self._low_level_execute_command(command, sudoable=True)
        except AnsibleConnectionFailure as exc:
            if checks is None:
                raise
            return self._refuse(result, {'unreachable': True, 'msg': str(exc)}, host, params, checks)
        try:
            facts = node_facts.parse(marker, answer.get('stdout', ''), protocol, prefix=prefix,
                                     bird_socket=params['bird_socket'], cni_data_dir=params['cni_data_dir'])
        except node_facts.NodeFactsError as exc:
            msg = '%s (rc=%s%s)' % (exc, answer.get('rc'), ', stderr: ' + answer['stderr'].strip()[:200]
                                    if answer.get('stderr', '').strip() else '')
            if checks is None:
                return dict(result, failed=True, msg=msg)
            return self._refuse(result, {'failed': True, 'msg': msg}, host, params, checks)
        result.update(changed=False, calico_node_facts=facts, ansible_facts={'calico_node_facts': facts})
        if checks is not None:
            # a host with cali-* chains left has iptables work to do whatever the inventory says
            checks = dict(checks, iptables=checks['iptables'] or bool(facts['cali_chains']))
            return self._refuse(result, result, host, params, checks)
        return result

    @staticmethod
    def _refuse(result, read, host, params, checks):
        """``result``, failed with the first problem ``node_problems`` finds in ``read`` (if any)."""
        problems = node_problems(read, host, bird_binary=params['bird_binary'], **checks)
        if problems:
            result.update(failed=True, msg=problems[0], problems=problems)
        return result
