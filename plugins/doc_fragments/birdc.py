# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The birdc client, shared by the modules that talk to BIRD's control socket."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r'''
options:
  birdc_binary:
    description: Name (on C(PATH)) or absolute path of the C(birdc) binary that talks to BIRD's control socket.
    type: str
    default: birdc
'''
