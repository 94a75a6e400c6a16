#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/).

Seeds start with the few control bytes each target reads first (see the
comment at the top of each tests/fuzz/fuzz_*.c), followed by the
interesting text: real stream headers and stanzas, RFC 7622 JIDs, the
SCRAM exchanges of RFC 5802 and RFC 7677, config files. Run it again after
changing an input layout:

    python3 tests/fuzz/make_seeds.py

Files are named after what they hold, so a seed that starts failing says
what it was meant to exercise.
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

HDR = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
       b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
       b"version='1.0' xml:lang='en'>")
END = b"</stream:stream>"


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_xml_stream: flags, nchunks, (len-1, op, op2) * n, payload ----

def xml_seed(name, payload, flags=0, chunks=()):
    ctl = bytes([flags, len(chunks)])
    for ln, op, op2 in chunks:
        ctl += bytes([ln - 1, op, op2])
    write("fuzz_xml_stream", name, ctl + payload)


STANZAS = {
    "message": b"<message to='juliet@example.com/balcony' id='m1' type='chat'>"
               b"<body>Art thou not Romeo, &amp; a Montague? &#x263A; &lt;3</body>"
               b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "presence": b"<presence><show>away</show><status xml:lang='fr'>parti</status>"
                b"<priority>5</priority><c xmlns='http://jabber.org/protocol/caps' "
                b"hash='sha-1' node='http://psi-im.org' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"
                b"</presence>",
    "iq_bind": b"<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               b"<resource>balcony</resource></bind></iq>",
    "iq_ping": b"<iq from='juliet@example.com/balcony' to='example.com' id='c2s1' "
               b"type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
    "starttls": b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "auth": b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
            b"biwsbj1qdWxpZXQscj1veU5NbzBYNmU=</auth>",
    "prefixed": b"<cl:message xmlns:cl='jabber:client' xmlns:x='urn:x' x:a='1' b='&#9;&#10;'>"
                b"<x:y xmlns='urn:other'><z/>text<![CDATA[<raw> & ]]>more</x:y></cl:message>",
    "sm": b"<enable xmlns='urn:xmpp:sm:3' resume='true'/><r xmlns='urn:xmpp:sm:3'/>",
}


def xml_seeds():
    for k, v in STANZAS.items():
        xml_seed("stanza_" + k, HDR + v + END)
    xml_seed("all_stanzas", HDR + b"\n ".join(STANZAS.values()) + b" \n" + END)
    xml_seed("header_only", HDR)
    xml_seed("header_prefix_ns",
             b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' "
             b"xmlns:db='jabber:server:dialback' to='example.com' version='1.0'>"
             b"<db:result to='a' from='b'>abc</db:result><s:features/></s:stream>")
    xml_seed("header_no_default_ns",
             b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
             b"<message/><foo xmlns=''/></stream:stream>")
    xml_seed("keepalive_whitespace", HDR + b"  \n\t " + STANZAS["message"] + b"\r\n " + END)
    xml_seed("restricted_comment", HDR + b"<message><!-- hi --></message>")
    xml_seed("restricted_pi", HDR + b"<?php echo 1; ?>")
    xml_seed("restricted_dtd",
             b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY a 'aaaa'>]>" + HDR)
    xml_seed("entity_bomb", b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;'>]>"
             + HDR + b"<message>&b;</message>")
    xml_seed("not_well_formed", HDR + b"<message><body></message>")
    xml_seed("text_at_stream_level", HDR + b"hello" + END)
    xml_seed("undeclared_prefix", HDR + b"<foo:message/>")
    # Chunked: the header and a stanza cut inside tags and references.
    doc = HDR + STANZAS["message"] + STANZAS["prefixed"] + END
    xml_seed("chunked_mid_tag", doc, chunks=[(7, 1, 0), (40, 1, 0), (3, 1, 0), (90, 1, 0),
                                            (11, 1, 0), (2, 1, 0)])
    xml_seed("chunked_bytewise", HDR + STANZAS["presence"],
             chunks=[(1, 1, 0)] * 31)
    # Long tokens (the fuzz build defers from 24 bytes on).
    long_attr = b"<message id='" + b"x" * 300 + b"'><body>" + b"y" * 200 + b"</body></message>"
    xml_seed("deferred_long_attr", HDR + long_attr + END,
             chunks=[(len(HDR) + 30, 1, 0), (50, 1, 0), (100, 1, 0), (200, 1, 0)])
    xml_seed("deferred_long_comment", HDR + b"<message><!--" + b"c" * 100 + b"-->",
             chunks=[(len(HDR) + 40, 1, 0), (30, 1, 0)])
    # Small limits: deep nesting, many attributes, a long stanza.
    xml_seed("limits_small_depth", HDR + b"<a>" * 10 + b"</a>" * 10 + END, flags=1)
    xml_seed("limits_tiny_attrs", HDR + b"<m a='1' b='2' c='3'/>" + END, flags=2)
    xml_seed("limits_tiny_long", HDR + STANZAS["message"] + END, flags=2)
    # Ops (flag 4): STARTTLS-like restart from the callback, stop and go
    # on, a restart after the end, a new stream.
    xml_seed("ops_restart_in_callback",
             HDR + STANZAS["starttls"] + HDR + STANZAS["auth"] + HDR + STANZAS["iq_bind"] + END,
             flags=4, chunks=[(len(HDR) + 5, 0x05, 0), (60, 0x05, 0), (200, 0x05, 0)])
    xml_seed("ops_stop_and_continue", HDR + b"".join(STANZAS.values()) + END,
             flags=4, chunks=[(255, 0x08, 0), (255, 0x08, 0), (255, 0x09, 0x04 | 0)])
    xml_seed("ops_revive_after_error", HDR + b"<a><b></a>" + HDR + STANZAS["message"] + END,
             flags=4, chunks=[(len(HDR) + 10, 0x10, 0), (200, 0x11, 0x01)])
    xml_seed("ops_limit_override", HDR + STANZAS["message"] * 3 + END,
             flags=4, chunks=[(len(HDR), 0x40, 0), (150, 0x60 | 0x01, 0x04), (250, 0x20, 0)])
    xml_seed("ops_stop_on_open", HDR + STANZAS["iq_ping"] + END,
             flags=4, chunks=[(len(HDR) + 20, 0x02, 0x02), (200, 0x10, 0x01)])
    xml_seed("ops_restart_on_open", HDR + HDR + STANZAS["iq_ping"] + END,
             flags=4, chunks=[(len(HDR), 0x00, 0x08), (len(HDR) + 20, 0x01, 0x00)])


# ---- fuzz_jid: small output size, then the JID ----

JIDS_VALID = [
    # RFC 7622 section 3.5
    "juliet@example.com", "juliet@example.com/foo", "juliet@example.com/foo bar",
    "juliet@example.com/foo@bar", "foo\\20bar@example.com", "fussball@example.com",
    "fu\u00dfball@example.com", "\u03c0@example.com", "\u03a3@example.com/foo",
    "\u03c3@example.com/foo", "\u03c2@example.com/foo", "king@example.com/\u265a",
    "example.com", "example.com/foobar", "a.example.com/b@example.net",
    # addresses and IDNA
    "[::1]", "[2001:DB8:0:0::1]/res", "192.168.0.1", "user@127.0.0.1/x",
    "xn--bcher-kva.example", "b\u00fccher.example", "EXAMPLE.COM.", "_xmpp.example.com",
    "Juliet@Example.COM/Balcony", "juliet@example.com/\U0001f600",
]
JIDS_INVALID = [
    # RFC 7622 section 3.6
    "\"juliet\"@example.com", "foo bar@example.com", "juliet@example.com/ foo",
    "@example.com/", "henri\u2163@example.com", "\u265a@example.com", "juliet@",
    "/foobar", "juliet@@example.com", "example.com/", "a@b/", "",
    "127.1", "0x7f.1", "2130706433", "exa mple.com", "-example.com", "[::1", "[fe80::1%eth0]",
    "xn--a.example", "a" * 1024 + "@example.com", "x@" + "l" * 64 + ".com",
]


def jid_seeds():
    for i, j in enumerate(JIDS_VALID):
        write("fuzz_jid", "valid_%02d" % i, bytes([63]) + j.encode())
    for i, j in enumerate(JIDS_INVALID):
        write("fuzz_jid", "invalid_%02d" % i, bytes([63]) + j.encode())
    write("fuzz_jid", "small_buffer", bytes([5]) + "juliet@example.com/balcony".encode())
    write("fuzz_jid", "bad_utf8", bytes([63]) + b"ju\xc3liet@ex\xed\xa0\x80ample.com/\xff")


# ---- fuzz_sasl ----

SEP = b"|||"
# RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256).
SHA1_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
SHA1_FINAL = (b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
              b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
SHA256_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SHA256_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")

MECH = {"SCRAM-SHA-256-PLUS": 0, "SCRAM-SHA-1-PLUS": 1, "SCRAM-SHA-256": 2,
        "SCRAM-SHA-1": 3, "PLAIN": 4, "DIGEST-MD5": 5}
TLS, TLS13, EXP, UNIQ, CLEAR_PLAIN, EXISTS, PLAIN_OK, BAD_ITER = (1, 2, 4, 8, 16, 32, 64, 128)


def sasl_raw(name, mech, chan, msgs, no_initial=False):
    f0 = MECH[mech] | (16 if no_initial else 0)
    write("fuzz_sasl", "raw_" + name, bytes([f0, chan]) + SEP.join(msgs))


def sasl_honest(name, mech, chan, cb=5, authz=0, wrong_pw=False, mutate=False, pos=0,
                user=b"alice", pw=b"pencil", other_authz=b"", nonce=b""):
    f0 = MECH[mech] | 8 | (cb << 5)
    f2 = authz | (4 if wrong_pw else 0) | (8 if mutate else 0)
    write("fuzz_sasl", "honest_" + name,
          bytes([f0, chan, f2, pos]) + SEP.join([user, pw, other_authz, nonce]))


def sasl_seeds():
    sasl_raw("sha1_rfc5802", "SCRAM-SHA-1", EXISTS, [SHA1_FIRST, SHA1_FINAL])
    sasl_raw("sha256_rfc7677", "SCRAM-SHA-256", EXISTS, [SHA256_FIRST, SHA256_FINAL])
    sasl_raw("sha256_unknown_user", "SCRAM-SHA-256", TLS, [SHA256_FIRST, SHA256_FINAL])
    sasl_raw("plus_exporter", "SCRAM-SHA-256-PLUS", TLS | TLS13 | EXP | EXISTS,
             [b"p=tls-exporter,,n=alice,r=abcdef", b"c=cD10bHMtZXhwb3J0ZXIsLA==,r=abcdef,p=AA=="])
    sasl_raw("plus_unique_on_13", "SCRAM-SHA-1-PLUS", TLS | TLS13 | UNIQ | EXISTS,
             [b"p=tls-unique,,n=alice,r=abcdef"])
    sasl_raw("downgrade_y", "SCRAM-SHA-1", TLS | EXP | EXISTS, [b"y,,n=alice,r=abcdef"])
    sasl_raw("authzid_escape", "SCRAM-SHA-256", EXISTS,
             [b"n,a=alice@localhost,n=al=2Cice=3D,r=x,e=ext", b"c=biws,r=x,p=AAAA"])
    sasl_raw("bad_escape", "SCRAM-SHA-256", EXISTS, [b"n,,n=a=2Xb,r=x"])
    sasl_raw("reserved_m", "SCRAM-SHA-256", EXISTS, [b"n,,n=alice,r=x,m=foo"])
    sasl_raw("bad_iterations", "SCRAM-SHA-256", EXISTS | BAD_ITER, [b"n,,n=alice,r=x"])
    sasl_raw("plain", "PLAIN", TLS | EXISTS | PLAIN_OK, [b"\0alice\0pencil"])
    sasl_raw("plain_authzid", "PLAIN", TLS | EXISTS | PLAIN_OK,
             [b"alice@localhost\0alice\0pencil", b"again"])
    sasl_raw("plain_other_authzid", "PLAIN", TLS | EXISTS, [b"bob\0alice\0pencil"])
    sasl_raw("plain_nul", "PLAIN", TLS, [b"\0al\0ice\0pw"])
    sasl_raw("no_initial", "SCRAM-SHA-1", 0, [b""], no_initial=True)
    sasl_raw("unknown_mech", "DIGEST-MD5", TLS, [b"whatever"])
    sasl_raw("base64_text", "PLAIN", TLS, [b"AGFsaWNlAHBlbmNpbA==", b"=", b"Zg==", b"Zh=="])
    sasl_raw("saslprep_text", "PLAIN", TLS,
             ["\0I\u00adX\0\u00aa".encode(), "p\u00e4ss\u2168".encode()])
    for mech in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
                 "PLAIN"):
        tag = mech.lower().replace("-", "_")
        sasl_honest(tag, mech, TLS | EXP | UNIQ if "PLUS" in mech else TLS)
        sasl_honest(tag + "_wrong_pw", mech, TLS | EXP, wrong_pw=True, pw=b"pencil2")
        sasl_honest(tag + "_unknown", mech, TLS | EXP, user=b"mallory")
        sasl_honest(tag + "_authz_bare", mech, TLS | UNIQ, authz=2, user=b"Alice")
    sasl_honest("sha256_authz_other", "SCRAM-SHA-256", TLS, authz=3, other_authz=b"bob")
    sasl_honest("sha256_plus_tls12_unique", "SCRAM-SHA-256-PLUS", TLS | UNIQ)
    sasl_honest("sha1_downgrade", "SCRAM-SHA-1", TLS | EXP, cb=1)
    sasl_honest("sha1_clear_y", "SCRAM-SHA-1", 0, cb=1)
    sasl_honest("sha256_mutated", "SCRAM-SHA-256", TLS, mutate=True, pos=0x47)
    sasl_honest("sha256_user_escape", "SCRAM-SHA-256", TLS, user=b"al,ice=", nonce=b"xyz")
    sasl_honest("sha256_fullwidth_pw", "SCRAM-SHA-256", TLS, wrong_pw=True,
                pw="\uff50\uff45\uff4e\uff43\uff49\uff4c".encode())


# ---- fuzz_config: flags, file, "\0\0\0", args ----

CONF_FULL = b"""# stanzad.conf
domain = Example.COM
state_dir = /var/lib/stanzad
workers = 2
log_level = debug
listen_c2s = 127.0.0.1:5222
listen_c2s = [::1]:5222
listen_c2s_tls = *:5223
registration = open
require_tls = no
cert = /etc/stanzad/cert.pem
key = /etc/stanzad/key.pem
max_stanza_bytes = 65536
max_stanza_bytes_preauth = 131072
max_output_bytes = 1048576
max_connections = 1000
max_auth_failures = 5
max_resources = 4
auth_timeout = 30
idle_timeout = 0
ping_timeout = 10
"""


def config_seed(name, conf, args=(), flags=1):
    write("fuzz_config", name, bytes([flags]) + conf + b"\0\0\0" + b"\0".join(args))


def config_seeds():
    config_seed("full_file", CONF_FULL)
    config_seed("file_then_flags", CONF_FULL,
                [b"--domain", b"b\xc3\xbccher.example", b"--listen-c2s=off",
                 b"--listen-c2s-tls", b"0.0.0.0:5223", b"--workers=1"])
    config_seed("flags_only", b"", [b"--domain=localhost", b"--registration", b"closed",
                                    b"--max-stanza-bytes", b"1024"], flags=0)
    config_seed("comments_and_spacing", b"; comment\n  # another\n\ndomain=localhost ; trailing\n"
                b"listen_c2s =   127.0.0.1:1\r\n")
    config_seed("section", b"[server]\ndomain = localhost\n")
    config_seed("unknown_key", b"domian = localhost\n")
    config_seed("bad_number", b"workers = 0x10\nmax_connections = -1\n")
    config_seed("too_many_listeners", b"".join(b"listen_c2s = 127.0.0.1:%d\n" % p
                                              for p in range(5222, 5232)))
    config_seed("all_off", b"listen_c2s = off\nlisten_c2s_tls = off\n")
    config_seed("cert_without_key", b"cert = a.pem\n")
    config_seed("no_equals", b"domain localhost\n")
    config_seed("bad_domain", b"domain = 127.1\n")
    config_seed("help", b"", [b"--help"], flags=0)
    config_seed("version", b"", [b"--version"], flags=0)
    config_seed("config_twice", CONF_FULL, [b"--config", b"missing.conf"], flags=3)
    config_seed("dangling_flag", b"", [b"--domain"], flags=0)
    config_seed("positional", b"", [b"localhost"], flags=0)
    config_seed("long_line", b"domain = " + b"a" * 300 + b"\n")


# ---- fuzz_stanza: flags, features, stanzas ----

def stanza_seed(name, xml, flags=0, feat=0):
    write("fuzz_stanza", name, bytes([flags, feat]) + xml)


def stanza_seeds():
    s = {
        "chat_to_bob": b"<message to='bob@localhost' type='chat' id='1'><body>hi</body></message>",
        "chat_to_alice_bare": b"<message to='alice@localhost' type='chat'><body>me</body></message>",
        "chat_to_full": b"<message to='alice@localhost/laptop'><body>x</body></message>",
        "chat_to_missing_resource": b"<message to='alice@localhost/nope' type='chat'/>",
        "headline_bare": b"<message to='alice@localhost' type='headline'><body>n</body></message>",
        "groupchat_bare": b"<message to='carol@localhost' type='groupchat'/>",
        "error_message": b"<message to='bob@localhost' type='error'><error type='cancel'>"
                         b"<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                         b"</error></message>",
        "remote": b"<message to='romeo@montague.example/orchard'><body>o</body></message>",
        "to_server_message": b"<message to='localhost'><body>admin?</body></message>",
        "presence_available": b"<presence><priority>7</priority></presence>",
        "presence_unavailable": b"<presence type='unavailable'/>",
        "presence_directed": b"<presence to='bob@localhost/x'/>",
        "presence_subscribe": b"<presence to='bob@localhost' type='subscribe'/>",
        "iq_ping_server": b"<iq to='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        "iq_ping_noto": b"<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
        "iq_disco_info": b"<iq to='localhost' type='get' id='d1'>"
                         b"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        "iq_disco_items_account": b"<iq to='alice@localhost' type='get' id='d2'>"
                                  b"<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        "iq_disco_contact": b"<iq to='bob@localhost' type='get' id='d3'>"
                            b"<query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
        "iq_version": b"<iq to='localhost' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
        "iq_time_last": b"<iq to='localhost' type='get' id='t1'><time xmlns='urn:xmpp:time'/></iq>"
                        b"<iq to='bob@localhost' type='get' id='l1'><query xmlns='jabber:iq:last'/></iq>",
        "iq_vcard": b"<iq type='get' id='vc1'><vCard xmlns='vcard-temp'/></iq>"
                    b"<iq to='bob@localhost' type='get' id='vc2'><vCard xmlns='vcard-temp'/></iq>",
        "iq_private": b"<iq type='set' id='pr1'><query xmlns='jabber:iq:private'>"
                      b"<storage xmlns='storage:bookmarks'/></query></iq>",
        "iq_register": b"<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>",
        "iq_blocking": b"<iq type='get' id='b1'><blocklist xmlns='urn:xmpp:blocking'/></iq>"
                       b"<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'>"
                       b"<item jid='evil@example.net'/></block></iq>",
        "iq_carbons": b"<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
                      b"<message to='bob@localhost/x' type='chat'><body>c</body></message>",
        "iq_unknown": b"<iq to='localhost' type='get' id='u1'><foo xmlns='urn:unknown'/></iq>",
        "iq_two_children": b"<iq type='get' id='x1'><a xmlns='u:a'/><b xmlns='u:b'/></iq>",
        "iq_no_id": b"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
        "iq_result_full": b"<iq to='bob@localhost/x' type='result' id='r9'/>",
        "iq_to_other_full": b"<iq to='bob@localhost/x' type='get' id='o1'>"
                            b"<ping xmlns='urn:xmpp:ping'/></iq>",
        "malformed_to": b"<message to='a@b@c' type='chat'/><message to='@localhost'/>",
        "spoofed_from": b"<message from='bob@localhost/x' to='alice@localhost'/>",
        "own_bare_from": b"<message from='ALICE@localhost' to='bob@localhost'/>",
        "bad_type": b"<message type='bogus'/><presence type='available'/>",
        "other_element": b"<foo xmlns='urn:foo' to='localhost'/>",
        "blocked_sender": b"<message to='mallory@evil.example'><body>b</body></message>",
    }
    for k, v in s.items():
        stanza_seed(k, v)
    stanza_seed("held_route", s["chat_to_bob"], flags=0x80)
    stanza_seed("from_carol_error_text", s["chat_to_alice_bare"], flags=0x03 | 0x7c)
    stanza_seed("features_all", s["chat_to_alice_bare"] + s["presence_available"], feat=7)
    stanza_seed("csi_inactive_carol", s["presence_directed"] + b"<presence to='carol@localhost'/>",
                feat=2)


# ---- fuzz_websocket: flags, nchunks, chunk lengths, client frames ----

def ws_frame(payload, op=1, fin=True, mask=b"\x37\xfa\x21\x3d", masked=True):
    """A client frame (RFC 6455 5.2), masked unless told otherwise."""
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, (0x80 if masked else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack(">Q", n)
    if not masked:
        return hdr + payload
    return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws_seed(name, frames, flags=0, chunks=()):
    write("fuzz_websocket", name, bytes([flags, len(chunks)]) + bytes(chunks) + b"".join(frames))


def ws_seeds():
    op = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
    msg = b"<message to='a@localhost'><body>hi</body></message>"
    ws_seed("open_message_close", [ws_frame(op), ws_frame(msg),
                                   ws_frame(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")])
    ws_seed("chunked", [ws_frame(op), ws_frame(msg)], chunks=(0, 1, 5, 13, 2, 40))
    ws_seed("fragmented", [ws_frame(op), ws_frame(msg[:10], fin=False),
                           ws_frame(b"", op=0, fin=False), ws_frame(msg[10:], op=0)])
    ws_seed("ping_inside_fragments", [ws_frame(msg[:7], fin=False), ws_frame(b"ping!", op=9),
                                      ws_frame(msg[7:], op=0)], flags=4)
    ws_seed("paused", [ws_frame(op), ws_frame(msg), ws_frame(msg)], flags=2, chunks=(3, 9))
    ws_seed("too_big_small_limit", [ws_frame(op), ws_frame(b"<iq>" + b"x" * 200 + b"</iq>")],
            flags=1)
    ws_seed("long_length_form", [ws_frame(b"<m>" + b"y" * 70000 + b"</m>")], flags=4)
    ws_seed("unmasked", [ws_frame(msg, masked=False)], flags=4)
    ws_seed("binary", [ws_frame(msg, op=2)], flags=4)
    ws_seed("close_codes", [ws_frame(b"\x03\xe8bye", op=8)], flags=4)
    ws_seed("close_one_byte", [ws_frame(b"\x03", op=8)], flags=4)
    ws_seed("open_with_doctype", [ws_frame(b"<!DOCTYPE x []>" + op)])
    ws_seed("open_twice", [ws_frame(op), ws_frame(op)])
    ws_seed("continuation_first", [ws_frame(msg, op=0)], flags=4)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    xml_seeds()
    jid_seeds()
    sasl_seeds()
    config_seeds()
    stanza_seeds()
    ws_seeds()
    for t in sorted(os.listdir(CORPUS)):
        print("%-16s %d seeds" % (t, len(os.listdir(os.path.join(CORPUS, t)))))


if __name__ == "__main__":
    main()
