# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How workload endpoints are named on a host: interfaces and namespaces (shared by the workload modules)."""

from __future__ import annotations


class ModuleDocFragment:
    # the host-side interface names of workload veths
    DOCUMENTATION = r'''
options:
  interface_prefix:
    description:
      - Prefix of the host-side workload interfaces (Calico's C(cali); at most 4 characters, so that the name
        fits 15 characters).
      - Only interfaces with this prefix are read or removed as workloads.
    type: str
    default: cali
'''

    # where workloads' network namespaces may be
    NETNS = r'''
options:
  netns_prefix:
    description: Workload namespaces are named O(netns_prefix) + the workload's name unless an endpoint gives its own.
    type: str
    default: calico-
  netns_paths:
    description:
      - Path patterns (C(fnmatch)) that an endpoint's C(netns_path) must match; none by default, so only namespaces
        under O(netns_prefix) are used. PID 1's and this host's own namespace are refused always.
    type: list
    elements: str
    default: []
'''
