"""docs/benchmarks.md: every bench/*.py script owns one "## bench/<name>" section of it."""

from __future__ import annotations

import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'benchmarks.md'
NOTES = '### Notes'


def write_section(title, section, doc=DOC):
    """Replace (or append) the section headed ``title``; other sections are kept, and so is a
    hand-written "### Notes" subsection at the end of this one (findings that survive re-runs)."""
    text = doc.read_text() if doc.exists() else '# Benchmarks\n'
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    if start is None:
        text = text.rstrip('\n') + '\n\n' + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
        notes = next((i for i in range(start + 1, end) if lines[i].rstrip() == NOTES), None)
        kept = ''.join(lines[notes:end]).rstrip('\n') + '\n' if notes is not None else ''
        body = section.rstrip('\n') + '\n' + ('\n' + kept if kept else '')
        text = ''.join(lines[:start]) + body + ('\n' if end < len(lines) else '') + ''.join(lines[end:])
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def machine_line(script, info, python_label='Python'):
    """The first line of a section: command, date, CPUs, kernel, CPU, iptables, Python and the load at the start."""
    load = 'an idle machine' if float(info['load']) < 1 else 'other jobs were running; figures are inflated'
    values = (script, info['date'], info['nproc'], info['kernel'], info['cpu'], info['iptables'], python_label,
              info['python'], info['load'], load)
    return ('`.venv/bin/python bench/%s` (root) - %s; %s CPUs (`nproc`), kernel %s, CPU "%s", %s, %s %s; '
            '1-minute load average %s at the start (%s).' % values)


def cpu_model():
    """The CPU model from /proc/cpuinfo (for the machine line of every section)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'
