"""Verifier of the ipip scenario: after site.yml (twice, the second with nothing to change) in the VM, in mode
cross_subnet, every host has tun0 (local = its node IP, MTU = parent - 20) and cali-INPUT-ipip; BIRD's routes
to the other segment's blocks go through tun0 and the own segment's stay direct; exactly those peers get
encapsulated packets; the router saw only IPIP between the segments; workload veths have the tunnel MTU; every
workload pair pings; and calico_tunnel would change nothing again."""

import json

from netfleet_ipip_check import check_step
from netfleet_ipip_molecule import measure, workdir


def test_cross_subnet_in_the_vm_matches_the_plan():
    work = workdir()
    facts = json.loads((work / "facts.json").read_text())
    seen = []
    problems, checked = check_step(measure(work, "cross_subnet"), facts, "cross_subnet", seen.append,
                                   label="molecule ipip")
    assert not problems, "\n".join(problems + seen)
    assert checked == len(facts["hosts"]) == 4
