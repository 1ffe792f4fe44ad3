# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-task and per-host wall times of a playbook run, for bench/convergence.py.

Not part of the collection (bench/ is not packed): ansible-core 2.19 ships no timer or
profile_tasks callback, and ansible.posix is not installed. Enabled only by the benchmark:

    ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_timing \
    BENCH_TIMING_FILE=/tmp/x.json ansible-playbook ...

writes ``{"tasks": [{play, task, action, start, end, hosts: {host: [start, end, status]}}], "end", "cpu"}``
(times: seconds since the epoch, wall clock; cpu: CPU seconds of the ansible-playbook process itself,
``self``, and of its reaped children, ``children``: the per-task worker forks and what they ran).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: Write per-task and per-host wall times to a JSON file (benchmark helper)
description:
  - Records when each task starts, when each host starts and finishes it, and writes the record to the file named
    by the environment variable C(BENCH_TIMING_FILE) at the end of the run.
requirements:
  - enabled in configuration (C(ANSIBLE_CALLBACKS_ENABLED=bench_timing))
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


def _host_name(result):
    host = getattr(result, 'host', None) or getattr(result, '_host', None)
    return host.get_name() if host is not None else '?'


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._play = ''
        self._tasks = []
        self._by_uuid = {}
        self._start = time.time()

    def _task(self, task):
        uuid = task._uuid
        if uuid not in self._by_uuid:
            entry = {'play': self._play, 'task': task.get_name(), 'action': task.action,
                     'start': time.time(), 'end': None, 'hosts': {}}
            self._by_uuid[uuid] = entry
            self._tasks.append(entry)
        return self._by_uuid[uuid]

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task(task)

    def v2_runner_on_start(self, host, task):
        self._task(task)['hosts'][host.get_name()] = [time.time(), None, 'running']

    def _done(self, result, status):
        task = getattr(result, 'task', None) or getattr(result, '_task', None)
        entry = self._task(task)
        now = time.time()
        record = entry['hosts'].setdefault(_host_name(result), [now, None, status])
        record[1], record[2] = now, status
        entry['end'] = now if entry['end'] is None else max(entry['end'], now)

    def v2_runner_on_ok(self, result):
        self._done(result, 'changed' if result._result.get('changed') else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._done(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._done(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('BENCH_TIMING_FILE')
        if not path:
            return
        with open(path, 'w') as handle:
            cpu = os.times()
            json.dump({'start': self._start, 'end': time.time(), 'tasks': self._tasks,
                       'cpu': {'self': cpu.user + cpu.system, 'children': cpu.children_user + cpu.children_system}},
                      handle)
