# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""status_report: every host's calico_bgp_status result, held against the fabric plan, as one report.

The analysis (sessions, missing blocks, stale routes) is plugin_utils.fabric_status's; this filter only
prints it: one line per rack and one line per host with a problem (compact for hundreds of hosts), and
the per-host session tables of ``calicoctl node status`` as ``detail``.
"""

from __future__ import annotations

from ansible_collections.netfleet.calico.plugins.plugin_utils import deferred
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import KINDS
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import natural_key


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


PEER_TYPES = {
    KINDS["mesh"]: "node-to-node mesh",
    KINDS["to_reflector"]: "route reflector",
    KINDS["client"]: "rr client",
    KINDS["reflector_peer"]: "reflector peer (iBGP)",
    KINDS["ebgp"]: "other rack (eBGP)",
    KINDS["external"]: "router outside the fleet",
}


def _peer_type(session):
    kind = PEER_TYPES.get(session.get("name", "").split("_", 1)[0])
    if kind:
        return kind
    return "global (eBGP)" if session.get("type") == "ebgp" else "node specific (iBGP)"


def _detail(statuses, analysis):
    """Per host, every session (``calicoctl node status``) and its route counts."""
    lines = []
    for host, h in analysis["hosts"].items():
        st = statuses.get(host) or {}
        routes = st.get("routes") or {}
        lines.append("%s  block %s" % (host, ", ".join(h["blocks_running"]) or "-"))
        if not h["bird_running"]:
            lines.append("  BIRD is not running: %s" % (h["bird_error"] or "no answer"))
        rows = [[s.get("peer_ip") or "?", _peer_type(s), s.get("state"), s.get("since"), s.get("info"),
                 s.get("imported", 0), s.get("exported", 0)]
                for s in sorted(st.get("sessions") or [], key=lambda s: s.get("peer_ip") or "")]
        lines.extend("  " + ln for ln in _table(
            ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "IMPORTED", "EXPORTED"], rows))
        lines.append("  routes: %d workload /32s, %d blackholed blocks, %d learned by BGP%s" % (
            len(routes.get("workloads") or []), len(h["blocks_running"]), h["learned"],
            ("; MISSING " + ", ".join(h["missing_blocks"])) if h["missing_blocks"] else ""))
        if analysis.get("dual_stack"):
            lines.append("  IPv6: block %s; %d workload /128s, %d learned by BGP" % (
                ", ".join(h["blocks_v6_running"]) or "-", h["workloads_v6"], h["learned_v6"]))
        lines.append("")
    lines.append(analysis["summary"])
    return "\n".join(lines)


def _missing_cell(rack):
    """Hosts missing a block; in a dual-stack fleet, how many of them miss an IPv6 one."""
    if "hosts_missing_blocks_v6" not in rack:
        return rack["hosts_missing_blocks"]
    return "%d (IPv6 %d)" % (rack["hosts_missing_blocks"], rack["hosts_missing_blocks_v6"])


def _compact(analysis):
    """One line per rack, then one line per host with a problem, then the summary."""
    brief_list = deferred.load('fabric_status').brief_list
    rows = []
    for r in analysis["racks"].values():
        rows.append([r["name"], r["as_number"] if r["as_number"] is not None else "-", len(r["hosts"]),
                     len(r["reflectors"]), "%d/%d" % (r["sessions_up"], r["sessions_total"]),
                     r["sessions_total"] - r["sessions_up"], _missing_cell(r), r["stale_routes"],
                     "converged" if r["converged"] else "NOT CONVERGED (%d host%s)" % (
                         len(r["problem_hosts"]), "" if len(r["problem_hosts"]) == 1 else "s")])
    lines = _table(["RACK", "AS", "HOSTS", "RRS", "SESSIONS UP", "DOWN", "HOSTS MISSING BLOCKS", "STALE ROUTES",
                    "STATUS"], rows)
    hosts = analysis["hosts"]
    # A block most hosts have no route to is its owner's problem (BIRD down, sessions down): one line for
    # the block instead of one per host. Other missing routes stay on their host's line.
    missing_on = {}
    for name, h in hosts.items():
        for b in h["missing_blocks"]:
            missing_on.setdefault(b, []).append(name)
    reached = [n for n, h in hosts.items() if h["reached"]]
    fleetwide = {}
    for b, where in missing_on.items():
        others = len([n for n in reached if n != analysis["block_owner"].get(b)
                      and hosts[n]["rack"] != analysis["aggregate_owner"].get(b)])
        if len(where) >= 2 and 2 * len(where) > others:
            fleetwide[b] = (where, others)
    # The same for a stale BGP route most hosts have (a removed host whose BIRD still announces its block).
    stale_on = {}
    for name, h in hosts.items():
        for r in h["stale_routes"]:
            if " proto bird " in r:
                stale_on.setdefault(r, []).append(name)
    stale_wide = {r: where for r, where in stale_on.items() if len(where) >= 2 and 2 * len(where) > len(reached)}
    listed = []
    for name in analysis["problem_hosts"]:
        h = hosts[name]
        route = {"%s: no route to %s (%s)" % (name, b, what): b for b, what in h["missing_owners"].items()}
        own = [route[p] for p in h["problems"] if p in route and route[p] not in fleetwide]
        grouped = {"%s: stale route %s" % (name, r) for r in stale_wide}
        what = [p.split(": ", 1)[1] if p.startswith(name + ": ") else p for p in h["problems"]
                if p not in grouped and (p not in route or (len(own) == 1 and route[p] in own))]
        if len(own) > 1:
            what.append("no route to %d blocks: %s" % (len(own), brief_list(own, 4)))
        if what:
            listed.append("  %s [%s] sessions %d/%d: %s" % (
                name, h["rack"] or "-", h["sessions_up"], h["sessions_total"], brief_list(what, 4)))
    if listed:
        lines.append("problem hosts (%d of %d):" % (len(listed), len(hosts)))
        lines.extend(listed)
    if fleetwide:
        lines.append("blocks missing on most hosts:")
        for b in sorted(fleetwide, key=lambda b: natural_key(analysis["block_owner"].get(b)
                                                             or analysis["aggregate_owner"].get(b) or "")):
            where, others = fleetwide[b]
            owner = ("block of %s" % analysis["block_owner"][b] if b in analysis["block_owner"]
                     else "aggregate of %s" % analysis["aggregate_owner"].get(b))
            lines.append("  %s (%s): no route on %d of %d hosts (%s)" % (
                b, owner, len(where), others, brief_list(where, 4)))
    if stale_wide:
        lines.append("stale routes on most hosts:")
        for r in sorted(stale_wide):
            lines.append("  %s: on %d of %d hosts (%s)" % (
                r, len(stale_wide[r]), len(reached), brief_list(stale_wide[r], 4)))
    lines.append(analysis["summary"])
    return "\n".join(lines)


def build_report(statuses, plan=None):
    """statuses: {host: calico_bgp_status result}; plan: the fabric plan (optional). See status_report.yml."""
    analysis = deferred.load('fabric_status').analyse(statuses, plan)
    return {
        "text": _compact(analysis),
        "detail": _detail(statuses, analysis),
        "converged": analysis["converged"],
        "problems": analysis["problems"],
        "problem_hosts": analysis["problem_hosts"],
        "brief": analysis["brief"],
        "summary": analysis["summary"],
        "racks": analysis["racks"],
        "sessions_total": analysis["sessions_total"],
        "sessions_established": analysis["sessions_established"],
    }


def status_report(hostvars, hosts, var="calico_node_status", plan=None):
    return build_report(deferred.load('fabric_status').collect_statuses(hostvars, hosts, var), plan)


class FilterModule:
    def filters(self):
        return {"status_report": status_report}
