"""Test helpers for scenario tests on a real netns lab.

Everything here talks to the real kernel: namespaces made by lab/playbooks/lab_up.yml,
BIRD daemons started by site.yml. Nothing is mocked.

- NetnsBackend: a testinfra backend that runs commands inside a named network
  namespace with one `ip netns exec` (no ansible process per command).
- Lab: the lab described by an inventory (hosts, namespaces, workloads), with
  helpers to run playbooks and read the kernel state of each host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import testinfra
import testinfra.backend
import yaml
from testinfra.backend import base

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)")


class NetnsBackend(base.BaseBackend):
    """testinfra backend: `netns://<namespace>`."""

    NAME = "netns"

    def __init__(self, hostname, *args, **kwargs):
        self.netns = hostname
        super().__init__(hostname, *args, **kwargs)

    @classmethod
    def get_hosts(cls, host, **kwargs):
        return [host]

    def get_pytest_id(self):
        return "netns://" + self.netns

    def run(self, command, *args, **kwargs):
        cmd = self.get_command(command, *args)
        return self.run_local(shlex.join(["ip", "netns", "exec", self.netns, "/bin/sh", "-c", cmd]))


testinfra.backend.BACKENDS["netns"] = "netfleet_lab.NetnsBackend"


def netns_host(name):
    return testinfra.get_host("netns://" + name)


def sh(argv, check=True, **kw):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def ns_json(netns, *args):
    out = sh(["ip", "-n", netns, "-j", *args]).stdout
    return json.loads(out or "[]")


def spine_if(lab, host):
    """The interface of a reflector's spine leg (the one with its calico_rr_spine_ip)."""
    spine_ip = lab.hostvars[host]["calico_rr_spine_ip"]
    for link in ns_json(lab.netns(host), "-4", "addr", "show"):
        if any(a.get("local") == spine_ip for a in link.get("addr_info", [])):
            return link["ifname"]
    raise AssertionError(f"{host} has no interface with {spine_ip}")


def write_inventory(path, doc, source=REPO / "inventories" / "lab"):
    """An inventory directory: ``source``'s group_vars (copied once) and ``doc`` as its hosts.yml."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "group_vars").exists():
        shutil.copytree(source / "group_vars", path / "group_vars")
    (path / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def namespaces():
    return {line.split()[0] for line in sh(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}


class Lab:
    """A lab fleet built from an inventory with a run-specific prefix."""

    @contextlib.contextmanager
    def running(self):
        """lab_up on entry; lab_down on exit (also when a test failed), which must leave no namespace behind."""
        try:
            self.playbook("lab/playbooks/lab_up.yml")
            yield self
        finally:
            self.playbook("lab/playbooks/lab_down.yml", check=False)
            left = sorted(n for n in namespaces() if n.startswith(self.prefix + "-"))
            assert not left, f"lab_down left namespaces behind: {left}"

    def __init__(self, inventory, prefix):
        self.inventory = str(inventory)
        self.prefix = prefix
        self.env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV_BIN}:{os.environ['PATH']}")
        self.reload()

    def reload(self):
        data = json.loads(sh([str(VENV_BIN / "ansible-inventory"), "-i", self.inventory, "--list"],
                             env=self.env, cwd=REPO).stdout)
        self.hostvars = data["_meta"]["hostvars"]
        self.groups = {g: v for g, v in data.items() if g != "_meta"}
        self.nodes = sorted(self._members("calico_nodes"))
        self.reflectors = sorted(self._members("calico_route_reflectors") - set(self.nodes))

    def speakers(self):
        """Every host that runs BIRD: nodes and dedicated reflectors."""
        return self.nodes + self.reflectors

    def _members(self, group):
        g = self.groups.get(group, {})
        found = set(g.get("hosts", []))
        for child in g.get("children", []):
            found |= self._members(child)
        return found

    # --- names -----------------------------------------------------------
    def netns(self, host):
        return f"{self.prefix}-{host}"

    def workload_netns(self, host, workload):
        return f"{self.prefix}-{host}-{workload}"

    def state_dir(self, host):
        return f"/run/netfleet/{self.prefix}/{host}"

    def node_ip(self, host):
        return self.hostvars[host]["calico_node_ip"]

    def workloads(self, host):
        return [w["name"] for w in self.hostvars[host].get("calico_workloads", [])]

    def all_workloads(self):
        return [(h, w) for h in self.nodes for w in self.workloads(h)]

    # --- running things --------------------------------------------------
    def playbook(self, playbook, *args, check=True, inventory=None, timeout=None):
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", inventory or self.inventory, str(REPO / playbook), *args]
        proc = subprocess.run(argv, capture_output=True, check=False, text=True, env=self.env, cwd=REPO,
                              timeout=timeout)
        proc.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                      for m in map(RECAP.match, proc.stdout.splitlines()) if m}
        if check and proc.returncode != 0:
            raise AssertionError(f"{playbook} {' '.join(args)} failed rc={proc.returncode}\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return proc

    def run_module(self, host, module, args):
        """Run one module on a lab host through the netns connection (ad hoc)."""
        argv = [str(VENV_BIN / "ansible"), "-i", self.inventory, host, "-m", module, "-a", args]
        proc = subprocess.run(argv, capture_output=True, check=False, text=True, env=self.env, cwd=REPO)
        if proc.returncode != 0:
            raise AssertionError(f"{module} on {host} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return proc

    def block(self, host):
        """The block a host owns (its proto-80 blackhole), or None."""
        for r in ns_json(self.netns(host), "route", "show", "proto", "80", "type", "blackhole"):
            return r["dst"]
        return None

    def birdc(self, host, *args):
        return sh(["ip", "netns", "exec", self.netns(host), "birdc", "-s", f"{self.state_dir(host)}/bird.ctl",
                   *args]).stdout

    def workload_ip(self, host, workload):
        for link in ns_json(self.workload_netns(host, workload), "addr", "show", "dev", "eth0"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    return a["local"]
        raise AssertionError(f"workload {host}/{workload} has no IPv4 address on eth0")

    def ping(self, src_netns, dst_ip, count=1, timeout=2):
        r = sh(["ip", "netns", "exec", src_netns, "ping", "-n", "-c", str(count), "-W", str(timeout), dst_ip],
               check=False)
        return r.returncode == 0

    def ping_matrix(self):
        """Ping every workload from every other workload; return the failed pairs."""
        wls = self.all_workloads()
        ips = {(h, w): self.workload_ip(h, w) for h, w in wls}
        pairs = [(s, d) for s in wls for d in wls if s != d]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            ok = list(pool.map(lambda p: self.ping(self.workload_netns(*p[0]), ips[p[1]]), pairs))
        return [f"{s[0]}/{s[1]} -> {d[0]}/{d[1]} ({ips[d]})" for (s, d), good in zip(pairs, ok) if not good]

    def kernel_state(self, host):
        """Links, addresses, routes, rules and sysctls of a host namespace (for before/after comparisons)."""
        ns = self.netns(host)
        out = {}
        # IPv4 only: the fabric is IPv4, and IPv6 link-local addresses finish DAD on their own
        # (tentative -> preferred) a moment after a link comes up.
        for name, args in (("links", ["-d", "link", "show"]), ("addrs", ["-4", "addr", "show"]),
                           ("routes", ["-4", "route", "show", "table", "all"]), ("rules", ["-4", "rule", "show"])):
            out[name] = sh(["ip", "-n", ns, *args]).stdout
        out["sysctl"] = sh(["ip", "netns", "exec", ns, "sh", "-c",
                            "grep -r . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/ "
                            "/proc/sys/net/ipv4/neigh/ 2>/dev/null | grep -v -e base_reachable -e '/stable_secret'"
                            " | sort"]).stdout
        out["bird_files"] = sorted(os.listdir(self.state_dir(host))) if os.path.isdir(self.state_dir(host)) else []
        return out

    def fleet_state(self):
        return {"netns": sorted(n for n in namespaces() if n.startswith(self.prefix + "-")),
                **{h: self.kernel_state(h) for h in self.speakers()}}

    def sessions(self, host):
        """{protocol name: (state, since, info)} of the BGP protocols of a host."""
        out = {}
        for line in self.birdc(host, "show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP":
                out[parts[0]] = (parts[3], parts[4] + " " + parts[5], " ".join(parts[6:]))
        return out


class ControllerLab(Lab):
    """A lab whose controller runs inside <prefix>-mgmt (SSH and machine labs): playbooks and ad hoc commands run
    there and reach the hosts over ssh."""

    @property
    def mgmt(self):
        return f"{self.prefix}-mgmt"

    def _run(self, argv, check, what):
        proc = subprocess.run(["ip", "netns", "exec", self.mgmt, *argv], capture_output=True, text=True,
                              env=self.env, cwd=REPO, check=False)
        proc.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                      for m in map(RECAP.match, proc.stdout.splitlines()) if m}
        if check and proc.returncode != 0:
            raise AssertionError(f"{what} failed rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return proc

    def controller_playbook(self, playbook, *args, check=True):
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", self.inventory, str(REPO / playbook), *args]
        return self._run(argv, check, f"{playbook} {' '.join(args)} (in {self.mgmt})")

    def adhoc(self, module, args, *extra, pattern="calico_nodes"):
        """One module on every host of pattern over ssh; {host: result} from the one-line output."""
        argv = [str(VENV_BIN / "ansible"), "-i", self.inventory, pattern, "-o", "-m", module, "-a", args, *extra]
        proc = self._run(argv, True, f"ansible -m {module} -a {args!r}")
        out = {}
        for line in proc.stdout.splitlines():
            m = re.match(r"^(\S+) \| (\w+) \| rc=(\d+) \| \(stdout\) (.*)$", line)
            if m:
                out[m.group(1)] = m.group(4).strip()
        return out


def alive(pid):
    """A process that has not exited (a zombie waiting for its parent has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def cni_plugin_state(lab, host):
    """What the plugin owns on a host: cali veths not made by the converge (mac, alias, state), their proto-80
    routes (IPv4 and IPv6), the cali-cni-* chains and rules (iptables and ip6tables), the cali-s-* ipset members,
    the store's records and the host's addresses (for before/after comparisons: what a container left behind)."""
    ns = lab.netns(host)
    links = {link["ifname"]: (link.get("address"), link.get("ifalias"), link.get("operstate"))
             for link in ns_json(ns, "-d", "link", "show", "type", "veth")
             if link["ifname"].startswith("cali") and not (link.get("ifalias") or "").startswith("netfleet:ep:")}
    routes = sorted(f"{r['dst']} dev {r['dev']} {r.get('scope')}"
                    for family in ("-4", "-6") for r in ns_json(ns, family, "route", "show", "proto", "80")
                    if r.get("dev") in links)
    chains = sorted(f"{tool} {line}" for tool in ("iptables-save", "ip6tables-save")
                    for line in sh(["ip", "netns", "exec", ns, tool, "-t", "filter"]).stdout.splitlines()
                    if line.startswith(("-A cali-cni-", ":cali-cni-")))
    sets = sorted(line for line in sh(["ip", "netns", "exec", ns, "ipset", "save"]).stdout.splitlines()
                  if line.startswith("add cali-s-"))
    store = f"{lab.state_dir(host)}/cni/data/endpoints"
    records = {}
    for name in sorted(os.listdir(store)) if os.path.isdir(store) else []:
        with open(os.path.join(store, name), encoding="utf-8") as handle:
            records[name] = handle.read()
    addrs = sh(["ip", "-n", ns, "-4", "addr", "show"]).stdout
    return {"links": links, "routes": routes, "chains": chains, "sets": sets, "records": records, "addrs": addrs}


class ContinuousPing:
    """`ping -D -i <interval>` from a namespace in the background; on stop, the worst outage.

    The gap is measured between consecutive replies (by their -D timestamps), so it is the real
    time during which no packet got through, whatever the interval.
    """

    def __init__(self, src_netns, dst_ip, interval=0.02):
        self.interval = interval
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", src_netns, "ping", "-n", "-D", "-i", str(interval), "-W", "1", dst_ip],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        """Returns (sent, received, worst gap in seconds)."""
        self.proc.send_signal(2)  # SIGINT: ping prints its summary and exits
        out, _unused = self.proc.communicate(timeout=10)
        stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        sent = re.search(r"(\d+) packets transmitted", out)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        return (int(sent.group(1)) if sent else 0, len(stamps), max(gaps, default=float("inf")))


@pytest.fixture(scope="session")
def lab():
    """The lab a molecule scenario built (its inventory and prefix come from the verifier's environment)."""
    inventory = os.environ.get("NETFLEET_INVENTORY", str(REPO / "inventories" / "lab"))
    lab = Lab(inventory, os.environ.get("NETFLEET_LAB_PREFIX", "nf"))
    # molecule verifies right after converge: let the sessions and routes settle first, the way an operator
    # would (status.yml waits up to 30 s for every session and every block, and fails if they never come)
    lab.playbook("playbooks/status.yml")
    return lab
