# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: render_template
author: netfleet.calico contributors (!UNKNOWN)
version_added: 0.2.0
short_description: Render a template file, as ansible.builtin.template's lookup, without copying every variable
description:
  - Returns, for each template file, its text rendered with the task's variables plus O(template_vars), with the
    same search path, options and result as the P(ansible.builtin.template#lookup) lookup, which this lookup runs.
  - "The difference: P(ansible.builtin.template#lookup) deep-copies all of the task's variables before each
    rendering, among them every group's host list and C(ansible_play_hosts). On a fleet of hundreds of hosts
    that copy costs tens of milliseconds of the controller's CPU per host and template. This lookup gives it a
    shallow copy instead (the rendering adds variables to its copy; it never changes the values), as the
    P(ansible.builtin.template#module) module does."
  - The roles render C(bird.conf) with it.
options:
  _terms:
    description: Template files, found as P(ansible.builtin.template#lookup) finds them (a role's C(templates/) first).
    required: true
  template_vars:
    description: More variables for the template (they win over the task's).
    type: dict
    default: {}
  variable_start_string:
    description: The string marking the beginning of a print statement.
    type: str
    default: '{{'
  variable_end_string:
    description: The string marking the end of a print statement.
    type: str
    default: '}}'
  comment_start_string:
    description: The string marking the beginning of a comment statement.
    type: str
    default: '{#'
  comment_end_string:
    description: The string marking the end of a comment statement.
    type: str
    default: '#}'
  trim_blocks:
    description: Remove the first newline after a block tag.
    type: bool
    default: true
seealso:
  - plugin: ansible.builtin.template
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Show the bird.conf this host gets
  ansible.builtin.debug:
    msg: "{{ lookup('netfleet.calico.render_template', 'bird.conf.j2', template_vars={'extra': 1}) }}"
"""

RETURN = r"""
_raw:
  description: The rendered text of each template file.
  type: list
  elements: str
"""

from ansible.plugins.lookup.template import LookupModule as TemplateLookup


class _ShallowCopied(dict):
    """The task's variables, copied by the builtin lookup's ``deepcopy`` one level deep only."""

    def __deepcopy__(self, memo):
        return dict(self)


class LookupModule(TemplateLookup):

    def run(self, terms, variables=None, **kwargs):
        return super().run(terms, _ShallowCopied(variables or {}), **kwargs)
