# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback netfleet.calico.preload: load the plugins site.yml's tasks use once, in the controller's main process."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
short_description: Load the plugins site.yml's tasks use once, before any task's worker starts
version_added: 0.1.0
description:
  - >-
    ansible-core runs every task of every host in a worker process forked from the controller's main process. A
    worker that templates a filter, a test or a lookup loads its plugin files first: ansible-core's own filter and
    test files, and every filter file of the collection that holds the filter. Nothing of that survives the worker,
    so each of them loads the same files again, about 10-15 ms of controller CPU per task and host.
  - >-
    This callback loads them once in the main process, when the playbook starts; every worker forked after that
    finds them loaded. It writes nothing and changes no result. What it saves is measured in docs/benchmarks.md
    (bench/site_cpu).
  - >-
    Enable it in C(ansible.cfg) (C(callbacks_enabled)), as this repository's does. A plugin that fails to load is
    left to the task that uses it, which reports the error as it would without this callback.
author: netfleet.calico contributors (!UNKNOWN)
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = netfleet.calico.preload
"""

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader, lookup_loader, test_loader

# One plugin of each file set a task of site.yml loads: each name loads its whole set (ansible-core's filter and
# test files, the collection's filter files), and the collection's template lookup.
PLUGINS = (
    (filter_loader, 'ansible.builtin.bool'),
    (test_loader, 'ansible.builtin.version'),
    (filter_loader, 'netfleet.calico.bird_string'),
    (lookup_loader, 'netfleet.calico.render_template'),
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'netfleet.calico.preload'
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        for loader, name in PLUGINS:
            try:
                loader.get(name)
            except Exception as exc:  # the task that uses it reports the error
                self._display.vvv('netfleet.calico.preload: %s not loaded: %s' % (name, exc))
