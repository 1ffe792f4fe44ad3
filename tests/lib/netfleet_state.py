"""A lab fleet's state, normalised so that re-created objects compare equal (no interface indexes, no counters):
links, addresses, routes, cali-* rules, ipsets, sysctls, the files of every host's state directory, the processes
in each host's namespace (BIRD, the CNI agent) and the workloads' own namespaces. For "the same state again"
checks: after an interrupted run and the next, after a restore at boot."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

from netfleet_lab import namespaces, sh

COUNTERS = re.compile(r"\[\d+:\d+\]")


def ns_json(ns, *args):
    out = sh(["ip", "-n", ns, "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def netns_inode(ns):
    return os.stat(f"/run/netns/{ns}").st_ino


def processes_in(ns):
    """Names of the processes whose network namespace is `ns` (BIRD, the CNI agent)."""
    inode, found = netns_inode(ns), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                args = handle.read().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(args[0].decode())
        found.append("agent" if any(a.endswith(b"netfleet-calico-agent.py") for a in args) else name)
    return sorted(found)


def net_view(ns, macs=True):
    """Links, IPv4 addresses and routes of `ns`; `macs` False for a workload (the kernel picks its eth0's MAC
    anew whenever the workload is made again)."""
    links = sorted((link["ifname"], (link.get("linkinfo") or {}).get("info_kind"), link.get("mtu"),
                    link.get("address") if macs else None, link.get("ifalias"), "UP" in link.get("flags", []))
                   for link in ns_json(ns, "-d", "link", "show") if link["ifname"] != "lo")
    addrs = sorted((link["ifname"], f"{a['local']}/{a['prefixlen']}")
                   for link in ns_json(ns, "-4", "addr", "show") for a in link.get("addr_info", []))
    routes = sorted(tuple(str(r.get(k)) for k in ("type", "dst", "gateway", "dev", "protocol", "scope", "table"))
                    for r in ns_json(ns, "-4", "route", "show", "table", "all"))
    return {"links": links, "addrs": addrs, "routes": routes}


def host_view(lab, host):
    ns = lab.netns(host)
    view = net_view(ns)
    rules = []
    for table in ("filter", "nat", "mangle", "raw"):
        save = sh(["ip", "netns", "exec", ns, "iptables-save", "-t", table]).stdout
        rules += [f"{table} {COUNTERS.sub('[0:0]', line)}" for line in save.splitlines()
                  if "cali" in line and not line.startswith("#")]
    view["rules"] = sorted(rules)
    duplicates = sorted({r for r in rules if r.startswith(("filter -A", "nat -A")) and rules.count(r) > 1})
    assert not duplicates, f"{host}: duplicate rules {duplicates[:5]}"
    sets = sh(["ip", "netns", "exec", ns, "ipset", "save"]).stdout
    view["ipsets"] = sorted(line for line in sets.splitlines() if " cali-" in line)
    view["sysctl"] = sh(["ip", "netns", "exec", ns, "sh", "-c",
                         "grep -r . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/proxy_arp "
                         "/proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/neigh/*/proxy_delay | sort"]).stdout
    view["processes"] = processes_in(ns)
    state = lab.state_dir(host)
    files = []
    for root, _dirs, names in os.walk(state):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, state)
            if rel.startswith("cni/data/endpoints/") or rel in ("cni/cni.log", "bird.log") or "__pycache__" in rel:
                continue  # the plugin's records (none here), logs and bytecode come and go by design
            if rel.endswith(".pid"):
                files.append((rel, "pid"))  # a restarted daemon has a new pid
                continue
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as handle:
                    files.append((rel, hashlib.sha1(handle.read()).hexdigest()[:12]))
            else:
                files.append((rel, "socket" if stat.S_ISSOCK(os.lstat(path).st_mode) else "other"))
    view["files"] = sorted(files)
    return view


def fleet_view(lab):
    view = {host: host_view(lab, host) for host in lab.speakers()}
    view["namespaces"] = sorted(n for n in namespaces() if n.startswith(lab.prefix + "-"))
    for host, workload in lab.all_workloads():
        ns = lab.workload_netns(host, workload)
        view[f"{host}/{workload}"] = net_view(ns, macs=False) if os.path.exists(f"/run/netns/{ns}") else "missing"
    return view


def diff(before, after):
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            if isinstance(before.get(key), dict) and isinstance(after.get(key), dict):
                for part in sorted(set(before[key]) | set(after[key])):
                    if before[key].get(part) != after[key].get(part):
                        out.append(f"{key}.{part}: {before[key].get(part)!r} -> {after[key].get(part)!r}"[:600])
            else:
                out.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}"[:600])
    return out
