#!/usr/bin/env python3
"""Independent reference for PROTOCOL.md's key derivations and tag, using only Python's
standard library. Prints the test vectors; the Rust unit tests check the same values, so
two implementations written apart must agree."""
import base64
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

# ---- Keys (PROTOCOL.md §3): root → zone key → psk, tag key, identity key, audit key ----

def zone_key(root: bytes, zone: str, generation: int) -> bytes:
    prk = hkdf_extract(b"cmdchan/v2", root)
    return hkdf_expand(prk, b(b"cmdchan/v2/zone") + b(zone.encode()) + u64(generation))

def zone_prk(zkey: bytes) -> bytes:
    return hkdf_extract(b"cmdchan/v2", zkey)

def psk(zkey: bytes, zone: str, name: str, epoch: int) -> bytes:
    return hkdf_expand(zone_prk(zkey), b(b"cmdchan/v2/psk") + b(zone.encode()) + b(name.encode()) + u64(epoch))

def labelled(zkey: bytes, zone: str, label: bytes) -> bytes:
    return hkdf_expand(zone_prk(zkey), b(label) + b(zone.encode()))

def grant_bytes(zone, name, role, epoch, expires, servers) -> bytes:
    return (b(b"cmdchan/v2/grant") + b(zone.encode()) + b(name.encode()) + b(role.encode())
            + u64(epoch) + opt(expires) + lst(servers))

def tag(zkey, zone, name, role, epoch, expires, servers) -> bytes:
    msg = grant_bytes(zone, name, role, epoch, expires, servers)
    return hmac.new(labelled(zkey, zone, b"cmdchan/v2/tag-key"), msg, hashlib.sha256).digest()

def audit_mac(key: bytes, text: str) -> str:   # mac_i = HMAC(audit key, text_i)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

# ChaCha20-Poly1305 (RFC 8439), written out so that only the standard library is used.
def _rotl(v, c):
    return ((v << c) & 0xffffffff) | (v >> (32 - c))

def _quarter(x, a, b_, c, d):
    x[a] = (x[a] + x[b_]) & 0xffffffff; x[d] = _rotl(x[d] ^ x[a], 16)
    x[c] = (x[c] + x[d]) & 0xffffffff; x[b_] = _rotl(x[b_] ^ x[c], 12)
    x[a] = (x[a] + x[b_]) & 0xffffffff; x[d] = _rotl(x[d] ^ x[a], 8)
    x[c] = (x[c] + x[d]) & 0xffffffff; x[b_] = _rotl(x[b_] ^ x[c], 7)

def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    state = ([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] + list(struct.unpack("<8I", key))
             + [counter] + list(struct.unpack("<3I", nonce)))
    x = state[:]
    for _ in range(10):
        _quarter(x, 0, 4, 8, 12); _quarter(x, 1, 5, 9, 13); _quarter(x, 2, 6, 10, 14); _quarter(x, 3, 7, 11, 15)
        _quarter(x, 0, 5, 10, 15); _quarter(x, 1, 6, 11, 12); _quarter(x, 2, 7, 8, 13); _quarter(x, 3, 4, 9, 14)
    return struct.pack("<16I", *[(x[i] + state[i]) & 0xffffffff for i in range(16)])

def chacha20(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 64):
        block = chacha20_block(key, counter + i // 64, nonce)
        out += bytes(a ^ k for a, k in zip(data[i:i + 64], block))
    return bytes(out)

def poly1305(key: bytes, msg: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0ffffffc0ffffffc0ffffffc0fffffff
    s_ = int.from_bytes(key[16:], "little")
    acc, p = 0, (1 << 130) - 5
    for i in range(0, len(msg), 16):
        n = int.from_bytes(msg[i:i + 16] + b"\x01", "little")
        acc = ((acc + n) * r) % p
    return ((acc + s_) & ((1 << 128) - 1)).to_bytes(16, "little")

def seal(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    otk = chacha20_block(key, 0, nonce)[:32]
    ct = chacha20(key, 1, nonce, plaintext)
    pad = lambda x: x + b"\x00" * (-len(x) % 16)
    mac = poly1305(otk, pad(aad) + pad(ct) + struct.pack("<QQ", len(aad), len(ct)))
    return ct + mac

def sealed_identity(zkey: bytes, zone: str, generation: int, name: str, epoch: int, nonce: bytes) -> str:
    plaintext = bytes([len(name)]) + name.encode() + bytes(128 - len(name)) + u64(epoch)
    aad = b(b"cmdchan/v2/identity") + b(zone.encode()) + u64(generation)
    raw = nonce + seal(labelled(zkey, zone, b"cmdchan/v2/identity"), nonce, aad, plaintext)
    return "c2.%d.%s" % (generation, base64.urlsafe_b64encode(raw).decode().rstrip("="))

def print_key_vectors():
    root = bytes(range(32))
    zkey = zone_key(root, "prod", 1)
    print("root            ", root.hex())
    print("zone key        ", zkey.hex())
    print("psk(alice, 0)   ", psk(zkey, "prod", "alice", 0).hex())
    print("psk(alice, 7)   ", psk(zkey, "prod", "alice", 7).hex())
    print("tag key         ", labelled(zkey, "prod", b"cmdchan/v2/tag-key").hex())
    print("identity key    ", labelled(zkey, "prod", b"cmdchan/v2/identity").hex())
    akey = labelled(zkey, "prod", b"cmdchan/v2/audit-chain")
    print("audit key       ", akey.hex())
    g = ("alice", "operator", 7, 1893456000, ["db1", "db2"])
    print("grant bytes     ", grant_bytes("prod", *g).hex())
    print("tag             ", tag(zkey, "prod", *g).hex())
    g0 = ("alice", "operator", 0, None, [])
    print("tag (2)         ", tag(zkey, "prod", *g0).hex())
    print("identity        ", sealed_identity(zkey, "prod", 1, "alice", 7, bytes(range(12))))
    key_id = hmac.new(akey, b"cmdchan/v2/audit-key-id", hashlib.sha256).digest()[:8].hex()
    print("audit key id    ", key_id)
    header = ('{"chain":"new","key":"' + key_id + '","server":"db1",'
              + '"time":"2030-01-01T00:00:00.000Z","seq":0,"prev":"' + "0" * 64 + '"}')
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

def frame(body: bytes) -> bytes:   # u32be(len) || version 3 || postcard body
    payload = b"\x03" + body
    return struct.pack(">I", len(payload)) + payload

def zigzag(n: int) -> bytes:        # signed integers: zigzag, then varint
    return varint((n << 1) ^ (n >> 63))

def pgrant(role, epoch, expires, servers) -> bytes:
    return pstr(role) + varint(epoch) + popt_u64(expires) + pvec_str(servers)

def request(counter, cid, issued_at, target, role, epoch, expires, servers, tag_, command, args,
            params, detach=False, run=None, approval=None) -> bytes:
    grant = pgrant(role, epoch, expires, servers)
    named = varint(len(params)) + b"".join(pstr(k) + pstr(v) for k, v in params)
    run_ = b"\x00" if run is None else b"\x01" + run      # Option<[u8; 16]>
    approval_ = b"\x00" if approval is None else b"\x01" + approval   # Option<Approval>
    return (varint(counter) + cid + varint(issued_at) + pstr(target) + grant + tag_
            + pstr(command) + pvec_str(args) + named + bytes([detach]) + run_ + approval_)

def job_id(run: bytes, server: str) -> bytes:    # a fan-out run's job on one server
    return hashlib.sha256(b"cmdchan/v3/job" + run + server.encode()).digest()[:16]

def print_wire_vectors():
    zkey = zone_key(bytes(range(32)), "prod", 1)
    g = ("alice", "operator", 7, 1893456000, ["db1", "db2"])
    cid = bytes(range(16))
    req = request(1, cid, 1893455990, "db1", "operator", 7, 1893456000, ["db1", "db2"],
                  tag(zkey, "prod", *g), "echo", ["hi", "ü"], [])
    print("request frame   ", frame(varint(0) + req).hex())    # ClientMsg::Request = variant 0
    tail = request(2, cid, 1893455990, "db1", "operator", 7, 1893456000, ["db1", "db2"],
                   tag(zkey, "prod", *g), "tail-log", ["/var/log/syslog"], [("lines", "10")],
                   detach=True, run=b"\xaa" * 16)
    print("request frame 2 ", frame(varint(0) + tail).hex())
    print("input frame     ", frame(varint(1) + varint(1) + varint(3) + b"hi\n").hex())
    print("input end frame ", frame(varint(2) + varint(1)).hex())
    started = varint(1) + cid + varint(3) + varint(1000)      # Body::Started { stdin_limit }
    print("started frame   ", frame(started).hex())
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
    #   timed_out: false, duration_ms: 1500, output_bytes: 300, truncated: true,
    #   stdin_truncated: false }
    ex = (varint(1) + cid + varint(0) + varint(4) + b"\x01" + zigzag(-1) + b"\x00" + b"\x00"
          + varint(1500) + varint(300) + b"\x01" + b"\x00")
    print("exit frame      ", frame(ex).hex())
    # Response: Body::Alive(4) Alive::Running(0)
    print("alive frame     ", frame(varint(1) + cid + varint(4) + varint(0)).hex())
    # Response: Body::Ok(0) Reply::Jobs(7) [JobInfo { id, state: Exited(1) 3, client "alice",
    #   command "backup", started_at, ended_at, output_bytes 300, kept_bytes 300,
    #   stdout_sha256 11.., stderr_sha256 22.., run Some(aa..) }]
    job = (cid + varint(1) + zigzag(3) + pstr("alice") + pstr("backup") + varint(1893455990)
           + varint(1893456000) + varint(300) + varint(300) + b"\x11" * 32 + b"\x22" * 32
           + b"\x01" + b"\xaa" * 16)
    print("jobs frame      ", frame(varint(1) + cid + varint(0) + varint(7) + varint(1) + job).hex())
    print("job id          ", job_id(b"\xaa" * 16, "db1").hex())
    # A request with an approval (§5.8): bob (role lead, epoch 2, generation 1) approved
    # alice's restart-service nginx --arg now=true on web1 and web2.
    servers, expires = ["web1", "web2"], 1893456000
    bob = ("bob", "lead", 2, None, [])
    approver = (pstr("bob") + varint(1) + pgrant("lead", 2, None, []) + tag(zkey, "prod", *bob)
                + approval_tag(zkey, "prod", "alice", "bob", 2, b"\x11" * 16, "restart-service",
                               ["nginx"], [("now", "true")], False, servers, expires))
    approval = pvec_str(servers) + varint(expires) + varint(1) + approver
    alice = ("alice", "operator", 0, None, [])
    approved = request(1, b"\x11" * 16, 1893455990, "web1", "operator", 0, None, [],
                       tag(zkey, "prod", *alice), "restart-service", ["nginx"], [("now", "true")],
                       approval=approval)
    print("approved frame  ", frame(varint(0) + approved).hex())

# ---- Approvals (PROTOCOL.md §5.8): an approver's key from its PSK, a tag over the request ----

def approval_bytes(zone, requester, approver, cid, command, args, params, detach, servers, expires):
    return (b(b"cmdchan/v3/approval") + b(zone.encode()) + b(requester.encode())
            + b(approver.encode()) + b(cid) + b(command.encode()) + lst(args)
            + lst([k for k, _ in params]) + lst([v for _, v in params]) + u64(int(detach))
            + lst(servers) + u64(expires))

def approval_key(zkey, zone, approver, epoch) -> bytes:
    info = b(b"cmdchan/v3/approval-key") + b(zone.encode()) + b(approver.encode())
    return hkdf_expand(hkdf_extract(b"cmdchan/v2", psk(zkey, zone, approver, epoch)), info)

def approval_tag(zkey, zone, requester, approver, epoch, *approved) -> bytes:
    msg = approval_bytes(zone, requester, approver, *approved)
    return hmac.new(approval_key(zkey, zone, approver, epoch), msg, hashlib.sha256).digest()

def print_approval_vectors():
    zkey = zone_key(bytes(range(32)), "prod", 1)
    approved = (b"\x11" * 16, "restart-service", ["nginx"], [("now", "true")], False,
                ["web1", "web2"], 1893456000)
    print("approval key    ", approval_key(zkey, "prod", "bob", 2).hex())
    print("approval bytes  ", approval_bytes("prod", "alice", "bob", *approved).hex())
    print("approval tag    ", approval_tag(zkey, "prod", "alice", "bob", 2, *approved).hex())

# ---- Signed revocation lists (PROTOCOL.md §5.7): the seed from the root; Ed25519 needs
# the `cryptography` package (the rest of this file needs nothing outside the stdlib) ----

def revocation_seed(root: bytes) -> bytes:
    return hkdf_expand(hkdf_extract(b"cmdchan/v2", root), b(b"cmdchan/v3/revocation-key"))

def revocation_list(version, issued_at, names, min_epochs, retired) -> bytes:
    return (varint(version) + varint(issued_at) + pvec_str(names)
            + varint(len(min_epochs)) + b"".join(pstr(n) + varint(e) for n, e in min_epochs)
            + varint(len(retired)) + b"".join(pstr(z) + varint(g) for z, g in retired))

def print_revocation_vectors():
    seed = revocation_seed(bytes(range(32)))
    print("revocation seed ", seed.hex())
    body = revocation_list(1, 1893456000, ["mallory"], [("alice", 2)], [("prod", 1)])
    print("list            ", body.hex())
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        print("(the public key and signature need: pip install cryptography)")
        return
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print("revocation key  ", public.hex())
    signature = key.sign(b"cmdchan/v3/revocations" + body)
    print("signature       ", signature.hex())
    text = base64.urlsafe_b64encode(body + signature).decode().rstrip("=")
    print("text            ", "cmdchan-revocations:" + text)

if __name__ == "__main__":
    print_key_vectors()
    print_revocation_vectors()
    print_approval_vectors()
    print_wire_vectors()
