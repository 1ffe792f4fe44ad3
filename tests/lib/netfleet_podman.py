"""Real podman containers "on" a netns lab host, for scenario tests.

A lab host is only a network namespace; all lab hosts share one filesystem. To
run real containers on host H whose networking is done by a CNI plugin (as
calico-node's plugin would on a real node), every podman call is

    CONTAINERS_CONF=<state>/containers.conf CONTAINERS_STORAGE_CONF=<state>/storage.conf \\
    nsenter --net=/run/netns/<H> podman --root <state>/root --runroot <state>/run \\
        --tmpdir <state>/tmp --storage-driver vfs --network-config-dir <cni dir> \\
        --cgroup-manager cgroupfs --events-backend file --runtime runc <command>

Why each piece is there:

- `nsenter --net` (not `ip netns exec`): podman executes CNI plugins in its own
  network namespace, so ADD and DEL run in H's netns and the host-side veth lands
  there. `ip netns exec` also unshares the mount namespace and remounts /sys:
  runc then finds no cgroup mount and podman's /run/netns/netns-<uuid> bind
  mounts are not shared with later podman processes. With nsenter, a later
  `podman rm -f` from a fresh process runs DEL with the right CNI_NETNS.
- CONTAINERS_CONF / CONTAINERS_STORAGE_CONF: per-host files, read *instead of*
  the system ones. containers.conf sets: network_backend="cni", the
  cni_plugin_dirs where the plugin `type` is looked up (a bare name; a path is
  rejected), runc (crun refuses this machine's hybrid cgroups), cgroupfs,
  file events, k8s-file logs, default_ulimits (root here has no
  CAP_SYS_RESOURCE, so podman's default nofile/nproc ulimits fail), and
  lock_type="file" so container locks live in <state>/tmp/locks rather than
  in the /dev/shm/libpod_lock segment that every podman process shares.
- --root/--runroot/--tmpdir: containers DB, storage and runtime state per host,
  so two hosts never see each other's containers.
- vfs storage: no overlay mounts to leak (overlay works too, but keeps a
  self bind mount of <root>/overlay). The image is ~2 MB of busybox-static, so
  copying it per container costs nothing; importing it per host takes ~0.1 s.
- --network-config-dir: the host's CNI conflists. Use "cniVersion": "1.0.0":
  podman 4.3's libcni cannot parse a 1.1.0 result, and a conflist whose plugin
  is missing or does not list the version in VERSION is skipped with a warning
  only ("network not found" later). podman runs VERSION on every plugin of
  every conflist in the dir on each invocation (in H's netns).

What the plugin sees: CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=<container name>"
(+ ";IP=<ip>" for --ip, ";MAC=<mac>" for --mac-address), CNI_NETNS=
/run/netns/netns-<uuid>, CNI_IFNAME=eth0, CNI_PATH=<cni_plugin_dirs joined by :>.
stdin is the plugin's conf plus cniVersion/name; `runtimeConfig` only holds
what the plugin declares in "capabilities" (podman sends portMappings,
aliases {network: [names]}); DEL also gets prevResult from libcni's cache in
/var/lib/cni/results (a global dir, entries are per container id).

In the image, busybox 1.35's `wget -T N` segfaults: use `timeout N wget -q -O - URL`.
The host netns needs net.ipv4.ip_forward=1 for a calico-style proxy-ARP
gateway (169.254.1.1) to answer. Containers' netns show up as
/run/netns/netns-<uuid> (they do not carry a lab prefix). Podman leaves empty
/sys/fs/cgroup/*/libpod_parent/conmon cgroups and /var/lib/containers/cache,
which are shared by all podman instances and harmless.

Debian packages: podman runc containernetworking-plugins busybox-static
(--no-install-recommends is enough; conmon comes as a dependency; uidmap,
catatonit, fuse-overlayfs, slirp4netns are not needed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/netfleet-busybox:latest"
BUSYBOX = Path("/bin/busybox")
DEFAULT_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
CNI_CACHE = Path("/var/lib/cni/results")


class PodmanError(RuntimeError):
    """A podman call failed or timed out; carries its argv, exit code and stderr."""

    def __init__(self, argv, returncode, stderr, stdout=""):
        self.argv, self.returncode, self.stderr, self.stdout = argv, returncode, stderr, stdout
        super().__init__(f"{' '.join(map(str, argv))} -> {returncode}\n{(stderr or stdout or '').strip()}")


def _is_static(path):
    """True when the ELF file has no PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def prepare_image(cache_dir=None):
    """Path of a rootfs tarball made of busybox-static (built once, cached).

    The tar holds /bin/busybox, one symlink per applet (sh, sleep, ping, nc,
    wget, httpd, ip, ...) and the usual empty dirs; `podman import` turns it
    into an image without any registry.
    """
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} must be a static busybox: apt-get install busybox-static")
    data = BUSYBOX.read_bytes()
    cache = Path(cache_dir) if cache_dir else REPO / ".lab" / "podman"
    tar_path = cache / f"busybox-rootfs-{hashlib.sha256(data).hexdigest()[:12]}.tar"
    if tar_path.exists():
        return tar_path
    cache.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "etc/group": b"root:x:0:\n",
             "www/index.html": b"netfleet\n"}

    def info(name, kind=tarfile.DIRTYPE, mode=0o755, size=0, link=""):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = kind, mode, size, link, 0
        return ti

    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for d in ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "www"):
                tar.addfile(info(d, mode=0o1777 if d == "tmp" else 0o755))
            tar.addfile(info("bin/busybox", tarfile.REGTYPE, size=len(data)), io.BytesIO(data))
            for applet in sorted(set(applets) - {"busybox"}):
                tar.addfile(info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
            for name, body in files.items():
                tar.addfile(info(name, tarfile.REGTYPE, 0o644, size=len(body)), io.BytesIO(body))
        os.replace(tmp, tar_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tar_path


def _mounts_under(path):
    """Mount points at or below path (deepest first), from /proc/self/mountinfo."""
    prefix = str(path).rstrip("/")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is already gone


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class Podman:
    """Podman for one lab host: its netns, its own state, its CNI config dir.

    cni_config_dir defaults to <state_dir>/cni; cleanup() removes state_dir but
    never a cni_config_dir outside it.
    """

    def __init__(self, netns, state_dir, cni_config_dir=None, cni_plugin_dirs=DEFAULT_PLUGIN_DIRS,
                 image_tar=None, *, image=IMAGE, driver="vfs", timeout=60):
        self.netns = netns
        self.state_dir = Path(state_dir).resolve()
        self.cni_config_dir = Path(cni_config_dir).resolve() if cni_config_dir else self.state_dir / "cni"
        self.cni_plugin_dirs = [str(Path(d).resolve()) for d in cni_plugin_dirs]
        self.image_tar = Path(image_tar) if image_tar else None
        self.image = image
        self.driver = driver
        self.timeout = timeout
        self.root = self.state_dir / "root"
        self.runroot = self.state_dir / "run"
        self.tmpdir = self.state_dir / "tmp"
        self.containers_conf = self.state_dir / "containers.conf"
        self.storage_conf = self.state_dir / "storage.conf"

    def __enter__(self):
        return self.setup()

    def __exit__(self, *exc):
        self.cleanup()

    # -- plumbing -------------------------------------------------------------

    def argv(self, *args):
        """The full command line of one podman call on this host."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "podman",
                "--root", str(self.root), "--runroot", str(self.runroot), "--tmpdir", str(self.tmpdir),
                "--storage-driver", self.driver, "--network-config-dir", str(self.cni_config_dir),
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
                *map(str, args)]

    def podman(self, *args, check=True, timeout=None, input=None):
        """Run one podman command on this host; PodmanError (with stderr) on failure or timeout."""
        argv = self.argv(*args)
        env = dict(os.environ, CONTAINERS_CONF=str(self.containers_conf),
                   CONTAINERS_STORAGE_CONF=str(self.storage_conf))
        try:
            r = subprocess.run(argv, env=env, capture_output=True, text=True, input=input, check=False,
                               timeout=timeout or self.timeout, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise PodmanError(argv, "timeout", _text(e.stderr), _text(e.stdout)) from None
        if check and r.returncode != 0:
            raise PodmanError(argv, r.returncode, r.stderr, r.stdout)
        return r

    # -- lifecycle ------------------------------------------------------------

    def setup(self):
        """Write this host's containers.conf/storage.conf and import the image (once)."""
        for d in (self.root, self.runroot, self.tmpdir, self.cni_config_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.containers_conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
            'log_driver = "k8s-file"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"tmp_dir = {json.dumps(str(self.tmpdir))}\n"
            'lock_type = "file"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = {json.dumps(self.cni_plugin_dirs)}\n"
            f"network_config_dir = {json.dumps(str(self.cni_config_dir))}\n")
        self.storage_conf.write_text(
            "[storage]\n"
            f"driver = {json.dumps(self.driver)}\n"
            f"graphroot = {json.dumps(str(self.root))}\n"
            f"runroot = {json.dumps(str(self.runroot))}\n")
        if self.image_tar and self.podman("image", "exists", self.image, check=False).returncode != 0:
            self.podman("import", "-q", self.image_tar, self.image)
        return self

    def cleanup(self):
        """Remove every container of this host and this host's state dir.

        podman itself stops the containers and their conmon (rm -af -t 0), which
        also runs CNI DEL in this netns. Anything it failed to end is ended only
        by the pids/netns paths recorded from `podman inspect` before the rm.
        Errors are collected and raised at the end, after everything was tried.
        """
        if not self.state_dir.exists():
            return
        errors, pids, sandboxes, ids = [], [], [], []
        try:
            if not self.containers_conf.exists():
                raise OSError(f"{self.containers_conf} missing (setup never ran?)")
            for c in self.inspect_all():
                ids.append(c["Id"])
                for pid in (c["State"].get("Pid"), c["State"].get("ConmonPid")):
                    if pid:
                        pids.append((pid, _start_time(pid)))
                if c["NetworkSettings"].get("SandboxKey"):
                    sandboxes.append(c["NetworkSettings"]["SandboxKey"])
            self.podman("rm", "-af", "-t", "0", timeout=max(self.timeout, 120))
            left = self.ps()
            if left:
                errors.append(f"containers left after rm -af: {[c['Names'] for c in left]}")
        except (PodmanError, OSError, ValueError) as e:
            errors.append(str(e))
        deadline = time.monotonic() + 5  # conmon exits just after `rm` returns
        while any(s and _start_time(p) == s for p, s in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, started in pids:
            if started and _start_time(pid) == started:
                errors.append(f"pid {pid} ({_comm(pid)}) outlived podman rm; killed")
                os.kill(pid, signal.SIGKILL)
        for path in sandboxes:
            if os.path.lexists(path):
                errors.append(f"netns {path} outlived podman rm; removed")
                subprocess.run(["umount", path], capture_output=True, check=False)
                os.unlink(path)
        for cid in ids:
            for f in CNI_CACHE.glob(f"*-{cid}-*"):
                f.unlink()
        for point in _mounts_under(self.state_dir):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.state_dir.exists():
            errors.append(f"could not remove {self.state_dir}")
        if errors:
            raise RuntimeError(f"podman cleanup of {self.netns}: " + "; ".join(errors))

    # -- containers -----------------------------------------------------------

    def run(self, name, network, *cmd, cap_add=("NET_RAW",), extra=()):
        """`podman run -d` on `network` (a conflist name); returns the container id."""
        caps = [a for cap in cap_add for a in ("--cap-add", cap)]
        r = self.podman("run", "-d", "--pull", "never", "--name", name, "--network", network, *caps, *extra,
                        self.image, *(cmd or ("sleep", "3600")))
        return r.stdout.strip().splitlines()[-1]

    def exec(self, name, *cmd, check=True, timeout=None):
        """Run cmd inside the container; returns the CompletedProcess."""
        return self.podman("exec", name, *cmd, check=check, timeout=timeout)

    def rm(self, name):
        """`podman rm -f -t 0` (the CNI DEL runs in this host's netns)."""
        return self.podman("rm", "-f", "-t", "0", name)

    def ps(self):
        """All containers of this host (podman ps -a, as dicts)."""
        return json.loads(self.podman("ps", "-a", "--format", "json").stdout or "[]")

    def inspect(self, name):
        return json.loads(self.podman("inspect", "--type", "container", name).stdout)[0]

    def inspect_all(self):
        ids = [c["Id"] for c in self.ps()]
        return json.loads(self.podman("inspect", "--type", "container", *ids).stdout) if ids else []

    def inspect_ip(self, name, network=None):
        """The IPv4 address the CNI result gave the container (on `network`, or its only network)."""
        nets = self.inspect(name)["NetworkSettings"]["Networks"]
        net = nets[network] if network else next(iter(nets.values()))
        return net["IPAddress"]

    def logs(self, name):
        r = self.podman("logs", name, check=False)
        return r.stdout + r.stderr


def _text(b):
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
