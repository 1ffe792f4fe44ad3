# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's defaults and the few value checks that the filters site.yml runs on every host need.

To find any one filter, ansible-core imports every file of plugins/filter/ in each task's worker; so what those
files import when they load stays here, light: no netaddr, no module_utils. The strict parsers of the
inventory (:mod:`inputs`) are loaded where a filter runs them.
"""

from __future__ import annotations

import re

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError

DEFAULT_BLOCK_PREFIX = 26  # Calico's default block size; the article (and the lab) use 24
DEFAULT_TOPOLOGY = 'full_mesh'
DEFAULT_IPIP_MODE = 'never'
DEFAULT_AS_NUMBER = 64512

# What a BIRD string literal may hold: BIRD's lexer knows no escapes, so no '"', '\' or line break; printable
# ASCII only.
BIRD_STRING = re.compile(r'[ !#-\[\]-~]{0,255}')


def is_unset(value):
    return value is None or (isinstance(value, str) and not value.strip())


def bird_string(value):
    """``value`` as a quoted BIRD string literal; a FabricError for anything that could end the literal."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not BIRD_STRING.fullmatch(text):
        raise FabricError('input', f'{value!r} cannot be a BIRD string',
                          "only printable ASCII without '\"' or '\\' (at most 255 characters) goes into bird.conf",
                          prefix='netfleet.calico.bird_string')
    return f'"{text}"'
