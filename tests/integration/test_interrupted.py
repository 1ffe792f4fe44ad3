"""Interrupted runs: an ansible-playbook killed (SIGKILL, its whole process group: the controller, its workers
and the module processes they started on the hosts) in the middle of a converge, then run again, converges
with no duplicate or orphaned object.

inventories/lab-cni (two racks with reflectors, three CNI nodes, chains, ipsets, the CNI agent) and a changed
copy of it (workloads added and removed, a workload's labels and a policy's port changed). Both are first
converged cleanly, each state recorded (links, addresses, routes, cali-* rules, ipsets, sysctls, the files of
every host's state directory, BIRD and agent processes, the workloads' own namespaces), normalised so that
re-created objects compare equal (no interface indexes, no counters). Then a run towards the other inventory is
killed at different points of its converge, the next run must succeed and leave exactly the recorded state,
and the run after it must report changed=0. Real kernel, real BIRD, real iptables; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import yaml
from netfleet_lab import REPO, Lab
from netfleet_state import diff, fleet_view

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-cni"
CONVERGE_TASK = "TASK [netfleet.calico.calico_node : Converge the host ("


def changed_inventory(path):
    """lab-cni with workloads added and removed, a workload's labels and a policy's port changed."""
    shutil.copytree(INVENTORY, path)
    doc = yaml.safe_load((path / "hosts.yml").read_text())
    rack1 = doc["all"]["children"]["calico_racks"]["children"]["rack1"]["hosts"]
    rack2 = doc["all"]["children"]["calico_racks"]["children"]["rack2"]["hosts"]
    rack1["n1a"]["calico_workloads"] = [{"name": "s1", "labels": {"app": "db"}},
                                        {"name": "s2", "labels": {"app": "web"}}]
    rack1["n1b"]["calico_workloads"] = [{"name": "t1", "labels": {"app": "web"}}]
    rack2["n2a"]["calico_workloads"] = [{"name": "u1"}, {"name": "u2", "labels": {"app": "db"}}]
    doc["all"]["vars"]["calico_policies"][0]["ingress"][0]["ports"] = [5433]
    (path / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# a run killed part way
# ---------------------------------------------------------------------------------------------

def killed_run(lab, inventory, marker_count, delay):
    """Start site.yml on `inventory`; SIGKILL its process group `delay` seconds after the `marker_count`-th
    converge task started. Returns the lines printed before the kill."""
    argv = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(REPO / "site.yml")]
    proc = subprocess.Popen(argv, cwd=REPO, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines, seen = [], threading.Event()

    def read():
        count = 0
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith(CONVERGE_TASK):
                count += 1
                if count == marker_count:
                    seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not seen.wait(0.05) and proc.poll() is None and time.monotonic() < deadline:
            pass
        assert seen.is_set(), f"converge task {marker_count} never started:\n" + "\n".join(lines[-40:])
        time.sleep(delay)
        assert proc.poll() is None, "site.yml ended before it could be killed:\n" + "\n".join(lines[-40:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    return lines


def converge_again(lab, inventory, expected, denied):
    run = lab.playbook("site.yml", inventory=str(inventory))
    after = fleet_view(lab)
    problems = diff(expected, after)
    assert not problems, "after the interrupted run and one more run:\n" + "\n".join(problems)
    again = lab.playbook("site.yml", inventory=str(inventory))
    changed = {h: r["changed"] for h, r in again.recap.items() if r["changed"]}
    assert not changed, f"the run after that changed {changed}"
    assert lab.ping_matrix() == denied  # exactly the pairs its policy denies
    return run


@pytest.fixture(scope="module")
def lab():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "ir"
    lab = Lab(INVENTORY, prefix)
    with lab.running():
        yield lab


def test_killed_runs_converge_on_the_next_run(lab, tmp_path, report):
    inv_a, inv_b = INVENTORY, changed_inventory(tmp_path / "changed")
    lab_b = Lab(inv_b, lab.prefix)  # the same lab seen through the changed inventory

    lab.playbook("site.yml")
    lab.playbook("playbooks/status.yml")
    state_a, denied_a = fleet_view(lab), lab.ping_matrix()
    lab_b.playbook("site.yml")
    lab_b.playbook("playbooks/status.yml")
    state_b, denied_b = fleet_view(lab_b), lab_b.ping_matrix()
    assert denied_b and len(denied_b) < 20, denied_b  # the policy denies some pairs, not all
    assert diff(state_a, state_b), "the changed inventory must change the fleet"
    lab.playbook("site.yml")
    assert not diff(state_a, fleet_view(lab)), "A -> B -> A must come back to A exactly"

    # (inventory to move to, its lab view, its state and denied pairs, which converge task: 1 the reflectors',
    # 2 the nodes', seconds after it started)
    kills = [(inv_b, lab_b, state_b, denied_b, 1, 0.3), (inv_a, lab, state_a, denied_a, 2, 0.1),
             (inv_b, lab_b, state_b, denied_b, 2, 0.6)]
    halfway = []
    for inventory, view, state, denied, marker, delay in kills:
        lines = killed_run(lab, inventory, marker, delay)
        in_flight = [line for line in lines if line.startswith("TASK [")][-1:]
        halfway.append(len(diff(state, fleet_view(view))))  # what the killed run had not done yet
        converge_again(view, inventory, state, denied)
        task = in_flight[0][:70] if in_flight else "?"
        report(f"interrupted run: killed {delay:.1f} s into converge task {marker} (last task started: {task}), "
               f"{halfway[-1]} differences left; the next run converged to the recorded state, the one after "
               "changed=0")
    assert any(halfway), "no kill left anything undone: the test interrupted nothing"
