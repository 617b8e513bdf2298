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


# tcp_frames_fuzzer: a mode byte (0 raw bytes to a target, 1 request frames
# after a correct handshake, 2 responses from a fake target), then that
# mode's choices (see tcp_frames_fuzzer.cc).
def tcp(name, data):
    write('tcp_frames_fuzzer', name, data)

# Mode 0: shape (bit 0: a hello first; bits 1-2: its rank 5, the target's
# own, an unknown one, any), the chunk size less one, the bytes.
tcp('raw_garbage', u8(0) + u8(0) + u8(6) + bytes((i * 37) & 0xff for i in range(200)))
tcp('raw_hello_wrong_proof', u8(0) + u8(1) + u8(31) + b'\x00' * 32)
tcp('raw_hello_own_rank', u8(0) + u8(1 | 2) + u8(0))
tcp('raw_hello_unknown_rank_then_data', u8(0) + u8(1 | 4) + u8(255) + b'early')

# Mode 1: the region's seed, then actions on a connection of the input's
# session (a session of its own; frames numbered from what the challenge
# says the target took): 0 or 1 a new operation (opcode, steer: bit 0 any
# rkey, bit 1 any address, bit 2 align, bits 4-5 the length's width; then
# length, rkey, address or offset, operands, WRITE seed), 2 a frame taken
# before sent again (which, u16), 3 a new message (type, width, length,
# seed), 4 raw bytes, 5 a write of part of what is built (how much,
# pause), 6 a byte: even, end this connection and go on on a new one; odd,
# a frame from the future (seq received + 1 + byte/2), 7 a write of all of
# it (pause).
READ, WRITE, FADD, CAS = range(4)
def req_op(opcode, offset, length=None, seed=None, rkey=None, operands=b''):
    if length is None:
        steer, body = 0x04, b''                       # 8 bytes, aligned
    else:
        steer, body = 0x20, u16(length)
    if rkey is not None:
        steer |= 1
        body += u32(rkey)
    body += u16(offset) + operands
    if seed is not None:
        body += u8(seed)
    return u8(0) + u8(opcode) + u8(steer) + body
def req_msg(msg_type, length, seed):
    return u8(3) + u16(msg_type) + u8(0) + u16(length) + u8(seed)
def req_flush(part=None, pause=1):
    return (u8(7) if part is None else u8(5) + u16(part)) + u8(pause)
def req_repeat(index):
    return u8(2) + u16(index)
def req_reconnect():
    return u8(6) + u8(0)
def req_future(ahead=0):
    return u8(6) + u8(1 | (ahead << 1))

tcp('request_read', u8(1) + u8(3) + req_op(READ, 128, 64))
tcp('request_write_then_read', u8(1) + u8(4) +
    req_op(WRITE, 256, 100, seed=9) + req_op(READ, 200, 200))
tcp('request_atomics', u8(1) + u8(5) +
    req_op(FADD, 64, operands=u64(5)) +
    req_op(CAS, 64, operands=u64(5) + u64(77)) + req_op(READ, 64, 8))
tcp('request_message', u8(1) + u8(6) + req_msg(7, 300, 3) + req_op(READ, 0, 16))
tcp('request_split_frames', u8(1) + u8(7) + req_op(READ, 0, 4096) +
    req_flush(10) + req_op(WRITE, 4096, 3000, seed=2) + req_flush(500) +
    req_msg(9, 2000, 1) + req_flush(1) + req_flush())
tcp('request_bad_rkey_closes', u8(1) + u8(8) +
    req_op(READ, 0, 16) + req_op(READ, 0, 16, rkey=0x1234) + req_op(READ, 32, 8))
tcp('request_bad_range_then_reconnect', u8(1) + u8(8) +
    req_op(WRITE, 0, 16, seed=4) + req_op(READ, 65530, 64) + req_flush() +
    req_reconnect() + req_op(READ, 0, 32) + req_repeat(1) + req_op(FADD, 3, operands=u64(1)))
tcp('request_empty_read_probe', u8(1) + u8(8) +
    req_op(READ, 0, 0, rkey=0x999) + req_msg(3, 10, 1) + req_op(READ, 0, 0))
tcp('request_malformed_frame', u8(1) + u8(9) + req_op(READ, 0, 16) + req_flush() +
    u8(0) + u8(0x90) + u8(0))
tcp('request_oversized_message', u8(1) + u8(9) +
    u8(3) + u16(1) + u8(1) + u32(0x10000000))
tcp('request_repeats', u8(1) + u8(10) +
    req_op(WRITE, 512, 64, seed=3) + req_op(FADD, 64, operands=u64(5)) +
    req_msg(11, 40, 2) + req_op(CAS, 64, operands=u64(5) + u64(77)) +
    req_op(WRITE, 512, 64, seed=4) + req_flush() +
    req_repeat(0) + req_repeat(1) + req_repeat(2) + req_repeat(3) +
    req_op(READ, 512, 64))
tcp('request_repeats_across_connections', u8(1) + u8(11) +
    req_op(FADD, 128, operands=u64(9)) + req_msg(12, 5, 5) +
    req_op(WRITE, 0, 256, seed=6) + req_reconnect() +
    req_repeat(0) + req_repeat(1) + req_op(WRITE, 0, 256, seed=7) +
    req_repeat(2) + req_op(READ, 0, 256) + req_reconnect() +
    req_repeat(3) + req_op(READ, 128, 8))
tcp('request_repeated_bad_atomic', u8(1) + u8(12) +
    req_op(FADD, 3, operands=u64(1)) + req_op(FADD, 8, operands=u64(2)) +
    req_repeat(0) + req_repeat(1))
tcp('request_future_seq', u8(1) + u8(13) + req_op(READ, 0, 16) +
    req_future(3) + req_op(READ, 0, 16))
tcp('request_future_seq_then_reconnect', u8(1) + u8(13) +
    req_op(WRITE, 64, 8, seed=1) + req_flush() + req_future() + req_reconnect() +
    req_repeat(0) + req_op(READ, 64, 8))

# Mode 2: items less one; per item a selector (opcode in bits 0-1, its
# length's width in bits 2-3, bit 6 a message (not the last), bit 7
# unsignalled) and a length; how many are posted before the handshake; how
# the challenge goes (bit 5: `received` follows; low nibble 15: spoiled,
# then offset and xor; bit 4: in two pieces, then where); then actions:
# 0-2 a good answer to the next op (READ: ack, seed; WRITE: ack; atomic:
# old value), 4 an error answer (READ, WRITE: ack), 3 a byte: odd, break
# the connection here (FIN) and take the reconnection (a challenge as
# above, then actions), even, the end, 5 a header of any fields, 6 raw
# bytes, 7 a write of part of what is built (how much, pause).
def rsp_op(opcode, length, unsignalled=False, message=False):
    if length < 256:
        width, enc = 0, u8(length)
    elif length <= 8192:
        width, enc = 1, u16(length)
    else:
        width, enc = 2, u16(length - 120 * 1024)
    return u8(opcode | (width << 2) | (0x80 if unsignalled else 0) |
              (0x40 if message else 0)) + enc
def rsp_msg(length):
    return rsp_op(READ, length, message=True)
def rsp_chain(ops, before=0, challenge=u8(0)):
    return u8(2) + u8(len(ops) - 1) + b''.join(ops) + u8(before) + challenge
def challenge(received=None):
    return u8(0) if received is None else u8(0x20) + u8(received)
GOOD, ERROR, BREAK, HEADER, RAW, PART = 0, 4, 3, 5, 6, 7
def brk(): return u8(BREAK) + u8(1)
def end(): return u8(BREAK) + u8(0)

tcp('response_read', rsp_chain([rsp_op(READ, 64)]) + u8(GOOD) + u8(1) + u8(5))
tcp('response_write', rsp_chain([rsp_op(WRITE, 100)]) + u8(GOOD) + u8(1))
tcp('response_atomics', rsp_chain([rsp_op(FADD, 8), rsp_op(CAS, 8)], before=1) +
    u8(GOOD) + u64(41) + u8(GOOD) + u64(42))
tcp('response_errors', rsp_chain([rsp_op(READ, 64), rsp_op(WRITE, 64)]) +
    u8(ERROR) + u8(1) + u8(ERROR) + u8(2))
tcp('response_chain_split', rsp_chain(
        [rsp_op(READ, 5000), rsp_op(WRITE, 300), rsp_op(READ, 130000),
         rsp_op(FADD, 8)], before=2, challenge=u8(0x10) + u8(20)) +
    u8(GOOD) + u8(1) + u8(1) + u8(PART) + u16(100) + u8(1) + u8(GOOD) + u8(2) +
    u8(GOOD) + u8(3) + u8(2) + u8(PART) + u16(60000) + u8(1) + u8(GOOD) + u64(7))
tcp('response_error_then_reads', rsp_chain(
        [rsp_op(READ, 4096), rsp_op(READ, 4096), rsp_op(READ, 100)]) +
    u8(ERROR) + u8(1) + u8(GOOD) + u8(2) + u8(3) + u8(GOOD) + u8(3) + u8(4))
tcp('response_malformed', rsp_chain([rsp_op(READ, 64), rsp_op(READ, 64)]) +
    u8(GOOD) + u8(1) + u8(1) + u8(HEADER) + u8(0x90) + u8(0) + u8(64) + u64(0))
tcp('response_spoiled_challenge',
    rsp_chain([rsp_op(READ, 64)], challenge=u8(0x0f) + u8(40) + u8(1)) +
    u8(GOOD) + u8(1) + u8(1))
tcp('response_unsignalled', rsp_chain(
        [rsp_op(READ, 32, unsignalled=True), rsp_op(WRITE, 32, unsignalled=True),
         rsp_op(READ, 32)]) + u8(GOOD) + u8(1) + u8(1) + u8(GOOD) + u8(2) +
    u8(GOOD) + u8(3) + u8(2))
tcp('response_messages_interleaved', rsp_chain(
        [rsp_msg(10), rsp_op(WRITE, 16), rsp_msg(300), rsp_op(READ, 16)],
        before=3, challenge=challenge(1)) +
    u8(GOOD) + u8(2) + u8(GOOD) + u8(4) + u8(9) + end())
tcp('response_break_and_resume', rsp_chain(
        [rsp_op(WRITE, 64), rsp_msg(20), rsp_op(FADD, 8), rsp_msg(30),
         rsp_op(READ, 5000), rsp_op(CAS, 8)], before=2) +
    u8(GOOD) + u8(1) + brk() + challenge(1) +
    u8(GOOD) + u64(5) + u8(GOOD) + u8(5) + u8(7) + u8(GOOD) + u64(6) + end())
tcp('response_break_twice', rsp_chain(
        [rsp_msg(8), rsp_op(READ, 64), rsp_msg(9), rsp_op(WRITE, 200),
         rsp_op(READ, 130000), rsp_msg(10), rsp_op(FADD, 8)]) +
    brk() + challenge(0) + u8(GOOD) + u8(1) + u8(3) + brk() + challenge(2) +
    u8(ERROR) + u8(3) + u8(PART) + u16(8) + u8(0) + brk() + u8(0) +
    u8(GOOD) + u8(5) + u8(4) + u8(GOOD) + u64(1))
tcp('response_break_then_spoiled', rsp_chain(
        [rsp_op(READ, 64), rsp_op(WRITE, 64)]) +
    u8(GOOD) + u8(1) + u8(2) + brk() + u8(0x0f) + u8(3) + u8(1))
