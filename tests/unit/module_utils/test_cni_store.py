"""The CNI plugin's store and IPAM (plugins/module_utils/cni_store.py): records, round robin, flock."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import time

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import cni_store as s

RANGE = '10.0.1.0/29'  # .0 is never handed out: .1 - .7


@pytest.fixture
def store(tmp_path):
    st = s.Store(str(tmp_path / 'data'))
    with st.locked():  # creates the directories
        pass
    return st


def record(key, ip, network='web', **kw):
    return dict(kw, key=key, ip=ip, network=network)


def take(store, n, network='web', cidr=RANGE, reserved=()):
    """Allocate ``n`` addresses, recording each (as an ADD does)."""
    out = []
    for i in range(n):
        addr = store.allocate(network, cidr, reserved)
        store.put(record('%s-%d-%s_eth0' % (network, i, addr.replace('.', '-')), addr, network))
        out.append(addr)
    return out


# ------------------------------------------------------------------------------------------ record keys

@pytest.mark.parametrize('container_id,ifname,key', [
    ('abc123', 'eth0', 'abc123_eth0'),
    ('0f3e' * 16, 'net1', '0f3e' * 16 + '_net1'),
    ('a.b-c_d', 'e.t-h_0', 'a.b-c_d_e.t-h_0'),
    ('x' * 255, 'y' * 15, 'x' * 255 + '_' + 'y' * 15),
])
def test_record_key_valid(container_id, ifname, key):
    assert s.record_key(container_id, ifname) == key


@pytest.mark.parametrize('container_id', ['../x', 'a b', 'x\n', '', '.hidden', '-x', '_x', 'a/b', 'x' * 256,
                                          'x\x00', None, 5, 'ü'])
def test_record_key_rejects_container_ids(container_id):
    with pytest.raises(s.StoreError, match='container id') as err:
        s.record_key(container_id, 'eth0')
    assert err.value.code == 4


@pytest.mark.parametrize('ifname', ['', '.', '..', 'eth0\n', 'a/b', '../x', 'a b', 'e' * 16, None, 'eth0\t'])
def test_record_key_rejects_ifnames(ifname):
    with pytest.raises(s.StoreError, match='interface name') as err:
        s.record_key('abc', ifname)
    assert err.value.code == 4


def test_store_error_defaults():
    err = s.StoreError('boom')
    assert (err.msg, err.code, err.details, str(err)) == ('boom', 5, '', 'boom')
    assert issubclass(s.Exhausted, s.StoreError)


# ------------------------------------------------------------------------------------------ records

def test_locked_creates_private_directories(tmp_path):
    st = s.Store(str(tmp_path / 'a' / 'b'))
    with st.locked() as held:
        assert held is st
    for path in (st.dir, st.endpoints, st.next_dir, st.next6_dir):
        assert os.path.isdir(path)
    assert os.path.isfile(os.path.join(st.dir, 'lock'))
    assert os.stat(st.dir).st_mode & 0o077 == 0


def test_put_get_records_remove(store):
    rec = record('c1_eth0', '10.0.1.1', labels={'app': 'web'})
    store.put(rec)
    assert store.get('c1_eth0') == rec
    assert store.records() == {'c1_eth0': rec}
    assert sorted(os.listdir(store.endpoints)) == ['c1_eth0.json']  # no .tmp left behind
    store.put(dict(rec, ip='10.0.1.2'))  # replaced whole
    assert store.get('c1_eth0')['ip'] == '10.0.1.2'
    store.remove('c1_eth0')
    store.remove('c1_eth0')  # already gone: fine
    assert store.get('c1_eth0') is None
    assert store.records() == {}


def test_records_without_directory(tmp_path):
    assert s.Store(str(tmp_path / 'nothing')).records() == {}
    assert s.Store(str(tmp_path / 'nothing')).get('x_eth0') is None


@pytest.mark.parametrize('content', ['{"key": "c1_eth0", "ip": ', '', '\xff\xfe', '[]', 'null', '"text"', '5'])
def test_corrupt_record_is_reported_not_raised(store, content):
    with open(store.path('c1_eth0'), 'w', encoding='latin-1') as handle:
        handle.write(content)
    assert store.get('c1_eth0') == {'key': 'c1_eth0', 'corrupt': True}
    assert store.records() == {'c1_eth0': {'key': 'c1_eth0', 'corrupt': True}}
    assert store.allocate('web', RANGE) == '10.0.1.1'  # a corrupt record holds no address


def test_records_ignores_other_files(store):
    store.put(record('c1_eth0', '10.0.1.1'))
    for name in ('c2_eth0.json.tmp', 'README', 'c3_eth0.jsonx'):
        with open(os.path.join(store.endpoints, name), 'w') as handle:
            handle.write('{}')
    assert list(store.records()) == ['c1_eth0']


# ------------------------------------------------------------------------------------------ IPAM

def test_first_allocation_skips_the_network_address(store):
    assert store.allocate('web', RANGE) == '10.0.1.1'
    assert store.allocate('web', '10.0.2.0/24') == '10.0.2.1'


def test_a_range_not_starting_at_dot_zero_starts_at_its_first_address(store):
    assert store.allocate('web', '10.0.1.64/26') == '10.0.1.64'
    assert store.allocate('one', '10.0.1.7/32') == '10.0.1.7'


def test_allocation_skips_reserved_and_used(store):
    store.put(record('c1_eth0', '10.0.1.3'))
    store.put(record('other_eth0', '10.0.1.4', network='db'))  # any record's address is used, whatever its network
    store.put({'key': 'half_eth0'})  # a record without address (a half-made ADD) holds nothing
    assert take(store, 3, reserved=['10.0.1.1', '10.0.1.2']) == ['10.0.1.5', '10.0.1.6', '10.0.1.7']
    with pytest.raises(s.Exhausted):  # wrapped around: .0 never, .1 .2 reserved, the rest used
        store.allocate('web', RANGE, reserved=['10.0.1.1', '10.0.1.2'])


def test_allocation_with_explicit_records_does_not_read_the_store(store):
    store.put(record('c1_eth0', '10.0.1.1'))
    # the caller's view wins: cmd_add passes the records it has (without a stale one it just tore down)
    assert store.allocate('web', RANGE, records={}) == '10.0.1.1'
    assert store.allocate('web2', RANGE, records={'x': record('x', '10.0.1.1'), 'y': None}) == '10.0.1.2'


def test_round_robin_does_not_hand_out_a_released_address_again_at_once(store):
    a, b = take(store, 2)
    assert (a, b) == ('10.0.1.1', '10.0.1.2')
    key_a = next(k for k, r in store.records().items() if r['ip'] == a)
    store.remove(key_a)
    assert store.allocate('web', RANGE) == '10.0.1.3'


def test_round_robin_wraps_around_and_reuses_freed_addresses(store):
    got = take(store, 7)
    assert got == ['10.0.1.%d' % i for i in range(1, 8)]
    freed = next(k for k, r in store.records().items() if r['ip'] == '10.0.1.3')
    store.remove(freed)
    assert store.allocate('web', RANGE) == '10.0.1.3'  # wrapped past .7 and skipped .0 (and .1, .2: used)


def test_pointer_is_per_network(store):
    assert store.allocate('web', RANGE) == '10.0.1.1'
    assert store.allocate('web', RANGE) == '10.0.1.2'
    assert store.allocate('db', '10.0.2.0/29') == '10.0.2.1'
    with open(os.path.join(store.next_dir, 'web'), encoding='ascii') as handle:
        assert int(handle.read()) == int.from_bytes(bytes([10, 0, 1, 3]), 'big')


FOREIGN = str(int.from_bytes(bytes([10, 9, 9, 9]), 'big'))


@pytest.mark.parametrize('pointer', ['garbage', '', '167772161000', '-5', FOREIGN])
def test_bad_or_foreign_pointer_starts_over(store, pointer):
    with open(os.path.join(store.next_dir, 'web'), 'w', encoding='ascii') as handle:
        handle.write(pointer)
    assert store.allocate('web', RANGE) == '10.0.1.1'


def test_pointer_past_the_end_wraps(store):
    with open(os.path.join(store.next_dir, 'web'), 'w', encoding='ascii') as handle:
        handle.write(str(int.from_bytes(bytes([10, 0, 1, 8]), 'big')))  # one past .7 (after handing out .7)
    assert store.allocate('web', RANGE) == '10.0.1.1'


def test_exhausted_when_full(store):
    take(store, 5, reserved=['10.0.1.6', '10.0.1.7'])
    with pytest.raises(s.Exhausted) as err:
        store.allocate('web', RANGE, reserved=['10.0.1.6', '10.0.1.7'])
    assert err.value.code == 100
    assert isinstance(err.value, s.StoreError)
    assert '10.0.1.0/29' in err.value.msg and '5 in use' in err.value.msg
    assert err.value.details
    with pytest.raises(s.Exhausted):
        store.allocate('web', '10.0.1.0/30', reserved=['10.0.1.1', '10.0.1.2', '10.0.1.3'], records={})


def test_exhausted_leaves_the_pointer_alone(store):
    take(store, 2)
    pointer = os.path.join(store.next_dir, 'web')
    with open(pointer, encoding='ascii') as handle:
        before = handle.read()
    with pytest.raises(s.Exhausted):
        store.allocate('web', RANGE, reserved=['10.0.1.%d' % i for i in range(3, 8)])
    with open(pointer, encoding='ascii') as handle:
        assert handle.read() == before


@pytest.mark.parametrize('cidr', ['10.0.1.1/29', 'fd00::/64', 'web'])
def test_bad_range_is_a_value_error(store, cidr):
    with pytest.raises(ValueError):
        store.allocate('web', cidr)


@pytest.mark.parametrize('cidr', ['10.0.1.0/29', 'fd00::1/124', 'web'])
def test_bad_ipv6_range_is_a_value_error(store, cidr):
    with pytest.raises(ValueError):
        store.allocate('web', cidr, family=6)


# ------------------------------------------------------------------------------------------ IPAM, IPv6

RANGE6 = 'fd00:8::/125'  # fd00:8:: is never handed out: ::1 - ::7


def take6(store, n, network='web', cidr=RANGE6, reserved=()):
    """Allocate ``n`` IPv6 addresses, recording each with an IPv4 one (as a dual-stack ADD does)."""
    out = []
    for _i in range(n):
        addr = store.allocate(network, RANGE, records=None)
        addr6 = store.allocate(network, cidr, reserved, family=6)
        store.put(dict(record('%s-%s_eth0' % (network, addr.replace('.', '-')), addr, network), ip6=addr6))
        out.append(addr6)
    return out


def test_ipv6_allocation_lowest_free_skips_anycast_reserved_and_used(store):
    store.put(dict(record('c1_eth0', '10.0.1.6'), ip6='fd00:8::3'))
    assert take6(store, 3, reserved=['fd00:8::1']) == ['fd00:8::2', 'fd00:8::4', 'fd00:8::5']
    assert store.allocate('web', 'fd00:8::40/124', family=6) == 'fd00:8::40'  # not a block's anycast address


def test_ipv6_round_robin_and_release(store):
    got = take6(store, 7)
    assert got == ['fd00:8::%d' % i for i in range(1, 8)]
    with pytest.raises(s.Exhausted) as err:
        store.allocate('web', RANGE6, family=6)
    assert err.value.code == 100
    freed = next(k for k, r in store.records().items() if r['ip6'] == 'fd00:8::2')
    store.remove(freed)  # DEL: the record goes, and both its addresses with it
    assert store.allocate('web', RANGE6, family=6) == 'fd00:8::2'
    assert store.allocate('web', RANGE, family=4) == '10.0.1.2'


def test_ipv6_pointer_is_apart_from_the_ipv4_one(store):
    assert store.allocate('web', RANGE) == '10.0.1.1'
    assert store.allocate('web', RANGE6, family=6) == 'fd00:8::1'
    assert store.allocate('web', RANGE) == '10.0.1.2'
    with open(os.path.join(store.next6_dir, 'web'), encoding='ascii') as handle:
        assert int(handle.read()) == int(ipaddress.IPv6Address('fd00:8::2'))


# ------------------------------------------------------------------------------------------ the lock

def _hold(data_dir, held, release):
    with s.Store(data_dir).locked():
        held.set()
        release.wait(10)


def test_lock_times_out_with_code_11_while_another_process_holds_it(tmp_path):
    ctx = multiprocessing.get_context('fork')
    held, release = ctx.Event(), ctx.Event()
    data_dir = str(tmp_path / 'data')
    proc = ctx.Process(target=_hold, args=(data_dir, held, release))
    proc.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(s.StoreError) as err, s.Store(data_dir).locked(timeout=0.05):
            pytest.fail('got the lock another process holds')  # pragma: no cover
        assert err.value.code == 11 and 'locked' in err.value.msg
        assert 0.05 <= time.monotonic() - started < 2
    finally:
        release.set()
        proc.join(5)
    assert proc.exitcode == 0
    with s.Store(data_dir).locked(timeout=1):  # released with the holder's exit
        pass


def test_lock_is_released_on_exception(tmp_path):
    st = s.Store(str(tmp_path / 'data'))
    with pytest.raises(RuntimeError), st.locked():
        raise RuntimeError('ADD failed')
    with st.locked(timeout=0.05):
        pass


def test_lock_excludes_a_second_open_in_the_same_process(tmp_path):
    # flock belongs to the open file description: a nested locked() must not get in either
    st = s.Store(str(tmp_path / 'data'))
    with st.locked(), pytest.raises(s.StoreError) as err, s.Store(st.dir).locked(timeout=0.01):
        pass  # pragma: no cover
    assert err.value.code == 11


def _add_one(data_dir, index, barrier, results):
    try:
        barrier.wait(10)
        st = s.Store(data_dir)
        with st.locked(timeout=20):
            addr = st.allocate('web', '10.0.0.0/24')
            addr6 = st.allocate('web', 'fd00:8::/120', family=6)
            st.put({'key': 'c%02d_eth0' % index, 'ip': addr, 'ip6': addr6, 'network': 'web'})
        results.put((addr, addr6))
    except Exception as exc:  # reported to the test, which then fails at once
        results.put(repr(exc))


def test_concurrent_adds_get_distinct_addresses(tmp_path):
    ctx = multiprocessing.get_context('fork')
    data_dir = str(tmp_path / 'data')
    n = 50
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_add_one, args=(data_dir, i, barrier, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    pairs = [results.get(timeout=10) for _index in range(n)]
    for proc in procs:
        proc.join(10)
    assert [p.exitcode for p in procs] == [0] * n
    assert all(isinstance(pair, tuple) for pair in pairs), pairs
    addrs, addrs6 = [a for a, _b in pairs], [b for _a, b in pairs]
    assert len(set(addrs)) == n and len(set(addrs6)) == n
    assert '10.0.0.0' not in addrs
    records = s.Store(data_dir).records()
    assert len(records) == n
    assert sorted(r['ip'] for r in records.values()) == sorted(addrs)
    # round robin under the lock: exactly the first n addresses, each once
    assert set(addrs) == {'10.0.0.%d' % i for i in range(1, n + 1)}
    assert set(addrs6) == {'fd00:8::%x' % i for i in range(1, n + 1)}
    assert sorted(r['ip6'] for r in records.values()) == sorted(addrs6)
