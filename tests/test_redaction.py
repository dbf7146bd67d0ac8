"""The API key never reaches stdout or stderr, even under -v, even when a server (a proxy, a
firewall page) echoes the request's Authorization header back in its error bodies."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from klaviyo_sync.cli import app
from klaviyo_sync.logsetup import LIBRARY_LOGGERS, setup_logging

from .e2e_helpers import base_env

KEY = "pk_echo_7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"


def _echo(kind: str, auth: str):
    """(status, content type, body, headers) of an answer that quotes the Authorization header."""
    if kind == "429":
        body = {"errors": [{"status": 429, "code": "throttled", "detail": f"throttled for {auth}"}]}
        return 429, "application/vnd.api+json", json.dumps(body), {"Retry-After": "0"}
    if kind in ("500", "502", "503"):
        body = {"errors": [{"status": int(kind), "detail": f"upstream refused request with header {auth}"}]}
        return int(kind), "application/vnd.api+json", json.dumps(body), {}
    if kind == "502-html":
        return 502, "text/html", f"<html><body><h1>Bad gateway</h1><pre>Authorization: {auth}</pre></body></html>", {}
    if kind == "503-text":
        return 503, "text/plain", f"proxy error; request headers: Authorization: {auth}", {}
    if kind in ("400", "401", "403", "404"):
        body = {"errors": [{"status": int(kind), "detail": f"bad request, you sent {auth}"}]}
        return int(kind), "application/vnd.api+json", json.dumps(body), {}
    if kind == "403-html":
        return 403, "text/html", f"<html><body>Blocked. Your header: {auth}</body></html>", {}
    if kind == "200-truncated":
        return 200, "application/vnd.api+json", '{"data": [{"id": "' + auth, {}
    if kind == "account":
        body = {"data": [{"type": "account", "id": "EcH001", "attributes": {}, "links": {"self": "x"}}]}
        return 200, "application/vnd.api+json", json.dumps(body), {}
    if kind == "ok":
        body = {"data": [{"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}}],
                "links": {"self": "x", "next": None}}
        return 200, "application/vnd.api+json", json.dumps(body), {}
    raise AssertionError(kind)


class EchoServer:
    """Loopback HTTP server answering /api/metrics with a script of answers, then 'ok'."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        owner = self

        # Not the fake: this server misbehaves on purpose, echoing the Authorization header in
        # its error bodies (some proxies do), which neither Klaviyo nor the fake ever does.
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                auth = self.headers.get("Authorization", "")
                owner.seen.append(auth)
                # The account check (GET /api/accounts) is answered, not scripted.
                kind = "account" if self.path.startswith("/api/accounts") else \
                    owner.script.pop(0) if owner.script else "ok"
                status, ctype, body, headers = _echo(kind, auth)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The CLI in-process (backoff sleeps skipped, so six attempts take no time) over a real
    socket to the echo server, with -v."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    runner = CliRunner()

    def invoke(server: EchoServer, *args):
        env = {"KLAVIYO_API_KEY": KEY, "KLAVIYO_BASE_URL": server.url, "KLAVIYO_SYNC_DB": str(tmp_path / "k.db")}
        result = runner.invoke(app, ["sync-metrics", "-v", *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_a_subprocess_run_under_verbose_prints_no_key(tmp_path):
    """The same, as cron runs it: a separate process, its real stderr."""
    with EchoServer(["503", "400"]) as server:
        env = base_env(KLAVIYO_API_KEY=KEY, KLAVIYO_BASE_URL=server.url, KLAVIYO_SYNC_DB=str(tmp_path / "k.db"))
        proc = subprocess.run([sys.executable, "-m", "klaviyo_sync", "sync-metrics", "-v"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "retrying after HTTP 503" in proc.stderr and "Traceback" in proc.stderr
    assert KEY not in proc.stdout + proc.stderr and "[REDACTED]" in proc.stderr


def test_retries_with_echoed_key_in_every_kind_of_body_log_no_key(run):
    script = ["429", "503", "502-html", "503-text", "500", "200-truncated"]
    with EchoServer(script) as server:
        code, out, err = run(server)
    assert code == 0, err
    assert all(KEY in seen for seen in server.seen)  # the server did get (and echo) the key
    assert KEY not in out + err
    assert err.count("retrying after") == len(script), err
    assert "[REDACTED]" in err  # the echoed header was there, and was removed


@pytest.mark.parametrize("kind, code", [("400", 3), ("401", 4), ("403", 4), ("404", 3), ("403-html", 3),
                                        ("500", 3)])
def test_failures_with_echoed_key_under_verbose_print_no_key(kind, code, run, tmp_path):
    script = [kind] * (6 if kind == "500" else 1)
    with EchoServer(script) as server:
        exit_code, out, err = run(server)
    assert exit_code == code, err
    assert KEY not in out + err
    assert "Traceback" in err  # -v prints it: redacted
    assert err.strip().splitlines()[-1].startswith("klaviyo-sync: error:")
    # The database holds the (redacted) error, never the key.
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_logging_layer_redacts_every_logger_message_args_and_tracebacks(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        setup_logging(True, [KEY])
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).warning("header %s", f"Klaviyo-API-Key {KEY}")
        logging.getLogger("urllib3.connectionpool").warning(f"in the message itself {KEY}")
        logging.getLogger().warning("root %r", {"Authorization": KEY})
        try:
            raise RuntimeError(f"body echoed {KEY}")
        except RuntimeError:
            logging.getLogger("tenacity").exception("gave up")
            logging.getLogger("klaviyo_sync").info("stack", stack_info=True, extra={"k": KEY})
    finally:
        setup_logging(False, [])
    text = stream.getvalue()
    assert KEY not in text
    assert text.count("[REDACTED]") >= len(LIBRARY_LOGGERS) + 3
    assert "RuntimeError: body echoed [REDACTED]" in text
