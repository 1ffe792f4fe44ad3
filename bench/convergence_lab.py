"""Running a bench lab's playbooks (bench/convergence.py, bench/site_cpu.py): ansible-playbook with the bench
callbacks (wall and CPU seconds, PLAY RECAP totals, per-task timing, the fabric plan), lab_down with a check that
no namespace is left, and the versions of the tools a report names."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchdoc  # noqa: E402 (bench/ is on sys.path when a bench runs)
from convergence_daemons import sh

REPO = Path(__file__).resolve().parents[1]
# the venv's (the repository's .venv, else the one running this script: a worktree has none)
BIN = REPO / '.venv' / 'bin' if (REPO / '.venv' / 'bin').is_dir() else Path(sys.executable).parent
PLAYBOOK = BIN / 'ansible-playbook'
CALLBACKS = REPO / 'bench' / 'callback_plugins'


def log(msg):
    print('bench: ' + msg, flush=True)


CPU_USED = {}   # tag -> CPU seconds (user + system) of the playbook and everything it ran


def playbook(name, inventory, prefix, logdir, tag, forks=None, repo=REPO, extra=()):
    """Run a playbook of checkout ``repo`` (its ansible.cfg, so its collections) with ``extra`` arguments;
    returns (wall seconds, PLAY RECAP totals, timing record of bench_timing). The fabric plan of a site.yml run
    is left in <logdir>/<tag>.plan.json (bench_plan)."""
    timing = logdir / ('%s.timing.json' % tag)
    env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
               ANSIBLE_CALLBACKS_ENABLED='bench_timing,bench_plan', BENCH_TIMING_FILE=str(timing),
               BENCH_PLAN_FILE=str(logdir / ('%s.plan.json' % tag)),
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_CONFIG=str(repo / 'ansible.cfg'))
    if forks:
        env['ANSIBLE_FORKS'] = str(forks)
    out = logdir / ('%s.log' % tag)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(out, 'w') as handle:
        rc = subprocess.run([str(PLAYBOOK), '-i', str(inventory), *extra, name], cwd=repo, env=env, check=False,
                            stdout=handle, stderr=subprocess.STDOUT).returncode
    secs = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_USED[str(logdir / tag)] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out.read_text()
    if rc != 0:
        raise RuntimeError('%s failed (rc %d), log %s:\n%s' % (name, rc, out, text[-3000:]))
    totals = {}
    for m in re.finditer(r'^\S+\s+:\s+(ok=.*)$', text, re.M):
        for key, value in re.findall(r'(\w+)=(\d+)', m.group(1)):
            totals[key] = totals.get(key, 0) + int(value)
    record = json.loads(timing.read_text()) if timing.exists() else None
    return secs, totals, record


def profile(record):
    """Per task of a run: wall time (first host starting it to the last host finishing it), median time a
    host's run of it was in flight, and how many hosts ran (ok/changed) or skipped it."""
    rows = []
    for task in record['tasks'] if record else []:
        runs = [(s, e) for s, e, _status in task['hosts'].values() if s is not None and e is not None]
        if not runs:
            continue
        statuses = {}
        for _s, _e, status in task['hosts'].values():
            statuses[status] = statuses.get(status, 0) + 1
        rows.append({'task': task['task'].split(' : ', 1)[-1], 'action': task['action'],
                     'wall': max(e for _s, e in runs) - min(s for s, _e in runs),
                     'per_host': statistics.median(e - s for s, e in runs),
                     'ran': statuses.get('ok', 0) + statuses.get('changed', 0), 'statuses': statuses})
    return {'total': (record['end'] - record['start']) if record else 0.0, 'tasks': rows}


def recap(totals):
    return ', '.join('%s=%d' % (k, totals.get(k, 0)) for k in ('ok', 'changed', 'failed', 'skipped'))


def lab_namespaces(prefix):
    out = sh(['ip', 'netns', 'list']).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + '-')]


def lab_down(inv, prefix, logdir):
    """Remove a bench lab with lab_down.yml; warn about (and return) any namespace of its prefix left."""
    try:
        playbook('lab/playbooks/lab_down.yml', inv, prefix, logdir, 'lab_down')
    finally:
        left = lab_namespaces(prefix)
        if left:
            log('  WARNING: namespaces of %s left after lab_down: %s' % (prefix, ' '.join(left[:10])))
    return left


def machine():
    cpu = benchdoc.cpu_model()
    bird = sh(['bird', '--version']).stderr.strip() or sh(['bird', '--version']).stdout.strip()
    frr = subprocess.run(['/usr/lib/frr/bgpd', '--version'], capture_output=True, text=True, check=False).stdout
    ansible = sh([str(PLAYBOOK), '--version']).stdout.splitlines()[0]
    return {'nproc': os.cpu_count(), 'kernel': platform.release(), 'cpu': cpu, 'bird': bird,
            'frr': 'FRR ' + frr.split()[2] if frr.startswith('bgpd version') else 'FRR (not found)',
            'ansible': ansible.replace('ansible-playbook ', 'ansible-core ').strip(),
            'python': platform.python_version(), 'load': os.getloadavg()[0],
            'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}
