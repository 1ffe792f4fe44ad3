#!/usr/bin/python
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_ping_matrix
short_description: Ping every lab workload from every other workload
version_added: 0.1.0
description:
  - Runs on the lab's controller. Each workload of the lab is a network namespace; this module sends
    real ICMP echo requests from every workload's namespace to every other workload's address
    (C(nsenter --net=/run/netns/NS ping)), a few at a time in parallel, and returns the matrix.
  - Fails when any pair does not answer, unless O(fail_on_loss=false).
  - Read-only.
author:
  - netfleet.calico contributors (!UNKNOWN)
options:
  endpoints:
    description:
      - Workloads per host, as returned by M(netfleet.calico.calico_node_facts) in
        C(calico_node_facts.endpoints) (each needs C(name), C(ip) and C(netns)).
    type: dict
    required: true
  count:
    description: Echo requests per pair.
    type: int
    default: 1
  timeout:
    description: Seconds to wait for each reply.
    type: int
    default: 2
  parallel:
    description: Pairs probed at the same time.
    type: int
    default: 16
  machines_dir:
    description:
      - The machine lab's C(<state_dir>/machines) (M(netfleet.calico_lab.lab_machines)). A host that runs as a machine
        has its workload namespaces inside the machine, entered with C(nsenter --net=/proc/<leader>/root/run/netns/NS).
    type: path
  fail_on_loss:
    description: Fail when a pair does not answer.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Read-only; pings in check mode too.
  diff_mode:
    support: none
    description: Read-only; there is nothing to diff.
  platform:
    platforms: linux
    support: full
    description: The Linux controller that holds the lab's network namespaces.
"""

EXAMPLES = r"""
- name: Ping matrix of the lab
  netfleet.calico_lab.lab_ping_matrix:
    endpoints:
      host-a: [{name: a1, ip: 172.17.8.2, netns: nf-host-a-a1}]
      host-b: [{name: b1, ip: 172.17.9.2, netns: nf-host-b-b1}]
"""

RETURN = r"""
pairs:
  description: Number of ordered pairs probed.
  returned: always
  type: int
  sample: 30
reachable:
  description: Pairs that answered.
  returned: always
  type: int
  sample: 30
failed_pairs:
  description: Pairs that did not answer, as C(src -> dst (ip)).
  returned: always
  type: list
  elements: str
text:
  description: The matrix (rows are sources, columns destinations), or a summary for large labs.
  returned: always
  type: str
"""

import concurrent.futures
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico_lab.plugins.module_utils.lab_machine import netns_dir

MATRIX_MAX = 24  # above this many workloads, print a summary instead of the grid


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type="dict", required=True),
            count=dict(type="int", default=1),
            timeout=dict(type="int", default=2),
            parallel=dict(type="int", default=16),
            machines_dir=dict(type="path"),
            fail_on_loss=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    ping = module.get_bin_path("ping", required=True)
    nsenter = module.get_bin_path("nsenter", required=True)
    wls = []
    for host in sorted(p["endpoints"]):
        where = netns_dir(p["machines_dir"], host)
        for ep in sorted(p["endpoints"][host] or [], key=lambda e: str(e.get("name"))):
            if not all(ep.get(k) for k in ("name", "ip", "netns")):
                module.fail_json(msg="endpoint %r of %s needs name, ip and netns" % (ep, host))
            wls.append(("%s/%s" % (host, ep["name"]), ep["ip"], os.path.join(where, ep["netns"])))
    pairs = [(s, d) for s in wls for d in wls if s != d]

    def probe(pair):
        (_unused, _unused, netns), (_unused, dst, _unused) = pair
        rc, _unused, _unused = module.run_command([nsenter, "--net=" + netns, ping, "-n", "-q",
                                                   "-c", str(p["count"]), "-W", str(p["timeout"]), dst])
        return rc == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, p["parallel"])) as pool:
        ok = list(pool.map(probe, pairs))
    failed = ["%s -> %s (%s)" % (s[0], d[0], d[1]) for (s, d), good in zip(pairs, ok) if not good]
    result = {(s[0], d[0]): good for (s, d), good in zip(pairs, ok)}

    if len(wls) <= MATRIX_MAX:
        names = [w[0] for w in wls]
        width = max([len(n) for n in names] + [4])
        lines = [" " * width + "  " + " ".join(str(i + 1).rjust(3) for i in range(len(names)))]
        for i, src in enumerate(names):
            cells = []
            for dst in names:
                cells.append("  ." if src == dst else (" ok" if result[(src, dst)] else " --"))
            lines.append("%s  %s   (%d)" % (src.ljust(width), " ".join(cells), i + 1))
        text = "\n".join(lines) + "\n"
    else:
        text = ""
    text += "ping matrix: %d/%d workload pairs reachable" % (len(pairs) - len(failed), len(pairs))
    out = dict(changed=False, pairs=len(pairs), reachable=len(pairs) - len(failed), failed_pairs=failed, text=text)
    if failed and p["fail_on_loss"]:
        module.fail_json(msg="%d of %d workload pairs unreachable: %s" % (len(failed), len(pairs),
                                                                          "; ".join(failed[:10])), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
