# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's one error type and the way it names what is wrong (imported by every other planner part)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

PREFLIGHT = 'netfleet.calico preflight'


class FabricError(AnsibleFilterError):
    """A one-line, actionable planning/preflight error: ``<prefix>: <subject>: <problem> — <fix>``."""

    def __init__(self, subject, problem, fix, prefix=PREFLIGHT):
        self.subject = subject
        self.problem = problem
        self.fix = fix
        self.prefix = prefix
        super().__init__(f'{prefix}: {subject}: {problem} — {fix}', show_content=False)

    def with_prefix(self, prefix):
        return FabricError(self.subject, self.problem, self.fix, prefix=prefix)


class BlocksFull(FabricError):
    """A host's blocks have no automatic workload address left: the planner may give the host another block."""


def host_subject(name):
    return f"host '{name}'"


def rack_subject(name):
    return f"rack '{name}'"
