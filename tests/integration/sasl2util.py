"""SASL2 (XEP-0388), Bind 2 (XEP-0386) and FAST (XEP-0484) by hand, over a
RawStream, so the tests see every element (slixmpp 1.8 has no SASL2).

Also client certificates (XEP-0178 tests): a CA and client certificates made
with the openssl CLI, and a RawStream whose TLS presents one."""
import base64
import hashlib
import hmac
import os
import ssl
import subprocess
import uuid

from harness import (DOMAIN, NS_CLIENT, NS_STREAM, RawStream, ScramClient, client_tls_context,
                     q, tostr, xml_escape)

NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_SM = "urn:xmpp:sm:3"
NS_FAST = "urn:xmpp:fast:0"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"


def new_ua_id():
    return str(uuid.uuid4())


def b64(data):
    return base64.b64encode(data).decode()


def authentication_feature(features):
    return features.find(q(NS_SASL2, "authentication"))


def sasl2_mechanisms(features):
    auth = authentication_feature(features)
    if auth is None:
        return []
    return [m.text for m in auth.findall(q(NS_SASL2, "mechanism"))]


def fast_mechanisms(features):
    auth = authentication_feature(features)
    fast = auth.find("%s/%s" % (q(NS_SASL2, "inline"), q(NS_FAST, "fast"))) if auth is not None \
        else None
    return [] if fast is None else [m.text for m in fast.findall(q(NS_FAST, "mechanism"))]


def inline_xml(ua_id=None, bind=None, sm_enable=False, sm_resume=True, carbons=False, csi=None,
               resume=None, request_token=None, fast=None, invalidate=False):
    """The children of <authenticate/> besides the initial response.

    bind: None (no Bind 2), or the tag ("" for none). resume: (previd, h).
    fast: the count for <fast/> (True: no count attribute)."""
    x = ""
    if ua_id:
        x += "<user-agent id='%s'><software>stanzad-tests</software></user-agent>" % ua_id
    if bind is not None:
        x += "<bind xmlns='%s'>" % NS_BIND2
        if bind:
            x += "<tag>%s</tag>" % xml_escape(bind)
        if sm_enable:
            x += "<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if sm_resume else "")
        if carbons:
            x += "<enable xmlns='%s'/>" % NS_CARBONS
        if csi:
            x += "<%s xmlns='%s'/>" % (csi, NS_CSI)
        x += "</bind>"
    if resume:
        x += "<resume xmlns='%s' previd='%s' h='%s'/>" % (NS_SM, resume[0], resume[1])
    if request_token:
        x += "<request-token xmlns='%s' mechanism='%s'/>" % (NS_FAST, request_token)
    if fast is not None:
        x += "<fast xmlns='%s'%s%s/>" % (NS_FAST, "" if fast is True else " count='%d'" % fast,
                                        " invalidate='true'" if invalidate else "")
    return x


def authenticate(s, mech, initial=None, extra=""):
    ir = "" if initial is None else "<initial-response>%s</initial-response>" % b64(initial)
    s.send("<authenticate xmlns='%s' mechanism='%s'>%s%s</authenticate>" %
           (NS_SASL2, mech, ir, extra))


def failure_condition(el):
    assert el.tag == q(NS_SASL2, "failure"), tostr(el)
    conds = [c.tag.split("}", 1)[1] for c in el if c.tag.startswith("{%s}" % NS_SASL)]
    assert len(conds) == 1, tostr(el)
    return conds[0]


def connect_tls(port, direct_tls=False, ctx=None):
    """A stream after STARTTLS (or Direct TLS), with ctx's client certificate
    if given; returns (stream, features)."""
    s = RawStream(port, direct_tls=direct_tls) if ctx is None else \
        CertStream(port, ctx, direct_tls=direct_tls)
    if direct_tls:
        return s, s.open()
    s.open()
    return s, s.starttls()


def scram_sasl2(s, user, password, extra="", mech="SCRAM-SHA-256", cb_type=None, cb_data=None):
    """Runs SCRAM over SASL2 to the end. Returns the <success/> or <failure/> element;
    on success the <stream:features/> that follows is read into s.after_success
    (None when the stream was resumed)."""
    sc = ScramClient(user, password, mech, cb_type=cb_type, cb_data=cb_data)
    authenticate(s, mech, sc.first(), extra)
    el = s.next()
    if el.tag != q(NS_SASL2, "challenge"):
        return el
    s.send("<response xmlns='%s'>%s</response>" % (NS_SASL2, b64(sc.final(base64.b64decode(el.text)))))
    el = s.next()
    if el.tag == q(NS_SASL2, "success"):
        add = el.find(q(NS_SASL2, "additional-data"))
        sc.verify(base64.b64decode(add.text))
        read_after_success(s, el)
    return el


def read_after_success(s, success):
    """Reads the features that follow <success/> unless it carries <resumed/>."""
    if success.find(q(NS_SM, "resumed")) is not None:
        s.after_success = None
    else:
        s.after_success = s.expect(q(NS_STREAM, "features"))


def token_of(success):
    t = success.find(q(NS_FAST, "token"))
    return None if t is None else (t.get("token"), t.get("expiry"))


def ht_cb_data(s, mech):
    if mech.endswith("-NONE"):
        return b""
    if mech.endswith("-EXPR"):
        data = s.tls_exporter()
        assert data, "no tls-exporter from this Python"
        return data
    if mech.endswith("-ENDP"):
        # RFC 5929: our ECDSA-with-SHA256 certificate hashes with SHA-256.
        return hashlib.sha256(s.sock.getpeercert(binary_form=True)).digest()
    raise ValueError(mech)


def ht_initial(user, token, mech, cb):
    return user.encode() + b"\0" + hmac.new(token.encode(), b"Initiator" + cb,
                                            hashlib.sha256).digest()


def ht_responder(token, cb):
    return hmac.new(token.encode(), b"Responder" + cb, hashlib.sha256).digest()


def fast_login(s, user, token, mech="HT-SHA-256-NONE", extra="", cb=None):
    """One FAST authentication; returns the <success/> (checked) or <failure/>."""
    cb = ht_cb_data(s, mech) if cb is None else cb
    authenticate(s, mech, ht_initial(user, token, mech, cb), extra)
    el = s.next()
    if el.tag == q(NS_SASL2, "success"):
        add = el.find(q(NS_SASL2, "additional-data"))
        assert add is not None and base64.b64decode(add.text) == ht_responder(token, cb), \
            "bad HT responder proof: %s" % tostr(el)
        read_after_success(s, el)
    return el


# --------------------------------------------------------------------------
# Client certificates
# --------------------------------------------------------------------------

class CertStream(RawStream):
    """A RawStream whose TLS uses a given client context (with a certificate)."""

    def __init__(self, port, ctx, direct_tls=False, **kw):
        self._ctx = ctx
        super().__init__(port, direct_tls=False, **kw)
        if direct_tls:
            self._wrap()
            self._new_parser()

    def _wrap(self, alpn=None):
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.tls = True


def cert_context(cert=None, key=None, alpn=("xmpp-client",)):
    ctx = client_tls_context(alpn)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def openssl(*args, cwd=None, stdin=None):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       input=stdin, timeout=60)
    assert r.returncode == 0, "openssl %s failed: %s" % (" ".join(args), r.stderr)
    return r.stdout


class PkiCA:
    """A CA made with the openssl CLI, able to issue client certificates
    (with xmppAddr or rfc822Name subjectAltNames) and to revoke them."""

    def __init__(self, root, name="ca"):
        self.dir = os.path.join(root, name)
        os.makedirs(os.path.join(self.dir, "new"), exist_ok=True)
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        self.crl = os.path.join(self.dir, "crl.pem")
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "crlnumber"), "w") as f:
            f.write("1000\n")
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write("""[ ca ]
default_ca = test_ca
[ test_ca ]
dir = %(d)s
database = $dir/index.txt
new_certs_dir = $dir/new
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 30
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
[ client ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
""" % {"d": self.dir})
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.key)
        openssl("req", "-x509", "-new", "-key", self.key, "-subj", "/CN=stanzad test %s" % name,
                "-days", "30", "-out", self.cert, "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("rand", "-hex", "-out", os.path.join(self.dir, "serial"), "8")
        self.gen_crl()

    def issue(self, name, xmpp_addrs=(), emails=()):
        """A client certificate; returns (cert path, key path, SHA-256 fingerprint text)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        sans = ["otherName:1.3.6.1.5.5.7.8.5;UTF8:%s" % a for a in xmpp_addrs]
        sans += ["email:%s" % e for e in emails]
        args = ["req", "-new", "-key", key, "-subj", "/CN=%s" % name, "-out", csr]
        if sans:
            args += ["-addext", "subjectAltName=" + ",".join(sans)]
        openssl(*args)
        openssl("ca", "-batch", "-config", self.conf, "-extensions", "client", "-in", csr,
                "-out", cert, "-notext")
        fp = openssl("x509", "-in", cert, "-noout", "-fingerprint", "-sha256").strip()
        return cert, key, fp.split("=", 1)[1]

    def revoke(self, cert):
        openssl("ca", "-config", self.conf, "-revoke", cert)
        self.gen_crl()

    def gen_crl(self):
        openssl("ca", "-config", self.conf, "-gencrl", "-out", self.crl)
