"""The IPIP VM's second phase: the real site.yml, run from this machine over ssh, on the VM's kernel.

The first phase (netfleet_ipip) walks every mode with the collection's plans applied by native tools,
because Python, and so Ansible, is slow under software emulation: a site.yml run on these four hosts
takes about 30 s in the VM (two module runs per host, the facts and the converge, at 4-7 s of emulated
CPU each). This phase runs site.yml in the two modes that need the VM's IPIP, ``cross_subnet`` (both
kinds of peers: tunnel and direct) and then ``always``, each twice: the first converges (the bare lab,
then the mode change), the second must report ``changed=0``. ``build`` writes into a work folder the
guest may write (``--rwdir``):

- ``guest-site.sh``, the guest's script: the QEMU user-networking NIC at 10.0.2.15 (the one port
  forward of ``netfleet_vm.Vm``) and an sshd on it, then a bare lab of inventories/lab-ipip as
  lab_fabric builds it (a fabric namespace with a bridge per segment, a plain router namespace, hosts
  with eth0, their address and a default route) plus IP-protocol-4 counters; it prints ``guest:
  ready`` and keeps the lab until the host creates ``stop``;
- ``inventory.yml``, layered over inventories/lab-ipip: every host reached with the standard ``ssh``
  connection as root at 127.0.0.1:<port>, its shell entering the host's network namespace
  (``ns-<host>``: ``nsenter --net``, the mount namespace kept so workload namespaces that a task adds
  are visible to every later task), Debian's ``/usr/bin/python3`` as interpreter;
- ``measure-<mode>.sh``: routes, devices, chains and BGP per host, the ping matrix, counters.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from netfleet_ipip import bare_lab, lab_lines, prepare_steps, traffic_lines

REPO = Path(__file__).resolve().parents[2]
STEPS = ("cross_subnet", "always")  # site.yml twice in each, in this order
PREFIX = "va"  # namespace prefix inside the VM (the VM is this run's own: no other run shares it)
GUEST_IP = "10.0.2.15"  # QEMU user networking's guest address, where hostfwd delivers


def _keypair(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "netfleet-ipip-vm", "-f", str(path)],
                   check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def _script(path, lines):
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def build(workdir, vm):
    """Write the guest script, the inventory and the measure scripts into ``workdir`` (``vm``'s, a netfleet_vm.Vm:
    its port, key, known_hosts, ssh ControlPath and stop file).

    Returns a dict: ``script`` (the guest's), ``inventory``, ``measure`` (step -> script) and ``facts`` (the plan,
    for the assertions).
    """
    workdir, results, fabs, hostvars = prepare_steps(workdir, STEPS)
    fab0 = fabs[STEPS[0]]
    hosts = sorted(fab0["hosts"])
    facts = {"hosts": {}, "steps": list(STEPS),
             "ipip": {step: {h: fabs[step]["hosts"][h]["ipip"] for h in hosts} for step in STEPS}}

    # ssh: a client key and a host key made for this run; known_hosts pins the guest's
    client_pub = _keypair(vm.key)
    host_pub = _keypair(workdir / "host_key")
    (workdir / "authorized_keys").write_text(client_pub + "\n")
    vm.known_hosts.write_text(f"[127.0.0.1]:{vm.port} {host_pub}\n")
    (workdir / "sshd_config").write_text("\n".join([
        f"ListenAddress {GUEST_IP}:22", f"HostKey {workdir}/host_key", "PidFile /run/netfleet-vm-sshd.pid",
        f"AuthorizedKeysFile {workdir}/authorized_keys", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "UseDNS no", "MaxSessions 64", "MaxStartups 64:30:128", "Subsystem sftp internal-sftp",
        "LogLevel INFO", ""]))

    lab = bare_lab(fab0, hostvars, PREFIX)  # the lab as lab_fabric builds it: site.yml does the rest
    inventory_hosts = {}
    for host in hosts:
        hp = fab0["hosts"][host]
        wl = hp["workloads"][0]
        ns = f"{PREFIX}-{host}"
        facts["hosts"][host] = {"segment": lab["segment"][host], "node_ip": hp["node_ip"], "block": hp["block"],
                                "workload": wl["name"], "wl_ip": wl["ip"], "ifname": wl["ifname"],
                                "wl_netns": f"{PREFIX}-{host}-{wl['name']}"}
        # the host's shell: its network namespace, the VM's mount namespace (a workload namespace that a task
        # adds with `ip netns add` stays visible to later tasks; no task reads /sys)
        wrapper = _script(workdir / f"ns-{host}", [
            "#!/bin/sh", f'exec /usr/bin/nsenter --net=/run/netns/{ns} -- /bin/sh "$@"'])
        inventory_hosts[host] = {
            "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": vm.port, "ansible_user": "root",
            "ansible_ssh_private_key_file": str(vm.key),
            "ansible_ssh_args": f"-o ControlMaster=auto -o ControlPersist=300s -o ControlPath={vm.control_path}",
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={vm.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_host_key_checking": True,  # else ansible.cfg's host_key_checking=False puts =no first
            "ansible_shell_executable": str(wrapper), "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_remote_tmp": "/tmp/.ansible-tmp"}
    inventory = workdir / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": inventory_hosts}}, indent=1) + "\n")

    lines = ["#!/bin/bash", "set -u", f"W={shlex.quote(str(workdir))}", f"P={PREFIX}",
             'mark() { echo "guest: $1 at ${SECONDS}s"; }',
             # the controller's way in: the user-networking NIC (guest.sh made the module loader)
             "/tmp/netfleet-modprobe virtio_net || { echo 'guest: modprobe virtio_net failed'; exit 92; }",
             "for t in $(seq 1 50); do nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1); [ -n \"$nic\" ] && break;"
             " sleep 0.2; done",
             "[ -n \"$nic\" ] || { echo 'guest: no NIC for the ssh forward'; exit 93; }",
             f'ip addr add {GUEST_IP}/24 dev "$nic" && ip link set "$nic" up',
             # sshd without PAM refuses a "locked" account, and root's password field here is `*`: the VM sees
             # a copy of /etc/shadow (bind-mounted in the guest only) whose field no password matches
             "sed 's/^root:[*!][^:]*:/root:no-password-login:/' /etc/shadow > /run/netfleet-vm-shadow",
             "chmod 0640 /run/netfleet-vm-shadow && mount --bind /run/netfleet-vm-shadow /etc/shadow",
             # root's home is this machine's /root (the shared filesystem): its dotfiles would run on every ssh
             # command (a `pyenv init` in .bashrc costs 5 s per command under emulation); the guest's is empty
             "mount -t tmpfs -o mode=0700 netfleet-vm-home /root",
             "mkdir -p /run/sshd && /usr/sbin/sshd -f $W/sshd_config -E $W/sshd.log "
             "|| { echo 'guest: sshd did not start'; cat $W/sshd.log; exit 94; }",
             "mark 'building the lab'",
             *lab_lines(lab), f"ip netns exec {PREFIX}-router bash -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'"]
    lines += ["mark ready", f"while [ ! -e {shlex.quote(str(vm.stop_file))} ]; do sleep 1; done",
              # BIRD was started by site.yml with pid files in the lab's state directory; sshd by its own
              f"for f in /run/netfleet/{PREFIX}/*/bird.pid /run/netfleet-vm-sshd.pid; do",
              '  [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done',
              "mark done", "exit 0"]
    script = _script(workdir / "guest-site.sh", lines)

    measure = {}
    for step in STEPS:
        d = f"{results}/{step}"
        m = ["#!/bin/bash", "set -u", f"P={PREFIX}", f"R={shlex.quote(d)}", "mkdir -p $R",
             'ipn() { ip -n "$1" "${@:2}"; }', 'nx() { ip netns exec "$@"; }',
             # every host has every remote block from BIRD (reachable or not) before the dumps
             "for t in $(seq 1 40); do ok=1",
             *[f"  [ $(ipn $P-{h} -4 route show proto bird | wc -l) -ge {len(hosts) - 1} ] || ok=0" for h in hosts],
             "  [ $ok = 1 ] && break; sleep 1; done"]
        for h in hosts:
            ctl = f"/run/netfleet/{PREFIX}/{h}/bird.ctl"
            wl = facts["hosts"][h]
            m += [f"ipn $P-{h} -j -d link show > $R/links-{h}.json",
                  f"ipn $P-{h} -j route show proto bird > $R/routes-{h}.json",
                  f"nx $P-{h} iptables-save -t filter > $R/filter-{h}.txt",
                  f"ipn {wl['wl_netns']} -j link show dev eth0 > $R/wl-link-{h}.json",
                  f"nx $P-{h} birdc -s {ctl} show protocols all > $R/bgp-{h}.txt"]
        m += traffic_lines(facts["hosts"], "$R", "-c 3 -i 0.2")
        m.append("exit 0")
        measure[step] = _script(workdir / f"measure-{step}.sh", m)
    (workdir / "facts.json").write_text(json.dumps(facts, indent=1))
    return {"script": script, "inventory": inventory, "measure": measure, "facts": facts}
