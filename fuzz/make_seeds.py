#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/seeds/<target>/ (run from anywhere: python3 fuzz/make_seeds.py).

Deterministic: the tokens are Ed25519-signed with the seed [7] * 32 that the access_token target
verifies with, so running it again rewrites the same files. Needs the `cryptography` package.
The regression-* seeds are inputs the targets once crashed on and are kept by hand, not here.
"""
import base64, json, os, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'seeds')
def put(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, name), 'wb').write(data)

b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode()
key = Ed25519PrivateKey.from_private_bytes(bytes([7]*32))
def token(claims, kid='k1'):
    header = json.dumps({"alg":"EdDSA","typ":"JWT","kid":kid}, separators=(',',':')).encode()
    inp = b64(header) + '.' + b64(json.dumps(claims, separators=(',',':')).encode())
    return inp + '.' + b64(key.sign(inp.encode()))
claims = {"iss":"crawbl-auth","aud":"crawbl-edge","sub":"0190b6d2-7c1e-7a4b-9d3f-2b8e4c6a1f00",
          "sid":"0190b6d2-8a00-7000-8000-000000000001","iat":1699999900,"exp":1900000000}
valid = token(claims)
put('access_token', 'valid', valid)
put('access_token', 'expired', token(dict(claims, iat=1600000000, exp=1600000900)))
put('access_token', 'other_kid', token(claims, kid='2026-05-k2'))
put('access_token', 'wrong_audience', token(dict(claims, aud="someone-else")))
put('access_token', 'bearer_header', 'Bearer ' + valid)
put('access_token', 'api_key', 'cak_' + b64(bytes(range(32))))

# Raw bytes for arbitrary::Unstructured (seed, kid, user, session, now, ttl).
put('access_token_roundtrip', 'uuids', bytes([7]*32) + b'\x02k1' + b'\x24' + b'0190b6d2-7c1e-7a4b-9d3f-2b8e4c6a1f00' + b'\x24' + b'0190b6d2-8a00-7000-8000-000000000001' + struct.pack('<q', 1700000000123) + struct.pack('<Q', 900))
put('access_token_roundtrip', 'long_kid', bytes(range(32)) + b'\x50' + b'k'*80 + b'\x01u\x01s' + struct.pack('<q', -5) + struct.pack('<Q', 0))
put('access_token_roundtrip', 'short', bytes([1,2,3,4,5,6,7,8]*6))

def cursor(at, id): return b64(f"{at}|{id}".encode())
put('cursor', 'message', cursor(1700000000123, '0190b6d2-7c1e-7a4b-9d3f-2b8e4c6a1f00'))
put('cursor', 'conversation', cursor(1764620229000, '0193a1b2-0000-7000-8000-00000000abcd'))
put('cursor', 'negative', cursor(-1, 'x'))
put('cursor', 'garbage', 'bm9waXBl')

put('socket_payloads', 'handshake', json.dumps({"token": valid, "since": {"0190b6d2-7c1e-7a4b-9d3f-2b8e4c6a1f00": 17}}))
put('socket_payloads', 'handshake_workspace', json.dumps({"workspaceId": "w1", "since": {"w1": 0}}))
put('socket_payloads', 'subscribe', json.dumps({"workspaceIds": ["w1", "w2", "w1"], "since": {"w2": 4}}))
put('socket_payloads', 'unsubscribe', json.dumps({"workspaceIds": ["w1"]}))
put('socket_payloads', 'since', json.dumps({"w1": 0, "w2": 18446744073709551615}))
put('socket_payloads', 'send', json.dumps({"conversationId": "c1", "localId": "l1", "content": {"type": "text", "text": "hi @assistant", "mentions": ["a1"]}}))
put('socket_payloads', 'typing', json.dumps({"conversationId": "c1", "isTyping": True}))

# Protobuf, by hand.
def varint(n):
    n &= (1 << 64) - 1
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def f_varint(no, n): return varint(no << 3) + varint(n)
def f_bytes(no, b):
    if isinstance(b, str): b = b.encode()
    return varint(no << 3 | 2) + varint(len(b)) + b
W, C, A, M = 'w-0190b6d2', 'c-0190b6d3', 'a-0190b6d4', 'm-0190b6d5'
def message(status, tools=b''):
    return (f_bytes(1, M) + f_bytes(2, W) + f_bytes(3, C) + f_varint(4, 2) + f_bytes(6, A)
            + f_bytes(8, f_bytes(1, 'text') + f_bytes(2, 'hello there'))
            + f_varint(9, status) + f_varint(10, 1700000000123) + f_varint(11, 1700000000456) + tools)
tool = f_bytes(1, 'call-1') + f_bytes(2, 'search') + f_bytes(3, '{"q":"rust"}') + f_bytes(4, '{"output":"ok"}')
envelope = lambda seq, kind: f_bytes(1, W) + f_varint(2, seq) + f_bytes(3, f_bytes(1, 'traceparent') + f_bytes(2, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')) + f_bytes(4, 'origin-1') + kind
put('event', 'message_new', envelope(1, f_bytes(10, message(1))))
put('event', 'message_updated', envelope(2, f_bytes(11, message(3, f_bytes(12, tool)))))
put('event', 'agent_typing', envelope(0, f_bytes(12, f_bytes(1, C) + f_bytes(2, A) + f_varint(3, 1))))
put('event', 'agent_status', envelope(0, f_bytes(13, f_bytes(1, A) + f_varint(2, 2))))
put('event', 'message_delta', envelope(0, f_bytes(14, f_bytes(1, M) + f_bytes(2, C) + f_bytes(3, A) + f_bytes(4, 'hel') + f_varint(5, 0))))
put('event', 'agent_tool', envelope(0, f_bytes(15, f_bytes(1, M) + f_bytes(2, C) + f_bytes(3, A) + f_bytes(4, tool))))
put('event', 'message_deleted', envelope(3, f_bytes(18, f_bytes(1, M) + f_bytes(2, C))))
put('event', 'conversation_read', envelope(0, f_bytes(5, 'u-1') + f_bytes(19, f_bytes(1, C) + f_bytes(2, 'u-1') + f_bytes(3, M))))
put('event', 'user_typing', envelope(0, f_bytes(6, 'u-1') + f_bytes(20, f_bytes(1, C) + f_bytes(2, 'u-1') + f_varint(3, 1))))

put('rest_json', 'sign_up', '00' + json.dumps({"email": "me@example.com", "password": "correct horse battery", "displayName": "Me"}))
put('rest_json', 'sign_in', '10' + json.dumps({"email": "me@example.com", "password": "correct horse battery"}))
put('rest_json', 'refresh', '21' + json.dumps({"refreshToken": "crt_" + b64(bytes(32))}))
put('rest_json', 'sign_up_no_content_type', '03' + json.dumps({"email": "a@b.c", "password": "p", "displayName": "d"}))
put('rest_json', 'list_messages', '33GET /v1/workspaces/w1/conversations/c1/messages?before=' + cursor(1700000000123, 'm1') + '&limit=20')
put('rest_json', 'send_message', '30POST /v1/workspaces/w1/conversations/c1/messages')
put('rest_json', 'events', '33GET /v1/workspaces/w1/events?after=12&limit=100')
put('rest_json', 'unknown', '33DELETE /v1/nowhere')
put('rest_json', 'mark_read', '30POST /v1/workspaces/w1/conversations/c1/read')
put('rest_json', 'edit_message', '30PATCH /v1/workspaces/w1/conversations/c1/messages/m1')
put('rest_json', 'delete_message', '33DELETE /v1/workspaces/w1/conversations/c1/messages/m1')

# client_address: the TRUSTED_PROXIES list, the peer, then X-Forwarded-For values, one a line.
put('client_address', 'behind_proxies', '10.0.0.0/8, 192.168.1.7\n10.1.2.3\n6.6.6.6, 198.51.100.1\n192.168.1.7')
put('client_address', 'nothing_trusted', '\n203.0.113.9\n198.51.100.1')
put('client_address', 'ipv6', 'fd00::/8, 127.0.0.1\n::ffff:10.1.2.3\n2001:db8::1')
put('client_address', 'garbage', '::/0\n::1\nnot-an-address, 1.2.3.4')
