# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The BIRD part of calico_node_state: check every new bird.conf with `bird -p` before the host changes, install it,
start or reload the daemon, and run a peer change make-before-break. ``bird`` is the daemon driver
(module_utils.bird.Bird, or the unit tests' fake)."""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.netfleet.calico.plugins.module_utils.bird import install_file
from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_file

# the module's ``bird`` suboptions (documented in calico_node_state's DOCUMENTATION)
OPTIONS = dict(
    config=dict(type='str', required=True),
    config_path=dict(type='path', default='/etc/bird/bird.conf'),
    group=dict(type='str', default='root'),
    secrets=dict(type='str', no_log=True),
    secrets_path=dict(type='path'),
    transition_config=dict(type='str'),
    wait_for=dict(type='list', elements='str', default=[]),
    wait_timeout=dict(type='float', default=60),
    lingering=dict(type='list', elements='str', default=[]),
    transition_only=dict(type='bool', default=False),
    manager=dict(type='str', default='systemd', choices=['systemd', 'pidfile']),
    service=dict(type='str', default='bird'),
    enabled=dict(type='bool', default=True),
    socket=dict(type='path', default='/run/bird/bird.ctl'),
    pidfile=dict(type='path'),
    bird_binary=dict(type='str', default='bird'),
    birdc_binary=dict(type='str', default='birdc'),
    timeout=dict(type='float', default=10),
)


def prevalidate(module, params, bird):
    """`bird -p` on every new configuration before any part of the host changes, so a host whose configuration
    BIRD rejects is left as it was (a roll-out stops at it with nothing half-done). Skipped when the secrets
    file is about to change: the configuration includes it, and converge() checks after writing it."""
    if params['secrets'] is not None and read_file(params['secrets_path'] or '') != params['secrets']:
        return
    path = params['config_path']
    installed = read_file(path)
    texts = [t for t in (params['transition_config'], params['config']) if t is not None and t != installed]
    if not texts:
        return
    directory = os.path.dirname(path)
    for text in texts:
        fd, tmp = tempfile.mkstemp(prefix='.%s.check.' % os.path.basename(path),
                                   dir=directory if directory and os.path.isdir(directory) else None)
        try:
            with os.fdopen(fd, 'w') as handle:
                handle.write(text)
            bird.validate(tmp, shown_as='the new %s' % path)
        finally:
            os.unlink(tmp)


def converge(module, params, check_mode, bird):
    """Install bird.conf (and secrets) after `bird -p` accepted it; start, or reload when anything changed."""
    path = params['config_path']
    group = params['group']
    directory = os.path.dirname(path)
    if not check_mode and directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)

    def validate(tmp):
        bird.validate(tmp, shown_as='the new %s' % path)

    result = {'action': 'none', 'config_changed': False, 'secrets_changed': False, 'transition': False, 'pid': None}
    diffs = []
    if params['secrets'] is not None:
        if not params['secrets_path']:
            module.fail_json(msg='bird.secrets needs bird.secrets_path')
        result['secrets_changed'], _unused = install_file(params['secrets_path'], params['secrets'], 0o640,
                                                          group, check_mode=check_mode)
    pid = bird.running_pid()
    before_conf = None
    transition = params['transition_config']
    if transition is not None and transition != params['config'] and not check_mode:
        # Make before break: old and new sessions side by side until the new ones are Established.
        changed, before_conf = install_file(path, transition, 0o640, group, validate=validate)
        if not pid:
            bird.start()
        elif changed or result['secrets_changed']:
            bird.reload()
        deadline = time.monotonic() + params['wait_timeout']
        down = bird.wait_established(params['wait_for'], params['wait_timeout'])
        if down:
            module.fail_json(msg='make-before-break: sessions %s not Established after %ss; the old sessions are '
                                 'still configured (%s holds both)' % (', '.join(down), params['wait_timeout'], path))
        # Established is not enough: the new sessions must bring what the old ones do before those go
        # (a peer may send its routes a while after the session came up).
        lost = bird.wait_covered(params['lingering'], max(0.0, deadline - time.monotonic()))
        if lost:
            result['uncovered'] = lost
            result['warnings'] = ['make-before-break: %d prefixes the old sessions bring have no path through the '
                                  'new ones after %ss (%s); the old sessions go anyway'
                                  % (len(lost), params['wait_timeout'], ', '.join(lost[:5]))]
        result['transition'] = True
        pid = bird.running_pid()
        if params['transition_only']:
            result['config_changed'] = result['old_sessions_kept'] = True
            diffs.append({'before_header': path, 'after_header': path, 'before': before_conf or '',
                          'after': transition})
            return result, diffs
    changed, before = install_file(path, params['config'], 0o640, group, validate=validate,
                                   check_mode=check_mode)
    if before_conf is None:
        before_conf = before
    result['config_changed'] = changed or result['transition']
    if not pid:
        result['action'] = 'start'
        if os.path.exists(path) or not check_mode:
            bird.validate()
    elif result['config_changed'] or result['secrets_changed']:
        result['action'] = 'reload'
    if not check_mode:
        if result['action'] == 'start':
            bird.start()
        elif result['action'] == 'reload':
            result['message'] = bird.reload()
        if params['manager'] == 'systemd' and params['enabled']:
            rc, out, err = module.run_command(['systemctl', 'is-enabled', '--quiet', params['service']])
            if rc != 0:
                result['action'] = result['action'] if result['action'] != 'none' else 'enable'
                rc, out, err = module.run_command(['systemctl', 'enable', params['service']])
                if rc != 0:
                    module.fail_json(msg='systemctl enable %s failed: %s' % (params['service'], (err or out).strip()))
        if params['manager'] == 'pidfile':
            result['pid'] = bird.running_pid()
    diffs.append({'before_header': path, 'after_header': path, 'before': before_conf or '',
                  'after': params['config']})
    diffs.append({'before': 'bird: %s\n' % ('running' if pid else 'stopped'),
                  'after': 'bird: running%s\n' % (' (reloaded)' if result['action'] == 'reload' else '')})
    return result, diffs
