# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fabric's live state held against its plan: one analysis for every report.

Input: every host's result of ``calico_bgp_status`` (the one reader of BIRD's sessions,
``module_utils.bird.read_sessions``, plus the kernel's routes) and, optionally, the fabric plan
(``netfleet.calico.fabric``). Output: per host, per rack and per BGP session what is up, what is
down, which blocks a host has no route to and which routes nothing in the plan accounts for.
``status_report`` prints it as a table, ``fabric_topology`` draws it; neither reads BIRD itself.

A session is one pair of speakers. Each of its two ends is what that host's BIRD says about it:

- ``established``: BGP state Established;
- ``connecting``: Connect, Active, OpenSent, OpenConfirm (BIRD is trying);
- ``down``: any other state (Idle, a disabled or failed protocol);
- ``missing``: the host has no such protocol, its BIRD does not answer, or it was not reached.

The session is ``established`` when both ends are, else it takes its worst end (down, then
connecting, then missing). Sessions BIRD runs that the plan does not have are ``planned: false``
(a problem with a plan; without one every running session is taken as it is). A session to a router outside
the fleet (``calico_bgp_peers``, kind ``external``) has one end, the host's: it is counted apart from the
fleet's sessions (``external_up``/``external_total``), is a problem unless Established, and what the router
announced beyond what the host imports (kept as filtered) is not a problem.

With ``calico_rack_block_pool`` (racks with a ``share``) a host wants its own rack's blocks one by one and every
other rack's aggregate (its share) plus the blocks other racks hold outside their shares; a reflector also holds
its rack's aggregate itself (a ``proto bird`` blackhole, not counted as learned). A block inside another rack's
share, or a host's own rack's aggregate, is stale there.

Stale routes (plan given): a ``proto bird`` route to a destination that is neither another planned
host's block, a planned floating IP (of either family) nor a prefix the host imports from a router outside the fleet; a
blackhole of the owned protocol other than the host's planned blocks; a workload route to an address the
plan gives no workload of the host; any other route of the owned protocol.

Dual stack (a plan with ``pool_v6``; without a plan, a host reporting IPv6 blackholes): the IPv6 routes
(``routes6``) are held against the IPv6 blocks (``blocks_v6``) and workload ``ip6`` the same way, and the fabric
has converged only when both families have. An IPv4-only fleet's analysis has no IPv6 key. With
``calico_bgp_ipv6_sessions`` (peers with ``ip_v6``) a pair of speakers has two sessions, the IPv6 one
``family: 6`` (id ``<a>--<b>--v6``), and both must be Established; an IPv6 session between two hosts of the fleet
is matched to its peer by the peer's ``calico_node_ip_v6`` (or ``calico_rr_spine_ip_v6``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import host_blocks, protocol_name
from ansible_collections.netfleet.calico.plugins.plugin_utils.external_peers import external_protocol
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import natural_key, natural_sorted
from ansible_collections.netfleet.calico.plugins.plugin_utils.status_routes import dest_of as _dest
from ansible_collections.netfleet.calico.plugins.plugin_utils.status_routes import families, held_routes

STATES = ("established", "connecting", "down", "missing")
CONNECTING = ("Connect", "Active", "OpenSent", "OpenConfirm")
_WORST = ("down", "connecting", "missing")
NO_RACK = "-"


def collect_statuses(hostvars, hosts, var="calico_node_status"):
    """``{host: calico_bgp_status result}``; a host without the registered result counts as not reached."""
    statuses = {}
    for host in hosts:
        try:
            st = hostvars[host].get(var)
        except KeyError as e:
            raise AnsibleFilterError("netfleet.calico: unknown host %s" % host) from e
        if not isinstance(st, dict) or "bird_running" not in st:
            st = {"bird_running": False, "bird_error": "host not reached", "sessions": [], "routes": {},
                  "reached": False}
        statuses[str(host)] = st
    return statuses


# a session's kind, the same from both ends (BIRD names it RR_ at a client and Client_ at its reflector)
_KIND_OF_PREFIX = {"Mesh": "mesh", "RR": "client", "Client": "client", "Peer": "reflector-peer", "Global": "ebgp",
                   "External": "external"}
EXTERNAL = "external"  # a session to a router outside the fleet (calico_bgp_peers)


def session_kind(protocol):
    return _KIND_OF_PREFIX.get(str(protocol or "").split("_", 1)[0], "other")


def end_state(session):
    """State category of one end of a session (a calico_bgp_status session dict, or None)."""
    if not session:
        return "missing"
    if session.get("established"):
        return "established"
    info = str(session.get("info") or "")
    if info.split(" ", maxsplit=1)[0] in CONNECTING:
        return "connecting"
    return "down"


def session_state(ends):
    """State of a session from the states of its ends (the ends we know of)."""
    states = [e["state"] for e in ends]
    if states and all(s == "established" for s in states):
        return "established"
    for s in _WORST:
        if s in states:
            return s
    return "missing"


def _addr(value):
    return _dest(value).split("/", maxsplit=1)[0] if value else None


def _brief(items, limit=4):
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return "%s (+%d more)" % (", ".join(items[:limit]), len(items) - limit)


def _pseudo_plan(statuses):
    """Without a plan: every host as it runs (its blackholed block, no rack, no planned peers)."""
    hosts = {}
    for name, st in statuses.items():
        blocks = (st.get("routes") or {}).get("blackholes") or []
        hosts[name] = {"rack": None, "role": "node", "as_number": None, "node_ip": None, "spine_ip": None,
                       "block": blocks[0] if blocks else None, "blocks": list(blocks), "workloads": None,
                       "peers": None}
    return {"topology": None, "hosts": hosts, "racks": {}, "floating_ips": None}


def analyse(statuses, plan=None):
    """Hold ``statuses`` ({host: calico_bgp_status}) against ``plan``; see the module docstring."""
    planned = isinstance(plan, dict) and isinstance(plan.get("hosts"), dict)
    if not planned:
        plan = _pseudo_plan(statuses)
    phosts = plan["hosts"]
    topology = plan.get("topology")
    names = natural_sorted(set(phosts) | set(statuses))
    missing_status = {"bird_running": False, "bird_error": "not in the status run", "sessions": [], "routes": {},
                      "reached": False}
    st_of = {h: statuses.get(h, missing_status) for h in names}

    # who is behind an address (node and spine IPs), who owns a block
    ip_owner = {}
    for h in names:
        p = phosts.get(h) or {}
        for key in ("node_ip", "spine_ip", "node_ip_v6", "spine_ip_v6"):
            if p.get(key):
                ip_owner.setdefault(_addr(p[key]), h)
    fams = families(plan, planned, names, phosts, st_of)
    dual = len(fams) > 1
    block_owner = fams[0]["owner"]
    aggregate_owner = fams[0]["aggregates"]
    floating = {_dest(f) for f in (plan.get("floating_ips") or []) + (plan.get("floating_ips_v6") or [])}

    sessions = {}  # (a, b) natural order -> session

    def edge(h, peer, is_planned, family=4):
        # family 6: the IPv6 session beside the IPv4 one of a peer relation (calico_bgp_ipv6_sessions)
        a, b = sorted((h, peer), key=natural_key)
        key = (a, b, is_planned, family)
        if key not in sessions:
            sessions[key] = {"a": a, "b": b, "planned": is_planned, "ends": {}, "kind": None}
            if family == 6:
                sessions[key]["family"] = 6
        return sessions[key]

    def end(h, session, protocol=None, peer_ip=None, why=None):
        st = st_of[h]
        if session is None:
            reason = why or ("no BGP protocol %s configured" % protocol if st.get("bird_running")
                             else "BIRD not running" if st.get("reached", True) else "host not reached")
            return {"host": h, "state": "missing", "protocol": protocol, "peer_ip": peer_ip, "info": reason,
                    "since": None}
        return {"host": h, "state": end_state(session), "protocol": session.get("name"),
                "peer_ip": session.get("peer_ip") or peer_ip, "info": session.get("info") or session.get("state"),
                "since": session.get("since"), "last_error": session.get("last_error") or "",
                "filtered": session.get("filtered") or 0}

    # 1. planned sessions, matched by protocol name, then by peer address
    leftovers = {}
    for h in names:
        st = st_of[h]
        running = [s for s in st.get("sessions") or [] if isinstance(s, dict)] if st.get("bird_running") else []
        used = set()
        p = phosts.get(h) or {}
        planned_peers = [(peer, peer.get("ip"), 4) for peer in ((p.get("peers") or []) if planned else [])]
        planned_peers += [(peer, peer["ip_v6"], 6) for peer, _ip, _f in planned_peers if peer.get("ip_v6")]
        for peer, ip, family in planned_peers:
            proto = protocol_name(dict(peer, ip=ip), topology, p.get("role", "node"))
            found = next((i for i, s in enumerate(running) if i not in used and s.get("name") == proto), None)
            if found is None:
                found = next((i for i, s in enumerate(running) if i not in used
                              and _addr(s.get("peer_ip")) == _addr(ip)), None)
            if found is not None:
                used.add(found)
            e = edge(h, str(peer.get("name")), True, family)
            e["kind"] = e["kind"] or session_kind(proto)
            e["ends"][h] = end(h, running[found] if found is not None else None, proto, ip)
        # routers outside the fleet: one end only (the router reports nothing), kind "external"
        for peer in (p.get("external_peers") or []) if planned else []:
            proto = peer.get("protocol") or external_protocol(peer.get("ip"))
            found = next((i for i, s in enumerate(running) if i not in used and s.get("name") == proto), None)
            if found is not None:
                used.add(found)
            e = edge(h, "router %s" % (peer.get("name") or peer.get("ip")), True)
            e["kind"] = EXTERNAL
            e["ends"][h] = end(h, running[found] if found is not None else None, proto, peer.get("ip"))
        leftovers[h] = [s for i, s in enumerate(running) if i not in used]
    # 2. sessions BIRD runs that the plan does not have (with a plan); every session without one
    for h in names:
        for s in leftovers[h]:
            peer = ip_owner.get(_addr(s.get("peer_ip"))) or (s.get("description") if not planned and
                                                             s.get("description") in st_of else None)
            peer = peer or "peer %s" % (s.get("peer_ip") or s.get("name"))
            e = edge(h, peer, not planned, 6 if ":" in str(s.get("peer_ip") or "") else 4)
            e["kind"] = e["kind"] or session_kind(s.get("name"))
            e["ends"][h] = end(h, s)
    # 3. a planned end nobody reported (the plan names the peer, the peer's plan does not): missing
    out_sessions = []
    for (_a, _b, _p, family), s in sorted(sessions.items(), key=lambda kv: (
            natural_key(kv[0][0]), natural_key(kv[0][1]), not kv[0][2], kv[0][3])):
        for h in (s["a"], s["b"]):
            if h not in s["ends"] and s["planned"] and planned and h in st_of:
                other = s["b"] if h == s["a"] else s["a"]
                s["ends"][h] = end(h, None, why="no session configured towards %s" % other)
        ends = [s["ends"][h] for h in (s["a"], s["b"]) if h in s["ends"]]
        s["state"] = session_state(ends)
        s["up"] = s["state"] == "established"
        s["id"] = "%s--%s" % (s["a"], s["b"]) + ("--v6" if family == 6 else "") + (
            "" if s["planned"] or not planned else "--unplanned")
        out_sessions.append(s)

    # 4. per host: sessions, routes, problems
    hosts = {}
    problems = []
    by_host = {}
    for s in out_sessions:
        for h in s["ends"]:
            by_host.setdefault(h, []).append(s)
    for h in names:
        st = st_of[h]
        p = phosts.get(h) or {}
        routes = st.get("routes") or {}
        reached = st.get("reached", True)
        mine = [(s, s["ends"][h]) for s in by_host.get(h, [])]
        fleet_ends = [e for s, e in mine if s["kind"] != EXTERNAL]
        external_ends = [e for s, e in mine if s["kind"] == EXTERNAL]
        up = sum(1 for e in fleet_ends if e["state"] == "established")
        probs = []
        if not reached:
            probs.append("%s: %s" % (h, st.get("bird_error", "host not reached")))
        elif not st.get("bird_running"):
            probs.append("%s: BIRD not running (%s)" % (h, st.get("bird_error", "no answer")))
        if st.get("bird_running"):
            for s, e in mine:
                other = s["b"] if s["a"] == h else s["a"]
                who = e.get("peer_ip") if other.startswith("peer ") or not planned else "%s (%s)" % (
                    other, e.get("peer_ip"))
                if s["planned"] or not planned:
                    if e["state"] == "missing":
                        probs.append("%s: no session to %s (%s)" % (h, who, e["info"]))
                    elif e["state"] != "established":
                        probs.append("%s: session to %s is %s" % (h, who, e["info"]))
                else:
                    probs.append("%s: session %s to %s is not in the plan" % (h, e.get("protocol"), e.get("peer_ip")))
                if e.get("filtered") and s["kind"] != EXTERNAL:  # a router announces more than we take: normal
                    # the import filter admits exactly what the plan lets that peer announce
                    probs.append("%s: %s announced %d route(s) it may not (rejected: a block it does not own, or a "
                                 "prefix inside one)" % (h, who, e["filtered"]))
        held = [held_routes(h, p, st.get(fam["routes"]) or {}, fam, planned, floating, phosts) if reached
                else ([_dest(r.get("dest"), fam["version"]) for r in (st.get(fam["routes"]) or {}).get("bird") or []
                       if isinstance(r, dict)], [], [], [], 0) for fam in fams]
        learned = held[0][0]
        missing = [m for fam_held in held for m in fam_held[1]]
        stale = [r for fam_held in held for r in fam_held[2]]
        for fam_held in held:
            probs.extend(fam_held[3])
        probs.extend("%s: no route to %s (%s)" % (h, b, what) for b, what in missing)
        probs.extend("%s: stale route %s" % (h, r) for r in stale)
        # a reflector's own rack aggregate is its static blackhole, a proto bird route in its kernel
        own_aggregate = next((a for a, r in aggregate_owner.items() if r == p.get("rack")), None)
        bird_routes = {_dest(r.get("dest")) for r in routes.get("bird") or [] if isinstance(r, dict)}
        if (own_aggregate and p.get("role") == "reflector" and reached and st.get("bird_running")
                and own_aggregate not in bird_routes):
            probs.append("%s: its rack's aggregate %s is not blackholed" % (h, own_aggregate))
        problems.extend(probs)
        blocks_running = list(routes.get("blackholes") or [])
        hosts[h] = {
            "name": h,
            "rack": p.get("rack"),
            "role": p.get("role", "node"),
            "as_number": p.get("as_number") if p.get("as_number") is not None else next(
                (s.get("local_as") for s in st.get("sessions") or [] if s.get("local_as")), None),
            "node_ip": p.get("node_ip"),
            "block": p.get("block") or (blocks_running[0] if blocks_running else None),
            "blocks": host_blocks(p) or blocks_running,
            "blocks_running": blocks_running,
            "workloads": len(routes.get("workloads") or []),
            "learned": len(learned),
            "reached": reached,
            "bird_running": bool(st.get("bird_running")),
            "bird_error": st.get("bird_error"),
            "sessions_up": up,
            "sessions_total": len(fleet_ends),
            "external_up": sum(1 for e in external_ends if e["state"] == "established"),
            "external_total": len(external_ends),
            "missing_blocks": [b for b, _o in missing],
            "missing_owners": dict(missing),
            "stale_routes": stale,
            "problems": probs,
            "in_plan": h in phosts if planned else True,
        }
        for fam, (fam_learned, fam_missing, _stale, _probs, wanted) in zip(fams, held):
            fam["expected"] = fam.get("expected", 0) + wanted
            fam["held"] = fam.get("held", 0) + wanted - len(fam_missing)
            if fam["version"] == 6:
                routes6 = st.get("routes6") or {}
                running6 = list(routes6.get("blackholes") or [])
                hosts[h].update({"blocks_v6": fam["blocks"](p) or running6, "blocks_v6_running": running6,
                                 "workloads_v6": len(routes6.get("workloads") or []), "learned_v6": len(fam_learned),
                                 "missing_blocks_v6": [b for b, _o in fam_missing]})

    # 5. per rack
    racks = {}
    for h in names:
        rack = hosts[h]["rack"] or NO_RACK
        r = racks.setdefault(rack, {"name": rack, "as_number": None, "hosts": [], "reflectors": [],
                                    "sessions_up": 0, "sessions_total": 0, "hosts_missing_blocks": 0,
                                    "stale_routes": 0, "problem_hosts": []})
        info = (plan.get("racks") or {}).get(rack) or {}
        r["as_number"] = info.get("as_number", r["as_number"] or hosts[h]["as_number"])
        r["hosts"].append(h)
        if hosts[h]["role"] == "reflector":
            r["reflectors"].append(h)
        r["sessions_up"] += hosts[h]["sessions_up"]
        r["sessions_total"] += hosts[h]["sessions_total"]
        r["hosts_missing_blocks"] += 1 if hosts[h]["missing_blocks"] else 0
        if dual:
            r["hosts_missing_blocks_v6"] = r.get("hosts_missing_blocks_v6", 0) + (
                1 if hosts[h]["missing_blocks_v6"] else 0)
        r["stale_routes"] += len(hosts[h]["stale_routes"])
        if hosts[h]["problems"]:
            r["problem_hosts"].append(h)
    for r in racks.values():
        r["converged"] = not r["problem_hosts"] and r["sessions_up"] == r["sessions_total"]

    total = sum(h["sessions_total"] for h in hosts.values())
    up = sum(h["sessions_up"] for h in hosts.values())
    summary = "%d hosts, %d/%d BGP sessions Established, %d blocks" % (len(names), up, total, len(block_owner))
    if dual:
        v4, v6 = fams
        summary += ", %d IPv6 blocks; routes to other hosts' blocks: IPv4 %d/%d, IPv6 %d/%d" % (
            len(v6["owner"]), v4["held"], v4["expected"], v6["held"], v6["expected"])
    external_total = sum(h["external_total"] for h in hosts.values())
    external_up = sum(h["external_up"] for h in hosts.values())
    if external_total:
        summary += ", %d/%d sessions to routers outside the fleet Established" % (external_up, external_total)
    problem_hosts = [h for h in names if hosts[h]["problems"]]
    return {
        "planned": planned,
        "topology": topology,
        "hosts": hosts,
        "racks": {k: racks[k] for k in natural_sorted(racks)},
        "sessions": out_sessions,
        "problems": problems,
        "problem_hosts": problem_hosts,
        "converged": not problems and total > 0,
        "summary": summary,
        "sessions_total": total,
        "sessions_established": up,
        "external_total": external_total,
        "external_established": external_up,
        "blocks": len(block_owner),
        "block_owner": {b: o for fam in fams for b, o in fam["owner"].items()},
        "aggregate_owner": aggregate_owner,
        "brief": _brief_problems(problems, problem_hosts),
        **({"dual_stack": True, "blocks_v6": len(fams[1]["owner"])} if dual else {}),
    }


def _brief_problems(problems, problem_hosts):
    if not problems:
        return "none"
    return "%d problem(s) on %d host(s): %s" % (len(problems), len(problem_hosts), _brief(problems, 3))


brief_list = _brief
