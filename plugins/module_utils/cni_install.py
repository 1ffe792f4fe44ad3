# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Installing the CNI plugin on a host (module calico_cni): the files, then its policy state.

Files, each written only when its content differs (atomically), each shown in ``--diff``:

* ``<lib_dir>/ansible_collections/netfleet/calico/plugins/module_utils/*.py``: the plugin's code,
  copied from the module_utils this module was shipped with, so the plugin and the converge
  always run the same version of the endpoint, store and policy code;
* ``<bin_dir>/netfleet-calico``: the executable a runtime runs: a few lines of ``sh`` that hand the call to
  the host's agent (:mod:`cni_agent`, kept running by :mod:`cni_service`) with ``nc -U``, or run the plugin
  in-process (``<lib_dir>/netfleet-calico.py``) while no agent answers;
* ``<lib_dir>/netfleet-calico-agent.py``: the agent's entry point;
* ``<config_path>``: this host's plan (block, networks and their ranges, reserved addresses, MTU,
  policies and ipsets), the one file the plugin reads on every call;
* ``<conf_dir>/10-netfleet-<network>.conflist``: one network configuration per container network
  (``podman run --network web``); stale ones of ours are removed.

Then, holding the store's lock, :func:`cni_policy.sync` brings the plugin's chains and ipsets to the
new plan for the containers already running, so a policy change reaches them without a restart.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from ansible_collections.netfleet.calico.plugins.module_utils import (
    chains,
    chains_render,
    chains_restore,
    cni,
    cni_agent,
    cni_batch,
    cni_endpoint,
    cni_policy,
    cni_service,
    cni_store,
    files,
    iproute,
    iproute_routes,
    netlink,
    procfs,
    selector,
)
from ansible_collections.netfleet.calico.plugins.module_utils.files import (  # noqa: F401 (module_source: tests)
    PACKAGE_PATH,
    InstallError,
    check_path,
    module_source,
    plan_files,
    write,
)

PLUGIN_MODULES = (cni, cni_agent, cni_batch, cni_endpoint, cni_policy, cni_store, chains, chains_render, chains_restore,
                  iproute, iproute_routes, netlink, procfs, selector)
CONFLIST_RE = re.compile(r'10-netfleet-([A-Za-z0-9][A-Za-z0-9_.-]{0,62})\.conflist\Z')

CLIENT = """#!/bin/sh
# netfleet-calico CNI plugin, installed by the netfleet.calico collection (role calico_node).
# Hands the call to this host's agent on {socket}: the agent reads CNI_* from this
# process (nc) and the configuration from stdin, and answers "<exit status>\\n<stdout>".
# While no agent answers, the plugin runs in-process ({lib_dir}).
# Network configurations: the conflists of {conf_dir}.
sock='{socket}'
if [ -S "$sock" ] && reply=$(nc -UN "$sock" 2>/dev/null); then
  nl='
'
  status=${{reply%%"$nl"*}}
  case $reply in *"$nl"*) out=${{reply#*"$nl"}} ;; *) out= ;; esac
  case $status in
    ''|*[!0-9]*)
      echo '{{"cniVersion":"1.0.0","code":11,"msg":"the agent ended the call unanswered; try again"}}'
      exit 1 ;;
  esac
  [ -z "$out" ] || printf '%s\\n' "$out"
  exit "$status"
fi
exec '{python}' -IS '{lib_dir}/netfleet-calico.py'
"""

AGENT_LAUNCHER = """#!{python} -IS
# netfleet-calico CNI agent, installed by the netfleet.calico collection (role calico_node).
import sys
sys.path.insert(0, {lib_dir!r})
from ansible_collections.netfleet.calico.plugins.module_utils.cni_agent import main
sys.exit(main())
"""

LAUNCHER = """#!{python} -IS
# netfleet-calico CNI plugin in-process (when no agent answers), installed by the netfleet.calico
# collection (role calico_node). Its configuration: the conflists of {conf_dir}.
import os
import sys
sys.path.insert(0, {lib_dir!r})
from ansible_collections.netfleet.calico.plugins.module_utils.cni import main
status = main()
# Out without the interpreter's teardown (3-7 ms of every call a runtime waits for): the answer is
# written and the store's lock and log file are closed by now; stdio is all there is to flush.
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
"""


def host_config(params):
    """The document written to ``config_path`` (keys sorted on write, so it compares byte for byte)."""
    plan = params['plan'] or {}
    networks = plan.get('networks') or {}
    if not networks:
        raise InstallError('plan has no networks (run site.yml: its preflight plans them)')
    for name in networks:
        if not cni_store.NETWORK_RE.match(name):
            raise InstallError('network name %r is not valid' % name)
    policy = dict(plan.get('policy') or {'policies': [], 'sets': {}})
    for set_name_ in policy.get('sets') or {}:
        if not set_name_.startswith(cni_policy.SET_PREFIX) or not chains.IPSET_NAME.match(set_name_):
            raise InstallError('ipset name %r is not valid' % set_name_)
    policy['enabled'] = bool(params['chains'])
    policy['iptables'] = params['backend']
    if any(net.get('range6') for net in networks.values()):  # dual stack: ip6tables chains and IPv6 ipsets too
        policy['ipv6'] = True
    return {
        'version': 1,
        'data_dir': params['data_dir'],
        'block': plan.get('block'),
        'gateway': iproute.CALICO_GATEWAY,
        'gateway6': iproute.CALICO_GATEWAY6,
        'mac': iproute.CALICO_MAC,
        'protocol': iproute.normalize_protocol(params['protocol']),
        'interface_prefix': iproute.DEFAULT_INTERFACE_PREFIX,
        'mtu': params['mtu'],
        'reserved': list(plan.get('reserved') or []),
        'reserved6': list(plan.get('reserved6') or []),
        'networks': networks,
        'policy': policy,
    }


def conflist(name, params):
    return {'cniVersion': params['cni_version'], 'name': name,
            'plugins': [{'type': cni.PLUGIN, 'config_file': params['config_path'], 'log_file': params['log_file']}]}


def desired_files(params):
    """``{path: (content, mode)}`` for state=present."""
    lib_dir = params['lib_dir']
    files = {}
    pkg = os.path.join(lib_dir, *PACKAGE_PATH)
    for mod in PLUGIN_MODULES:
        files[os.path.join(pkg, mod.__name__.rsplit('.', 1)[-1] + '.py')] = (module_source(mod), 0o644)
    files[os.path.join(params['bin_dir'], cni.PLUGIN)] = (
        CLIENT.format(python=params['python'], lib_dir=lib_dir, conf_dir=params['conf_dir'],
                      socket=params['agent_socket']), 0o755)
    files[os.path.join(lib_dir, 'netfleet-calico.py')] = (
        LAUNCHER.format(python=params['python'], lib_dir=lib_dir, conf_dir=params['conf_dir']), 0o755)
    files[agent_script(params)] = (AGENT_LAUNCHER.format(python=params['python'], lib_dir=lib_dir), 0o755)
    config = host_config(params)
    files[params['config_path']] = (json.dumps(config, indent=1, sort_keys=True) + '\n', 0o644)
    for name in sorted(config['networks']):
        path = os.path.join(params['conf_dir'], '10-netfleet-%s.conflist' % name)
        files[path] = (json.dumps(conflist(name, params), indent=1, sort_keys=True) + '\n', 0o644)
    return files, config


def agent_script(params):
    return os.path.join(params['lib_dir'], 'netfleet-calico-agent.py')


def owned_conflists(conf_dir):
    try:
        names = os.listdir(conf_dir)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(conf_dir, n) for n in names if CONFLIST_RE.match(n))


def converge(params, check_mode, run=None):
    """Bring the host to ``params`` (the module's options); return the result dict. ``run(argv) -> (rc, out,
    err)`` runs systemctl (the module's run_command)."""
    for key in ('bin_dir', 'conf_dir', 'config_path', 'data_dir', 'lib_dir', 'log_file', 'python', 'agent_socket',
                'agent_pidfile', 'unit_dir'):
        params[key] = check_path(params[key], key)
    params['agent_script'] = agent_script(params)
    store = cni_store.Store(params['data_dir'])
    present = params['state'] == 'present'
    if present:
        want, config = desired_files(params)
        stale = [p for p in owned_conflists(params['conf_dir']) if p not in want]
    else:
        want, config = {}, None
        pkg = os.path.join(params['lib_dir'], *PACKAGE_PATH)
        stale = owned_conflists(params['conf_dir']) + [os.path.join(params['bin_dir'], cni.PLUGIN),
                                                       params['config_path']]
        stale += [os.path.join(pkg, m.__name__.rsplit('.', 1)[-1] + '.py') for m in PLUGIN_MODULES]
        stale += [os.path.join(params['lib_dir'], 'netfleet-calico.py'), agent_script(params)]
        attached = [r for r in store.records().values() if r and not r.get('corrupt')]
        if attached:
            raise InstallError('%d container(s) are still attached through the CNI plugin (first: %s); stop them '
                               'before removing the plugin' % (len(attached), attached[0].get('container_id')))
    writes, removes, before, after = plan_files(want, stale)
    result = {'files_changed': writes + removes}
    policy = (config or {}).get('policy') or {'enabled': False, 'iptables': params['backend']}
    if not check_mode:
        for path in writes:
            write(path, want[path][0], want[path][1])
        for path in removes:
            os.unlink(path)
    if present or os.path.isdir(params['data_dir']):
        if check_mode and not os.path.isdir(params['data_dir']):
            records = []
            sync = cni_policy.sync(records, policy, check_mode=True)
        else:
            with store.locked():
                records = list(store.records().values())
                sync = cni_policy.sync(records, policy, check_mode=check_mode)
        result['attachments'] = len([r for r in records if r and not r.get('corrupt')])
    else:
        sync = {'changed': False, 'sets': [], 'chains': [], 'commands': {},
                'diff': {'before': '', 'after': ''}}
        result['attachments'] = 0
    want_agent = present and params['agent']
    code_changed = any(p.endswith('.py') for p in writes)
    agent_changed, agent = cni_service.converge(params, want_agent, code_changed, check_mode, run)
    result['agent'] = {k: v for k, v in agent.items() if not k.startswith('unit_')}
    if not present and not check_mode:
        if os.path.isdir(params['data_dir']):
            shutil.rmtree(params['data_dir'])
        files.remove_package_dirs(params['lib_dir'])  # the package directories it made, once empty
    result.update(changed=bool(writes or removes or sync['changed'] or agent_changed), sets=sync['sets'],
                  chains=sync['chains'],
                  commands=sync['commands'], networks=sorted((config or {}).get('networks') or {}))
    result['diff'] = [
        {'before_header': 'CNI plugin files', 'after_header': 'CNI plugin files (wanted)', 'before': before,
         'after': after},
        sync['diff'],
        {'before_header': 'CNI agent', 'after_header': 'CNI agent (wanted)',
         'before': agent_text(agent, before=True), 'after': agent_text(agent, before=False)},
    ]
    return result


def agent_text(agent, before):
    """The agent's state for --diff: its manager, whether it runs, its unit file."""
    action = agent.get('action')
    running = agent.get('running')
    if before:
        running = running if action is None else action in ('restarted', 'stopped', 'removed')
    lines = '%s agent (%s): %s\n' % ('netfleet-calico', agent.get('manager'), 'running' if running else 'not running')
    if before and action == 'restarted':
        lines += '(the plugin code changed: restart)\n'
    unit = agent.get('unit_before' if before else 'unit_after')
    return lines + (unit or '')
