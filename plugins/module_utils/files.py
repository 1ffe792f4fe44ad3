# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Installing files on a host the way the collection's installers do it (the CNI plugin, the boot-time
restore): each file written atomically and only when its content or mode differs, each shown in
``--diff`` (Python code by its size), and this collection's module_utils copied from wherever the running
module was loaded, so what is installed is exactly the version that runs."""

from __future__ import annotations

import os
import shutil
import tempfile

from ansible_collections.netfleet.calico.plugins.module_utils import iproute

PACKAGE_PATH = ('ansible_collections', 'netfleet', 'calico', 'plugins', 'module_utils')


class InstallError(Exception):
    pass


def check_path(value, what):
    if not isinstance(value, str) or not iproute.valid_netns_path(value) or value.rstrip('/') == '':
        raise InstallError('%s %r must be an absolute path of letters, digits and _ . / @ + = : -' % (what, value))
    return os.path.normpath(value)


def module_source(mod):
    """The source text of a module_utils module, from wherever this module was loaded (file or AnsiballZ zip)."""
    loader = getattr(mod, '__loader__', None)
    source = loader.get_source(mod.__name__) if loader is not None and hasattr(loader, 'get_source') else None
    if source is None:
        with open(mod.__file__, encoding='utf-8') as handle:
            source = handle.read()
    return source


def read(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write(path, content, mode):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.netfleet-')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plan_files(want, remove):
    """(paths to write, paths to remove, diff before, diff after)."""
    writes, before, after = [], [], []
    for path in sorted(want):
        content, mode = want[path]
        have = read(path)
        have_mode = os.stat(path).st_mode & 0o777 if have is not None else None
        if have != content or have_mode != mode:
            writes.append(path)
            before.append(_diff_entry(path, have, have_mode))
            after.append(_diff_entry(path, content, mode))
    removes = [p for p in remove if os.path.exists(p) and p not in want]
    for path in removes:
        before.append(_diff_entry(path, read(path), None))
    return writes, removes, ''.join(before), ''.join(after)


def _diff_entry(path, content, mode):
    if content is None:
        return ''
    if path.endswith('.py'):  # the plugin's code: its size, not 3,000 lines
        return '# %s (%d lines)\n' % (path, content.count('\n'))
    return '# %s%s\n%s' % (path, ' mode %04o' % mode if mode is not None else '', content)


def code_files(lib_dir, modules):
    """``{path: (source, mode)}`` of module_utils ``modules`` under ``lib_dir``."""
    pkg = os.path.join(lib_dir, *PACKAGE_PATH)
    return {os.path.join(pkg, mod.__name__.rsplit('.', 1)[-1] + '.py'): (module_source(mod), 0o644) for mod in modules}


def remove_package_dirs(lib_dir):
    """After the code files under ``lib_dir`` were removed: the package directories (with the bytecode Python
    wrote there), down to ``lib_dir`` itself, as far as they are empty."""
    path = os.path.join(lib_dir, *PACKAGE_PATH)
    while len(path) >= len(lib_dir):
        shutil.rmtree(os.path.join(path, '__pycache__'), ignore_errors=True)
        try:
            os.rmdir(path)
        except OSError:
            break
        path = os.path.dirname(path)
