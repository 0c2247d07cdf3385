"""Fake CloudFront and Cloudflare purge APIs for the cdn tests.

One small HTTP server on 127.0.0.1 serves both:

  CloudFront (API 2020-05-31)
    POST /2020-05-31/distribution/ID/invalidation       CreateInvalidation
    GET  /2020-05-31/distribution/ID/invalidation/INV   GetInvalidation
  Cloudflare (API v4)
    POST /client/v4/zones/ZONE/purge_cache              {"files"|"prefixes": [...]}

It rejects what the real APIs reject, as far as the tests need:
  CloudFront: a missing or wrong SigV4 signature (checked with botocore's
  signer, the independent reference: service "cloudfront", us-east-1), an
  unknown access key, a request dated more than 15 minutes off, another
  distribution (404 NoSuchDistribution), a missing body (MissingBody), bad
  XML or a DOCTYPE (MalformedInput), no CallerReference (InvalidArgument),
  Quantity not matching the paths (InconsistentQuantities), more than 3000
  paths (413 BatchTooLarge), paths that are not "/..." with '*' last and
  non-ASCII, controls, space and RFC 1738's unsafe characters encoded
  (InvalidArgument), and more than 3000 paths / 15 wildcards InProgress per
  distribution (TooManyInvalidationsInProgress).  A CallerReference sent
  again with the same paths answers the existing invalidation (201, nothing
  created); with other paths 409 InvalidationBatchAlreadyExists.  An
  invalidation is InProgress for `complete_after` seconds, then Completed.
  Cloudflare: no token (400, 9106), a wrong token (403, 10000), another zone
  (404, 7003), a body that is not JSON with exactly one of files/prefixes
  (400, 1012), more than 100 files or 30 prefixes (400, 1014), URLs not on
  the configured domain or not percent-encoded (400, 1015), prefixes with a
  scheme, a query or more than 31 path separators (400, 1015).

Faults (control): answer STATUS (and CODE) to COUNT requests or for SECONDS,
optionally after doing the work (after_create: the invalidation exists but
the client sees an error), or hang for HANG seconds first.

Every call is recorded (method, path, status, error code, signature
verdict, CallerReference, paths/files/prefixes; never a secret) in memory
and, with a state directory, in STATE/calls.json.

Use from pytest:
    fake = FakeCDN(state_dir=tmp).start(); fake.url; fake.calls(); fake.fault(...)
or as a program (a control API is then at /_fake/...):
    /usr/bin/python3 tests/fakecdn.py --port 0 --state DIR    # prints the port
    GET /_fake/calls  GET /_fake/invalidations  GET /_fake/purges
    POST /_fake/config {...}  POST /_fake/fault {...}  POST /_fake/reset
Needs Debian's python3 (botocore).
"""

import argparse
import datetime
import json
import os
import random
import re
import secrets
import string
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CF_NS = "http://cloudfront.amazonaws.com/doc/2020-05-31/"
CF_PREFIX = "/2020-05-31/distribution/"
CF_UNSAFE = set(' "#<>[\\]^`{|}~')
HEX = set("0123456789abcdefABCDEF")
RFC3986_OK = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%")

DEFAULTS = dict(
    access_key="AKIDFAKECDN000000000",
    secret_key="fakeSecretKey/K7MDENG+bPxRfiCYFAKEKEY0",
    distribution="EDFDVBD6EXAMPLE",
    zone="023e105f4ecef8ad9ca31a8372d0c353",
    token="fake-cloudflare-token-0123456789",
    domain="cdn.test",
    complete_after=1.0,
    max_paths_per_request=3000,
    max_files_in_progress=3000,
    max_wild_in_progress=15,
    cloudflare_max_files=100,
    cloudflare_max_prefixes=30,
    reject_paths=[],
)


def _pct_ok(s):
    """Every '%' starts a %XX."""
    for i, c in enumerate(s):
        if c == "%" and (i + 2 >= len(s) or s[i + 1] not in HEX or s[i + 2] not in HEX):
            return False
    return True


def cf_path_ok(p):
    if not p.startswith("/") or len(p) > 4000:
        return False
    if "*" in p[:-1]:
        return False
    for c in p:
        if ord(c) < 0x21 or ord(c) > 0x7e or c in CF_UNSAFE:
            return False
    return _pct_ok(p)


def url_path_ok(path):
    return all(c in RFC3986_OK for c in path) and _pct_ok(path)


class Fault:
    def __init__(self, api="any", op="any", status=503, code=None, message=None,
                 count=None, seconds=None, after_create=False, hang=0.0,
                 retry_after=None):
        self.api, self.op, self.status, self.code = api, op, status, code
        self.message = message or "fault injected by fakecdn"
        self.count = count
        self.until = time.time() + seconds if seconds is not None else None
        self.after_create, self.hang, self.retry_after = after_create, hang, retry_after

    def live(self):
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or time.time() < self.until

    def matches(self, api, op):
        return self.live() and self.api in ("any", api) and self.op in ("any", op)


class FakeCDN:
    def __init__(self, state_dir=None, port=0, **config):
        self.config = dict(DEFAULTS)
        self.config.update(config)
        self.state_dir = state_dir
        self.port = port
        self.lock = threading.Lock()
        self._calls = []
        self._invalidations = []   # dicts: id, dist, ref, paths, created
        self._purges = []          # dicts: id, files, prefixes
        self._faults = []
        self.server = None
        self.thread = None

    # ------------------------------------------------------------ control --
    def start(self):
        fake = self

        class Handler(_Handler):
            pass
        Handler.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def set(self, **kw):
        with self.lock:
            self.config.update(kw)

    def fault(self, **kw):
        with self.lock:
            self._faults.append(Fault(**kw))

    def clear_faults(self):
        with self.lock:
            self._faults = []

    def reset(self):
        with self.lock:
            self._calls, self._invalidations, self._purges, self._faults = [], [], [], []
        self._save()

    def calls(self, api=None, op=None):
        with self.lock:
            return [dict(c) for c in self._calls
                    if (api is None or c["api"] == api) and (op is None or c["op"] == op)]

    def invalidations(self):
        with self.lock:
            return [dict(i, status=self._status(i)) for i in self._invalidations]

    def purges(self):
        with self.lock:
            return [dict(p) for p in self._purges]

    # ------------------------------------------------------------- state --
    def _status(self, inv):
        done = time.time() >= inv["created"] + self.config["complete_after"]
        return "Completed" if done else "InProgress"

    def _take_fault(self, api, op):
        with self.lock:
            for f in self._faults:
                if f.matches(api, op):
                    if f.count is not None:
                        f.count -= 1
                    return f
        return None

    def record(self, call):
        call.setdefault("t", time.time())
        with self.lock:
            self._calls.append(call)
        self._save()

    def _save(self):
        if not self.state_dir:
            return
        with self.lock:
            data = json.dumps({"calls": self._calls, "invalidations": self._invalidations,
                               "purges": self._purges}, indent=1)
        tmp = os.path.join(self.state_dir, "calls.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.state_dir, "calls.json"))


def _cf_error(code, message, status):
    body = (f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{CF_NS}"><Error><Type>Sender'
            f'</Type><Code>{code}</Code><Message>{_xesc(message)}</Message></Error>'
            f'<RequestId>{secrets.token_hex(8)}</RequestId></ErrorResponse>')
    return status, code, body, "text/xml"


def _xesc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cfl_error(status, code, message):
    body = json.dumps({"success": False, "errors": [{"code": code, "message": message}],
                       "messages": [], "result": None})
    return status, str(code), body, "application/json"


def _inv_xml(inv, status):
    items = "".join(f"<Path>{_xesc(p)}</Path>" for p in inv["paths"])
    ts = datetime.datetime.utcfromtimestamp(inv["created"]).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return (f'<?xml version="1.0"?>\n<Invalidation xmlns="{CF_NS}"><Id>{inv["id"]}</Id>'
            f'<Status>{status}</Status><CreateTime>{ts}</CreateTime><InvalidationBatch>'
            f'<Paths><Quantity>{len(inv["paths"])}</Quantity><Items>{items}</Items></Paths>'
            f'<CallerReference>{_xesc(inv["ref"])}</CallerReference></InvalidationBatch>'
            f'</Invalidation>')


class _Handler(BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---------------------------------------------------------- plumbing --
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype, extra=None):
        data = body.encode() if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        body = self._body()
        path = self.path
        if path.startswith("/_fake/"):
            return self._control(method, path, body)
        if path.startswith(CF_PREFIX):
            api, op = "cloudfront", "create" if method == "POST" else "get"
        elif path.startswith("/client/v4/"):
            api, op = "cloudflare", "purge"
        else:
            return self._send(404, "not found", "text/plain")
        call = {"api": api, "op": op, "method": method, "path": path}
        fault = self.fake._take_fault(api, op)
        if fault and not fault.after_create:
            self._peek(api, op, body, call)
            time.sleep(fault.hang)
            return self._fail(call, fault, api)
        if api == "cloudfront":
            status, code, out, ctype, extra = self._cloudfront(method, path, body, call)
        else:
            status, code, out, ctype, extra = self._cloudflare(method, path, body, call)
        if fault:  # the work is done, the client does not learn it
            time.sleep(fault.hang)
            return self._fail(call, fault, api)
        call.update(status=status, code=code)
        self.fake.record(call)
        self._send(status, out, ctype, extra)

    def _peek(self, api, op, body, call):
        """Record what a request carried, for a request answered by a fault."""
        if api == "cloudfront" and op == "create":
            parsed = self._cf_parse(body)
            if len(parsed) == 2:
                call.update(caller_reference=parsed[0], paths=parsed[1])
        elif api == "cloudflare":
            try:
                req = json.loads(body)
            except ValueError:
                return
            for k in ("files", "prefixes"):
                if isinstance(req, dict) and k in req:
                    call[k] = req[k]

    def _fail(self, call, fault, api):
        if api == "cloudfront":
            status, code, out, ctype = _cf_error(fault.code or "ServiceUnavailable",
                                                 fault.message, fault.status)
        else:
            num = int(fault.code) if str(fault.code or "").isdigit() else 971
            status, code, out, ctype = _cfl_error(fault.status, num, fault.message)
        call.update(status=status, code=code, fault=True)
        self.fake.record(call)
        extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
        self._send(status, out, ctype, extra)

    def _control(self, method, path, body):
        fake = self.fake
        try:
            arg = json.loads(body or b"{}")
        except ValueError:
            return self._send(400, "bad json", "text/plain")
        if method == "GET" and path == "/_fake/calls":
            out = fake.calls()
        elif method == "GET" and path == "/_fake/invalidations":
            out = fake.invalidations()
        elif method == "GET" and path == "/_fake/purges":
            out = fake.purges()
        elif method == "POST" and path == "/_fake/config":
            fake.set(**arg)
            out = {"ok": True}
        elif method == "POST" and path == "/_fake/fault":
            fake.fault(**arg)
            out = {"ok": True}
        elif method == "POST" and path == "/_fake/reset":
            fake.reset()
            out = {"ok": True}
        else:
            return self._send(404, "unknown control", "text/plain")
        self._send(200, json.dumps(out), "application/json")

    # -------------------------------------------------------- cloudfront --
    def _check_sigv4(self, method, body, call):
        """None when the signature is right, else an error tuple."""
        cfg = self.fake.config
        auth = self.headers.get("Authorization")
        if not auth:
            return _cf_error("MissingAuthenticationToken", "Missing Authentication Token", 403)
        m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                     r"\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$", auth)
        if not m:
            return _cf_error("IncompleteSignature", "Authorization header malformed", 403)
        ak, day, region, service, signed, sig = m.groups()
        if ak != cfg["access_key"]:
            return _cf_error("InvalidClientTokenId",
                             "The security token included in the request is invalid.", 403)
        amz_date = self.headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return _cf_error("IncompleteSignature", "x-amz-date missing or malformed", 403)
        if abs(time.time() - when.timestamp()) > 900:
            return _cf_error("SignatureDoesNotMatch", "Signature expired", 403)
        if (region, service, day) != ("us-east-1", "cloudfront", amz_date[:8]):
            return _cf_error("SignatureDoesNotMatch", "Credential should be scoped to a valid "
                             "region and service (us-east-1, cloudfront)", 403)
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return _cf_error("SignatureDoesNotMatch", "host and x-amz-date must be signed", 403)
        headers = {}
        for n in names:
            v = self.headers.get(n)
            if v is None:
                return _cf_error("SignatureDoesNotMatch", f"signed header {n} missing", 403)
            headers[n] = v
        req = AWSRequest(method=method, url=f"http://{self.headers.get('host')}{self.path}",
                         headers=headers, data=body)
        req.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(cfg["access_key"], cfg["secret_key"],
                                       self.headers.get("x-amz-security-token")),
                           "cloudfront", "us-east-1")
        want_signed = signer.signed_headers(signer.headers_to_sign(req))
        want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        call["signed_headers"] = signed
        call["sig_ok"] = want == sig and want_signed == signed
        if not call["sig_ok"]:
            return _cf_error("SignatureDoesNotMatch", "The request signature we calculated "
                             "does not match the signature you provided.", 403)
        return None

    def _cloudfront(self, method, path, body, call):
        fake = self.fake
        err = self._check_sigv4(method, body, call)
        if err:
            return err + (None,)
        rest = path[len(CF_PREFIX):].split("/")
        if len(rest) not in (2, 3) or rest[1] != "invalidation":
            return _cf_error("InvalidArgument", "unknown resource", 404) + (None,)
        if rest[0] != fake.config["distribution"]:
            return _cf_error("NoSuchDistribution", "The specified distribution does not "
                             "exist.", 404) + (None,)
        if method == "GET" and len(rest) == 3:
            return self._cf_get(rest[2], call)
        if method == "POST" and len(rest) == 2:
            return self._cf_create(body, call)
        return _cf_error("InvalidArgument", "method not allowed", 405) + (None,)

    def _cf_get(self, inv_id, call):
        call["invalidation_id"] = inv_id
        for inv in self.fake.invalidations():
            if inv["id"] == inv_id and inv["dist"] == self.fake.config["distribution"]:
                call["inv_status"] = inv["status"]
                return 200, None, _inv_xml(inv, inv["status"]), "text/xml", None
        return _cf_error("NoSuchInvalidation", "The specified invalidation does not exist.",
                         404) + (None,)

    def _cf_parse(self, body):
        """(ref, paths) or an error tuple."""
        if not body:
            return _cf_error("MissingBody", "This operation requires a body.", 400)
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            return _cf_error("MalformedInput", "DOCTYPE is not allowed", 400)
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            return _cf_error("MalformedInput", f"Unexpected XML: {e}", 400)
        ns = "{" + CF_NS + "}"
        if root.tag != ns + "InvalidationBatch":
            return _cf_error("MalformedInput", f"unexpected root element {root.tag}", 400)
        ref = (root.findtext(ns + "CallerReference") or "").strip()
        if not ref:
            return _cf_error("InvalidArgument", "CallerReference is required.", 400)
        paths = root.find(ns + "Paths")
        qty = paths.findtext(ns + "Quantity") if paths is not None else None
        if qty is None or not qty.strip().isdigit():
            return _cf_error("MalformedInput", "Paths/Quantity is required", 400)
        items = [p.text or "" for p in paths.findall(ns + "Items/" + ns + "Path")]
        if int(qty) != len(items):
            return _cf_error("InconsistentQuantities", "The value of Quantity and the size "
                             "of Items don't match.", 400)
        if not items:
            return _cf_error("InvalidArgument", "At least one path is required.", 400)
        return ref, items

    def _cf_create(self, body, call):
        fake, cfg = self.fake, self.fake.config
        parsed = self._cf_parse(body)
        if len(parsed) != 2:
            return parsed + (None,)
        ref, paths = parsed
        call.update(caller_reference=ref, paths=paths)
        if len(paths) > cfg["max_paths_per_request"]:
            return _cf_error("BatchTooLarge", "Invalidation batch specified is too large.",
                             413) + (None,)
        if not all(cf_path_ok(p) for p in paths) or set(paths) & set(cfg["reject_paths"]):
            return _cf_error("InvalidArgument", "Your request contains one or more invalid "
                             "invalidation paths.", 400) + (None,)
        with fake.lock:
            same = [i for i in fake._invalidations
                    if i["dist"] == cfg["distribution"] and i["ref"] == ref]
            if same and same[0]["paths"] != paths:
                err = _cf_error("InvalidationBatchAlreadyExists", "CallerReference already "
                                "used for another batch.", 409)
                return err + (None,)
            if same:
                inv, created = same[0], False
            else:
                live = [i for i in fake._invalidations
                        if i["dist"] == cfg["distribution"] and fake._status(i) == "InProgress"]
                wild = sum(1 for i in live for p in i["paths"] if p.endswith("*"))
                files = sum(1 for i in live for p in i["paths"] if not p.endswith("*"))
                nw = sum(1 for p in paths if p.endswith("*"))
                if (files + len(paths) - nw > cfg["max_files_in_progress"] or
                        wild + nw > cfg["max_wild_in_progress"]):
                    err = _cf_error("TooManyInvalidationsInProgress", "Processing your "
                                    "request will cause you to exceed the maximum number of "
                                    "in-progress invalidations.", 400)
                    return err + (None,)
                inv = {"id": "I" + "".join(random.choices(string.ascii_uppercase +
                                                          string.digits, k=13)),
                       "dist": cfg["distribution"], "ref": ref, "paths": paths,
                       "created": time.time()}
                fake._invalidations.append(inv)
                created = True
        call.update(invalidation_id=inv["id"], created=created)
        loc = f"https://cloudfront.amazonaws.com{CF_PREFIX}{inv['dist']}/invalidation/{inv['id']}"
        return 201, None, _inv_xml(inv, fake._status(inv)), "text/xml", {"Location": loc}

    # -------------------------------------------------------- cloudflare --
    def _cloudflare(self, method, path, body, call):
        cfg = self.fake.config
        auth = self.headers.get("Authorization")
        m = re.match(r"/client/v4/zones/([^/]+)/purge_cache$", path)
        if not auth:
            return _cfl_error(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization "
                              "headers") + (None,)
        if auth != f"Bearer {cfg['token']}":
            call["token_ok"] = False
            return _cfl_error(403, 10000, "Authentication error") + (None,)
        call["token_ok"] = True
        if method != "POST" or not m:
            return _cfl_error(405, 7001, "Method not allowed for this route") + (None,)
        if m.group(1) != cfg["zone"]:
            return _cfl_error(404, 7003, f"Could not route to /zones/{m.group(1)}/purge_cache, "
                              "perhaps your object identifier is invalid?") + (None,)
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return _cfl_error(400, 6003, "Invalid request headers") + (None,)
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        kinds = [k for k in ("files", "prefixes", "tags", "hosts", "purge_everything")
                 if isinstance(req, dict) and k in req]
        if kinds not in (["files"], ["prefixes"]) or not isinstance(req[kinds[0]], list) \
                or not req[kinds[0]]:
            return _cfl_error(400, 1012, 'Request must contain one of "purge_everything", '
                              '"files", "tags", "hosts" or "prefixes"') + (None,)
        return self._cfl_purge(kinds[0], req[kinds[0]], call)

    def _cfl_purge(self, kind, items, call):
        fake, cfg = self.fake, self.fake.config
        call[kind] = items
        limit = cfg["cloudflare_max_files"] if kind == "files" else cfg["cloudflare_max_prefixes"]
        if len(items) > limit:
            return _cfl_error(400, 1014, f"Too many {kind} in one request (max {limit})") + (None,)
        for it in items:
            if not isinstance(it, str) or not self._cfl_item_ok(kind, it):
                return _cfl_error(400, 1015, f"Invalid {kind[:-1]}: {it!r}") + (None,)
        pid = secrets.token_hex(16)
        with fake.lock:
            fake._purges.append({"id": pid, kind: items, "t": time.time()})
        call["purge_id"] = pid
        body = json.dumps({"success": True, "errors": [], "messages": [], "result": {"id": pid}})
        return 200, None, body, "application/json", None

    def _cfl_item_ok(self, kind, it):
        domain = self.fake.config["domain"]
        if kind == "files":
            u = urllib.parse.urlsplit(it)
            return (u.scheme in ("http", "https") and u.netloc == domain and
                    u.path.startswith("/") and not u.query and not u.fragment and
                    url_path_ok(u.path))
        if "://" in it or "?" in it or "#" in it or not it.startswith(domain + "/"):
            return False
        rest = it[len(domain):]
        return rest.count("/") <= 31 and url_path_ok(rest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state", default=None)
    for k, v in DEFAULTS.items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = ap.parse_args()
    cfg = {k: getattr(a, k) for k in DEFAULTS if hasattr(a, k)}
    fake = FakeCDN(state_dir=a.state, port=a.port, **cfg).start()
    print(fake.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
