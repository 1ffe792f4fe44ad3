# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for talking to BIRD 2 through birdc: parse its replies, decide whether
a daemon recorded in a pid file is alive, drive the daemon (class Bird), install a
configuration only after BIRD accepted it. Stdlib only (runs on target hosts)."""

from __future__ import annotations

import grp
import ipaddress
import os
import re
import signal
import tempfile
import time

from ansible_collections.netfleet.calico.plugins.module_utils.procs import read_file, read_pid

_HEADER = re.compile(r"^Name\s+Proto\s+Table\s+State\s+Since\s+Info\s*$")
# "name  Proto  Table  State  YYYY-MM-DD HH:MM:SS[.fff]  Info..." (timeformat protocol iso long)
# or the short default "HH:MM:SS.fff".
_PROTO_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?|\S+)\s*(?P<info>.*?)\s*$"
)
_ROUTES = re.compile(r"Routes:\s+(\d+) imported, (?:(\d+) filtered, )?(\d+) exported")
# `show route`: "<prefix>  <type> [<protocol> <since>] ..." and, for further routes to the same prefix,
# the same line without the prefix; next hops follow on lines that start with a tab.
_ROUTE_LINE = re.compile(r"^(?P<prefix>\S+)?\s+(?:unicast|blackhole|unreachable|prohibited)\s+\[(?P<proto>\S+)\s")

# birdc 'configure' answers; see BIRD 2 documentation, "Remote control".
CONFIGURE_OK = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")


def parse_protocols(text):
    """Parse `birdc show protocols all` into a list of dicts.

    Every protocol gets name, proto, table, state, since and info; BGP protocols
    also get description, bgp_state, neighbor_address, neighbor_as, local_as,
    imported/exported route counts and the routes the import filter refused that
    the peer announces now (filtered) when BIRD prints them.
    """
    protocols = []
    current = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("BIRD ") or _HEADER.match(line):
            continue
        if not raw[0].isspace():
            m = _PROTO_LINE.match(line)
            if not m:
                continue
            current = {
                "name": m.group("name"),
                "proto": m.group("proto"),
                "table": m.group("table"),
                "state": m.group("state"),
                "since": m.group("since"),
                "info": m.group("info"),
            }
            protocols.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        key, sep, value = stripped.partition(":")
        if not sep:
            continue
        value = value.strip()
        key = key.strip()
        if key == "Description":
            current["description"] = value
        elif key == "BGP state":
            current["bgp_state"] = value
        elif key == "Neighbor address":
            current["neighbor_address"] = value
        elif key == "Neighbor AS":
            current["neighbor_as"] = int(value)
        elif key == "Local AS":
            current["local_as"] = int(value)
        elif key == "Last error":
            current["last_error"] = value
        elif key == "Routes":
            m = _ROUTES.search(stripped)
            if m:
                current["imported"] = int(m.group(1))
                current["exported"] = int(m.group(3))
                # routes the import filter refused and BIRD keeps marked (import keep filtered): the peer
                # announces them now
                current["filtered"] = int(m.group(2) or 0)
    return protocols


def bgp_sessions(protocols):
    """BGP sessions from parse_protocols(), in the shape the status playbook prints."""
    sessions = []
    for p in protocols:
        if p["proto"] != "BGP":
            continue
        local_as = p.get("local_as")
        neighbor_as = p.get("neighbor_as")
        kind = None
        if local_as is not None and neighbor_as is not None:
            kind = "ibgp" if local_as == neighbor_as else "ebgp"
        sessions.append({
            "name": p["name"],
            "description": p.get("description", ""),
            "peer_ip": p.get("neighbor_address"),
            "peer_as": neighbor_as,
            "local_as": local_as,
            "type": kind,
            "state": p["state"],
            "since": p["since"],
            "info": p.get("bgp_state") or p["info"] or p["state"],
            "established": (p.get("bgp_state") or p["info"]).startswith("Established"),
            "imported": p.get("imported", 0),
            "exported": p.get("exported", 0),
            "filtered": p.get("filtered", 0),
            "last_error": p.get("last_error", ""),
        })
    return sessions


def parse_route_sources(text):
    """Every route of `birdc show route` (the master tables) as ``(prefix, protocol)``, best or not."""
    routes = []
    prefix = None
    for line in text.splitlines():
        if line.startswith("\t"):
            continue
        m = _ROUTE_LINE.match(line)
        if not m:
            continue
        if m.group("prefix"):
            prefix = m.group("prefix")
        if prefix:
            routes.append((prefix, m.group("proto")))
    return routes


def uncovered(routes, old, others):
    """Prefixes that protocols in ``old`` bring and that no protocol in ``others`` covers (the same prefix or a
    shorter one containing it; a default route covers nothing): what traffic would lose if ``old`` went now.
    ``<name>:ipv6`` in ``old`` stands for the IPv6 routes of protocol ``name`` only (its ipv6 channel stops
    carrying them; the protocol stays, and covers the rest)."""
    whole = {name for name in old if not name.endswith(":ipv6")}
    v6_only = {name[:-len(":ipv6")] for name in old if name.endswith(":ipv6")}
    cover = set()
    for prefix, proto in routes:
        if proto in others:
            net = ipaddress.ip_network(prefix, strict=False)
            if net.prefixlen and not (proto in v6_only and net.version == 6):
                cover.add(net)
    lost = set()
    for prefix, proto in routes:
        if prefix in lost:
            continue
        net = ipaddress.ip_network(prefix, strict=False)
        if proto not in whole and not (proto in v6_only and net.version == 6):
            continue
        if not any(c.version == net.version and net.subnet_of(c) for c in cover):
            lost.add(prefix)
    return sorted(lost)


def read_sessions(run_command, birdc, socket):
    """``{bird_running, sessions[, bird_error]}`` from `birdc -s socket show protocols all`
    (``run_command`` is AnsibleModule.run_command; ``birdc`` None when it is not installed)."""
    if birdc is None:
        return sessions_from_reply(None, "", "", socket)
    rc, out, err = run_command([birdc, "-s", socket, "show", "protocols", "all"])
    return sessions_from_reply(rc, out, err, socket)


def sessions_from_reply(rc, out, err, socket):
    """``{bird_running, sessions[, bird_error]}`` from the reply of `birdc -s socket show protocols all`
    (``rc`` None: birdc is not installed)."""
    if rc is None:
        return {"bird_running": False, "sessions": [], "bird_error": "birdc not found: install bird2"}
    if rc == 0 and "ready." in out:
        return {"bird_running": True, "sessions": bgp_sessions(parse_protocols(out))}
    return {"bird_running": False, "sessions": [],
            "bird_error": (err or out).strip() or "BIRD does not answer on %s" % socket}


def configure_result(text):
    """Return (ok, message) for the reply of `birdc configure`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("BIRD ")]
    for ln in lines:
        if ln.startswith(CONFIGURE_OK):
            return True, ln
    return False, " ".join(lines) or "no answer from birdc"


def pid_alive(pidfile, must_contain=None):
    """Return the pid recorded in pidfile if that process exists (and, when
    must_contain is given, its command line contains that string); else None.
    A stale pid file (process gone or pid reused by another program) gives None."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    if must_contain and must_contain not in cmdline:
        return None
    return pid


def same_netns(pid):
    """True if process pid lives in the caller's network namespace."""
    try:
        return os.readlink("/proc/%d/ns/net" % pid) == os.readlink("/proc/self/ns/net")
    except OSError:
        return False


class Bird:
    """The BIRD daemon of one host: state, validation, start, stop (graceful or not), reload.

    ``module`` is the AnsibleModule (run_command, fail_json, get_bin_path); ``params`` holds manager, service,
    config, socket, pidfile, bird_binary, birdc_binary and timeout (the module's own params by default)."""

    def __init__(self, module, params=None):
        self.m = module
        self.p = params if params is not None else module.params
        self.bird = module.get_bin_path(self.p["bird_binary"], required=True)
        self.birdc = module.get_bin_path(self.p["birdc_binary"], required=True)

    # --- state -----------------------------------------------------------
    def running_pid(self):
        if self.p["manager"] == "pidfile":
            return pid_alive(self.p["pidfile"], must_contain=self.p["pidfile"])
        rc, _unused, _unused = self.m.run_command(["systemctl", "is-active", "--quiet", self.p["service"]])
        return -1 if rc == 0 else None

    def validate(self, path=None, shown_as=None):
        """`bird -p -c path` (the configured file by default): fail with BIRD's own message."""
        path = path or self.p["config"]
        rc, out, err = self.m.run_command([self.bird, "-p", "-c", path])
        if rc != 0:
            msg = (err or out).strip().splitlines()
            self.m.fail_json(msg="BIRD rejects %s: %s" % (shown_as or path, msg[-1] if msg else "rc=%d" % rc))

    def sessions(self):
        """BGP sessions as bgp_sessions() shapes them; [] when the daemon does not answer."""
        return read_sessions(self.m.run_command, self.birdc, self.p["socket"])["sessions"]

    def wait_established(self, names, timeout):
        """Wait until every BGP protocol in names is Established; return the names still down (none: [])."""
        deadline = time.monotonic() + timeout
        while True:
            up = {s["name"] for s in self.sessions() if s["established"]}
            down = sorted(set(names) - up)
            if not down or time.monotonic() > deadline:
                return down
            time.sleep(0.5)

    def wait_covered(self, old, timeout):
        """Wait until every prefix the BGP protocols ``old`` bring is brought by another Established BGP
        session too (see uncovered()); return the prefixes still only behind ``old`` (none: [])."""
        deadline = time.monotonic() + timeout
        old = set(old)
        while True:
            others = {s["name"] for s in self.sessions() if s["established"]} - {n for n in old if ":" not in n}
            rc, out, _unused = self.m.run_command([self.birdc, "-s", self.p["socket"], "show", "route"])
            lost = uncovered(parse_route_sources(out), old, others) if rc == 0 else ["(birdc show route failed)"]
            if not lost or time.monotonic() > deadline:
                return lost
            time.sleep(0.2)

    def answers(self):
        rc, out, _unused = self.m.run_command([self.birdc, "-s", self.p["socket"], "show", "status"])
        return rc == 0 and "Daemon is up and running" in out

    # --- actions ---------------------------------------------------------
    def start(self):
        if self.p["manager"] == "systemd":
            self._systemctl("start")
        else:
            for d in sorted({os.path.dirname(self.p["socket"]), os.path.dirname(self.p["pidfile"])}):
                os.makedirs(d, exist_ok=True)
            rc, out, err = self.m.run_command(
                [self.bird, "-c", self.p["config"], "-s", self.p["socket"], "-P", self.p["pidfile"]])
            if rc != 0:
                self.m.fail_json(msg="bird failed to start: %s" % (err or out).strip())
        deadline = time.monotonic() + self.p["timeout"]
        while not self.answers():
            if time.monotonic() > deadline:
                self.m.fail_json(msg="BIRD started but does not answer on %s after %ss" % (
                    self.p["socket"], self.p["timeout"]))
            time.sleep(0.05)

    def stop(self, pid, graceful=False):
        if graceful:
            # BIRD exits without withdrawing: kernel routes stay, peers retain ours (graceful restart)
            rc, out, err = self.m.run_command([self.birdc, "-s", self.p["socket"], "graceful", "restart"])
            if rc != 0 or "Graceful restart requested" not in out:
                self.m.fail_json(msg="birdc graceful restart failed: %s" % (err or out).strip())
            if self.p["manager"] == "systemd":
                self._wait_inactive()
                return
        elif self.p["manager"] == "systemd":
            self._systemctl("stop")
            return
        else:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.p["timeout"]
        while pid_alive(self.p["pidfile"], must_contain=self.p["pidfile"]) == pid:
            if time.monotonic() > deadline:
                self.m.fail_json(msg="BIRD (pid %d) did not stop within %ss" % (pid, self.p["timeout"]))
            time.sleep(0.05)

    def _wait_inactive(self):
        deadline = time.monotonic() + self.p["timeout"]
        while self.running_pid():
            if time.monotonic() > deadline:
                self.m.fail_json(msg="%s still active %ss after a graceful restart" % (self.p["service"],
                                                                                       self.p["timeout"]))
            time.sleep(0.05)

    def reload(self):
        rc, out, err = self.m.run_command([self.birdc, "-s", self.p["socket"], "configure"])
        ok, message = configure_result(out + err)
        if rc != 0 or not ok:
            self.m.fail_json(msg="birdc configure failed: %s" % message)
        return message

    def _systemctl(self, verb):
        rc, out, err = self.m.run_command(["systemctl", verb, self.p["service"]])
        if rc != 0:
            self.m.fail_json(msg="systemctl %s %s failed: %s" % (verb, self.p["service"], (err or out).strip()))


def install_file(path, content, mode=0o640, group=None, validate=None, check_mode=False):
    """Write ``content`` to ``path`` when it differs (atomically, ``mode``, group ``group``).

    ``validate(tmp_path)`` runs on the new file before it replaces the old one (it fails the module on a
    rejected file); in check mode the new content is still validated, from a scratch file. Returns
    (changed, previous content or None)."""
    before = read_file(path)
    if before == content:
        return _fix_attrs(path, mode, group, check_mode), before
    directory = os.path.dirname(path) or "."
    if check_mode and not os.path.isdir(directory):
        directory = None  # validate from the system temp dir; nothing is written
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        if group and not check_mode:
            os.chown(tmp, 0, _gid(group))
        if validate:
            validate(tmp)
        if not check_mode:
            # rename(2) in the same directory: atomic, and the file never exists with looser permissions
            # (AnsibleModule.atomic_move gives a new file the default 0644 for a moment)
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return True, before


def _fix_attrs(path, mode, group, check_mode):
    """Give an up-to-date file its mode and group; True if they were (or would be) changed."""
    st = os.stat(path)
    gid = _gid(group) if group else st.st_gid
    if (st.st_mode & 0o7777, st.st_gid) == (mode, gid):
        return False
    if not check_mode:
        os.chmod(path, mode)
        os.chown(path, st.st_uid, gid)
    return True


def _gid(group):
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError("group %s does not exist (is BIRD installed?)" % group) from None
