"""Checks of the IPIP scenario's results against the plan, shared by the pytest scenario (tests/integration/
test_ipip.py) and molecule's ipip scenario: routes, tun0, workload MTU, cali-INPUT-ipip, encapsulation counters
per host and on the router, the ping matrix, and that calico_tunnel would change nothing again."""

from __future__ import annotations

import json

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel

SEGMENT = {"host-a": 1, "host-c": 1, "host-b": 2, "host-d": 2}
RR_REFLECTOR = {1: "host-a", 2: "host-b"}  # step rr_*: each segment's reflector (netfleet_ipip.REFLECTORS)


def cross(a, b):
    return SEGMENT[a] != SEGMENT[b]


def read(path):
    return path.read_text() if path.exists() else ""


def counters(text):
    out = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 8:
            out[" ".join([parts[2], parts[-2], parts[-1]])] = int(parts[0])
    return out


def expected_routes(facts, host, step):
    """block -> (gateway, device) that BIRD must have installed on ``host`` after ``step``; (None, None) for a
    block it cannot reach (never, other segment)."""
    from netfleet_ipip import step_mode

    mode, topology = step_mode(step)
    ip = {h: o["node_ip"] for h, o in facts["hosts"].items()}
    want = {}
    for other, o in facts["hosts"].items():
        if other == host:
            continue
        peer = other
        if topology == "route_reflector":
            mine = RR_REFLECTOR[SEGMENT[host]]
            if host != mine:  # a client: every block through its rack's reflector (next hop self), on its segment
                peer = mine
            elif cross(host, other):  # a reflector: other racks' blocks through their reflector (eBGP)
                peer = RR_REFLECTOR[SEGMENT[other]]
        if mode == "never" and cross(host, peer):
            want[o["block"]] = (None, None)  # the router knows nothing of containers
        else:
            tunnelled = mode == "always" or (mode == "cross_subnet" and cross(host, peer))
            want[o["block"]] = (ip[peer], "tun0" if tunnelled else "eth0")
    return want


def check_step(d, facts, step, report, label="ipip vm"):
    """Problems in one step's results folder (d) against the plan; and how many hosts the re-plan check ran on."""
    from netfleet_ipip import step_mode

    mode, _topology = step_mode(step)
    problems = []
    checked_again = 0
    for host in facts["hosts"]:
        links = {link["ifname"]: link for link in json.loads(read(d / f"links-{host}.json") or "[]")}
        if mode == "never":
            if "tun0" in links:
                problems.append(f"{step}: {host} still has tun0")
        else:
            t = links.get("tun0")
            if not t or t["linkinfo"]["info_kind"] != "ipip" or t["mtu"] != links["eth0"]["mtu"] - 20 \
                    or t["linkinfo"]["info_data"].get("local") != facts["hosts"][host]["node_ip"]:
                problems.append(f"{step}: {host} tun0 wrong: {t}")
        got = {}
        for r in json.loads(read(d / f"routes-{host}.json") or "[]"):
            if r.get("type", "unicast") == "unicast":
                got[r["dst"]] = (r.get("gateway"), r.get("dev"))
            else:
                got[r["dst"]] = (None, None)
            if r.get("dev") == "tun0" and "onlink" not in r.get("flags", []):
                problems.append(f"{step}: {host} tunnel route without onlink: {r}")
        want = expected_routes(facts, host, step)
        if got != want:
            problems.append(f"{step}: {host} BIRD routes {got} != plan {want}")
        # the host encapsulates toward exactly the next hops it routes through tun0
        post = counters(read(d / f"post-{host}.txt"))
        tunnel_hops = {gw for gw, dev in want.values() if dev == "tun0"}
        for other, o in facts["hosts"].items():
            n = post.get(f"4 0.0.0.0/0 {o['node_ip']}", 0)
            if other != host and (n > 0) != (o["node_ip"] in tunnel_hops):
                problems.append(f"{step}: {host} -> {other}: {n} encapsulated packets, expected "
                                f"{'some' if o['node_ip'] in tunnel_hops else 'none'}")
        wl_link = read(d / f"wl-link-{host}.json")  # the site.yml phase reads the workload's side too
        if wl_link and json.loads(wl_link)[0]["mtu"] != (1500 if mode == "never" else links["eth0"]["mtu"] - 20):
            problems.append(f"{step}: {host} workload MTU {json.loads(wl_link)[0]['mtu']} in mode {mode}")
        chain = read(d / f"filter-{host}.txt")
        if (mode == "never") == ("cali-INPUT-ipip" in chain):
            problems.append(f"{step}: {host} cali-INPUT-ipip {'left behind' if mode == 'never' else 'missing'}")
        # A second converge changes nothing: calico_tunnel's own planning (module_utils.tunnel, what the
        # module decides `changed` from) held against the VM kernel's real device and chain after the step.
        ipip = facts["ipip"][step][host]
        device = tunnel.describe(tunnel.find_link(list(links.values()), ipip["device"]))
        again = tunnel.plan_device(device, ipip["device"], ipip["enabled"], facts["hosts"][host]["node_ip"],
                                   links["eth0"]["mtu"] - tunnel.IPIP_OVERHEAD)
        if again:
            problems.append(f"{step}: {host} calico_tunnel would change the device again: {again}")
        again = tunnel.plan_chain(chain, "cali-INPUT-ipip", ipip["enabled"], ipip["allow_from"])
        if again is not None:
            problems.append(f"{step}: {host} calico_tunnel would rewrite cali-INPUT-ipip again:\n{again}")
        checked_again += 1
    pings = [line.split() for line in read(d / "pings.txt").splitlines()]
    if len(pings) != 12:
        problems.append(f"{step}: {len(pings)} pings recorded")
    for src, dst, rc in pings:
        should = not (mode == "never" and cross(src, dst))
        if (rc == "0") != should:
            problems.append(f"{step}: ping {src} -> {dst} rc={rc}, expected {'success' if should else 'failure'}")
    router = counters(read(d / "router.txt"))
    ipip = sum(v for k, v in router.items() if k.startswith("4 "))
    plain = sum(v for k, v in router.items() if not k.startswith("4 "))
    report(f"{label} {step}: router saw {ipip} IPIP packets, {plain} plain container packets")
    if mode == "never" and ipip:
        problems.append(f"{step}: router saw IPIP in mode never")
    if mode != "never" and (not ipip or plain):
        problems.append(f"{step}: router IPIP={ipip} plain={plain} (cross-segment must all be encapsulated)")
    return problems, checked_again
