"""A network namespace playing one host, for real-kernel tests of the netfleet.calico modules (root required).

Modules run inside the host namespace with ``nsenter --net=`` (the network namespace only: ``ip netns exec``
would put them in a private mount namespace). :meth:`Host.cleanup` deletes the host's namespace and every
namespace named ``<host>-*`` (its workloads); nothing is created in the root namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / '.venv' / 'bin' / 'python'
ANSIBLE = REPO / '.venv' / 'bin' / 'ansible'
MODULE_PKG = 'ansible_collections.netfleet.calico.plugins.modules.'

UPLINK_HOST = '10.254.0.1'
UPLINK_PEER = '10.254.0.2'


def sh(argv, check=True, timeout=120, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (rc=%d): %s%s' % (' '.join(map(str, argv)), proc.returncode, proc.stdout,
                                                          proc.stderr))
    return proc


def ipj(ns, *args):
    return json.loads(sh(['ip', '-n', ns, '-j'] + list(args)).stdout or '[]')


def namespaces():
    return {line.split()[0] for line in sh(['ip', 'netns', 'list']).stdout.splitlines() if line.strip()}


class Host:
    """A network namespace that plays one host, with an uplink and a default route (proxy-ARP needs one)."""

    def __init__(self, name, tmp_path):
        self.name = name
        self.tmp_path = tmp_path
        self.runs = 0

    def setup(self):
        sh(['ip', 'netns', 'add', self.name])
        batch = ('link set lo up\n'
                 'link add nfup0 type veth peer name nfup1\n'
                 'addr add %s/30 dev nfup0\n'
                 'link set nfup0 up\nlink set nfup1 up\n'
                 'route add default via %s dev nfup0\n' % (UPLINK_HOST, UPLINK_PEER))
        sh(['ip', '-n', self.name, '-batch', '-'], input=batch)

    def cleanup(self):
        mine = sorted(ns for ns in namespaces() if ns == self.name or ns.startswith(self.name + '-'))
        for ns in mine:
            sh(['ip', 'netns', 'del', ns], check=False)

    def module(self, name, args, check_mode=False, diff=True, via='nsenter'):
        """Run a module directly (python -m) inside this host namespace; return its JSON result."""
        self.runs += 1
        args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        path = self.tmp_path / ('args-%d.json' % self.runs)
        path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
        if via == 'nsenter':
            prefix = ['nsenter', '--net=/run/netns/' + self.name]
        else:
            prefix = ['ip', 'netns', 'exec', self.name]
        env = dict(os.environ, PYTHONPATH=str(REPO / 'collections'))
        proc = sh(prefix + [str(PYTHON), '-m', MODULE_PKG + name, str(path)], check=False, env=env, cwd=str(REPO))
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError('module %s printed no JSON: %s %s' % (name, proc.stdout, proc.stderr)) from None

    def node_facts(self, protocol=80, **params):
        """What netfleet.calico.calico_node_facts reads here: its shell command run in this namespace (as a
        host's shell runs it over the connection), its answer parsed as the action does on the controller."""
        from ansible_collections.netfleet.calico.plugins.plugin_utils import node_facts

        marker, command = node_facts.script(protocol, **params)
        proc = sh(['nsenter', '--net=/run/netns/' + self.name, '/bin/sh', '-c', command], check=False)
        keep = {k: v for k, v in params.items() if k in ('bird_socket', 'cni_data_dir')}
        return node_facts.parse(marker, proc.stdout, protocol, **keep)

    def workloads(self, endpoints, netns_paths=(), **kw):
        return self.module('calico_workloads', {'endpoints': endpoints, 'netns_prefix': self.name + '-',
                                                'netns_paths': list(netns_paths)}, **kw)
