# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netfleet.calico.bird_string -- a value as a quoted BIRD string literal, or an error (docs: bird_string.yml)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils.values import bird_string


class FilterModule:
    """netfleet.calico BIRD string filter."""

    def filters(self):
        return {'bird_string': bird_string}
