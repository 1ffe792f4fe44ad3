# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bgp_sessions: name a host's BGP sessions and plan a make-before-break change of them (plugin_utils.bgp)."""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import bgp_sessions


class FilterModule:
    def filters(self):
        return {"bgp_sessions": bgp_sessions}
