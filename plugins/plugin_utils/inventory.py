# -*- coding: utf-8 -*-
# Copyright: netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the inventory: per-host variables (templated by Ansible on access, a templating error a preflight
line), the groups that make the fleet and its racks, fleet-wide settings and the natural order of names."""

from __future__ import annotations

import re
from collections.abc import Mapping

from jinja2 import Undefined

from ansible_collections.netfleet.calico.plugins.plugin_utils.errors import FabricError, host_subject
from ansible_collections.netfleet.calico.plugins.plugin_utils.values import is_unset

GROUP_NODES = 'calico_nodes'
GROUP_RACKS = 'calico_racks'
GROUP_REFLECTORS = 'calico_route_reflectors'


def natural_key(name):
    """Sort key: ``host-2`` before ``host-10``; ties (``host-01`` vs ``host-1``) broken by the raw string."""
    name = str(name)
    parts = re.split(r'([0-9]+)', name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def natural_sorted(names):
    return sorted(names, key=natural_key)


class VarReader:
    """Per-host variable access over Ansible's HostVars (values templated on access) or plain dicts."""

    def __init__(self, hostvars):
        self._hostvars = hostvars
        self._cache = {}

    def host(self, name):
        if name not in self._cache:
            try:
                data = self._hostvars[name]
            except KeyError:
                data = {}
            if not isinstance(data, Mapping):  # an undefined marker for a host missing from the inventory
                data = {}
            self._cache[name] = data
        return self._cache[name]

    def get(self, name, var):
        try:
            value = self.host(name).get(var)
            undefined = _first_undefined(value)
        except Exception as exc:  # templating errors surface here with HostVars
            raise _evaluation_error(name, var, str(exc) or type(exc).__name__) from None
        if undefined is not None:
            # inside a play, HostVars hands back a marker instead of raising: never read it as "unset"
            raise _evaluation_error(name, var, _undefined_text(undefined))
        return value


def _evaluation_error(host, var, text):
    first = text.strip().splitlines()[0] if text.strip() else 'undefined'
    return FabricError(host_subject(host), f'cannot evaluate {var}: {first}',
                       f'fix the definition of {var} for this host')


def _first_undefined(value, depth=0):
    """The first jinja2 Undefined (Ansible 2.19 marker) in ``value``, looking into lists and dicts; else None."""
    if isinstance(value, Undefined):
        return value
    if depth > 8 or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return None
    for item in items:
        found = _first_undefined(item, depth + 1)
        if found is not None:
            return found
    return None


def _undefined_text(value):
    for attr in ('_as_message', '_undefined_message'):
        try:
            text = getattr(value, attr)
            text = text() if callable(text) else text
        except Exception:  # noqa: BLE001 - best effort, any message will do
            continue
        if isinstance(text, str) and text:
            return text
    return 'value is undefined'


def group(groups, name):
    value = groups.get(name) if isinstance(groups, Mapping) else None
    if is_unset(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(h) for h in value]


class RackHierarchyUnknown(Exception):
    """``calico_racks`` has hosts, but its child groups (the racks) cannot be seen: plain ``groups``, no ``racks=``."""


def rack_groups(hostvars, groups, racks=None):
    """``{rack: (hosts, rack group vars)}``: the direct child groups of ``calico_racks``.

    ``groups`` is flat, so the hierarchy comes from ``racks=`` when given (a list of rack group names,
    or a mapping rack -> hosts; no group vars then), else from the inventory behind Ansible's HostVars
    (the group vars are the ones set on the group itself in the inventory source). Raises
    :class:`RackHierarchyUnknown` when neither is available but ``calico_racks`` has hosts; each filter
    turns that into its own one-line error. Shared by the fabric plan and netfleet.calico_lab's filter
    ``lab_spec``.
    """
    if racks is not None:
        if isinstance(racks, Mapping):
            return {str(r): ([str(h) for h in (hosts or [])], {}) for r, hosts in racks.items()}
        if isinstance(racks, str):
            racks = [racks]
        return {str(r): (group(groups, r), {}) for r in racks}
    inventory = getattr(hostvars, '_inventory', None)
    if inventory is not None:
        parent = inventory.groups.get(GROUP_RACKS)
        if parent is None:
            return {}
        out = {}
        for child in parent.child_groups:
            hosts = group(groups, child.name) if child.name in groups else [h.name for h in child.get_hosts()]
            out[child.name] = (hosts, dict(child.get_vars()))
        return out
    if group(groups, GROUP_RACKS):
        raise RackHierarchyUnknown(GROUP_RACKS)
    return {}


def rack_members(hostvars, groups, racks):
    """``{rack: [hosts]}`` (see :func:`rack_groups`)."""
    try:
        return {rack: hosts for rack, (hosts, _unused) in rack_groups(hostvars, groups, racks).items()}
    except RackHierarchyUnknown:
        raise FabricError(f"group '{GROUP_RACKS}'",
                          'its child groups (the racks) cannot be seen in a plain groups dict',
                          "pass racks=['rack1', ...] (the rack group names) to netfleet.calico.fabric") from None


def fleet_setting(reader, hosts, var, default):
    """A fleet-wide variable: every host that defines it must agree. Returns (value, host or None)."""
    found, source = None, None
    for name in hosts:
        value = reader.get(name, var)
        if is_unset(value):
            continue
        if source is None:
            found, source = value, name
        elif str(value).strip() != str(found).strip():
            raise FabricError(host_subject(name), f"{var} {value} differs from {found} on host '{source}'",
                              f'{var} is fleet-wide: set it once in group_vars/all')
    if source is None:
        return default, None
    return found, source
