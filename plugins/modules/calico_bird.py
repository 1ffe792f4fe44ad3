#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: calico_bird
short_description: Run, reload and stop the BIRD 2 BGP speaker of a host
version_added: 0.1.0
description:
  - Keeps the host's BIRD daemon in the requested state, either as the distribution's systemd unit
    (real hosts) or as a daemon tracked by its own pid file (hosts that are network namespaces in the lab).
  - Every start, restart and reload first validates the configuration with C(bird -p -c); a configuration
    BIRD rejects never reaches a running daemon, and the module fails with BIRD's own message.
  - A reload is C(birdc configure), so BGP sessions whose configuration did not change stay up.
author:
  - netfleet.calico contributors (!UNKNOWN)
options:
  state:
    description:
      - C(started) starts BIRD when it is not running.
      - C(reloaded) starts it when it is not running, otherwise asks it to re-read its configuration.
      - C(restarted) restarts it gracefully, as an upgrade would. C(birdc graceful restart) makes BIRD exit
        while the kernel keeps the routes it installed and peers keep this host's routes (BGP graceful
        restart), then BIRD is started again and takes its routes over. Workloads keep forwarding.
      - C(stopped) stops it.
    type: str
    choices: [started, reloaded, restarted, stopped]
    default: started
  manager:
    description:
      - C(systemd) drives the unit named by O(service).
      - C(pidfile) runs C(bird -c config -s socket -P pidfile) directly; used where several hosts share one
        machine (network namespaces).
    type: str
    choices: [systemd, pidfile]
    default: systemd
  config:
    description: BIRD configuration file.
    type: path
    default: /etc/bird/bird.conf
  socket:
    description: BIRD control socket.
    type: path
    default: /run/bird/bird.ctl
  pidfile:
    description: Pid file of the daemon. Required when O(manager=pidfile).
    type: path
  service:
    description: systemd unit name when O(manager=systemd).
    type: str
    default: bird
  bird_binary:
    description: Path or name of the C(bird) binary.
    type: str
    default: bird
  timeout:
    description: Seconds to wait for a started daemon to answer on its control socket.
    type: float
    default: 10
extends_documentation_fragment:
  - netfleet.calico.birdc
attributes:
  check_mode:
    support: full
    description: Validates the configuration and reports what it would do; never starts, stops or reloads.
  diff_mode:
    support: full
    description: Shows the daemon state before and after.
  platform:
    platforms: linux
    support: full
    description: Linux hosts with iproute2 and BIRD 2 (systemd unit or pid-file daemon).
notes:
  - Validation runs C(bird -p -c) which only parses; it does not need the daemon.
"""

EXAMPLES = r"""
- name: Start BIRD from systemd (real host)
  netfleet.calico.calico_bird:
    state: started

- name: Reload after the configuration changed (handler)
  netfleet.calico.calico_bird:
    state: reloaded
    manager: pidfile
    config: /run/netfleet/nf/host-a/bird.conf
    socket: /run/netfleet/nf/host-a/bird.ctl
    pidfile: /run/netfleet/nf/host-a/bird.pid
"""

RETURN = r"""
pid:
  description: Pid of the running daemon (pid-file manager), null when stopped or under systemd.
  returned: always
  type: int
  sample: 4242
action:
  description: What the module did (or would do in check mode).
  returned: always
  type: str
  sample: reloaded
message:
  description: BIRD's answer to the reload, when one was done.
  returned: when reloaded
  type: str
  sample: Reconfigured
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfleet.calico.plugins.module_utils.bird import Bird
from ansible_collections.netfleet.calico.plugins.module_utils.result import exit_with_diff


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="started", choices=["started", "reloaded", "restarted", "stopped"]),
            manager=dict(type="str", default="systemd", choices=["systemd", "pidfile"]),
            config=dict(type="path", default="/etc/bird/bird.conf"),
            socket=dict(type="path", default="/run/bird/bird.ctl"),
            pidfile=dict(type="path"),
            service=dict(type="str", default="bird"),
            bird_binary=dict(type="str", default="bird"),
            birdc_binary=dict(type="str", default="birdc"),
            timeout=dict(type="float", default=10),
        ),
        required_if=[("manager", "pidfile", ["pidfile"])],
        supports_check_mode=True,
    )
    bird = Bird(module)
    state = module.params["state"]
    pid = bird.running_pid()
    before = "running" if pid else "stopped"

    if state == "stopped":
        action = "stop" if pid else "none"
    elif not pid:
        action = "start"
    elif state == "restarted":
        action = "restart"
    elif state == "reloaded":
        action = "reload"
    else:
        action = "none"

    # Validate before anything reaches a running BIRD. In check mode the configuration may not be
    # written yet (the template task did not run for real): validate what exists.
    if action in ("start", "restart", "reload") and (
            not module.check_mode or os.path.exists(module.params["config"])):
        bird.validate()

    message = None
    if not module.check_mode:
        if action in ("stop", "restart"):
            bird.stop(pid, graceful=action == "restart")
        if action in ("start", "restart"):
            bird.start()
        if action == "reload":
            message = bird.reload()

    after = "stopped" if state == "stopped" else "running"
    new_pid = None
    if not module.check_mode and module.params["manager"] == "pidfile" and after == "running":
        new_pid = bird.running_pid()
    result = dict(
        changed=action != "none",
        action=action,
        pid=new_pid,
        diff=dict(before="bird: %s\n" % before,
                  after="bird: %s%s\n" % (after, " (reloaded)" if action == "reload" else "")),
    )
    if message:
        result["message"] = message
    exit_with_diff(module, result)


if __name__ == "__main__":
    main()
