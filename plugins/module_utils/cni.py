# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``netfleet-calico`` CNI plugin: the per-host agent that gives every container a runtime
starts (podman, containerd, CRI-O, kubelet) the fabric's data plane, and takes it away again.

A runtime executes the plugin with ``CNI_COMMAND`` (ADD, DEL, CHECK, GC, STATUS, VERSION),
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and ``CNI_PATH`` in the environment
and the network configuration on stdin (CNI spec 1.1; 0.3.0-1.0.0 results are also produced).
The plugin entry names the host's configuration file written by site.yml (role calico_node)::

    {"type": "netfleet-calico", "config_file": "/etc/netfleet-calico/cni.json"}

That file holds this host's plan: its block, the range and labels of every container network,
the addresses of its static workloads (never handed out), the MTU, and the fleet's policies with
their ipsets. On a dual-stack host a network also has an IPv6 range (``range6``, in the host's first IPv6
block), and a container gets an address of each. ADD allocates the next free address of the network's range
(and IPv6 range) with the store lock held, makes the endpoint (:mod:`cni_endpoint`), then its policy
(:mod:`cni_policy`); DEL undoes it; GC removes
attachments the runtime no longer knows; CHECK compares the endpoint with the kernel.

Errors are printed as the spec's error object and exit 1: 4 bad environment, 6 undecodable stdin,
7 bad configuration, 11 try again (store locked), 50 plugin not available (STATUS), 100 no free
address in the network's range, 101 the endpoint differs from its record (CHECK), 5 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ansible_collections.netfleet.calico.plugins.module_utils import cni_endpoint, cni_policy, cni_store, iproute

PLUGIN = 'netfleet-calico'
SUPPORTED = ('0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0')
DEFAULT_CONFIG = '/etc/netfleet-calico/cni.json'
NAMESPACE_LABEL = 'projectcalico.org/namespace'


class CniError(Exception):
    def __init__(self, code, msg, details=''):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------

def parse_cni_args(text):
    """``CNI_ARGS`` (``K=V;K=V``) as a dict; a malformed pair is an error (code 4)."""
    out = {}
    for pair in (text or '').split(';'):
        if not pair:
            continue
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise CniError(4, 'CNI_ARGS pair %r is not KEY=VALUE' % pair)
        out[key] = value
    return out


def read_request(environ, stdin_text):
    command = environ.get('CNI_COMMAND', '')
    if command not in ('ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'):
        raise CniError(4, 'CNI_COMMAND %r is not ADD, DEL, CHECK, GC, STATUS or VERSION' % command)
    try:
        conf = json.loads(stdin_text) if stdin_text.strip() else {}
    except ValueError as exc:
        raise CniError(6, 'cannot decode the network configuration on stdin: %s' % exc) from None
    if not isinstance(conf, dict):
        raise CniError(6, 'the network configuration on stdin is not a JSON object')
    version = conf.get('cniVersion', '1.0.0' if command == 'VERSION' else None)
    if command != 'VERSION' and version not in SUPPORTED:
        raise CniError(1, 'cniVersion %r is not supported' % (version,),
                       'supported: ' + ', '.join(SUPPORTED))
    if command in ('GC', 'STATUS') and version != '1.1.0':
        raise CniError(1, '%s needs cniVersion 1.1.0 (got %s)' % (command, version))
    if command == 'CHECK' and version.startswith('0.3.'):
        raise CniError(1, 'CHECK needs cniVersion 0.4.0 or later (got %s)' % version)
    req = {'command': command, 'conf': conf, 'version': version or '1.0.0',
           'args': parse_cni_args(environ.get('CNI_ARGS', ''))}
    if command in ('ADD', 'DEL', 'CHECK'):
        for var in ('CNI_CONTAINERID', 'CNI_IFNAME') + (('CNI_NETNS',) if command != 'DEL' else ()):
            if not environ.get(var):
                raise CniError(4, '%s is not set' % var)
        try:
            req['key'] = cni_store.record_key(environ['CNI_CONTAINERID'], environ['CNI_IFNAME'])
        except cni_store.StoreError as exc:
            raise CniError(exc.code, exc.msg) from None
        netns = environ.get('CNI_NETNS') or ''
        if netns and not iproute.valid_netns_path(netns):
            raise CniError(4, 'CNI_NETNS %r is not an absolute namespace path' % netns)
        req.update(container_id=environ['CNI_CONTAINERID'], ifname=environ['CNI_IFNAME'], netns=netns)
    return req


def load_config(conf):
    path = conf.get('config_file') or DEFAULT_CONFIG
    if not isinstance(path, str) or not iproute.valid_netns_path(path):
        raise CniError(7, 'config_file %r is not an absolute path' % (path,))
    try:
        with open(path, encoding='utf-8') as handle:
            config = json.load(handle)
    except OSError as exc:
        raise CniError(7, 'cannot read %s: %s' % (path, exc.strerror),
                       'run site.yml with calico_cni: true on this host') from None
    except ValueError as exc:
        raise CniError(7, '%s is not valid JSON: %s' % (path, exc)) from None
    if not isinstance(config, dict) or config.get('version') != 1:
        raise CniError(7, '%s is not a netfleet-calico CNI configuration of version 1' % path)
    return config


def network_of(conf, config):
    name = conf.get('network') or conf.get('name')
    network = (config.get('networks') or {}).get(name)
    if network is None:
        raise CniError(7, 'network %r is not declared for this host' % (name,),
                       'add it to calico_cni_networks and run site.yml')
    return name, network


def labels_of(req, network):
    """The network's labels, plus those the runtime passes (``args.cni.labels``, CNI's convention, and the
    Kubernetes namespace); a network's own labels cannot be overridden by the runtime."""
    labels = {}
    args = ((req['conf'].get('args') or {}).get('cni') or {}) if isinstance(req['conf'].get('args'), dict) else {}
    for item in args.get('labels') or []:
        if isinstance(item, dict):
            key, value = item.get('key'), item.get('value')
            if not isinstance(key, str) or not cni_store.LABEL_KEY_RE.match(key) or not isinstance(value, str) \
                    or not cni_store.LABEL_VALUE_RE.match(value):
                raise CniError(7, 'label %r=%r from args.cni.labels is not a valid label' % (key, value))
            labels[key] = value
    namespace = req['args'].get('K8S_POD_NAMESPACE')
    if namespace and cni_store.LABEL_VALUE_RE.match(namespace):
        labels[NAMESPACE_LABEL] = namespace
    labels.update(network.get('labels') or {})
    return labels


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

def add_result(version, record, settings):
    """The ADD result: the container's address, and on a dual-stack host its IPv6 address too."""
    legacy = not version.startswith('1.')
    ips = [{'address': record['ip'] + '/32', 'gateway': settings['gateway'], 'interface': 1}]
    routes = [{'dst': '0.0.0.0/0', 'gw': settings['gateway']}]
    if record.get('ip6'):
        ips.append({'address': record['ip6'] + '/128', 'gateway': settings['gateway6'], 'interface': 1})
        routes.append({'dst': '::/0', 'gw': settings['gateway6']})
    if legacy:
        for entry, family in zip(ips, ('4', '6')):
            entry['version'] = family
    return {
        'cniVersion': version,
        'interfaces': [{'name': record['host_ifname'], 'mac': settings['mac']},
                       {'name': record['ifname'], 'mac': record['mac'], 'sandbox': record['netns']}],
        'ips': ips,
        'routes': routes,
        'dns': {},
    }


def record_cidrs(record):
    """The addresses of an attachment as the ADD result lists them."""
    return [record['ip'] + '/32'] + ([record['ip6'] + '/128'] if record.get('ip6') else [])


def settings_of(config):
    return {'gateway': config.get('gateway') or iproute.CALICO_GATEWAY,
            'gateway6': config.get('gateway6') or iproute.CALICO_GATEWAY6,
            'mac': config.get('mac') or iproute.CALICO_MAC,
            'protocol': int(config.get('protocol') or iproute.CALICO_PROTOCOL),
            'prefix': config.get('interface_prefix') or iproute.DEFAULT_INTERFACE_PREFIX,
            'mtu': config.get('mtu')}


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

class Session:
    """What ADD and DEL calls of one store share while they hold its lock: the configuration, the records,
    and the policy writes (applied per call, or once for a whole batch of calls by the agent)."""

    def __init__(self, config, store):
        self.config = config
        self.settings = settings_of(config)
        self.store = store
        self.policy = config.get('policy') or {}
        self.records = store.records()
        self.writes = cni_policy.Writes(self.policy)
        self.removed = []  # keys whose record goes once the policy writes are applied

    def flush(self):
        self.writes.flush(self.live())
        self.remove_records()

    def remove_records(self):
        """Remove the records of the attachments torn down (their policy written, or converged otherwise)."""
        for key in self.removed:
            self.store.remove(key)
        self.removed = []

    def live(self):
        return [r for r in self.records.values() if r and not r.get('corrupt')]


def cmd_add(req, ip):
    config = load_config(req['conf'])
    store = cni_store.Store(config['data_dir'])
    with store.locked():
        session = Session(config, store)
        result, record = add_locked(req, ip, session)
        if record is not None:
            flush_adds(ip, session, [(req, record)])
    return result


def add_locked(req, ip, session):
    """(result, record whose policy is still to be written, or None) of one ADD under the store lock."""
    config, settings, store, records = session.config, session.settings, session.store, session.records
    name, network = network_of(req['conf'], config)
    labels = labels_of(req, network)
    old = records.get(req['key'])
    if old and not old.get('corrupt') and old.get('netns') == req['netns']:
        if not cni_endpoint.check(ip, old, settings):
            return add_result(req['version'], old, settings), None  # a repeated ADD: same answer
    if old:  # a half-made or stale attachment of this container id and interface: start over
        records.pop(req['key'], None)
        _teardown(ip, session, old)
        session.flush()
    host_if = cni_endpoint.host_ifname(req['container_id'], req['ifname'], settings['prefix'])
    try:
        addrs = _allocate(config, store, name, network, records)
    except cni_store.Exhausted:
        # a full range may hold attachments of containers that are gone without a DEL (a host that
        # rebooted, a runtime that crashed): reclaim those, then try once more
        for key in _vanished(ip, records, name):
            _teardown(ip, session, records.pop(key))
        session.flush()
        addrs = _allocate(config, store, name, network, records)
    record = {'key': req['key'], 'container_id': req['container_id'], 'ifname': req['ifname'],
              'netns': req['netns'], 'network': name, 'ip': addrs[0], 'host_ifname': host_if,
              'mac': cni_endpoint.container_mac(req['key']), 'labels': labels, 'created': int(time.time())}
    if addrs[1]:
        record['ip6'] = addrs[1]
    store.put(record)  # first: an ADD cut short leaves a record that DEL or GC undoes
    records[req['key']] = record
    try:
        cni_endpoint.create(ip, record, settings)
        session.writes.add(record)
    except (cni_endpoint.EndpointError, cni_policy.PolicyError, OSError) as exc:
        _fail_add(ip, session, req, record, exc)
    return add_result(req['version'], record, settings), record


def _allocate(config, store, name, network, records):
    """(address, IPv6 address or None) for a new attachment of network ``name``: an IPv6 one too when the
    network has an IPv6 range (a dual-stack host). Both or neither: the record is written after both."""
    addr = store.allocate(name, network['range'], config.get('reserved') or (), records)
    if not network.get('range6'):
        return addr, None
    return addr, store.allocate(name, network['range6'], config.get('reserved6') or (), records, family=6)


def _fail_add(ip, session, req, record, exc):
    session.records.pop(req['key'], None)
    _teardown(ip, session, record, immediate=True)
    raise CniError(getattr(exc, 'code', 5), 'ADD %s: %s' % (req['container_id'], getattr(exc, 'msg', exc))) from None


def flush_adds(ip, session, added):
    """Apply the session's policy writes; if that fails, undo the ADDs in ``added`` ([(req, record)])."""
    try:
        session.flush()
    except (cni_policy.PolicyError, OSError) as exc:
        session.writes = cni_policy.Writes(session.policy)
        errors = []
        for req, record in added:
            try:
                _fail_add(ip, session, req, record, exc)
            except CniError as err:
                errors.append(err)
        if errors:
            raise errors[0] from None
        raise


def _vanished(ip, records, network):
    """Keys of ``network``'s attachments whose container namespace and host veth both no longer exist."""
    gone = []
    for key, record in sorted(records.items()):
        if not record or record.get('corrupt') or record.get('network') != network:
            continue
        netns = record.get('netns') or ''
        if netns and os.path.exists(netns):
            continue
        if record.get('host_ifname') and cni_endpoint.read_link(ip, record['host_ifname']) is not None:
            continue
        gone.append(key)
    return gone


def _teardown(ip, session, record, link_gone=False, immediate=False):
    """Remove an attachment's endpoint, policy and record; parts already gone are fine. The policy and
    the record go with the session's next flush (at once with ``immediate``)."""
    if record.get('host_ifname'):
        if not link_gone:
            cni_endpoint.delete(ip, record)
        if immediate:
            cni_policy.remove_endpoint(record, session.live(), session.policy)
        else:
            session.writes.remove(record)
    if immediate:
        session.store.remove(record['key'])
    else:
        session.removed.append(record['key'])


def early_delete(req, ip, store):
    """DEL's first step, before queueing for the lock: delete the veth (deleting a link waits for RCU grace
    periods, 10-30 ms, and every ADD and DEL of the host waits for the lock). Only this attachment's record
    names the veth (and a runtime never runs ADD and DEL of one attachment at once); its address, chains
    and record stay until the locked part, which finds the link gone, as after an interrupted DEL.
    Returns the deleted interface's name or None."""
    early = store.get(req['key'])
    if early and not early.get('corrupt') and early.get('host_ifname'):
        try:
            cni_endpoint.delete(ip, early)
        except cni_endpoint.EndpointError as exc:
            raise CniError(exc.code, 'DEL %s: %s' % (req['container_id'], exc.msg)) from None
        return early['host_ifname']
    return None


def del_locked(req, ip, session, gone):
    records, settings = session.records, session.settings
    record = records.pop(req['key'], None)
    if record is None or record.get('corrupt'):
        # no record: at most a veth of an ADD that failed before writing one
        record = {'key': req['key'], 'container_id': req['container_id'], 'ifname': req['ifname'],
                  'host_ifname': cni_endpoint.host_ifname(req['container_id'], req['ifname'], settings['prefix'])}
        link = cni_endpoint.read_link(ip, record['host_ifname'])
        if not link or link.get('ifalias') != cni_endpoint.ALIAS_PREFIX + req['key']:
            record['host_ifname'] = None
    try:
        _teardown(ip, session, record, link_gone=gone is not None and record.get('host_ifname') == gone)
    except cni_endpoint.EndpointError as exc:
        raise CniError(exc.code, 'DEL %s: %s' % (req['container_id'], exc.msg)) from None


def cmd_del(req, ip):
    try:
        config = load_config(req['conf'])
    except CniError:
        return None  # never configured here (or already removed): nothing of ours to delete
    store = cni_store.Store(config['data_dir'])
    gone = early_delete(req, ip, store)
    with store.locked():
        session = Session(config, store)
        del_locked(req, ip, session, gone)
        try:
            session.flush()
        except cni_policy.PolicyError as exc:
            raise CniError(exc.code, 'DEL %s: %s' % (req['container_id'], exc.msg)) from None
    return None


def cmd_check(req, ip):
    config = load_config(req['conf'])
    settings = settings_of(config)
    record = cni_store.Store(config['data_dir']).get(req['key'])
    if record is None or record.get('corrupt'):
        raise CniError(3, 'container %s (%s) has no attachment on this host' % (req['container_id'], req['ifname']))
    problems = cni_endpoint.check(ip, record, settings)
    prev = req['conf'].get('prevResult') or {}
    prev_ips = [entry.get('address') for entry in prev.get('ips') or []]
    if prev_ips and prev_ips != record_cidrs(record):
        problems.append('prevResult has %s, the attachment %s' % (', '.join(map(str, prev_ips)),
                                                                  ', '.join(record_cidrs(record))))
    if problems:
        raise CniError(101, 'container %s: %s' % (req['container_id'], '; '.join(problems)))
    return None


def cmd_gc(req, ip):
    """Remove this network's attachments the runtime did not list in ``cni.dev/valid-attachments``."""
    config = load_config(req['conf'])
    name, _network = network_of(req['conf'], config)
    valid = {(a.get('containerID'), a.get('ifname')) for a in req['conf'].get('cni.dev/valid-attachments') or []
             if isinstance(a, dict)}
    store = cni_store.Store(config['data_dir'])
    with store.locked():
        session = Session(config, store)
        records = session.records
        for key, record in sorted(records.items()):
            if record.get('corrupt'):
                store.remove(key)
                records.pop(key)
                continue
            if record.get('network') == name and (record['container_id'], record['ifname']) not in valid:
                _teardown(ip, session, records.pop(key))
        session.writes = cni_policy.Writes(session.policy)  # the sync below converges everything
        session.remove_records()
        try:
            cni_policy.sync(list(records.values()), config.get('policy') or {})
        except cni_policy.PolicyError as exc:
            raise CniError(exc.code, 'GC: %s' % exc.msg) from None
    return None


def cmd_status(req, _ip):
    try:
        config = load_config(req['conf'])
        network_of(req['conf'], config)
    except CniError as exc:
        raise CniError(50, 'not ready: %s' % exc.msg, exc.details) from None
    if not os.access(os.path.dirname(config['data_dir'].rstrip('/')) or '/', os.W_OK):
        raise CniError(50, 'not ready: cannot write %s' % config['data_dir'])
    return None


COMMANDS = {'ADD': cmd_add, 'DEL': cmd_del, 'CHECK': cmd_check, 'GC': cmd_gc, 'STATUS': cmd_status}


ERRORS = (CniError, cni_store.StoreError, cni_policy.PolicyError, cni_endpoint.EndpointError)
FAULTS = (OSError, iproute.IprouteError, ValueError, KeyError, TypeError, AttributeError)


def error_answer(version, exc):
    """(1, the spec's error object) for an exception raised while serving a call."""
    if isinstance(exc, ERRORS):
        error = {'cniVersion': version, 'code': exc.code, 'msg': exc.msg}
        if getattr(exc, 'details', ''):
            error['details'] = exc.details
    else:
        error = {'cniVersion': version, 'code': 5, 'msg': '%s: %s' % (type(exc).__name__, exc)}
    return 1, json.dumps(error)


def handle(environ, stdin_text, ip=None):
    """(exit status, stdout text) for one invocation; never raises."""
    version = '1.0.0'
    try:
        req = read_request(environ, stdin_text)
        version = req['version']
        if req['command'] == 'VERSION':
            return 0, json.dumps({'cniVersion': req['version'] if req['version'] in SUPPORTED else '1.1.0',
                                  'supportedVersions': list(SUPPORTED)})
        result = COMMANDS[req['command']](req, ip or cni_endpoint.Kernel(timeout=60))
        return 0, json.dumps(result) if result is not None else ''
    except ERRORS + FAULTS as exc:
        return error_answer(version, exc)


def log(environ, conf_text, status, out, started):
    """One line per invocation in the log file named by the configuration (if any)."""
    try:
        conf = json.loads(conf_text) if conf_text.strip() else None
    except ValueError:
        conf = None
    path = conf.get('log_file') if isinstance(conf, dict) else None
    if not isinstance(path, str) or not path.startswith('/'):
        return
    line = '%s %s %s %s rc=%d %.1fms %s\n' % (
        time.strftime('%Y-%m-%dT%H:%M:%S'), environ.get('CNI_COMMAND'), environ.get('CNI_CONTAINERID', '-'),
        environ.get('CNI_IFNAME', '-'), status, (time.monotonic() - started) * 1000, out if status else '')
    try:
        with open(path, 'a', encoding='utf-8') as handle:
            handle.write(line)
    except OSError:
        pass


def main(argv=None):
    started = time.monotonic()
    stdin_text = sys.stdin.read() if not sys.stdin.isatty() else ''
    status, out = handle(os.environ, stdin_text)
    if out:
        sys.stdout.write(out + '\n')
    log(os.environ, stdin_text, status, out, started)
    return status
