# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one exit path of the single-part modules: their converge returns a result with a ``diff``."""

from __future__ import annotations


def exit_with_diff(module, result):
    """``exit_json`` with ``result``; its ``diff`` (always computed) is returned only under ``--diff``."""
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
    module.exit_json(**result)
