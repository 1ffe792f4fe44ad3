# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pid files and small files: the one reader of a daemon's pid file (BIRD; netfleet.calico_lab's sshds and
what its lab_down stops) and of small text files (bird.conf, sysctl.d, sshd configs and keys)."""

from __future__ import annotations


def read_pid(pidfile):
    """The pid a pid file records (its first word), or None: missing or unreadable file, not a number,
    or 0/1 (never a daemon of ours)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 1 else None


def read_file(path, absent=FileNotFoundError):
    """A file's text, or None when reading it raises ``absent`` (by default: only when it does not exist;
    ``OSError`` for "whatever keeps it from being read")."""
    try:
        with open(path) as f:
            return f.read()
    except absent:
        return None
