"""A fabric plan (the real fabric filter on plain dicts) and the calico_bgp_status results of a converged
fleet for it, for the status_report and fabric_topology unit tests to break."""

from __future__ import annotations

import copy

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import protocol_name


def rack_plan(racks=2, hosts_per_rack=2, reflectors=None, floating=False, names=None, extra=None, dual=False,
              spines=False):
    """racks × (reflector(s) + hosts), route_reflector topology, rack i on 10.<i>.0.0/24; ``extra``: more variables
    of every host; ``dual``: dual stack (IPv6 pool fd00:17::/48, rack i's hosts on fd00:<i>::/64, one reflector
    per rack; with ``floating`` every workload an IPv6 floating IP too); ``spines``: two spine routers (AS 65100)
    on the reflectors' spine segment."""
    hostvars, groups = {}, {"all": [], "calico_nodes": [], "calico_route_reflectors": [], "calico_racks": []}
    rack_names = []
    for r in range(1, racks + 1):
        rack = "rack%d" % r
        rack_names.append(rack)
        groups[rack] = []
        n_rr = (reflectors or {}).get(rack, 1)
        members = [("rr%d%s" % (r, "abcdefgh"[i]) if n_rr > 1 else "rr%d" % r, True) for i in range(n_rr)]
        members += [("r%dh%d" % (r, i), False) for i in range(1, hosts_per_rack + 1)]
        for i, (name, is_rr) in enumerate(members):
            name = (names or {}).get(name, name)
            hv = {"calico_pool": "172.16.0.0/12", "calico_block_prefix": 24, "calico_bgp_topology": "route_reflector",
                  "calico_as_number": 65000 + r, "calico_node_ip": "10.%d.%d.%d" % (r // 250, r % 250, i + 1),
                  "calico_rr_spine_ip": "10.255.%d.%d" % (r // 250, r % 250) if is_rr and i == 0 else None}
            if is_rr and i > 0:
                hv["calico_rr_spine_ip"] = "10.254.%d.%d" % (r % 250, i)
            if dual:
                hv.update(calico_pool_v6="fd00:17::/48", calico_node_ip_v6="fd00:%x::%x" % (r, i + 1))
                if is_rr:
                    hv["calico_rr_spine_ip_v6"] = "fd00:255::%x" % r
            if not is_rr:
                workload = {"name": "r%dw%d" % (r, i)}
                if floating:
                    workload["floating_ip"] = "10.99.%d.%d" % (r, i)
                    if dual:
                        workload["floating_ip6"] = "fd00:99:%x::%x" % (r, i)
                hv["calico_workloads"] = [workload]
            hv.update(extra or {})
            hostvars[name] = {k: v for k, v in hv.items() if v is not None}
            groups[rack].append(name)
            groups["all"].append(name)
            groups["calico_racks"].append(name)
            groups["calico_route_reflectors" if is_rr else "calico_nodes"].append(name)
    if spines:
        for name in list(hostvars):
            hostvars[name]["calico_spine_as_number"] = 65100
        for i in (1, 2):
            hostvars["sp%d" % i] = {k: v for k, v in hostvars[groups["all"][0]].items()
                                    if k in ("calico_pool", "calico_pool_v6", "calico_bgp_topology",
                                             "calico_spine_as_number")}
            hostvars["sp%d" % i].update(calico_node_ip="10.255.0.%d" % (200 + i))
            if dual:
                hostvars["sp%d" % i]["calico_node_ip_v6"] = "fd00:255::%x" % (0xf0 + i)
        groups["calico_spines"] = ["sp1", "sp2"]
    return fabric(hostvars, groups, racks=rack_names)


def converged_statuses(plan):
    """What calico_bgp_status returns on every host of a converged fabric for ``plan``."""
    blocks = {h: p["block"] for h, p in plan["hosts"].items() if p["block"]}
    out = {}
    for h, p in plan["hosts"].items():
        sessions = [{"name": protocol_name(peer, plan["topology"], p["role"]), "description": peer["name"],
                     "peer_ip": peer["ip"], "peer_as": peer["as_number"], "local_as": p["as_number"],
                     "type": peer["type"], "state": "up", "since": "2026-12-01 20:00:00", "info": "Established",
                     "established": True, "imported": 1, "exported": 1, "last_error": ""} for peer in p["peers"]]
        # calico_bgp_ipv6_sessions: the IPv6 session beside each IPv4 one
        sessions += [dict(s, name=protocol_name(dict(peer, ip=peer["ip_v6"]), plan["topology"], p["role"]),
                          peer_ip=peer["ip_v6"]) for s, peer in zip(list(sessions), p["peers"]) if peer.get("ip_v6")]
        routes = {"bird": [{"dest": b, "gateway": "10.0.0.1", "dev": "eth0"} for o, b in blocks.items() if o != h],
                  "workloads": [{"dest": w["ip"], "dev": w["ifname"], "gateway": None} for w in p["workloads"]],
                  "blackholes": [p["block"]] if p["block"] else [], "owned": []}
        routes["bird"] += [{"dest": f.split("/")[0], "gateway": "10.0.0.1", "dev": "eth0"}
                           for f in plan["floating_ips"] if f not in p.get("floating_ips", [])]
        out[h] = {"bird_running": True, "sessions": sessions, "routes": routes, "changed": False}
        if plan.get("pool_v6"):
            out[h]["routes6"] = {
                "bird": [{"dest": b, "gateway": "fd00:1::1", "dev": "eth0"}
                         for o, q in plan["hosts"].items() if o != h for b in q["blocks_v6"]],
                "workloads": [{"dest": w["ip6"], "dev": w["ifname"], "gateway": None} for w in p["workloads"]],
                "blackholes": list(p["blocks_v6"]), "owned": []}
            out[h]["routes6"]["bird"] += [{"dest": f.split("/")[0], "gateway": "fd00:1::1", "dev": "eth0"}
                                          for f in plan["floating_ips_v6"] if f not in p.get("floating_ips_v6", [])]
    return out


def bird_down(statuses, plan, host):
    """``host``'s BIRD stopped: it answers nothing, its routes are gone, its peers try to reconnect."""
    st = copy.deepcopy(statuses)
    st[host] = {"bird_running": False, "sessions": [], "bird_error": "Unable to connect to server control socket",
                "routes": dict(st[host]["routes"], bird=[])}
    gone = plan["hosts"][host]["block"]
    ips = {plan["hosts"][host]["node_ip"], plan["hosts"][host].get("spine_ip")}
    for h, s in st.items():
        if h == host:
            continue
        for sess in s["sessions"]:
            if sess["peer_ip"] in ips:
                sess.update(state="start", info="Active", established=False)
        s["routes"]["bird"] = [r for r in s["routes"]["bird"] if r["dest"] != gone]
    return st
