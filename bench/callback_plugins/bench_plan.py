# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fabric plan of a site.yml run, for bench/convergence.py (what every host holds once converged).

Not part of the collection (bench/ is not packed). Enabled only by the benchmark:

    ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_plan \
    BENCH_PLAN_FILE=/tmp/plan.json ansible-playbook site.yml ...

writes ``calico_fabric`` as the preflight's set_fact made it (the plan site.yml rolled out) to that file.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_plan
type: aggregate
short_description: Write the fabric plan of a site.yml run to a JSON file (benchmark helper)
description:
  - Writes the C(calico_fabric) fact set by site.yml's preflight to the file named by the environment variable
    C(BENCH_PLAN_FILE).
requirements:
  - enabled in configuration (C(ANSIBLE_CALLBACKS_ENABLED=bench_plan))
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_plan'
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result):
        plan = (result._result.get('ansible_facts') or {}).get('calico_fabric')
        path = os.environ.get('BENCH_PLAN_FILE')
        if plan is not None and path:
            with open(path, 'w') as handle:
                json.dump(plan, handle, default=str)
