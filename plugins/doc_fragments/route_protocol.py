# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The route protocol number that marks what the collection owns, shared by the route and workload modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r'''
options:
  protocol:
    description:
      - Route protocol number that marks the routes this collection owns (Calico's Felix uses 80); routes of any
        other protocol are never touched.
      - 0-4 are the kernel's own and 12 is BIRD's; role calico_node refuses them (C(calico_node_route_protocol)).
    type: int
    default: 80
'''
