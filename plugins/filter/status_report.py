# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""status_report: turn every host's calico_bgp_status result into one report."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _table(headers, rows):
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, "| " + " | ".join(h.center(w) for h, w in zip(headers, widths)) + " |", rule]
    for row in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    out.append(rule)
    return out


from ansible_collections.netfleet.calico.plugins.filter.bgp_sessions import KINDS

PEER_TYPES = {
    KINDS["mesh"]: "node-to-node mesh",
    KINDS["to_reflector"]: "route reflector",
    KINDS["client"]: "rr client",
    KINDS["reflector_peer"]: "reflector peer (iBGP)",
    KINDS["ebgp"]: "other rack (eBGP)",
}


def _peer_type(session):
    kind = PEER_TYPES.get(session.get("name", "").split("_", 1)[0])
    if kind:
        return kind
    return "global (eBGP)" if session.get("type") == "ebgp" else "node specific (iBGP)"


def build_report(statuses):
    """statuses: {host: calico_bgp_status result}. Returns text, converged, problems, summary."""
    lines, problems = [], []
    blocks = {}
    for host, st in statuses.items():
        for b in st.get("routes", {}).get("blackholes", []):
            blocks[b] = host
    total = up = 0
    for host in sorted(statuses):
        st = statuses[host]
        routes = st.get("routes", {})
        own = ", ".join(routes.get("blackholes", [])) or "-"
        lines.append("%s  block %s" % (host, own))
        if not st.get("bird_running"):
            problems.append("%s: BIRD not running (%s)" % (host, st.get("bird_error", "no answer")))
            lines.append("  BIRD is not running: %s" % st.get("bird_error", "no answer"))
        sessions = st.get("sessions", [])
        rows = []
        for s in sorted(sessions, key=lambda s: s.get("peer_ip") or ""):
            total += 1
            up += 1 if s.get("established") else 0
            if not s.get("established"):
                problems.append("%s: session to %s is %s" % (host, s.get("peer_ip"), s.get("info")))
            rows.append([s.get("peer_ip") or "?", _peer_type(s), s.get("state"), s.get("since"), s.get("info"),
                         s.get("imported", 0), s.get("exported", 0)])
        lines.extend("  " + ln for ln in _table(
            ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "IMPORTED", "EXPORTED"], rows))
        learned = {r.get("dest") for r in routes.get("bird", [])}
        missing = sorted(b for b, owner in blocks.items() if owner != host and b not in learned)
        for b in missing:
            problems.append("%s: no route to %s (block of %s)" % (host, b, blocks[b]))
        lines.append("  routes: %d workload /32s, %d blackholed blocks, %d learned by BGP%s" % (
            len(routes.get("workloads", [])), len(routes.get("blackholes", [])), len(learned),
            ("; MISSING " + ", ".join(missing)) if missing else ""))
        lines.append("")
    summary = "%d hosts, %d/%d BGP sessions Established, %d blocks" % (len(statuses), up, total, len(blocks))
    lines.append(summary)
    return {"text": "\n".join(lines), "converged": not problems and total > 0, "problems": problems,
            "summary": summary, "sessions_total": total, "sessions_established": up}


def status_report(hostvars, hosts, var="calico_node_status"):
    statuses = {}
    for host in hosts:
        try:
            st = hostvars[host].get(var)
        except KeyError as e:
            raise AnsibleFilterError("status_report: unknown host %s" % host) from e
        if st is None:
            st = {"bird_running": False, "bird_error": "host not reached", "sessions": [], "routes": {}}
        statuses[host] = st
    return build_report(statuses)


class FilterModule:
    def filters(self):
        return {"status_report": status_report}
