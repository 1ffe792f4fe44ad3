"""A small VM for what this machine's kernel cannot do (IPIP): design §4.

Debian's ``linux-image-amd64`` kernel (its ABI package resolved through ``apt-cache depends``,
fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache directory, with
``depmod`` run once) booted by virtme-ng under software emulation, the host filesystem shared
read-only (9p), so the guest runs this repository's ``.venv`` and the host's bird/iproute2/
iptables. The guest's exit status comes back as vng's.

    python3 tests/lib/netfleet_vm.py prepare          # fetch + unpack the kernel (idempotent)
    python3 tests/lib/netfleet_vm.py run CMD ARGS...  # boot once, run CMD inside (after tests/vm/guest.sh)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
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


def vng_command(vmlinuz, script, rwdirs=(), memory="1G", cpus=2, command_args=()):
    vng = shutil.which("vng", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if vng is None:
        raise VmError("vng (virtme-ng) is not installed: run scripts/setup")
    argv = [vng, "--disable-kvm", "--force-9p", "--run", str(vmlinuz), "--memory", memory, "--cpus", str(cpus)]
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    return argv + ["--exec", " ".join(shlex.quote(str(a)) for a in [script, *command_args])]


def boot(script, rwdirs=(), timeout=900, memory="1G", cpus=2, env=None, command_args=()):
    """Boot the VM once running ``script``; return the CompletedProcess (guest status = returncode)."""
    vmlinuz, _root = prepare()
    argv = vng_command(vmlinuz, script, rwdirs, memory, cpus, command_args)
    path = f"{VENV_BIN}:{os.environ.get('PATH', '')}"  # vng runs virtme-run from the venv
    return subprocess.run(argv, capture_output=True, check=False, text=True, timeout=timeout, cwd=REPO,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, PATH=path, **(env or {})))


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
