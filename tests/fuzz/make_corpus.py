#!/usr/bin/env python3
"""Writes the seed inputs of the binary-input fuzz targets into corpus/.

Each seed is a real exchange in the encoding the target reads (see the
target's header comment and fuzz_input.h: little-endian integers, strings
as a length byte and bytes). Run from tests/fuzz/: python3 make_corpus.py
"""
import os
import struct

PAGE = 4096


def u8(v): return struct.pack('<B', v & 0xff)
def u16(v): return struct.pack('<H', v & 0xffff)
def u32(v): return struct.pack('<I', v & 0xffffffff)
def u64(v): return struct.pack('<Q', v & 0xffffffffffffffff)
def string(b): return u8(len(b)) + b


def write(target, name, data):
    d = os.path.join('corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# home_protocol_fuzzer: op (0..5 message, 6 touch, 7 peer dies), peer
# (1 + u32 % 3), type index, body.
def hp_msg(peer, index, body):
    return u8(0) + u32(peer - 1) + u8(index) + body

FETCH, READY, CLAIM, CLAIMED, ALLOC_KEYS, SC_REQ, SC_GRANT, SC_RECALL, SC_RECALLED = range(9)
write('home_protocol_fuzzer', 'fetch_each_allocation', b''.join(
    hp_msg(1, FETCH, u32(a - 1) + u32(7) + u64(3)) for a in range(1, 7)))
write('home_protocol_fuzzer', 'claim_first_touch',
      hp_msg(2, CLAIM, u32(4) + u32(1) + u64(0)) +
      hp_msg(3, CLAIM, u32(4) + u32(2) + u64(0)))
write('home_protocol_fuzzer', 'touch_then_ready',
      u8(6) + u32(0) + u8(5) +                       # block page 5: rank 1's
      hp_msg(1, READY, u32(0) + u32(0) + u64(5) + u32(0) + u32(0)))
write('home_protocol_fuzzer', 'touch_first_touch_then_claimed',
      u8(6) + u32(4) + u8(1) +
      hp_msg(1, CLAIMED, u32(0) + u32(1) + u64(1)))
write('home_protocol_fuzzer', 'alloc_keys',
      hp_msg(2, ALLOC_KEYS, u32(0) + u32(1) +
             u64((0x3300 << 32)) + u64(16 * PAGE) + u32(0x5eed) + u32(0)))
write('home_protocol_fuzzer', 'sc_request_recall_recalled',
      hp_msg(1, SC_REQ, u32(5) + u32(3) + u64(0) + u32(1) + u32(0)) +
      hp_msg(2, SC_REQ, u32(5) + u32(4) + u64(0) + u32(0) + u32(0)) +
      hp_msg(1, SC_RECALLED, u32(5) + u32(0) + u64(0)))
write('home_protocol_fuzzer', 'peer_dies_during_fetch',
      hp_msg(1, FETCH, u32(0) + u32(9) + u64(0)) + u8(7) + u32(0))


# coherence_messages_fuzzer: op (0..6 message, 7 peer dies), peer, type
# index, then shape, key, ticket, flags, count, refs, pushed page bytes.
EPOCH, ACQUIRE, GRANT, RELEASE, DESTROY, DESTROYED = range(6)
def pl(peer, index, key, ticket, flags, refs, shape=0):
    body = u8(0) + u32(peer - 1) + u8(index) + u8(shape) + u64(key)
    body += u64(ticket) if shape & 2 else u8(ticket)
    body += u32(flags)
    body += u32(len(refs)) if shape & 8 else u8(len(refs))
    pushed = 0
    for alloc, rflags, page in refs:
        body += u32(alloc - 1) + u32(rflags) + u64(page)
        pushed += rflags & 1
    body += b'\x5a' * pushed
    return body

LAST, ALL = 1, 2
write('coherence_messages_fuzzer', 'epoch_writes_all_peers', b''.join(
    pl(p, EPOCH, 1, 0, LAST, [(1, 0, 4), (2, 0, 5)]) for p in (1, 2, 3)))
write('coherence_messages_fuzzer', 'epoch_writes_pushed_and_subscribe',
      pl(1, EPOCH, 1, 0, LAST, [(1, 1, 4), (3, 2, 2)]))
write('coherence_messages_fuzzer', 'lock_acquire_queue_release', 
      pl(1, ACQUIRE, 2 * PAGE + 64, 1, LAST, []) +
      pl(2, ACQUIRE, 2 * PAGE + 64, 1, LAST, []) +
      pl(1, RELEASE, 2 * PAGE + 64, 0, LAST, [(1, 0, 0), (2, 0, 3)]) +
      pl(2, RELEASE, 2 * PAGE + 64, 0, LAST | ALL, []))
write('coherence_messages_fuzzer', 'lock_holder_dies',
      pl(1, ACQUIRE, 2 * PAGE, 1, LAST, []) +
      pl(2, ACQUIRE, 2 * PAGE, 2, LAST, []) + u8(7) + u32(0) +
      pl(3, ACQUIRE, 2 * PAGE, 3, LAST, []))
write('coherence_messages_fuzzer', 'lock_destroy_while_held',
      pl(1, ACQUIRE, 2 * PAGE + 8, 1, LAST, []) +
      pl(2, DESTROY, 2 * PAGE + 8, 1, LAST, []))
write('coherence_messages_fuzzer', 'unasked_grant_and_destroyed',
      pl(1, GRANT, 2 * PAGE, 3, LAST, [(1, 0, 1)]) +
      pl(1, DESTROYED, 2 * PAGE, 3, LAST | (2 << 8), []))


# coordinator_fuzzer: nranks (1 + u8 % 8), global pages (1 + u8 % 64),
# then ops: steer byte (< 0xe0 steers), op byte, request bytes, rank byte.
def op(n, request=b'', *rest):
    return u8(0) + u8(n) + string(request) + b''.join(rest)

def varint(v):
    out = b''
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out += u8(b | 0x80)
        else:
            return out + u8(b)

JOIN, HEARTBEAT, LEAVE, BARRIER, CREATE, FREE, LOOKUP, DECLARE, STATUS, AUTH, WATCH = range(11)
def create(length, placement=0, seq=0):
    return b'\x10' + varint(length) + b'\x18' + varint(placement) + b'\x28' + varint(seq)

two = u8(1) + u8(15)
write('coordinator_fuzzer', 'join_barrier_two_ranks', two +
      op(JOIN, b'', u8(0)) + op(JOIN, b'', u8(1)) +
      op(BARRIER, b'', u8(0)) + op(BARRIER, b'', u8(1)) + op(STATUS))
write('coordinator_fuzzer', 'create_free_lookup', two +
      op(JOIN, b'', u8(0)) + op(JOIN, b'', u8(1)) +
      op(CREATE, create(3 * PAGE), u8(0)) + op(CREATE, create(3 * PAGE), u8(1)) +
      op(LOOKUP, b'\x18' + varint(PAGE)) +
      op(FREE, b'\x10\x01', u8(0)) + op(FREE, b'\x10\x01', u8(1)) +
      op(CREATE, create(PAGE + 1, 0, 1), u8(0)))
write('coordinator_fuzzer', 'mismatched_creates', two +
      op(JOIN, b'', u8(0)) + op(JOIN, b'', u8(1)) +
      op(CREATE, create(PAGE), u8(0)) + op(CREATE, create(2 * PAGE), u8(1)))
write('coordinator_fuzzer', 'barrier_then_declare_dead', u8(2) + u8(15) +
      op(JOIN, b'', u8(0)) + op(JOIN, b'', u8(1)) + op(BARRIER, b'', u8(0)) +
      op(DECLARE, b'', u8(1)) + op(BARRIER, b'', u8(0)) + op(LEAVE, b'', u8(0)))
write('coordinator_fuzzer', 'create_larger_than_the_address_space', two +
      op(JOIN, b'', u8(0)) + op(CREATE, create(2**64 - 100), u8(0)))
write('coordinator_fuzzer', 'watchers', two +
      op(JOIN, b'', u8(0)) + u8(0) + u8(WATCH) + u8(0) + u8(0) + u8(0) +
      op(LEAVE, b'', u8(0)))


# runtime_config_fuzzer: for each variable in order, a set byte (odd: set),
# then a shape index and a string appended to it.
VARS = ['GLOBAL_BASE', 'GLOBAL_SIZE', 'COORDINATOR', 'RANK', 'NRANKS',
        'CLUSTER_ID', 'SECRET', 'HOST', 'TRANSPORT', 'COORDINATOR_EXTERNAL',
        'SPIN_POLLS', 'IDLE_POLLS', 'SERVICE_SLICE_US', 'READAHEAD', 'PUSH',
        'CHECK', 'LEASE_MS', 'DEAD_AFTER_MS']
def env(**values):
    out = b''
    for v in VARS:
        if v in values:
            out += u8(1) + u8(0xff) + string(values[v].encode())
        else:
            out += u8(0)
    return out

write('runtime_config_fuzzer', 'job_of_one', env())
write('runtime_config_fuzzer', 'rank_of_four', env(
    COORDINATOR='127.0.0.1:7070', RANK='2', NRANKS='4', CLUSTER_ID='job',
    SECRET='s', HOST='10.0.0.3', TRANSPORT='tcp'))
write('runtime_config_fuzzer', 'tuning', env(
    GLOBAL_BASE='0x200000000000', GLOBAL_SIZE='1T', SPIN_POLLS='100',
    IDLE_POLLS='0', READAHEAD='8', PUSH='0', CHECK='1', LEASE_MS='2000',
    DEAD_AFTER_MS='10000', SERVICE_SLICE_US='50'))
write('runtime_config_fuzzer', 'bad_rank', env(
    COORDINATOR='h:1', RANK='4', NRANKS='4'))
