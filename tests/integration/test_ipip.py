"""Scenario ``ipip`` (issue #4) on inventories/lab-ipip: two segments joined by a plain router.

Two halves, both real:

1. ``test_site_never_on_this_kernel``: the real site.yml converge on this machine's kernel (which has
   no ipip) in mode never -- twice, the second run ``changed=0``; BGP runs multihop through the router;
   same-segment workloads reach each other, cross-segment ones cannot (the router knows nothing of
   containers); no tun0, no cali-INPUT-ipip, workload MTU 1500.
2. ``test_modes_in_vm``: Debian's kernel booted ONCE with virtme-ng (design §4), in two phases:
   a. every mode, natively: a site.yml run takes about 30 s there (Python is slow under software
      emulation), so the host plans and renders everything with the collection's code and the VM
      applies it with native tools (tests/lib/netfleet_ipip.py): always -> cross_subnet -> never ->
      always on the full mesh, then cross_subnet on the reflector topology (a rack per segment, host-a
      and host-b its reflectors: only they tunnel, to each other; their clients route through them),
      asserting after each step BIRD's routes against the plan (no stale tunnel route), the ping
      matrix, IP protocol 4 counted on the router and per host; in always a 10 MB TCP transfer,
      ``ping -M do`` at the path MTU, one byte more refused with an error, and IPIP from a non-fabric
      address dropped by cali-INPUT-ipip;
   b. the real site.yml, from this machine over ssh into the VM (tests/lib/netfleet_ipip_site.py), on
      a bare lab: mode cross_subnet twice, then mode always twice; every second run ``changed=0``;
      after each: tun0, the routes (cross_subnet: tunnel to the other segment, direct in the own one;
      always: every peer through tun0), cali-INPUT-ipip, the workloads' MTU, the ping matrix and which
      packets the router and each host saw encapsulated.
   A VM that cannot start fails the test; it is never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
from netfleet_lab import REPO, Lab, ns_json, sh

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-ipip"
SEGMENT = {"host-a": 1, "host-c": 1, "host-b": 2, "host-d": 2}
RR_REFLECTOR = {1: "host-a", 2: "host-b"}  # step rr_*: each segment's reflector (netfleet_ipip.REFLECTORS)
VM_BUDGET = 270  # seconds for boot + scenario; with the ~25 s of the first half, under 5 minutes of CI
VM_HARD_LIMIT = 600  # a run past this is a hang, not a slow machine (software emulation varies with load)


def cross(a, b):
    return SEGMENT[a] != SEGMENT[b]


# --------------------------------------------------------------------------- 1. site.yml, this kernel


@pytest.fixture(scope="module")
def lab():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "ip"
    lab = Lab(INVENTORY, prefix)
    with lab.running():
        yield lab


def test_site_never_on_this_kernel(lab, report):
    start = time.monotonic()
    lab.playbook("site.yml", "-e", "calico_ipip_mode=never")
    first = time.monotonic() - start
    again = lab.playbook("site.yml", "-e", "calico_ipip_mode=never")
    report(f"ipip lab-ipip site.yml (never, this kernel): {first:.1f} s, second run "
           f"{time.monotonic() - start - first:.1f} s")
    changed = {h: r["changed"] for h, r in again.recap.items() if r["changed"]}
    assert not changed, f"second converge changed: {changed}\n{again.stdout[-4000:]}"
    for host in lab.nodes:
        assert not [link for link in ns_json(lab.netns(host), "link", "show") if link["ifname"] == "tun0"]
        assert "cali-INPUT-ipip" not in sh(["ip", "netns", "exec", lab.netns(host), "iptables-save"]).stdout
        wl = lab.workloads(host)[0]
        assert ns_json(lab.workload_netns(host, wl), "link", "show", "dev", "eth0")[0]["mtu"] == 1500
    deadline = time.monotonic() + 30
    while True:  # multihop sessions across the router come up a little later
        sessions = {h: lab.sessions(h) for h in lab.nodes}
        down = {h: [n for n, s in v.items() if s[2] != "Established"] for h, v in sessions.items()}
        if not any(down.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not any(down.values()), f"BGP sessions not Established: {down}"
    ips = {h: lab.workload_ip(h, lab.workloads(h)[0]) for h in lab.nodes}
    for src in lab.nodes:
        for dst in lab.nodes:
            if src != dst:
                ok = lab.ping(lab.workload_netns(src, lab.workloads(src)[0]), ips[dst])
                assert ok is not cross(src, dst), f"never: {src} -> {dst} ping {'passed' if ok else 'failed'}"


# --------------------------------------------------------------------------- 2. the modes, in the VM


def _read(path):
    return path.read_text() if path.exists() else ""


def _counters(text):
    out = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 8:
            out[" ".join([parts[2], parts[-2], parts[-1]])] = int(parts[0])
    return out


def _expected_routes(facts, host, step):
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


def _check_step(d, facts, step, report, label="ipip vm"):
    """Problems in one step's results folder (d) against the plan; and how many hosts the re-plan check ran on."""
    from netfleet_ipip import step_mode

    mode, _topology = step_mode(step)
    problems = []
    checked_again = 0
    for host in facts["hosts"]:
        links = {link["ifname"]: link for link in json.loads(_read(d / f"links-{host}.json") or "[]")}
        if mode == "never":
            if "tun0" in links:
                problems.append(f"{step}: {host} still has tun0")
        else:
            t = links.get("tun0")
            if not t or t["linkinfo"]["info_kind"] != "ipip" or t["mtu"] != links["eth0"]["mtu"] - 20 \
                    or t["linkinfo"]["info_data"].get("local") != facts["hosts"][host]["node_ip"]:
                problems.append(f"{step}: {host} tun0 wrong: {t}")
        got = {}
        for r in json.loads(_read(d / f"routes-{host}.json") or "[]"):
            if r.get("type", "unicast") == "unicast":
                got[r["dst"]] = (r.get("gateway"), r.get("dev"))
            else:
                got[r["dst"]] = (None, None)
            if r.get("dev") == "tun0" and "onlink" not in r.get("flags", []):
                problems.append(f"{step}: {host} tunnel route without onlink: {r}")
        want = _expected_routes(facts, host, step)
        if got != want:
            problems.append(f"{step}: {host} BIRD routes {got} != plan {want}")
        # the host encapsulates toward exactly the next hops it routes through tun0
        post = _counters(_read(d / f"post-{host}.txt"))
        tunnel_hops = {gw for gw, dev in want.values() if dev == "tun0"}
        for other, o in facts["hosts"].items():
            n = post.get(f"4 0.0.0.0/0 {o['node_ip']}", 0)
            if other != host and (n > 0) != (o["node_ip"] in tunnel_hops):
                problems.append(f"{step}: {host} -> {other}: {n} encapsulated packets, expected "
                                f"{'some' if o['node_ip'] in tunnel_hops else 'none'}")
        wl_link = _read(d / f"wl-link-{host}.json")  # the site.yml phase reads the workload's side too
        if wl_link and json.loads(wl_link)[0]["mtu"] != (1500 if mode == "never" else links["eth0"]["mtu"] - 20):
            problems.append(f"{step}: {host} workload MTU {json.loads(wl_link)[0]['mtu']} in mode {mode}")
        chain = _read(d / f"filter-{host}.txt")
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
    pings = [line.split() for line in _read(d / "pings.txt").splitlines()]
    if len(pings) != 12:
        problems.append(f"{step}: {len(pings)} pings recorded")
    for src, dst, rc in pings:
        should = not (mode == "never" and cross(src, dst))
        if (rc == "0") != should:
            problems.append(f"{step}: ping {src} -> {dst} rc={rc}, expected {'success' if should else 'failure'}")
    router = _counters(_read(d / "router.txt"))
    ipip = sum(v for k, v in router.items() if k.startswith("4 "))
    plain = sum(v for k, v in router.items() if not k.startswith("4 "))
    report(f"{label} {step}: router saw {ipip} IPIP packets, {plain} plain container packets")
    if mode == "never" and ipip:
        problems.append(f"{step}: router saw IPIP in mode never")
    if mode != "never" and (not ipip or plain):
        problems.append(f"{step}: router IPIP={ipip} plain={plain} (cross-segment must all be encapsulated)")
    return problems, checked_again


def _site_phase(vm, site, report):
    """Phase b: site.yml twice per mode (cross_subnet, then always) from this machine, over ssh into the VM, the
    VM's state measured after each second run; problems found."""
    from netfleet_ipip_site import PREFIX, STEPS

    controller = Lab(INVENTORY, PREFIX)  # this machine's ansible-playbook, the VM's hosts (the -i overlay)
    problems = []
    for mode in STEPS:
        recaps = []
        for run in ("first", "second"):
            start = time.monotonic()
            proc = controller.playbook("site.yml", "-i", str(site["inventory"]), "-e", f"calico_ipip_mode={mode}",
                                       timeout=400)
            report(f"ipip vm site.yml ({mode}, over ssh into the VM) {run} run: {time.monotonic() - start:.0f} s")
            assert set(site["facts"]["hosts"]) <= set(proc.recap), f"no recap for every host:\n{proc.stdout[-3000:]}"
            recaps.append({h: proc.recap[h]["changed"] for h in site["facts"]["hosts"]})
        if not all(recaps[0].values()):
            problems.append(f"site.yml's first run in mode {mode} left a host unchanged: {recaps[0]}")
        changed = {h: n for h, n in recaps[1].items() if n}
        if changed:
            problems.append(f"site.yml's second run in mode {mode} changed {changed}:\n{proc.stdout[-4000:]}")
        report(f"ipip vm site.yml ({mode}): first run changed {sum(recaps[0].values())} tasks, second run "
               f"{sum(recaps[1].values())}")
        vm.ssh(f"bash {site['measure'][mode]}", timeout=180)
    return problems


def test_modes_in_vm(report):
    from netfleet_ipip import STEPS, build
    from netfleet_ipip_site import build as build_site
    from netfleet_vm import Vm, VmError

    work = REPO / ".lab" / f"ipip-vm-{os.environ.get('NETFLEET_LAB_PREFIX', 't')}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "site").mkdir()
    vm = Vm(REPO / "tests" / "vm" / "guest.sh", work / "site", rwdirs=[work])
    site = build_site(work / "site", vm)
    script, facts = build(work, then=site["script"])
    vm.command_args = [str(script)]
    start = time.monotonic()
    problems = []
    vm.start()
    try:
        try:
            vm.wait_ready("guest: ready", VM_HARD_LIMIT)
        except VmError as exc:
            out = vm.output()
            assert "guest: kernel" in out, f"the VM did not start or lacks ipip:\n{out[-5000:]}"
            raise AssertionError(f"guest script failed: {exc}") from None
        walked = time.monotonic() - start
        problems += _site_phase(vm, site, report)
    finally:
        rc = vm.stop()
    elapsed = time.monotonic() - start
    out = vm.output()
    report(f"ipip vm: boot + native walk {walked:.0f} s, site.yml phase {elapsed - walked:.0f} s, "
           f"{elapsed:.0f} s in all (vng rc={rc})")
    for line in out.splitlines():
        if line.startswith("guest: "):
            report(f"ipip vm {line}")
    assert "guest: done" in out and rc == 0, f"guest script failed (rc={rc}):\n{out[-8000:]}"
    for step in site["facts"]["steps"]:
        found, _n = _check_step(work / "site" / "results" / step, site["facts"], step, report, label="ipip vm site.yml")
        problems += found
    res = work / "results"
    checked_again = 0
    for step in STEPS:
        found, n = _check_step(res / step, facts, step, report)
        problems += found
        checked_again += n
    a = res / "always"
    ok = _read(a / "pmtu-ok.txt")
    big = _read(a / "pmtu-big.txt")
    if not ok.strip().endswith("\n0") and ok.strip().splitlines()[-1:] != ["0"]:
        problems.append(f"ping -M do -s 1452 (path MTU 1480) failed:\n{ok}")
    if big.strip().splitlines()[-1:] == ["0"] or not re.search(r"message too long|mtu ?= ?1480|frag needed", big, re.I):
        problems.append(f"ping -M do -s 1453 must fail with an error:\n{big}")
    try:  # iperf3 -n 10M: the client sends 10 MiB over TCP and ends without error only once they are through
        transfer = json.loads(_read(a / "transfer.json"))
        sent = transfer["end"]["sum_sent"]["bytes"]
        report(f"ipip vm: 10 MiB over IPIP a1->b1 at {transfer['end']['sum_received']['bits_per_second'] / 1e6:.0f} "
               "Mbit/s")
        if "error" in transfer or sent < 10 * 1024 * 1024 or transfer["end"]["sum_received"]["bytes"] <= 0:
            problems.append(f"10 MiB transfer incomplete: sent {sent} bytes, error {transfer.get('error')}")
    except (ValueError, KeyError) as exc:
        problems.append(f"10 MB transfer failed: {exc}: {_read(a / 'transfer.json')[-1500:]}")
    drops = [sum(int(line.split()[0]) for line in _read(a / f).splitlines()[2:] if " DROP " in f" {line} ")
             for f in ("chain-before.txt", "chain-after.txt")]
    if drops[1] < drops[0] + 2:
        problems.append(f"IPIP from a non-fabric address not dropped by cali-INPUT-ipip: {drops}")
    report(f"ipip vm: calico_tunnel's plan against the VM's device and chain after each step: nothing left to "
           f"change on {checked_again} host-steps")
    expected = len(STEPS) * len(facts["hosts"])
    if checked_again != expected:
        problems.append(f"second-run check ran on {checked_again} host-steps, expected {expected}")
    assert not problems, "\n".join(problems) + "\n\nBGP (last step, host-a):\n" + _read(
        res / STEPS[-1] / "bgp-host-a.txt")[-3000:]
    report(f"ipip vm: {elapsed:.0f} s is {'within' if elapsed < VM_BUDGET else 'OVER'} the {VM_BUDGET} s budget "
           f"(load average {os.getloadavg()[0]:.1f})")
    assert elapsed < VM_HARD_LIMIT, f"the VM scenario took {elapsed:.0f} s (hard limit {VM_HARD_LIMIT} s)"
    shutil.rmtree(work, ignore_errors=True)  # kept for inspection when an assertion failed
