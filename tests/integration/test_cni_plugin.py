"""Scenario `cni_plugin`: the netfleet-calico CNI plugin called exactly as a runtime calls it, on a real netns lab.

inventories/lab-cni is built with its own prefix (NETFLEET_LAB_PREFIX + "cp") and site.yml runs once. Every call
is `nsenter --net=/run/netns/<prefix>-<host> <cni dir>/bin/netfleet-calico` with the CNI_* environment and, on
stdin, the plugin entry of the conflist site.yml wrote, with the list's name and cniVersion put in (what libcni
does; CHECK and DEL also get prevResult). Container namespaces are `<prefix>-c-<n>`, made here with
`ip netns add` and deleted here; their container ids are 64 hex digits like a runtime's.

Every test leaves the plugin's state of every node (non-converge cali veths, their proto-80 routes, the
cali-cni-* chains, the cali-s-* ipset members, the store's records) as it found it: the `plugin` fixture DELs
whatever a test attached, deletes its namespaces and compares. Real kernel only, nothing is mocked.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import itertools
import json
import os
import re
import time

import pytest
from netfleet_lab import REPO, Lab, cni_plugin_state, namespaces, ns_json, sh

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-cni"
GATEWAY = "169.254.1.1"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
HOST_IF = re.compile(r"cali[0-9a-f]{11}\Z")
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETNS_COUNTER = itertools.count(1)


@pytest.fixture(scope="module")
def lab():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "cp"
    lab = Lab(INVENTORY, prefix)
    with lab.running():
        lab.playbook("site.yml")
        yield lab


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def container_id(name):
    return hashlib.sha256(name.encode()).hexdigest()


def host_ifname(cid):
    """Calico's rule for the host end of container `cid`'s eth0 (cali + 11 hex of sha1)."""
    return "cali" + hashlib.sha1(cid.encode()).hexdigest()[:11]


def attachment_env(cid, netns, ifname="eth0"):
    env = {"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={cid[:12]}"}
    if netns:
        env["CNI_NETNS"] = netns
    return env


class Run:
    def __init__(self, proc):
        self.rc, self.out, self.err = proc.returncode, proc.stdout, proc.stderr

    def __repr__(self):
        return f"rc={self.rc} stdout={self.out!r} stderr={self.err[-600:]!r}"

    @property
    def json(self):
        return json.loads(self.out)

    def ok(self, empty=True):
        assert self.rc == 0, self
        if empty:
            assert self.out.strip() == "", f"success must print nothing here: {self}"
        return self

    def error(self):
        """The spec's error: exit status 1, stdout exactly one JSON object {cniVersion, code, msg[, details]}."""
        assert self.rc == 1, f"expected exit status 1: {self}"
        error = json.loads(self.out)  # one JSON document, nothing else on stdout
        assert isinstance(error, dict), self
        assert {"cniVersion", "code", "msg"} <= set(error) <= {"cniVersion", "code", "msg", "details"}, error
        assert isinstance(error["code"], int) and isinstance(error["msg"], str) and error["msg"], error
        assert re.fullmatch(r"\d+\.\d+\.\d+", error["cniVersion"]), error
        return error


class Attachment:
    def __init__(self, host, network, ns, cid, result):
        self.host, self.network, self.ns, self.cid, self.result = host, network, ns, cid, result
        self.netns = f"/run/netns/{ns}"
        self.ip = result["ips"][0]["address"].split("/")[0]
        self.host_if = result["interfaces"][0]["name"]

    def __repr__(self):
        return f"{self.host}/{self.network}/{self.ns}({self.ip} {self.host_if})"


class Plugin:
    """The plugin site.yml installed on the lab's hosts, run the way a runtime runs it; remembers what it attached
    and the container namespaces it made, so that the fixture can undo both."""

    def __init__(self, lab):
        self.lab = lab
        self.made = []
        self.pending = {}  # (host, cid) -> (network, env) of every ADD not yet DEL'd through this helper

    def cni_dir(self, host):
        return f"{self.lab.state_dir(host)}/cni"

    def config(self, host):
        with open(f"{self.cni_dir(host)}/cni.json", encoding="utf-8") as handle:
            return json.load(handle)

    def record_path(self, host, cid, ifname="eth0"):
        return f"{self.cni_dir(host)}/data/endpoints/{cid}_{ifname}.json"

    def conf(self, host, network, version=None, **extra):
        """stdin for `network`: the conflist's plugin entry with the list's name and cniVersion (libcni's rule)."""
        with open(f"{self.cni_dir(host)}/net.d/10-netfleet-{network}.conflist", encoding="utf-8") as handle:
            conflist = json.load(handle)
        conf = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=version or conflist["cniVersion"])
        conf.update(extra)
        return conf

    def call(self, host, command, stdin, env=None):
        """One plugin execution in the host's network namespace; `stdin` a dict (sent as JSON) or raw text."""
        full = {"PATH": ENV_PATH, "CNI_COMMAND": command, "CNI_PATH": f"{self.cni_dir(host)}/bin", **(env or {})}
        text = stdin if isinstance(stdin, str) else json.dumps(stdin)
        argv = ["nsenter", f"--net=/run/netns/{self.lab.netns(host)}", f"{self.cni_dir(host)}/bin/netfleet-calico"]
        return Run(sh(argv, check=False, input=text, env=full, timeout=120))

    def netns(self):
        name = f"{self.lab.prefix}-c-{next(NETNS_COUNTER)}"
        self.made.append(name)
        sh(["ip", "netns", "add", name])
        return name

    def add(self, host, network, version=None, ns=None):
        ns = ns or self.netns()
        cid = container_id(ns)
        env = attachment_env(cid, f"/run/netns/{ns}")
        self.pending[(host, cid)] = (network, env)
        run = self.call(host, "ADD", self.conf(host, network, version), env)
        assert run.rc == 0, f"ADD {network} on {host} ({ns}): {run}"
        return Attachment(host, network, ns, cid, run.json)

    def delete(self, att, netns=True):
        env = attachment_env(att.cid, att.netns if netns else None)
        run = self.call(att.host, "DEL", self.conf(att.host, att.network, prevResult=att.result), env)
        if run.rc == 0:
            self.pending.pop((att.host, att.cid), None)
        return run

    def check(self, att):
        env = attachment_env(att.cid, att.netns)
        return self.call(att.host, "CHECK", self.conf(att.host, att.network, prevResult=att.result), env)

    def cleanup(self):
        """DEL what is still attached, then delete the namespaces made here; the problems met on the way."""
        problems = []

        def undo(item):
            (host, _cid), (network, env) = item
            return host, env, self.call(host, "DEL", self.conf(host, network), env)

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            for host, env, run in pool.map(undo, list(self.pending.items())):
                if run.rc != 0:
                    problems.append(f"DEL {env['CNI_CONTAINERID'][:12]} on {host}: {run}")
        self.pending.clear()
        existing = namespaces()
        for name in self.made:
            if name in existing:
                proc = sh(["ip", "netns", "del", name], check=False)
                if proc.returncode != 0:
                    problems.append(f"ip netns del {name}: {proc.stderr.strip()}")
        self.made.clear()
        return problems


def container_view(ns):
    """Addresses, routes and links inside a container namespace."""
    return {what: sh(["ip", "-n", ns, "-4", *args]).stdout
            for what, args in (("addrs", ["addr", "show"]), ("routes", ["route", "show"]), ("links", ["link", "show"]))}


def web_set(plugin, host):
    """The ipset that selects app == 'web' (db's policy admits it)."""
    sets = plugin.config(host)["policy"]["sets"]
    (name,) = [n for n, spec in sets.items() if spec["selector"] == "app == 'web'"]
    return name


def assert_attached(plugin, atts):
    """Each attachment whole on its host: record, veth with its alias, proto-80 /32 route, endpoint chains."""
    by_host = {}
    for att in atts:
        by_host.setdefault(att.host, []).append(att)
    for host, group in by_host.items():
        state = cni_plugin_state(plugin.lab, host)
        # "<tool> :<chain> - [0:0]" lines: the chains the plugin made in iptables (an IPv4-only host has no IPv6 ones)
        chain_names = {line.split()[1][1:] for line in state["chains"] if line.startswith("iptables-save :")}
        for att in group:
            assert os.path.exists(plugin.record_path(host, att.cid)), f"{att}: no record"
            assert state["links"].get(att.host_if, (None, None))[:2] == (HOST_MAC, f"netfleet:cni:{att.cid}_eth0"), \
                f"{att}: host veth {state['links'].get(att.host_if)}"
            assert f"{att.ip} dev {att.host_if} link" in state["routes"], f"{att}: no host route"
            assert {f"cali-cni-fw-{att.host_if}", f"cali-cni-tw-{att.host_if}"} <= chain_names, f"{att}: no chains"


def assert_gone(plugin, host, atts):
    """Nothing of `atts` left on `host`: veths, proto-80 /32 routes to their addresses, their chains, the ipset
    members of their addresses, their records."""
    hostns = plugin.lab.netns(host)
    state = cni_plugin_state(plugin.lab, host)
    ips = {att.ip for att in atts}
    ifs = {att.host_if for att in atts}
    left = {
        "veths": sorted(ifs & {link["ifname"] for link in ns_json(hostns, "link", "show")}),
        "routes": [r for r in ns_json(hostns, "route", "show", "proto", "80")
                   if r["dst"].removesuffix("/32") in ips or r.get("dev") in ifs],
        "chains": [line for line in state["chains"] if any(name in line for name in ifs)],
        "sets": [line for line in state["sets"] if line.split()[2].removesuffix("/32") in ips],
        "records": [att.cid[:12] for att in atts if os.path.exists(plugin.record_path(host, att.cid))],
    }
    assert not any(left.values()), f"left behind on {host}: {left}"


def changed_tasks(stdout):
    """`TASK [...]: host` for every task that reported a change in a playbook's output."""
    found, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.index("]")]
        elif line.startswith("changed: ["):
            found.append(f"{task}: {line[10:line.index(']')]}")
    return found


def parallel(func, items):
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


@pytest.fixture
def plugin(lab):
    """The plugin helper; afterwards everything the test attached is DEL'd, its namespaces deleted, and every node's
    plugin state must be what it was before the test."""
    before = {host: cni_plugin_state(lab, host) for host in lab.nodes}
    helper = Plugin(lab)
    yield helper
    problems = helper.cleanup()
    assert not problems, problems
    after = {host: cni_plugin_state(lab, host) for host in lab.nodes}
    diff = {host: {k: (before[host][k], after[host][k]) for k in after[host] if after[host][k] != before[host][k]}
            for host in lab.nodes if after[host] != before[host]}
    assert not diff, f"the test left plugin state behind (before, after): {diff}"


# ---------------------------------------------------------------------------------------------
# 1. VERSION and STATUS
# ---------------------------------------------------------------------------------------------

def test_version_and_status(lab, plugin):
    host = "n1a"
    info = plugin.call(host, "VERSION", {"cniVersion": "1.1.0"}).ok(empty=False).json
    assert info["cniVersion"] == "1.1.0", info
    assert {"1.0.0", "1.1.0"} <= set(info["supportedVersions"]), info

    for network in lab.hostvars[host]["calico_cni_networks"]:
        plugin.call(host, "STATUS", plugin.conf(host, network["name"], "1.1.0")).ok()

    missing = f"{plugin.cni_dir(host)}/absent.json"
    error = plugin.call(host, "STATUS", plugin.conf(host, "web", "1.1.0", config_file=missing)).error()
    assert error["code"] == 50 and missing in error["msg"], error

    # STATUS and GC exist from CNI 1.1.0 on: below that they are an incompatible version (code 1), as libcni's
    # skel answers (libcni itself never sends them for an older configuration)
    for verb, extra in (("STATUS", {}), ("GC", {"cni.dev/valid-attachments": []})):
        error = plugin.call(host, verb, plugin.conf(host, "web", "1.0.0", **extra)).error()
        assert error["code"] == 1 and "1.1.0" in error["msg"], (verb, error)


# ---------------------------------------------------------------------------------------------
# 2. errors
# ---------------------------------------------------------------------------------------------

def test_errors(lab, plugin):
    host = "n1b"
    conf = plugin.conf(host, "web")
    ns = plugin.netns()
    env = attachment_env(container_id(ns), f"/run/netns/{ns}")
    before = cni_plugin_state(lab, host)

    assert plugin.call(host, "ADD", '{"cniVersion": "1.0.0", "name": "web",', env).error()["code"] == 6
    no_id = {k: v for k, v in env.items() if k != "CNI_CONTAINERID"}
    error = plugin.call(host, "ADD", conf, no_id).error()
    assert error["code"] == 4 and "CNI_CONTAINERID" in error["msg"], error
    error = plugin.call(host, "ADD", dict(conf, name="nosuchnet"), env).error()
    assert error["code"] == 7 and "nosuchnet" in error["msg"], error
    error = plugin.call(host, "ADD", dict(conf, cniVersion="9.9.9"), env).error()
    assert error["code"] == 1 and "9.9.9" in error["msg"], error
    assert sh(["ip", "-n", ns, "-o", "link", "show"]).stdout.count("\n") == 1, "the container got an interface"

    # a CNI_NETNS that does not exist: an error, and nothing half-made
    gone = f"{lab.prefix}-c-absent"
    cid = container_id(gone)
    error = plugin.call(host, "ADD", conf, attachment_env(cid, f"/run/netns/{gone}")).error()
    assert error["code"] != 0 and gone in error["msg"], error
    assert not os.path.exists(plugin.record_path(host, cid))
    assert not [link for link in ns_json(lab.netns(host), "link", "show") if link["ifname"] == host_ifname(cid)]
    assert gone not in namespaces()
    assert cni_plugin_state(lab, host) == before


# ---------------------------------------------------------------------------------------------
# 3. ADD: the result and the data plane
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version,network", [("1.0.0", "web"), ("0.4.0", "db")])
def test_add_result_and_endpoint(lab, plugin, version, network):
    host = "n1a"
    cfg = plugin.config(host)
    att = plugin.add(host, network, version)
    result = att.result

    assert result["cniVersion"] == version
    host_end, container_end = result["interfaces"]
    assert HOST_IF.match(host_end["name"]) and host_end["mac"] == HOST_MAC and not host_end.get("sandbox"), result
    assert container_end["name"] == "eth0" and container_end["sandbox"] == att.netns, result
    (ip_entry,) = result["ips"]
    assert ip_entry["address"] == f"{att.ip}/32" and ip_entry["interface"] == 1, result
    assert ip_entry.get("gateway") == GATEWAY, result
    if version == "0.4.0":
        assert ip_entry["version"] == "4", result
    else:
        assert "version" not in ip_entry, result
    assert {"dst": "0.0.0.0/0", "gw": GATEWAY} in result["routes"], result
    assert ipaddress.ip_address(att.ip) in ipaddress.ip_network(cfg["networks"][network]["range"])
    assert att.ip not in cfg["reserved"]

    # inside the container
    (eth0,) = ns_json(att.ns, "addr", "show", "dev", "eth0")
    assert [f"{a['local']}/{a['prefixlen']}" for a in eth0["addr_info"] if a["family"] == "inet"] == [f"{att.ip}/32"]
    assert eth0["address"] == container_end["mac"]
    routes = {line.strip() for line in sh(["ip", "-n", att.ns, "route", "show"]).stdout.splitlines()}
    assert {f"default via {GATEWAY} dev eth0", f"{GATEWAY} dev eth0 scope link"} <= routes, routes

    # on the host
    hostns = lab.netns(host)
    (link,) = ns_json(hostns, "-d", "link", "show", "dev", att.host_if)
    assert link["linkinfo"]["info_kind"] == "veth" and link["address"] == HOST_MAC, link
    assert "UP" in link["flags"], link
    sysctls = sh(["ip", "netns", "exec", hostns, "cat", f"/proc/sys/net/ipv4/conf/{att.host_if}/proxy_arp",
                  f"/proc/sys/net/ipv4/neigh/{att.host_if}/proxy_delay"]).stdout.split()
    assert sysctls == ["1", "0"], sysctls
    route = sh(["ip", "-n", hostns, "route", "show", f"{att.ip}/32"]).stdout.strip()
    assert route == f"{att.ip} dev {att.host_if} proto 80 scope link", route

    # one ping (to the host's static workload s1, app web): the gateway answers ARP with the calico MAC
    assert lab.ping(att.ns, lab.workload_ip(host, "s1")), f"{att} cannot ping s1"
    neigh = ns_json(att.ns, "neigh", "show", GATEWAY, "dev", "eth0")
    assert [n.get("lladdr") for n in neigh] == [HOST_MAC], neigh


# ---------------------------------------------------------------------------------------------
# 4. 50 concurrent ADDs, then 50 concurrent DELs
# ---------------------------------------------------------------------------------------------

def test_concurrent_add_del(lab, plugin, report):
    host, count = "n2a", 50
    names = [plugin.netns() for _index in range(count)]
    started = time.monotonic()
    atts = parallel(lambda ns: plugin.add(host, "web", ns=ns), names)
    add_s = time.monotonic() - started

    assert len({att.ip for att in atts}) == count, sorted(att.ip for att in atts)
    assert len({att.host_if for att in atts}) == count
    assert_attached(plugin, atts)
    state = cni_plugin_state(lab, host)
    assert len([r for r in state["records"] if r.removesuffix("_eth0.json") in {a.cid for a in atts}]) == count
    assert len(state["links"]) == count, state["links"]
    web = web_set(plugin, host)
    members = {line.split()[2].removesuffix("/32") for line in state["sets"] if line.split()[1] == web}
    assert {att.ip for att in atts} <= members, f"web containers missing from {web}"

    started = time.monotonic()
    runs = parallel(plugin.delete, atts)
    del_s = time.monotonic() - started
    for run in runs:
        run.ok()
    assert_gone(plugin, host, atts)
    report(f"cni plugin: {count} concurrent ADDs on one host in {add_s:.1f} s, "
           f"{count} concurrent DELs in {del_s:.1f} s")


# ---------------------------------------------------------------------------------------------
# 5. range exhaustion
# ---------------------------------------------------------------------------------------------

def test_range_exhaustion(lab, plugin):
    """n1b's `db` range (a /26, no static workload in it) filled by concurrent ADDs; one more is refused."""
    host = "n1b"
    cfg = plugin.config(host)
    rng = ipaddress.ip_network(cfg["networks"]["db"]["range"])
    # every address of the range but the reserved ones (and a range's .0, which is never handed out)
    usable = {str(a) for a in rng if str(a) not in cfg["reserved"]
              and not (a == rng.network_address and str(a).endswith(".0"))}
    assert len(usable) == 64, (rng, len(usable))

    atts = parallel(lambda ns: plugin.add(host, "db", ns=ns), [plugin.netns() for _index in range(len(usable))])
    assert {att.ip for att in atts} == usable, "every address handed out exactly once"
    full = cni_plugin_state(lab, host)

    ns = plugin.netns()
    cid = container_id(ns)
    error = plugin.call(host, "ADD", plugin.conf(host, "db"), attachment_env(cid, f"/run/netns/{ns}")).error()
    assert error["code"] == 100, error
    assert "no free address" in error["msg"] and "db" in error["msg"] and str(rng) in error["msg"], error
    assert cni_plugin_state(lab, host) == full, "the failed ADD left something behind"
    assert not os.path.exists(plugin.record_path(host, cid))
    assert not [link for link in ns_json(lab.netns(host), "link", "show") if link["ifname"] == host_ifname(cid)]
    assert sh(["ip", "-n", ns, "-o", "link", "show"]).stdout.count("\n") == 1, "the container got an interface"

    # one address back: the refused container gets exactly that one
    plugin.delete(atts[7]).ok()
    again = plugin.add(host, "db", ns=ns)
    assert again.ip == atts[7].ip
    for run in parallel(plugin.delete, atts[:7] + atts[8:] + [again]):
        run.ok()
    assert_gone(plugin, host, atts + [again])


# ---------------------------------------------------------------------------------------------
# 6. DEL is idempotent
# ---------------------------------------------------------------------------------------------

def test_del_idempotent(lab, plugin):
    host = "n1b"
    before = cni_plugin_state(lab, host)
    att = plugin.add(host, "web")
    plugin.delete(att).ok()
    plugin.delete(att).ok()
    unknown = container_id(f"{lab.prefix}-c-never")
    plugin.call(host, "DEL", plugin.conf(host, "web"), attachment_env(unknown, f"/run/netns/{lab.prefix}-c-never")).ok()
    assert_gone(plugin, host, [att])

    # the container's namespace is already gone when the runtime DELs (with its old path, or without CNI_NETNS)
    with_path, without = plugin.add(host, "other"), plugin.add(host, "db")
    for att in (with_path, without):
        sh(["ip", "netns", "del", att.ns])
    plugin.delete(with_path).ok()
    plugin.delete(without, netns=False).ok()
    assert_gone(plugin, host, [with_path, without])
    assert cni_plugin_state(lab, host) == before


# ---------------------------------------------------------------------------------------------
# 7. CHECK
# ---------------------------------------------------------------------------------------------

def test_check(lab, plugin):
    host = "n2a"
    hostns = lab.netns(host)
    att = plugin.add(host, "db")
    plugin.check(att).ok()

    sh(["ip", "-n", hostns, "route", "del", f"{att.ip}/32", "dev", att.host_if])
    error = plugin.check(att).error()
    assert error["code"] == 101 and "route" in error["msg"] and att.ip in error["msg"], error
    sh(["ip", "-n", hostns, "route", "add", f"{att.ip}/32", "dev", att.host_if, "proto", "80", "scope", "link"])
    plugin.check(att).ok()

    sh(["ip", "-n", hostns, "link", "set", "dev", att.host_if, "down"])
    error = plugin.check(att).error()
    assert error["code"] == 101 and "down" in error["msg"] and att.host_if in error["msg"], error

    unknown = container_id(f"{lab.prefix}-c-never")
    env = attachment_env(unknown, att.netns)
    error = plugin.call(host, "CHECK", plugin.conf(host, "db", prevResult=att.result), env).error()
    assert error["code"] == 3, error


# ---------------------------------------------------------------------------------------------
# 8. GC
# ---------------------------------------------------------------------------------------------

def test_gc(lab, plugin):
    host = "n2a"
    keep, drop1, drop2 = (plugin.add(host, "web") for _index in range(3))
    other = plugin.add(host, "db")
    every = [keep, drop1, drop2, other]

    # below 1.1.0 GC is refused and removes nothing
    error = plugin.call(host, "GC", plugin.conf(host, "web", "1.0.0", **{"cni.dev/valid-attachments": []})).error()
    assert error["code"] == 1, error
    assert_attached(plugin, every)

    valid = [{"containerID": keep.cid, "ifname": "eth0"}]  # libcni lists the network's attachments under both keys
    conf = plugin.conf(host, "web", "1.1.0", **{"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})
    plugin.call(host, "GC", conf).ok()
    assert_gone(plugin, host, [drop1, drop2])
    assert_attached(plugin, [keep, other])
    for att in (keep, other):
        plugin.check(att).ok()
    members = {line.split()[2].removesuffix("/32") for line in cni_plugin_state(lab, host)["sets"]}
    assert keep.ip in members, "GC dropped the ipset member of a listed attachment"


# ---------------------------------------------------------------------------------------------
# 9. converge and plugin never undo each other
# ---------------------------------------------------------------------------------------------

def test_converge_keeps_plugin_containers(lab, plugin):
    host = "n1a"
    atts = [plugin.add(host, network) for network in ("web", "db", "other")]
    before = {h: cni_plugin_state(lab, h) for h in lab.nodes}
    inside = {att.ns: container_view(att.ns) for att in atts}

    for args in ((), ("--check", "--diff")):
        run = lab.playbook("site.yml", *args)
        changed = {h: r["changed"] for h, r in run.recap.items() if r["changed"]}
        assert not changed, (f"site.yml {' '.join(args)} changed {changed} with plugin containers attached: "
                             f"{changed_tasks(run.stdout)}")
        assert set(run.recap) >= set(lab.speakers())
        assert not changed_tasks(run.stdout), changed_tasks(run.stdout)
        assert {h: cni_plugin_state(lab, h) for h in lab.nodes} == before, f"site.yml {' '.join(args)} touched them"
        assert {att.ns: container_view(att.ns) for att in atts} == inside
    for att in atts:
        plugin.check(att).ok()

    # turning the plugin off while it serves containers stops site.yml in its preflight, before any host changes
    run = lab.playbook("site.yml", "-e", "calico_cni=false", check=False)
    assert run.returncode != 0
    assert f"host '{host}': calico_cni is off but 3 container(s) are attached through its CNI plugin" in run.stdout
    assert not {h: r["changed"] for h, r in run.recap.items() if r["changed"]}
    assert {h: cni_plugin_state(lab, h) for h in lab.nodes} == before


def endpoint_chain(lab, host, chain):
    """The rules of one chain of a host, as iptables-save prints them (without `-A <chain> `)."""
    save = sh(["ip", "netns", "exec", lab.netns(host), "iptables-save", "-t", "filter"]).stdout
    return [line.split(None, 2)[2] for line in save.splitlines() if line.startswith(f"-A {chain} ")]


def test_policy_change_reaches_running_containers(lab, plugin):
    """site.yml with another policy rewrites the chains and ipsets of containers already attached (under the
    plugin's lock): no container restart; the original inventory brings them back exactly."""
    db = plugin.add("n2a", "db")
    tw = f"cali-cni-tw-{db.host_if}"
    before = endpoint_chain(lab, "n2a", tw)
    assert any("--dport 5432" in rule for rule in before), before
    policy = [{"name": "db", "selector": "app == 'db'",
               "ingress": [{"action": "allow", "protocol": "tcp", "ports": [6543],
                            "from": {"selector": "app == 'other'"}}]}]
    run = lab.playbook("site.yml", "-e", json.dumps({"calico_policies": policy}))
    assert run.recap["n2a"]["changed"] > 0
    after = endpoint_chain(lab, "n2a", tw)
    assert not any("--dport 5432" in rule for rule in after), after
    rule = next(rule for rule in after if "--dport 6543" in rule)
    other_set = rule.split("--match-set ")[1].split()[0]
    members = sh(["ip", "netns", "exec", lab.netns("n2a"), "ipset", "list", other_set]).stdout
    other_range = plugin.config("n1a")["networks"]["other"]["range"]
    assert other_range in members, members  # the other network's range on every CNI host
    plugin.check(db).ok()
    lab.playbook("site.yml")
    assert endpoint_chain(lab, "n2a", tw) == before


# ---------------------------------------------------------------------------------------------
# 10. the resident agent, and the executable without it
# ---------------------------------------------------------------------------------------------

def agent_pid(plugin, host):
    """The agent's pid from its pid file, if that process is the agent of this host's plugin."""
    try:
        pid = int(open(f"{plugin.cni_dir(host)}/agent.pid", encoding="ascii").read())
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except (OSError, ValueError):
        return None
    script = f"{plugin.cni_dir(host)}/lib/netfleet-calico-agent.py".encode()
    return pid if script in cmdline and b"Z" not in open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1][:3] \
        else None


def test_agent_serves_calls_and_the_executable_stands_in_without_it(lab, plugin):
    host = "n1b"
    pid = agent_pid(plugin, host)
    assert pid, "site.yml left no agent running on n1b"
    inprocess = f"{plugin.cni_dir(host)}/lib/netfleet-calico.py"
    os.rename(inprocess, inprocess + ".off")  # the in-process path cannot run: only the agent can answer now
    try:
        att = plugin.add(host, "web")
        assert_attached(plugin, [att])
        plugin.check(att).ok()
        plugin.delete(att).ok()
        assert_gone(plugin, host, [att])
    finally:
        os.rename(inprocess + ".off", inprocess)

    os.kill(pid, 15)  # the agent stops: its socket goes, and the executable runs the plugin in-process
    deadline = time.monotonic() + 10
    while agent_pid(plugin, host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not agent_pid(plugin, host) and not os.path.exists(f"{plugin.cni_dir(host)}/agent.sock")
    att = plugin.add(host, "web")
    assert_attached(plugin, [att])

    # site.yml starts it again (the only change), and it serves the container the in-process path attached
    run = lab.playbook("site.yml", "--diff")
    changed = {h: r["changed"] for h, r in run.recap.items() if r["changed"]}
    assert changed == {host: 1}, f"{changed}: {changed_tasks(run.stdout)}"
    assert "netfleet-calico agent (pidfile): not running" in run.stdout
    assert agent_pid(plugin, host) not in (None, pid)
    os.rename(inprocess, inprocess + ".off")
    try:
        plugin.check(att).ok()
        plugin.delete(att).ok()
    finally:
        os.rename(inprocess + ".off", inprocess)
    assert_gone(plugin, host, [att])
    again = lab.playbook("site.yml")
    assert not {h: r["changed"] for h, r in again.recap.items() if r["changed"]}
