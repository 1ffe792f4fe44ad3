"""The machine lab from a test's side: commands inside a machine, reboots, BIRD sessions, the spine's FRR and
workload pings seen through each machine's leader (tests/integration/test_machines.py)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import time

from netfleet_lab import ControllerLab, namespaces, sh

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine

COUNTERS = re.compile(r"\[\d+:\d+\]")
NHID = re.compile(r"nhid \d+ ")  # zebra's next-hop object ids: numbered anew at every start of FRR


class MachineLab(ControllerLab):
    def reload(self):
        super().reload()
        self.spines = sorted(self._members("calico_spines"))

    def machines(self):
        """Every machine of the lab: the BIRD hosts and the spine routers."""
        return self.speakers() + self.spines

    def machine_dir(self, host):
        return f"/run/netfleet/{self.prefix}/machines/{host}"

    def leader(self, host):
        return lab_machine.leader(self.machine_dir(host))

    def inside(self, host, *argv, check=True):
        """Run a command inside the machine (its mount, pid, network, uts and ipc namespaces)."""
        return sh(["nsenter", "-t", str(self.leader(host)), "-m", "-p", "-n", "-u", "-i", *argv], check=check)

    def system_state(self, host):
        leader = self.leader(host)
        if leader is None:
            return None
        return self.inside(host, "systemctl", "is-system-running", check=False).stdout.strip()

    def reboot(self, hosts):
        """`systemctl reboot` inside each machine; returns their leaders before (a new leader = booted again)."""
        old = {h: self.leader(h) for h in hosts}
        for host in hosts:
            self.inside(host, "systemctl", "reboot", check=False)
        return old

    def wait_booted(self, old, timeout=60):
        deadline = time.monotonic() + timeout
        pending = set(old)
        while pending and time.monotonic() < deadline:
            for host in sorted(pending):
                leader = self.leader(host)
                if leader not in (None, old[host]) and self.system_state(host) in ("running", "degraded"):
                    pending.discard(host)
            time.sleep(0.1)
        assert not pending, {h: self.system_state(h) for h in pending}

    def sessions(self, host):
        out = self.inside(host, "birdc", "show", "protocols", check=False).stdout
        # Name Proto Table State Since(date time) Info
        return {p[0]: (p[6] if len(p) > 6 else p[3]) for p in map(str.split, out.splitlines())
                if len(p) >= 6 and p[1] == "BGP"}

    def established(self):
        return all(s and set(s.values()) == {"Established"} for s in map(self.sessions, self.speakers()))

    def workloads_in(self, host):
        """{workload netns path seen from here: its IPv4 address} of a node's workloads (inside its machine)."""
        root = f"/proc/{self.leader(host)}/root/run/netns"
        found = {}
        for name in self.workloads(host):
            path = f"{root}/calico-{name}"
            out = sh(["nsenter", f"--net={path}", "ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=False)
            m = re.search(r"inet (\S+)/32", out.stdout)
            found[path] = m.group(1) if m else None
        return found

    def ping_matrix(self):
        wls = {p: ip for h in self.nodes for p, ip in self.workloads_in(h).items()}
        pairs = [(s, d) for s in wls for d in wls.values() if wls[s] != d]
        if None in wls.values():
            return [f"no address: {[p for p, ip in wls.items() if ip is None]}"]

        def ping(pair):
            r = sh(["nsenter", f"--net={pair[0]}", "ping", "-n", "-q", "-c", "1", "-W", "1", pair[1]], check=False)
            return r.returncode == 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            ok = list(pool.map(ping, pairs))
        return [f"{s} -> {d}" for (s, d), good in zip(pairs, ok) if not good]

    def kernel(self, host):
        """What a reboot must bring back: routes, cali-* rules and forwarding of the host's namespace."""
        ns = ["ip", "netns", "exec", self.netns(host)]
        rules = sh([*ns, "iptables-save"]).stdout
        return {
            "routes": sorted(NHID.sub("", line)
                             for line in sh(["ip", "-n", self.netns(host), "-4", "route", "show"]).stdout.splitlines()),
            "cali": sorted(COUNTERS.sub("", line) for line in rules.splitlines() if "cali-" in line),
            "ip_forward": sh([*ns, "cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip(),
        }

    # --- the spine (FRR), seen from inside its machine ----------------------

    def vtysh(self, spine, *commands):
        return self.inside(spine, "vtysh", *(arg for c in commands for arg in ("-c", c))).stdout

    def spine_peers(self, spine):
        """{reflector's spine address: (state, times the session was Established)} seen by the spine."""
        peers = json.loads(self.vtysh(spine, "show bgp summary json")).get("ipv4Unicast", {}).get("peers", {})
        return {ip: (p["state"], p.get("connectionsEstablished")) for ip, p in peers.items()}

    def spine_table(self, spine):
        return sorted(json.loads(self.vtysh(spine, "show bgp ipv4 unicast json")).get("routes", {}))

    def blocks(self):
        """The racks' blocks: each host's proto-80 blackhole, inside its machine's namespace."""
        out = set()
        for host in self.nodes:
            routes = self.inside(host, "ip", "-4", "route", "show", "proto", "80", "type", "blackhole").stdout
            out |= {line.split()[1] for line in routes.splitlines() if line.startswith("blackhole")}
        return sorted(out)

    def frr_daemons(self, spine):
        """Which of FRR's daemons run on the spine (staticd, Debian's default, is left out)."""
        return {name for name in ("zebra", "bgpd", "bfdd", "watchfrr")
                if self.inside(spine, "pgrep", "-x", name, check=False).returncode == 0}

    def spines_converged(self):
        """Every spine's sessions Established and its table exactly the racks' blocks."""
        blocks = self.blocks()
        for spine in self.spines:
            peers = self.spine_peers(spine) if self.leader(spine) else {}
            if not peers or {s for s, _n in peers.values()} != {"Established"} or self.spine_table(spine) != blocks:
                return False
        return True


def converge_time(lab, t0, timeout=90):
    """Seconds from t0 until every BGP session (BIRD's and the spines') is Established, every spine's table holds
    exactly the racks' blocks and every workload pair answers (checked every 0.2 s)."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if lab.established() and lab.spines_converged() and not lab.ping_matrix():
            return time.monotonic() - t0
        time.sleep(0.2)
    spines = {s: (lab.spine_peers(s), lab.spine_table(s)) for s in lab.spines if lab.leader(s)}
    raise AssertionError(f"not converged within {timeout} s: sessions "
                         f"{ {h: lab.sessions(h) for h in lab.speakers()} }, spines (peers, table) {spines} "
                         f"(blocks {lab.blocks()}), failed pings {lab.ping_matrix()[:5]}")


def free_prefix(tag):
    """A lab prefix (NETFLEET_LAB_PREFIX, else t, then tag and a random byte) no other lab uses (namespaces or
    state directories)."""
    taken = {n.split("-", 1)[0] for n in namespaces()}
    if os.path.isdir("/run/netfleet"):
        taken |= set(os.listdir("/run/netfleet"))
    base = os.environ.get("NETFLEET_LAB_PREFIX", "t")
    prefix = None
    for _attempt in range(64):
        prefix = f"{base}{tag}{os.urandom(1).hex()}"
        if prefix not in taken:
            break
    return prefix
