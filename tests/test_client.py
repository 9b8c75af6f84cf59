"""The Python client against a real HTTP server that answers as a slow or odd service would."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import httpx
import pytest

from intent_router.client import RouterClient, RouterError, RouterUnreachable


class Service(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def answer(self) -> None:
        self.seen.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/v1/finetunes") or self.path.startswith("/v1/low-confidence"):
            time.sleep(1.0)  # slower than the client waits
        status, body = (422, [{"msg": "a list, not an object"}]) if "odd" in self.path else (200, {"ok": True})
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except BrokenPipeError:  # the client gave up waiting
            pass

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def service():
    Service.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_post_that_timed_out_is_not_sent_again_and_a_get_is(service):
    with RouterClient(service, "key", timeout=0.3, retries=2) as client:
        with pytest.raises(RouterUnreachable) as error:
            client.finetune("atis", "dataset-1")  # may have queued the fine-tune: not sent twice
        assert error.value.status is None and isinstance(error.value.__cause__, httpx.ReadTimeout)
        with pytest.raises(RouterUnreachable, match="tried 3 times"):
            client.low_confidence(limit=5)
    assert [method for method, _ in Service.seen] == ["POST", "GET", "GET", "GET"]


def test_a_service_that_cannot_be_reached_is_a_router_error_a_bot_already_catches():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RouterClient(f"http://127.0.0.1:{port}", "key", retries=1) as client, pytest.raises(RouterError) as error:
        client.route("fares to denver")
    assert isinstance(error.value, RouterUnreachable) and isinstance(error.value.__cause__, httpx.ConnectError)
    with pytest.raises(ValueError, match="retries is -1"):
        RouterClient("http://127.0.0.1:1", retries=-1)


def test_names_are_sent_as_one_path_segment(service):
    with RouterClient(service, "key") as client:
        client.put_router("sales#eu", model="atis")
        client.put_router("sales?eu", model="atis")
    assert [path for _, path in Service.seen] == ["/v1/routers/sales%23eu", "/v1/routers/sales%3Feu"]


def test_an_error_whose_body_is_not_an_object_is_a_router_error(service):
    with RouterClient(service, "key") as client, pytest.raises(RouterError) as error:
        client.put_router("odd", model="atis")
    assert error.value.status == 422 and error.value.detail == [{"msg": "a list, not an object"}]
