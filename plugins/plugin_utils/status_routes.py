# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One host's kernel routes held against the fabric plan, per address family (``fabric_status``'s route half).

:func:`families` says what each family's routes are held against (IPv4 always, IPv6 in a dual-stack fleet);
:func:`held_routes` compares one host's routes of one family: what it learned, which blocks or rack aggregates
it lacks and which routes nothing in the plan accounts for.
"""

from __future__ import annotations

import functools
import ipaddress

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import host_blocks
from ansible_collections.netfleet.calico.plugins.plugin_utils.inventory import natural_key


def inside(dest, networks):
    """Whether a route destination lies inside one of ``networks``."""
    try:
        net = ipaddress.ip_network(dest_of(dest))
    except ValueError:
        return False
    return any(net.version == n.version and net.subnet_of(n) for n in networks)


def dest_of(value, version=4):
    """Normalised destination (``10.0.0.1`` -> ``10.0.0.1/32``), or the raw text when unparseable; ``default`` is
    the default route of ``version``'s family."""
    return _dest_text(str(value or ""), version)


@functools.lru_cache(maxsize=65536)
def _dest_text(text, version=4):
    if text == "default":  # ip -j route's name of 0.0.0.0/0 (of ::/0 in `ip -6`)
        return "::/0" if version == 6 else "0.0.0.0/0"
    try:
        if "/" not in text:  # a host route: /32 or /128
            addr = ipaddress.ip_address(text)
            return "%s/%d" % (addr, addr.max_prefixlen)
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


def families(plan, planned, names, phosts, st_of):
    """What each address family's routes are held against: its routes key in a status, its blocks in a host's
    plan, its workload address key, who owns each block and (IPv4, ``calico_rack_block_pool``) each rack's
    aggregate. IPv6 only in a dual-stack fleet."""
    fams = [{"version": 4, "routes": "routes", "blocks": host_blocks, "ip": "ip"}]
    if plan.get("pool_v6") if planned else any(
            (st_of[h].get("routes6") or {}).get("blackholes") for h in names):
        fams.append({"version": 6, "routes": "routes6", "blocks": lambda p: list(p.get("blocks_v6") or []),
                     "ip": "ip6"})
    for fam in fams:
        owner = {}
        for h in names:
            held = fam["blocks"](phosts.get(h) or {}) if planned else (
                (st_of[h].get(fam["routes"]) or {}).get("blackholes") or [])
            for b in held:
                owner[dest_of(b)] = h
        fam["owner"] = owner
        fam["in_order"] = sorted(owner.items(), key=lambda kv: natural_key(kv[1]))
        fam["aggregates"] = {}
    if planned:
        fams[0]["aggregates"] = {dest_of(info["share"]): rack for rack, info in (plan.get("racks") or {}).items()
                                 if isinstance(info, dict) and info.get("share")}
    return fams


def held_routes(h, p, routes, fam, planned, floating, phosts):
    """One family's routes of host ``h`` against the plan: ``(learned, missing [(prefix, what)], stale,
    problems, wanted)``. With rack aggregates a host wants its own rack's blocks one by one and every other
    rack's aggregate (plus blocks held outside the shares); a reflector's own aggregate is its static blackhole,
    not learned."""
    learned = [dest_of(r.get("dest"), fam["version"]) for r in routes.get("bird") or [] if isinstance(r, dict)]
    aggregates = fam["aggregates"]
    shares = [(ipaddress.ip_network(a), rack) for a, rack in aggregates.items()]

    def share_of(prefix):
        net = ipaddress.ip_network(prefix)
        return next((rack for share, rack in shares if net.subnet_of(share)), None)

    rack = p.get("rack")
    own_aggregate = next((a for a, r in aggregates.items() if r == rack), None)
    if own_aggregate and p.get("role") == "reflector" and own_aggregate in learned:
        learned.remove(own_aggregate)
    # a block of another rack inside that rack's share arrives as the rack's aggregate
    aggregated = {b: share_of(b) for b, o in fam["in_order"] if shares
                  and (phosts.get(o) or {}).get("rack") != rack and share_of(b) not in (None, rack)}
    have = set(learned)
    wanted = [(b, "block of %s" % o) for b, o in fam["in_order"] if o != h and b not in aggregated]
    wanted += [(a, "aggregate of %s" % r) for a, r in aggregates.items() if r != rack]
    missing = [(b, what) for b, what in wanted if b not in have]
    stale, probs = [], []
    if not planned:
        return learned, missing, stale, probs, len(wanted)
    block_owner = fam["owner"]
    external = {dest_of(x) for peer in p.get("external_peers") or [] for x in peer.get("imports") or []}
    stale.extend("%s proto bird (no host in the plan owns it)" % d for d in learned
                 if d not in block_owner and d not in floating and d not in external and d not in aggregates)
    stale.extend("%s proto bird (%s's own block)" % (d, h) for d in learned if block_owner.get(d) == h)
    stale.extend("%s proto bird (a block inside %s's aggregate)" % (d, aggregated[d]) for d in learned
                 if d in aggregated)
    stale.extend("%s proto bird (its own rack's aggregate)" % d for d in learned if d == own_aggregate)
    own = [dest_of(b) for b in fam["blocks"](p)]
    holes = [dest_of(b) for b in routes.get("blackholes") or []]
    stale.extend("blackhole %s (planned block%s: %s)" % (b, "s" if len(own) > 1 else "", ", ".join(own) or "none")
                 for b in holes if b not in own)
    probs.extend("%s: its block %s is not blackholed" % (h, b) for b in own if b not in holes)
    wl_ips = {dest_of(w.get(fam["ip"])) for w in p.get("workloads") or [] if isinstance(w, dict) and w.get(fam["ip"])}
    # containers of the CNI plugin: host routes inside one of this host's container network ranges (IPv4 or IPv6)
    networks = ((p.get("cni") or {}).get("networks") or {}).values()
    ranges = [ipaddress.ip_network(n[key]) for n in networks if isinstance(n, dict)
              for key in ("range", "range6") if n.get(key)]
    stale.extend("%s dev %s (no planned workload)" % (dest_of(r.get("dest")), r.get("dev"))
                 for r in routes.get("workloads") or [] if isinstance(r, dict)
                 and dest_of(r.get("dest")) not in wl_ips and not inside(r.get("dest"), ranges))
    stale.extend("%s %s (owned protocol, not in the plan)" % (
        dest_of(r.get("dest")), ("via %s" % r["gateway"]) if r.get("gateway") else "dev %s" % r.get("dev"))
        for r in routes.get("owned") or [] if isinstance(r, dict))
    return learned, missing, stale, probs, len(wanted)
