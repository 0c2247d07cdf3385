"""A fault-injecting HTTP/1.1 reverse proxy for the cdnfs integration tests.

    with FaultProxy(s3server.endpoint) as px:
        m = mount(bucket, f"endpoint={px.endpoint}", "timeout=2")
        px.add(method="PUT", key="a.txt", action="error", status=503, count=2)
        ...
        assert px.injected["error"] == 2

It listens on 127.0.0.1 (a free port) and forwards every request to the
upstream S3 endpoint with its headers untouched (Host included), so SigV4
signatures stay valid: mount cdnfs with endpoint=http://127.0.0.1:PORT and
path_style.  Both sides keep their connections alive (one upstream
connection per client connection).

Rules (FaultProxy.add) match by method, key substring, query parameter names
and a predicate (match=fn(Request)), and apply to the next `count` matching
requests (count=None: every one until clear()) or for `seconds` after being
added.  The first rule that matches and is still live
is applied; requests matching none are forwarded as they are.  Actions:

  drop_request   read the request head and half its body, then close: the
                 server never sees the request
  drop_response  forward, then send the answer's head and half its body and
                 close: the server applied the request, the client cannot know
  error          answer status (500/503/400...) with an S3 XML error body
                 (code: InternalError, SlowDown, RequestTimeout, ...) without
                 forwarding; forward=True forwards first (applied, then error)
  delay          forward, sleep `seconds_stall` before answering, answer
  stall          forward, send the head and `stall_at` bytes of the body (half
                 by default), sleep `seconds_stall`, then close
  truncate       forward, send the head (correct Content-Length) and only
                 part of the body, then close
  flip           forward, flip `nflip` bytes of the body, answer (same length)
  hold           call fn(req) (it blocks, e.g. on an Event) before forwarding:
                 a request that reaches the server late
  rewrite        forward, then body = fn(req, body)
                 (fn may return (status, body) or (status, headers, body));
                 Content-Length adjusted

Counters: forwarded (Counter by S3 operation), injected (Counter by action),
events (list of (op, method, path, action)), requests (all seen).
"""

import collections
import http.client
import re
import socket
import threading
import time
import urllib.parse

ERROR_MESSAGES = {
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "RequestTimeout": "Your socket connection to the server was not read from "
                      "or written to within the timeout period.",
    "ServiceUnavailable": "Service is unable to handle request.",
}
DEFAULT_CODES = {500: "InternalError", 503: "SlowDown", 400: "RequestTimeout"}
REASONS = {200: "OK", 206: "Partial Content", 400: "Bad Request",
           404: "Not Found", 500: "Internal Server Error",
           503: "Service Unavailable"}
ACTIONS = {"drop_request", "drop_response", "error", "delay", "stall",
           "truncate", "flip", "rewrite", "hold"}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te",
               "proxy-connection", "upgrade", "trailer"}


class Request:
    """One request as the proxy read it."""

    def __init__(self, method, target, headers, body):
        self.method = method
        self.target = target
        self.headers = headers  # list of (name, value) as received
        self.body = body
        raw_path, _, raw_query = target.partition("?")
        self.path = urllib.parse.unquote(raw_path)
        self.query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        bucket, _, self.key = self.path.lstrip("/").partition("/")
        self.bucket = bucket
        self.op = op_of(method, self.key, self.query)
        if self.op == "PUT" and self.header("x-amz-copy-source"):
            self.op = "COPY"

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def __repr__(self):
        return f"<Request {self.method} {self.target}>"


def op_of(method, key, query):
    if not key:
        if method == "GET" and "list-type" in query:
            return "LIST"
        return f"{method}_BUCKET"
    if method == "POST" and "uploads" in query:
        return "MPU_CREATE"
    if method == "POST" and "uploadId" in query:
        return "MPU_COMPLETE"
    if method == "PUT" and "uploadId" in query:
        return "MPU_PART"
    if method == "DELETE" and "uploadId" in query:
        return "MPU_ABORT"
    return method


class Rule:
    def __init__(self, action, method=None, key=None, query=(), op=None,
                 match=None, count=1, seconds=None, status=500, code=None,
                 forward=False, seconds_stall=5.0, stall_at=None, nflip=1,
                 fn=None, keep=None):
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        self.action = action
        self.method = method
        self.key = key
        self.query = (query,) if isinstance(query, str) else tuple(query)
        self.op = op
        self.match = match
        self.count = count
        self.until = None if seconds is None else time.monotonic() + seconds
        self.status = status
        self.code = code or DEFAULT_CODES.get(status, "InternalError")
        self.forward = forward
        self.seconds_stall = seconds_stall
        self.stall_at = stall_at
        self.nflip = nflip
        self.fn = fn
        self.keep = keep  # truncate: bytes to send (default: half)
        self.hits = 0

    def live(self):
        if self.until is not None:
            return time.monotonic() < self.until
        return self.count is None or self.hits < self.count

    def matches(self, req):
        if self.method and req.method != self.method:
            return False
        if self.op and req.op != self.op:
            return False
        if self.key is not None and self.key not in req.key:
            return False
        if any(q not in req.query for q in self.query):
            return False
        if self.match and not self.match(req):
            return False
        return True

    def __repr__(self):
        return (f"<Rule {self.action} method={self.method} key={self.key} "
                f"query={self.query} hits={self.hits}>")


def error_body(code, req):
    msg = ERROR_MESSAGES.get(code, code)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{msg}</Message><Resource>{req.path}</Resource>"
            f"<RequestId>faultproxy</RequestId></Error>").encode()


class _Closed(Exception):
    pass


class FaultProxy:
    """See the module docstring.  Thread-safe; start() / stop() or `with`."""

    def __init__(self, upstream, host="127.0.0.1"):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http":
            raise ValueError("faultproxy forwards plain http only")
        self.up_host = u.hostname
        self.up_port = u.port or 80
        self.host = host
        self.port = None
        self.lock = threading.Lock()
        self.rules = []
        self.forwarded = collections.Counter()
        self.injected = collections.Counter()
        self.events = []
        self.requests = []
        self._sock = None
        self._threads = []
        self._conns = set()
        self._stop = threading.Event()

    # ---------------------------------------------------------- control --

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.port}"

    def add(self, action, **kw):
        """Add a rule (see Rule and the module docstring); returns it."""
        rule = Rule(action, **kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self):
        with self.lock:
            self.rules.clear()

    def reset_counts(self):
        with self.lock:
            self.forwarded.clear()
            self.injected.clear()
            self.events.clear()
            self.requests.clear()

    def count(self, op=None, method=None, key=None):
        """Requests seen (forwarded or not) matching op/method/key substring."""
        with self.lock:
            return sum(1 for r in self.requests
                       if (op is None or r.op == op)
                       and (method is None or r.method == method)
                       and (key is None or key in r.key))

    def summary(self):
        with self.lock:
            return (f"forwarded {sum(self.forwarded.values())} "
                    f"{dict(self.forwarded)}, injected "
                    f"{sum(self.injected.values())} {dict(self.injected)}")

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True,
                             name="faultproxy-accept")
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------ serving --

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self._conns.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()]
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                 name="faultproxy-conn")
            t.start()
            self._threads.append(t)

    def _serve(self, conn):
        rfile = conn.makefile("rb")
        up = None
        try:
            while not self._stop.is_set():
                head = self._read_head(rfile)
                if head is None:
                    return
                method, target, headers = head
                rule = self._pick(method, target, headers)
                if rule and rule.action == "drop_request":
                    self._read_body(rfile, headers, limit_half=True)
                    self._record(Request(method, target, headers, b""), rule)
                    return
                body = self._read_body(rfile, headers)
                req = Request(method, target, headers, body)
                self._record(req, rule)
                if rule and rule.action == "hold":
                    rule.fn(req)
                if rule and rule.action == "error" and not rule.forward:
                    self._send(conn, req, rule.status, [("Content-Type", "application/xml")],
                               error_body(rule.code, req))
                    continue
                up, status, reason, rhdrs, rbody = self._forward(up, req)
                with self.lock:
                    self.forwarded[req.op] += 1
                if not self._answer(conn, req, rule, status, reason, rhdrs, rbody):
                    return
        except (_Closed, OSError, http.client.HTTPException):
            return
        finally:
            if up is not None:
                up.close()
            with self.lock:
                self._conns.discard(conn)
            try:
                rfile.close()
                conn.close()
            except OSError:
                pass

    def _pick(self, method, target, headers):
        req = Request(method, target, headers, b"")
        with self.lock:
            for rule in self.rules:
                if rule.live() and rule.matches(req):
                    rule.hits += 1
                    self.injected[rule.action] += 1
                    return rule
        return None

    def _record(self, req, rule):
        with self.lock:
            self.requests.append(req)
            if rule:
                self.events.append((req.op, req.method, req.path, rule.action))

    @staticmethod
    def _read_head(rfile):
        line = rfile.readline(65537)
        while line in (b"\r\n", b"\n"):
            line = rfile.readline(65537)
        if not line:
            return None
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            raise _Closed()
        headers = []
        while True:
            h = rfile.readline(65537)
            if not h:
                raise _Closed()
            if h in (b"\r\n", b"\n"):
                break
            name, _, value = h.decode("latin-1").rstrip("\r\n").partition(":")
            headers.append((name.strip(), value.strip()))
        return parts[0], parts[1], headers

    @staticmethod
    def _read_body(rfile, headers, limit_half=False):
        hd = {k.lower(): v for k, v in headers}
        if "chunked" in hd.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int(rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += rfile.read(size)
                rfile.readline(3)
                if limit_half:
                    return bytes(out)
        n = int(hd.get("content-length", "0") or 0)
        if limit_half:
            n //= 2
        data = rfile.read(n) if n else b""
        if len(data) < n:
            raise _Closed()
        return data

    def _forward(self, up, req):
        """Send req upstream (reconnecting once if the kept-alive connection
        went away); returns (up, status, reason, headers, body)."""
        for attempt in range(2):
            if up is None:
                up = http.client.HTTPConnection(self.up_host, self.up_port, timeout=120)
            try:
                up.putrequest(req.method, req.target, skip_host=True,
                              skip_accept_encoding=True)
                chunked = False
                for k, v in req.headers:
                    if k.lower() == "transfer-encoding":
                        chunked = True
                        continue
                    up.putheader(k, v)
                if chunked:
                    up.putheader("Content-Length", str(len(req.body)))
                up.endheaders(req.body if req.body else None)
                resp = up.getresponse()
                body = resp.read()
                hdrs = resp.getheaders()
                if resp.will_close:
                    up.close()
                    up = None
                return up, resp.status, resp.reason, hdrs, body
            except (OSError, http.client.HTTPException):
                up.close()
                up = None
                if attempt:
                    raise
        raise _Closed()

    def _head_bytes(self, status, reason, headers, length, keep_cl):
        lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}"]
        for k, v in headers:
            lk = k.lower()
            if lk in HOP_HEADERS or (lk == "content-length" and not keep_cl):
                continue
            lines.append(f"{k}: {v}")
        if not keep_cl:
            lines.append(f"Content-Length: {length}")
        lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, conn, req, status, headers, body, reason=None):
        no_body = req.method == "HEAD" or status in (204, 304)
        keep_cl = no_body and any(k.lower() == "content-length" for k, _ in headers)
        conn.sendall(self._head_bytes(status, reason, headers, len(body), keep_cl) +
                     (b"" if no_body else body))

    def _sleep(self, seconds):
        self._stop.wait(seconds)

    def _answer(self, conn, req, rule, status, reason, hdrs, body):
        """Send the (possibly faulted) answer; False closes the connection."""
        a = rule.action if rule else None
        if a is None or a == "hold":
            self._send(conn, req, status, hdrs, body, reason)
            return True
        if a == "error":  # forwarded, then an error instead of the answer
            self._send(conn, req, rule.status, [("Content-Type", "application/xml")],
                       error_body(rule.code, req))
            return True
        if a == "delay":
            self._sleep(rule.seconds_stall)
            self._send(conn, req, status, hdrs, body, reason)
            return True
        if a == "flip":
            b = bytearray(body)
            for i in range(min(rule.nflip, len(b))):
                pos = (len(b) // 2 + i * 7919) % len(b)
                b[pos] ^= 0xFF
            self._send(conn, req, status, hdrs, bytes(b), reason)
            return True
        if a == "rewrite":
            out = rule.fn(req, body)
            if isinstance(out, tuple) and len(out) == 3:
                status, hdrs, body = out
            elif isinstance(out, tuple):
                status, body = out
            else:
                body = out
            self._send(conn, req, status, hdrs, body, reason)
            return True
        # drop_response, truncate, stall: the head with the full length, then
        # part of the body, then close
        keep = len(body) // 2
        if a == "truncate" and rule.keep is not None:
            keep = min(rule.keep, max(len(body) - 1, 0))
        if a == "stall" and rule.stall_at is not None:
            keep = min(rule.stall_at, len(body))
        conn.sendall(self._head_bytes(status, reason, hdrs, len(body), False) +
                     body[:keep])
        if a == "stall":
            self._sleep(rule.seconds_stall)
        return False


if __name__ == "__main__":  # manual use: python3 faultproxy.py http://127.0.0.1:8000
    import sys
    with FaultProxy(sys.argv[1]) as p:
        print(p.endpoint, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
