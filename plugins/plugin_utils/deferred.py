# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner and the status report, imported by the filter plugins only when one of them runs.

To find any one filter of a collection, ansible-core loads every file of its plugins/filter/, in the
worker process of each task on each host. The filters site.yml templates on every host (bgp_sessions,
bird_string) need only the light modules the filter files import when they load (values, errors, bgp); the
planner (fabric and its parts, the inventory parsers of inputs with netaddr) and the status report are imported
where they run, not in every host's task (tests/unit/test_import_layers.py checks it).
"""

from __future__ import annotations

import importlib

_PACKAGE = 'ansible_collections.netfleet.calico.plugins.plugin_utils.'


def load(name):
    """The module ``plugin_utils.<name>`` (imported once per process, on first use)."""
    return importlib.import_module(_PACKAGE + name)
