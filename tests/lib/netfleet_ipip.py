"""The IPIP VM's first phase: plan and render on the host, apply and measure in the VM with native tools.

Python is 7x (a tight loop) to 20-30x (start-up and imports) slower in the software-emulated VM than
here, so a site.yml run there takes about 30 s (netfleet_ipip_site runs it, in two modes); walking every
mode that way would not fit the scenario's budget, so this phase runs no Python in the VM. The host
computes everything with the collection's own code -- the fabric plan (netfleet.calico.fabric) of
inventories/lab-ipip for each mode, bird.conf from roles/calico_node/templates/bird.conf.j2 with the
plan's BGP sessions, the tunnel device and cali-INPUT-ipip commands from module_utils.tunnel (what
calico_tunnel runs) -- and writes one bash script. The VM runs it: it wires the lab as lab_fabric does
(a fabric namespace with a bridge per segment, a plain router namespace, hosts with eth0 and a default
route), one workload per host made as calico_workloads makes it, BIRD per host, then walks the modes
always -> cross_subnet -> never -> always on the full mesh, and last cross_subnet on the reflector
topology (``rr_cross_subnet``: each segment a rack with its own AS, host-a and host-b its reflectors,
eBGP between them through the router, so only the reflectors tunnel and their clients route through
them), switching each as the role does (device first, then `birdc configure` with the new file), and
dumps routes, ping results and IP-protocol-4 counters per step into a results folder that the host test
reads and asserts on.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jinja2
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from ansible_collections.netfleet.calico.plugins.filter.bgp_sessions import FilterModule as _Sessions
from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.module_utils import tunnel
from ansible_collections.netfleet.calico.plugins.plugin_utils.values import bird_string

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab-ipip"
STEPS = ("always", "cross_subnet", "never", "always2", "rr_cross_subnet")
PREFIX = "vi"
# the reflector topology on the same lab: a rack (segment) per AS, one reflector each (a host with workloads)
REFLECTORS = {"rack1": "host-a", "rack2": "host-b"}
RR_AS = {"rack1": 64512, "rack2": 64513}


def step_mode(step):
    """``(mode, topology)`` of a walk step: ``always2`` is always again, ``rr_<mode>`` the reflector topology."""
    rr = step.startswith("rr_")
    return step.removeprefix("rr_").rstrip("2"), "route_reflector" if rr else "full_mesh"


def plan(step):
    """The fabric plan of inventories/lab-ipip in ``step``'s mode and topology (see ``step_mode``)."""
    mode, topology = step_mode(step)
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(INVENTORY)])
    inventory.groups["all"].set_variable("calico_ipip_mode", mode)
    if topology == "route_reflector":
        inventory.groups["all"].set_variable("calico_bgp_topology", topology)
        inventory.add_group("calico_route_reflectors")
        for rack, host in REFLECTORS.items():
            inventory.groups[rack].set_variable("calico_as_number", RR_AS[rack])
            inventory.add_host(host, group="calico_route_reflectors")
    hostvars = HostVars(inventory, VariableManager(loader=loader, inventory=inventory), loader)
    return fabric(hostvars, inventory.get_groups_dict()), hostvars


def render_bird(fab, host, state_dir):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "roles/calico_node/templates")),
                             trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["netfleet.calico.bird_string"] = bird_string  # the role's template quotes its strings with it
    p = fab["hosts"][host]
    sessions = _Sessions().filters()["bgp_sessions"](p, fab["topology"], {"sessions": []})
    return env.get_template("bird.conf.j2").render(
        ansible_managed="netfleet.calico (ipip VM scenario)", inventory_hostname=host, _calico_node_plan=p,
        calico_node_fabric=fab, _calico_node_bgp=sessions, _calico_node_bgp_lingering=[],
        calico_node_bird_log=f'"{state_dir}/bird.log"', calico_node_bgp_onlink=True,
        calico_node_bgp_graceful_restart=True, calico_node_bgp_password_file="", calico_node_bgp_connect_delay=2,
        calico_node_bgp_connect_retry=5, calico_node_bgp_error_wait=[5, 30], calico_node_route_protocol=80,
        calico_node_bgp_ttl_security=True, calico_node_bgp_hold_time=None)


def prepare_steps(workdir, steps):
    """``workdir`` with its ``results`` folder made, and the fabric plan per step (see ``plan``)."""
    workdir = Path(workdir)
    (workdir / "results").mkdir(parents=True, exist_ok=True)
    fabs, hostvars = {}, None
    for step in steps:
        fabs[step], hostvars = plan(step)
    return workdir, workdir / "results", fabs, hostvars


def bare_lab(fab, hostvars, prefix):
    """The lab as lab_fabric builds it, before site.yml: ``ip`` commands for the root (``root``) and per namespace
    (``per_ns``): a fabric namespace with a bridge per segment, a plain router namespace with the segments'
    gateways, hosts with eth0, their address and a default route; plus IP-protocol-4 counters (``mangle``) on the
    router (IPIP vs plain container packets forwarded) and per host (IPIP sent to each peer)."""
    hosts = sorted(fab["hosts"])
    segment = {h: str(hostvars[h]["lab_segment"]) for h in hosts}
    seg_names = sorted(set(segment.values()))
    fabric_ns, router = f"{prefix}-fabric", f"{prefix}-router"
    root = [f"netns add {fabric_ns}", f"netns add {router}"]
    per_ns = {fabric_ns: [], router: []}
    mangle = {router: ["-A FORWARD -p 4", "-A FORWARD -s 172.17.0.0/16", "-A FORWARD -d 172.17.0.0/16"]}
    for i, cidr in enumerate(seg_names):
        root.append(f"link add gw{i} netns {router} type veth peer name rt{i} netns {fabric_ns}")
        per_ns[fabric_ns] += [f"link add br{i} type bridge", f"link set br{i} up", f"link set rt{i} master br{i} up"]
        per_ns[router] += [f"addr add {cidr.rsplit('.', 1)[0]}.1/{cidr.split('/')[1]} dev gw{i}", f"link set gw{i} up"]
    for n, host in enumerate(hosts):
        cidr, ns = segment[host], f"{prefix}-{host}"
        root += [f"netns add {ns}", f"link add h{n} netns {fabric_ns} type veth peer name eth0 netns {ns}"]
        per_ns[fabric_ns].append(f"link set h{n} master br{seg_names.index(cidr)} up")
        per_ns[ns] = ["link set lo up", f"addr add {fab['hosts'][host]['node_ip']}/{cidr.split('/')[1]} dev eth0",
                      "link set eth0 up", f"route add default via {cidr.rsplit('.', 1)[0]}.1"]
        mangle[ns] = [f"-A POSTROUTING -p 4 -d {fab['hosts'][o]['node_ip']}" for o in hosts if o != host]
    return {"hosts": hosts, "segment": segment, "root": root, "per_ns": per_ns, "mangle": mangle}


def lab_lines(lab):
    """Shell lines building ``lab`` (bare_lab's, maybe extended): one ``ip -batch`` per namespace, counters."""
    lines = ["ip -batch - <<'EOF'", *lab["root"], "EOF"]
    for ns, cmds in lab["per_ns"].items():
        lines += [f"ip -n {ns} -batch - <<'EOF'", *cmds, "EOF"]
    for ns, rules in lab["mangle"].items():
        lines += [f"ip netns exec {ns} iptables-restore --noflush <<'EOF'", "*mangle", *rules, "COMMIT", "EOF"]
    return lines


def traffic_lines(hosts, out, ping_args):
    """Shell lines: zero the counters, every workload pings every other (in parallel; ``src dst rc`` lines in
    ``out``/pings.txt), then the router's and each host's IP-protocol-4 counters into ``out``. ``hosts``: host ->
    facts with ``workload`` and ``wl_ip``; ``$P``, ``nx`` as in the scripts."""
    lines = ["for ns in $P-router " + " ".join(f"$P-{h}" for h in hosts) + "; do nx $ns iptables -t mangle -Z; done"]
    for src in hosts:
        for dst in hosts:
            if src != dst:
                lines.append(f"( nx $P-{src}-{hosts[src]['workload']} ping -n {ping_args} -W 2 {hosts[dst]['wl_ip']} "
                             f">/dev/null 2>&1; echo \"{src} {dst} $?\" >> {out}/pings.txt ) &")
    lines += ["wait", f"nx $P-router iptables -t mangle -L FORWARD -v -x -n > {out}/router.txt"]
    return lines + [f"nx $P-{h} iptables -t mangle -L POSTROUTING -v -x -n > {out}/post-{h}.txt" for h in hosts]


def build(workdir, then=None):
    """Write the guest script and its files into ``workdir``; return (script path, facts for the assertions).

    ``then``: a guest script to ``exec`` once the walk is done and its BIRDs are stopped (netfleet_ipip_site's
    phase, in the same boot); without it the guest exits.
    """
    workdir, results, fabs, hostvars = prepare_steps(workdir, STEPS)
    fab0 = fabs["always"]
    lab = bare_lab(fab0, hostvars, PREFIX)
    hosts, root, per_ns = lab["hosts"], lab["root"], lab["per_ns"]
    facts = {"hosts": {}, "steps": list(STEPS)}
    # Every process start costs ~0.3 s in the emulated guest: one `ip -batch` per namespace, one
    # iptables-restore per namespace, sysctls written by the shell, pings in parallel.
    sysctls = {f"{PREFIX}-router": ["net/ipv4/ip_forward"]}
    mkdirs = []
    for host in hosts:
        hp = fab0["hosts"][host]
        wl = hp["workloads"][0]
        ns, wns, state = f"{PREFIX}-{host}", f"{PREFIX}-{host}-{wl['name']}", f"/run/nf{PREFIX}/{host}"
        facts["hosts"][host] = {"segment": lab["segment"][host], "node_ip": hp["node_ip"], "block": hp["block"],
                                "workload": wl["name"], "wl_ip": wl["ip"], "ifname": wl["ifname"]}
        mkdirs.append(state)
        # the workload, as calico_workloads makes it
        root += [f"netns add {wns}", f"link add {wl['ifname']} netns {ns} address ee:ee:ee:ee:ee:ee type veth "
                 f"peer name eth0 netns {wns}"]
        per_ns[ns] += [f"link set {wl['ifname']} up", f"route add {wl['ip']}/32 dev {wl['ifname']} proto 80 scope link",
                       f"route add blackhole {hp['block']} proto 80"]
        per_ns[wns] = ["link set lo up", f"addr add {wl['ip']}/32 dev eth0", "link set eth0 up",
                       "route add 169.254.1.1 dev eth0 scope link", "route add default via 169.254.1.1"]
        sysctls[ns] = ["net/ipv4/ip_forward", f"net/ipv4/conf/{wl['ifname']}/proxy_arp",
                       f"net/ipv4/conf/{wl['ifname']}/forwarding"]
    lines = ["#!/bin/bash", "set -u", f"R={shlex.quote(str(results))}", f"W={shlex.quote(str(workdir))}",
             f"P={PREFIX}", 'ipn() { ip -n "$1" "${@:2}"; }', 'nx() { ip netns exec "$@"; }',
             'mark() { echo "guest: $1 at ${SECONDS}s"; }', "mark 'building the lab'",
             "mkdir -p " + " ".join(mkdirs), *lab_lines(lab)]
    for ns, keys in sysctls.items():
        writes = "; ".join(f"echo 1 > /proc/sys/{k}" for k in keys)
        if ns != f"{PREFIX}-router":
            ifname = keys[1].split("/")[3]
            writes += f"; echo 0 > /proc/sys/net/ipv4/neigh/{ifname}/proxy_delay"
        lines.append(f"nx {ns} bash -c '{writes}'")
    current = {h: False for h in hosts}  # tunnel present?
    chain_state = {h: "" for h in hosts}
    for step in STEPS:
        fab = fabs[step]
        lines.append(f"mark 'step {step}'; S={step}; mkdir -p $R/$S")
        for host in hosts:
            hp = fab["hosts"][host]
            ns = f"$P-{host}"
            state = f"/run/nf{PREFIX}/{host}"
            ipip = hp["ipip"]
            present = ipip["enabled"]
            facts.setdefault("ipip", {}).setdefault(step, {})[host] = ipip
            before = ({"kind": "ipip", "local": hp["node_ip"], "remote": "any", "mtu": 1480, "up": True}
                      if current[host] else None)
            device_cmds = tunnel.plan_device(before, ipip["device"], present, hp["node_ip"], 1480)
            current[host] = present
            restore = tunnel.plan_chain(chain_state[host], "cali-INPUT-ipip", present, ipip["allow_from"])
            if restore:
                (workdir / f"iptables-{step}-{host}").write_text(restore)
                lines.append(f"nx {ns} iptables-restore --noflush < $W/iptables-{step}-{host}")
            chain_state[host] = (
                ":cali-INPUT-ipip - [0:0]\n" + "\n".join(
                    ["-A INPUT " + tunnel.jump_rule("cali-INPUT-ipip")]
                    + tunnel.desired_rules("cali-INPUT-ipip", ipip["allow_from"])) + "\n") if present else ""
            wl = facts["hosts"][host]
            mtu = 1480 if present else 1500
            lines += [f"ip -n {ns} -batch - <<'EOF'", *device_cmds, f"link set {wl['ifname']} mtu {mtu}", "EOF",
                      f"ipn $P-{host}-{wl['workload']} link set eth0 mtu {mtu}"]
            conf = workdir / f"bird-{step}-{host}.conf"
            conf.write_text(render_bird(fab, host, state))
            lines.append(f'printf "%s\\n" "$(<{conf})" > {state}/bird.conf')
            if step == STEPS[0]:
                lines.append(f"nx {ns} bird -c {state}/bird.conf -s {state}/bird.ctl -P {state}/bird.pid")
            else:
                lines.append(f"nx {ns} birdc -s {state}/bird.ctl configure >/dev/null")
        # wait until every host's planned sessions are Established (a topology change replaces them) and it has
        # a BIRD route for every remote block (some maybe unreachable)
        lines += ["for t in $(seq 1 40); do ok=1",
                  *[f"  [ $(nx $P-{h} birdc -s /run/nf{PREFIX}/{h}/bird.ctl show protocols | grep -c Established) "
                    f"-ge {len(fab['hosts'][h]['peers'])} ] || ok=0" for h in hosts],
                  *[f"  [ $(ipn $P-{h} -4 route show proto bird | wc -l) -ge {len(hosts) - 1} ] || ok=0"
                    for h in hosts],
                  "  [ $ok = 1 ] && break; sleep 1; done", "sleep 1", "mark 'routes in place'"]
        for h in hosts:
            lines.append(f"ipn $P-{h} -j -d link show > $R/$S/links-{h}.json")
            lines.append(f"ipn $P-{h} -j route show proto bird > $R/$S/routes-{h}.json")
            lines.append(f"nx $P-{h} iptables-save -t filter > $R/$S/filter-{h}.txt")
            lines.append(f"nx $P-{h} birdc -s /run/nf{PREFIX}/{h}/bird.ctl show protocols all > $R/$S/bgp-{h}.txt")
        lines += traffic_lines(facts["hosts"], "$R/$S", "-c 1")
        if step == "always":
            a, b = facts["hosts"]["host-a"], facts["hosts"]["host-b"]
            src, dst = f"$P-host-a-{a['workload']}", b["wl_ip"]
            lines += [
                f"nx {src} ping -n -c 1 -W 2 -M do -s 1452 {dst} > $R/$S/pmtu-ok.txt 2>&1; "
                "echo $? >> $R/$S/pmtu-ok.txt",
                f"nx {src} ping -n -c 1 -W 2 -M do -s 1453 {dst} > $R/$S/pmtu-big.txt 2>&1; echo $? >> "
                "$R/$S/pmtu-big.txt",
                f"nx $P-host-b-{b['workload']} iperf3 -s -1 >/dev/null 2>&1 & sleep 2",
                f"nx {src} iperf3 -c {dst} -n 10M -J > $R/$S/transfer.json 2>&1; wait",
                # a stranger (the router) sends IPIP to host-a: cali-INPUT-ipip must drop it
                "ipn $P-router link add x0 type ipip local 192.168.100.1 remote 192.168.100.100",
                "ipn $P-router addr add 10.99.0.1/32 dev x0; ipn $P-router link set x0 up",
                f"ipn $P-router route add {a['block']} dev x0",
                "nx $P-host-a iptables -L cali-INPUT-ipip -v -x -n > $R/$S/chain-before.txt",
                f"nx $P-router ping -n -c 2 -W 1 {a['wl_ip']} > /dev/null 2>&1",
                "nx $P-host-a iptables -L cali-INPUT-ipip -v -x -n > $R/$S/chain-after.txt",
                "ipn $P-router link del x0",
            ]
    lines += ["mark done", "for f in /run/nf$P/*/bird.pid; do kill $(cat $f) 2>/dev/null; done",
              f"exec {shlex.quote(str(then))}" if then else "exit 0"]
    script = workdir / "guest-ipip.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    (workdir / "facts.json").write_text(json.dumps(facts, indent=1))
    return script, facts
