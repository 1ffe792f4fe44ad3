# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CNI plugin's calls served in batches (the agent, :mod:`cni_agent`): calls that arrived together share
one hold of the store lock and one set of policy writes; a batch of DELs deletes its veths as one link group
and its rules after the lock. Each call gets the answer it would get alone (:func:`cni.handle`)."""

from __future__ import annotations

import json

from ansible_collections.netfleet.calico.plugins.module_utils import cni_endpoint, cni_policy, cni_store
from ansible_collections.netfleet.calico.plugins.module_utils.cni import (
    DEFAULT_CONFIG,
    ERRORS,
    FAULTS,
    CniError,
    Session,
    add_locked,
    del_locked,
    early_delete,
    error_answer,
    flush_adds,
    handle,
    load_config,
    read_request,
)


def handle_many(calls, ip=None, answer=None):
    """(exit status, stdout text) for each of ``calls`` [(environ, stdin text)] that arrived together (the
    agent's batch); never raises. The ADDs of one store are served first, together: one hold of its lock,
    one set of policy writes (one ``ipset restore`` and one ``iptables-restore`` for all of them); then its
    DELs, together too (their veths deleted as one link group). The other commands run one by one.
    ``answer(i, (status, out))``, if given, is called as soon as call ``i`` is answered (ADDs do not wait for
    the DELs of their batch)."""
    ip = ip or cni_endpoint.Kernel(timeout=60)
    answers = [None] * len(calls)

    def done(i, value):
        answers[i] = value
        if answer is not None:
            answer(i, value)

    groups = {}
    for i, (environ, text) in enumerate(calls):
        try:
            req = read_request(environ, text)
        except ERRORS + FAULTS:
            done(i, handle(environ, text, ip))
            continue
        if req['command'] in ('ADD', 'DEL') and isinstance(req['conf'].get('config_file', ''), str):
            groups.setdefault(req['conf'].get('config_file') or DEFAULT_CONFIG, []).append((i, req))
        else:
            done(i, handle(environ, text, ip))
    for items in groups.values():
        for command in ('ADD', 'DEL'):
            mine = [(i, req) for i, req in items if req['command'] == command]
            if mine:
                _serve_batch(mine, ip, done)
    return answers


def _serve_batch(items, ip, done):
    """Serve ``items`` [(index, request)], all ADDs or all DELs of one configuration file (DELs: their veths
    first, as one link group, then :func:`_serve_dels`)."""
    try:
        config = load_config(items[0][1]['conf'])
    except CniError as exc:
        for i, req in items:  # a DEL with no configuration has nothing of ours to delete
            done(i, (0, '') if req['command'] == 'DEL' else error_answer(req['version'], exc))
        return
    store = cni_store.Store(config['data_dir'])
    if items[0][1]['command'] == 'DEL':
        answered = set()
        gone = _early_delete_many(items, ip, store, done, answered)
        _serve_dels([(i, req) for i, req in items if i not in answered], ip, config, store, gone, done)
    else:
        _serve_adds(items, ip, config, store, done)


def _serve_adds(pending, ip, config, store, done):
    """A batch of ADDs under one hold of the store lock, their policy written together."""
    results = {}
    try:
        with store.locked():
            session = Session(config, store)
            added = []
            for i, req in pending:
                try:
                    result, record = add_locked(req, ip, session)
                    results[i] = (0, json.dumps(result))
                    if record is not None:
                        added.append((req, record))
                except ERRORS + FAULTS as exc:
                    results[i] = error_answer(req['version'], exc)
            try:
                flush_adds(ip, session, added)
            except ERRORS + FAULTS as exc:  # every ADD of the batch was undone
                _fail_answered(results, pending, exc)
    except ERRORS + FAULTS as exc:  # the lock stayed taken, or the store cannot be read
        _fail_answered(results, pending, exc)
    for i, _req in pending:
        done(i, results[i])


def _serve_dels(pending, ip, config, store, gone, done):
    """The locked part of a batch of DELs: records and ipset members go under the store lock; the rules
    after it (deleting rules waits for RCU grace periods, and ADDs wait for the lock). Should that restore
    fail, the plugin's chains are converged to the records under the lock instead."""
    results = {}
    try:
        with store.locked():
            session = Session(config, store)
            for i, req in pending:
                try:
                    del_locked(req, ip, session, gone.get(i))
                    results[i] = (0, '')
                except ERRORS + FAULTS as exc:
                    results[i] = error_answer(req['version'], exc)
            try:
                rules = session.writes.split_removals()
            except ERRORS + FAULTS as exc:  # the records stay for the runtime's retry
                _fail_answered(results, pending, exc)
                rules = None
            else:
                session.remove_records()
        if rules is not None:
            try:
                rules.flush_rules()
            except cni_policy.PolicyError:
                with store.locked():
                    cni_policy.sync(list(store.records().values()), session.policy)
    except ERRORS + FAULTS as exc:  # the lock stayed taken, the store cannot be read, or sync failed
        _fail_answered(results, pending, exc)
    for i, _req in pending:
        done(i, results[i])


def _fail_answered(results, pending, exc):
    """Turn every call of ``pending`` not already failed (or not yet answered) into ``exc``'s error."""
    for i, req in pending:
        if results.get(i, (0,))[0] == 0:
            results[i] = error_answer(req['version'], exc)


def _early_delete_many(items, ip, store, done, answered):
    """DEL's first step for a batch (as :func:`early_delete`, all veths in one link group deletion);
    returns {index: deleted interface name or None}."""
    records = {i: store.get(req['key']) for i, req in items}
    targets = {i: r for i, r in records.items() if r and not r.get('corrupt') and r.get('host_ifname')}
    try:
        deleted = set(cni_endpoint.delete_many(ip, list(targets.values())))
    except cni_endpoint.EndpointError:
        gone = {}
        for i, req in items:  # one by one, so that each DEL gets its own answer
            try:
                gone[i] = early_delete(req, ip, store)
            except ERRORS + FAULTS as exc:
                done(i, error_answer(req['version'], exc))
                answered.add(i)
        return gone
    return {i: r['host_ifname'] if r['host_ifname'] in deleted else None for i, r in targets.items()}
