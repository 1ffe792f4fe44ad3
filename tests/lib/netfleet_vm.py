"""A small VM for what this machine's kernel cannot do (IPIP).

Debian's ``linux-image-amd64`` kernel (its ABI package resolved through ``apt-cache depends``,
fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache directory, with
``depmod`` run once) booted by virtme-ng under software emulation, the host filesystem shared
read-only (9p), so the guest runs this repository's ``.venv`` and the host's bird/iproute2/
iptables. The guest's exit status comes back as vng's.

    python3 tests/lib/netfleet_vm.py prepare          # fetch + unpack the kernel (idempotent)
    python3 tests/lib/netfleet_vm.py run CMD ARGS...  # boot once, run CMD inside (after tests/vm/guest.sh)

``Vm`` boots the same VM in the background with one port forward, 127.0.0.1:<free port> on this machine
to the guest's port 22 (QEMU user networking with ``restrict=on``: the guest reaches nothing but that
forward), so a controller on this machine can reach an sshd the guest script starts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
# Inside the repository's ignored build dir: the guest sees the host's /work tree but not its /var.
CACHE = Path(os.environ.get("NETFLEET_VM_CACHE", str(REPO / ".lab" / "vm-kernel")))
META_PACKAGE = "linux-image-amd64"


class VmError(RuntimeError):
    pass


def _run(argv, **kw):
    proc = subprocess.run(argv, capture_output=True, check=False, text=True, **kw)
    if proc.returncode != 0:
        raise VmError(f"{' '.join(map(str, argv))} failed (rc={proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def kernel_package():
    """The ABI package behind linux-image-amd64 (e.g. linux-image-6.1.0-56-amd64)."""
    out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, check=False, text=True).stdout
    found = re.findall(r"Depends:\s+(linux-image-\S+)", out)
    if not found:  # no package lists yet (fresh machine): read them once
        _run(["apt-get", "update", "-qq"])
        out = _run(["apt-cache", "depends", META_PACKAGE])
        found = re.findall(r"Depends:\s+(linux-image-\S+)", out)
    if not found:
        raise VmError(f"apt-cache depends {META_PACKAGE} names no linux-image package (run apt-get update): {out}")
    return found[0]


def prepare():
    """Unpacked kernel tree for the current Debian kernel package: (vmlinuz path, root dir). Idempotent."""
    package = kernel_package()
    root = CACHE / package
    release = package[len("linux-image-"):]
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    moddir = root / "lib" / "modules" / release
    if vmlinuz.is_file() and (moddir / "modules.dep").is_file():
        return vmlinuz, root
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("*.deb"):
        old.unlink()
    _run(["apt-get", "download", package], cwd=CACHE)
    debs = sorted(CACHE.glob(f"{package}_*.deb"))
    if not debs:
        raise VmError(f"apt-get download {package} left no .deb in {CACHE}")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["dpkg", "-x", str(debs[-1]), str(tmp)])
    _run(["depmod", "-b", str(tmp), release])
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    for deb in debs:
        deb.unlink()
    return vmlinuz, root


def vng_command(vmlinuz, script, rwdirs=(), memory="1G", cpus=2, command_args=(), ssh_port=None):
    vng = shutil.which("vng", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if vng is None:
        raise VmError("vng (virtme-ng) is not installed: run scripts/setup")
    argv = [vng, "--disable-kvm", "--force-9p", "--run", str(vmlinuz), "--memory", memory, "--cpus", str(cpus)]
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    if ssh_port:  # the guest's first NIC; its script gives it 10.0.2.15/24 (QEMU user networking's guest address)
        argv.append(f"--qemu-opts=-netdev user,id=nfssh,restrict=on,hostfwd=tcp:127.0.0.1:{int(ssh_port)}-:22 "
                    "-device virtio-net-pci,netdev=nfssh")
    return argv + ["--exec", " ".join(shlex.quote(str(a)) for a in [script, *command_args])]


def boot(script, rwdirs=(), timeout=900, memory="1G", cpus=2, env=None, command_args=()):
    """Boot the VM once running ``script``; return the CompletedProcess (guest status = returncode)."""
    vmlinuz, _root = prepare()
    argv = vng_command(vmlinuz, script, rwdirs, memory, cpus, command_args)
    path = f"{VENV_BIN}:{os.environ.get('PATH', '')}"  # vng runs virtme-run from the venv
    return subprocess.run(argv, capture_output=True, check=False, text=True, timeout=timeout, cwd=REPO,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, PATH=path, **(env or {})))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    """The VM booted in the background running ``script``; ``ssh`` reaches the guest once its sshd is up.

    ``script`` must start an sshd on the guest's port 22 that accepts ``key`` and presents the host key in
    ``known_hosts`` (both written by the caller), print ``ready_line`` and keep running until ``stop()``
    creates ``stop_file``.
    """

    def __init__(self, script, workdir, rwdirs=(), memory="1G", cpus=2, command_args=()):
        workdir = Path(workdir)
        self.script, self.rwdirs, self.memory, self.cpus, self.command_args = script, rwdirs, memory, cpus, command_args
        self.port = free_port()
        # what the guest script and the controller agree on, all in ``workdir`` (an rwdir, or inside one)
        self.key, self.known_hosts, self.stop_file = workdir / "id", workdir / "known_hosts", workdir / "stop"
        # one ssh master for this Vm's own commands and for Ansible's (same ControlPath): one slow handshake
        self.control_path = f"{workdir}/cp-%C"
        self.log = workdir / "vm-console.log"
        self.proc = None
        self.last_probe = "not tried"

    def ssh_argv(self):
        return ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-o", "ControlMaster=auto", "-o", "ControlPersist=300s", "-o", f"ControlPath={self.control_path}",
                "root@127.0.0.1"]

    def start(self):
        vmlinuz, _root = prepare()
        argv = vng_command(vmlinuz, self.script, self.rwdirs, self.memory, self.cpus, self.command_args,
                           ssh_port=self.port)
        path = f"{VENV_BIN}:{os.environ.get('PATH', '')}"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=dict(os.environ, PATH=path), start_new_session=True)
        return self

    def output(self):
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, ready_line, timeout):
        """Wait until the guest printed ``ready_line`` and answers ssh; raise VmError with its output if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VmError(f"the VM exited (rc={self.proc.returncode}) before it was ready:\n"
                              f"{self.output()[-5000:]}")
            if ready_line in self.output():
                probe = subprocess.run([*self.ssh_argv(), "true"], capture_output=True, check=False, text=True,
                                       timeout=60)
                if probe.returncode == 0:
                    return
                self.last_probe = probe.stderr.strip()
            time.sleep(1)
        raise VmError(f"the VM was not ready after {timeout} s (ssh: {self.last_probe}):\n{self.output()[-5000:]}")

    def ssh(self, command, timeout=300, check=True):
        proc = subprocess.run([*self.ssh_argv(), command], capture_output=True, check=False, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise VmError(f"in the VM: {command} failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
                          f"{proc.stderr[-3000:]}")
        return proc

    def stop(self, timeout=120):
        """Ask the guest script to finish (it stops its daemons) and wait for the VM; kill it if it hangs."""
        if self.proc is None:
            return None
        argv = self.ssh_argv()  # end the ssh master (options before the destination)
        subprocess.run([*argv[:-1], "-O", "exit", argv[-1]], capture_output=True, check=False, timeout=30)
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # vng and its qemu: our own process group, nothing else
            self.proc.wait()
        self._out.close()
        return self.proc.returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        print(*prepare())
    elif sys.argv[1:2] == ["run"] and len(sys.argv) >= 3:
        proc = boot(REPO / "tests" / "vm" / "guest.sh", command_args=sys.argv[2:])
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    else:
        sys.exit(__doc__)
