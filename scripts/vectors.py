#!/usr/bin/env python3
"""Independent reference for PROTOCOL.md's key derivations and tag, using only Python's
standard library. Prints the test vectors; the Rust unit tests check the same values, so
two implementations written apart must agree."""
import hashlib
import hmac
import struct

def b(x: bytes) -> bytes:           # bytes(x) = u32be(len) || x
    return struct.pack(">I", len(x)) + x

def u64(n: int) -> bytes:           # u64(n) = 8 bytes big-endian
    return struct.pack(">Q", n)

def opt(n) -> bytes:                # opt(None) = 00, opt(n) = 01 || u64(n)
    return b"\x00" if n is None else b"\x01" + u64(n)

def lst(xs) -> bytes:               # list(xs) = u32be(count) || bytes(x)...
    return struct.pack(">I", len(xs)) + b"".join(b(x.encode()) for x in xs)

def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()

def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + t, i + 1
    return out[:length]

def psk(master: bytes, name: str, epoch: int) -> bytes:
    prk = hkdf_extract(b"cmdchan/v1", master)
    return hkdf_expand(prk, b(b"cmdchan/v1/psk") + b(name.encode()) + u64(epoch))

def tag_key(master: bytes) -> bytes:
    return hkdf_expand(hkdf_extract(b"cmdchan/v1", master), b(b"cmdchan/v1/tag-key"))

def audit_key(master: bytes) -> bytes:
    return hkdf_expand(hkdf_extract(b"cmdchan/v1", master), b(b"cmdchan/v1/audit-chain"))

def audit_mac(key: bytes, text: str) -> str:   # mac_i = HMAC(audit key, text_i)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

def grant_bytes(name, role, epoch, expires, servers) -> bytes:
    return (b(b"cmdchan/v1/grant") + b(name.encode()) + b(role.encode()) + u64(epoch)
            + opt(expires) + lst(servers))

def tag(master, name, role, epoch, expires, servers) -> bytes:
    msg = grant_bytes(name, role, epoch, expires, servers)
    return hmac.new(tag_key(master), msg, hashlib.sha256).digest()

def print_key_vectors():
    master = bytes(range(32))
    print("master          ", master.hex())
    print("psk(alice, 0)   ", psk(master, "alice", 0).hex())
    print("psk(alice, 7)   ", psk(master, "alice", 7).hex())
    print("tag key         ", tag_key(master).hex())
    g = ("alice", "operator", 7, 1893456000, ["db1", "db2"])
    print("grant bytes     ", grant_bytes(*g).hex())
    print("tag             ", tag(master, *g).hex())
    g0 = ("alice", "operator", 0, None, [])
    print("grant bytes (2) ", grant_bytes(*g0).hex())
    print("tag (2)         ", tag(master, *g0).hex())
    akey = audit_key(master)
    print("audit key       ", akey.hex())
    header = ('{"chain":"new","server":"db1","time":"2030-01-01T00:00:00.000Z","seq":0,"prev":"'
              + "0" * 64 + '"}')
    mac0 = audit_mac(akey, header)
    print("audit mac (0)   ", mac0)
    record = '{"client":"alice","outcome":"ok","seq":1,"prev":"' + mac0 + '"}'
    print("audit mac (1)   ", audit_mac(akey, record))


# ---- Wire format (PROTOCOL.md §4–5): a hand-written postcard encoder ----

def varint(n: int) -> bytes:        # unsigned LEB128, as postcard writes u16/u32/u64/lengths
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)

def pstr(s: str) -> bytes:
    raw = s.encode()
    return varint(len(raw)) + raw

def popt_u64(n) -> bytes:
    return b"\x00" if n is None else b"\x01" + varint(n)

def pvec_str(xs) -> bytes:
    return varint(len(xs)) + b"".join(pstr(x) for x in xs)

def frame(body: bytes) -> bytes:   # u32be(len) || version 1 || postcard body
    payload = b"\x01" + body
    return struct.pack(">I", len(payload)) + payload

def zigzag(n: int) -> bytes:        # signed integers: zigzag, then varint
    return varint((n << 1) ^ (n >> 63))

def request(counter, cid, issued_at, target, role, epoch, expires, servers, tag_, command, args,
            params) -> bytes:
    grant = pstr(role) + varint(epoch) + popt_u64(expires) + pvec_str(servers)
    named = varint(len(params)) + b"".join(pstr(k) + pstr(v) for k, v in params)
    return (varint(counter) + cid + varint(issued_at) + pstr(target) + grant + tag_
            + pstr(command) + pvec_str(args) + named)

def print_wire_vectors():
    master = bytes(range(32))
    g = ("alice", "operator", 7, 1893456000, ["db1", "db2"])
    cid = bytes(range(16))
    req = request(1, cid, 1893455990, "db1", "operator", 7, 1893456000, ["db1", "db2"],
                  tag(master, *g), "echo", ["hi", "ü"], [("lines", "10")])
    print("request frame   ", frame(req).hex())
    # Response: counter, id, Body::Ok(0) Reply::Echo(2) [args]
    ok = varint(1) + cid + varint(0) + varint(2) + pvec_str(["hi", "ü"])
    print("response frame  ", frame(ok).hex())
    # Response: Body::Err(1) Failure { code: 16 (replay), message, retry_after_ms: None }
    err = varint(1) + cid + varint(1) + varint(16) + pstr("this command ID was already used") + b"\x00"
    print("error frame     ", frame(err).hex())
    # Response: Body::Output(2) Output { stream: Stderr(1), data: b"oops\n" }
    out = varint(1) + cid + varint(2) + varint(1) + varint(5) + b"oops\n"
    print("output frame    ", frame(out).hex())
    # Response: Body::Ok(0) Reply::Exit(4) ExitInfo { code: Some(-1), signal: None,
    #   timed_out: false, duration_ms: 1500, output_bytes: 300, truncated: true }
    ex = (varint(1) + cid + varint(0) + varint(4) + b"\x01" + zigzag(-1) + b"\x00" + b"\x00"
          + varint(1500) + varint(300) + b"\x01")
    print("exit frame      ", frame(ex).hex())

if __name__ == "__main__":
    print_key_vectors()
    print_wire_vectors()
