#!/usr/bin/env python3
"""fake_provider.py -- a scriptable fake LLM provider for vectorbea's tests.

It speaks the wire formats of two real providers over plain HTTP/1.1:

    POST .../chat/completions   OpenAI chat completions
    POST .../messages           Anthropic messages
    anything else               404 with an OpenAI-style error body

and is driven by control endpoints under /_fake/ (JSON in, JSON out):

    POST /_fake/script     {"rules": [rule, ...]}  append rules -> {"rules": N}
    POST /_fake/reset      drop rules, recorded requests and counters
    GET  /_fake/requests   {"requests": [record, ...]} in arrival order
    GET  /_fake/stats      {"requests", "in_flight", "max_in_flight",
                            "connections", "max_connections"}

Control requests are neither recorded nor counted.  "connections" counts
only connections that carried at least one provider request, so a test
polling /_fake/stats does not disturb the numbers it reads.

Usage:

    python3 test/fake_provider.py [--host 127.0.0.1] [--port 0] \\
                                  [--port-file PATH]

Port 0 picks a free port; the chosen port is written (with a newline) to
--port-file atomically, so a test can wait for that file to appear.  The
server runs until SIGTERM or SIGINT and then exits 0.  It logs one line
per request to stderr -- method, path (without query string) and outcome,
never header values or bodies, which carry API keys.

A rule (all keys optional):

    match          {"provider": "openai"|"anthropic",
                    "contains": "substring of the raw request body"}
                   no match = every provider request
    times          requests it answers (default 1, -1 = unlimited); rules
                   are tried in the order added, the first matching one with
                   uses left answers
    status         HTTP status (default 200); >= 400 sends the provider's
                   error body with "error_message" (default
                   "fake error <status>") and a fitting error type, which
                   "error_type" overrides
    text           answer text for a 200 (default: "fake answer: " + the
                   first 60 characters of the last user message)
    usage          {"input": N, "output": M}; missing numbers are estimated
                   as ceil(characters / 4), at least 1
    raw_usage      the answer's "usage" member as given, any JSON (counts
                   that are strings or reals); null leaves the member out
    refusal        the model declines, in these words (a 200): OpenAI's
                   message has "content": null and "refusal"; Anthropic's
                   answer has "stop_reason": "refusal" and the words as its
                   text (no text part when they are "")
    truncated      true: the answer stopped at max_tokens (OpenAI
                   "finish_reason": "length", Anthropic "stop_reason":
                   "max_tokens")
    model          model name echoed instead of the request's
    delay_ms       wait this long before answering (other requests proceed)
    headers        extra response headers, e.g. {"Retry-After": "2"}
    mode           normal | hang | truncate | huge | invalid_json | reset |
                   redirect
    huge_bytes     length of the answer text in "huge" mode (20000000)
    location       Location of a "redirect" (http://127.0.0.1:1/elsewhere)

Modes:

    hang          read the request, never answer; the connection stays open
                  until the client closes it
    truncate      Content-Length of a full body, half of it sent, then close
    huge          a valid 200 whose answer text is huge_bytes long, streamed
    invalid_json  a 200 whose body is "this is not json {", or the rule's text
    reset         close at once with SO_LINGER 0: the client sees a reset
    redirect      a 302 (or the rule's 3xx status) with Location

Only the Python 3.11 standard library is used.  Everything runs on one
asyncio loop, so hundreds of slow requests cost a coroutine each.
"""

import argparse
import asyncio
import json
import math
import os
import resource
import secrets
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus

DEFAULT_HUGE_BYTES = 20_000_000
DEFAULT_REDIRECT_LOCATION = "http://127.0.0.1:1/elsewhere"
HUGE_CHUNK = 256 * 1024
# Header lines longer than this are refused; generous because tests may
# send large prompts in headers by mistake and should get a 400, not a hang.
MAX_LINE = 1024 * 1024

MODES = ("normal", "hang", "truncate", "huge", "invalid_json", "reset",
         "redirect")
RULE_KEYS = {"match", "times", "status", "error_message", "error_type",
             "text", "usage", "raw_usage", "refusal", "truncated", "model",
             "delay_ms", "headers", "mode",
             "huge_bytes", "location"}
MATCH_KEYS = {"provider", "contains"}
PROVIDERS = ("openai", "anthropic")


def log(message):
    print(f"fake_provider: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# HTTP/1.1 parsing and writing
# ---------------------------------------------------------------------------

class BadRequest(Exception):
    """The client sent something that is not HTTP/1.1 we understand."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict          # lower-cased name -> value
    body: bytes

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self):
        tokens = {t.strip().lower()
                  for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def read_line(reader):
    try:
        return await reader.readline()
    except ValueError as exc:  # StreamReader's "line too long"
        raise BadRequest("line too long") from exc


async def read_request_head(reader):
    """Request line and headers, or None on a clean EOF between requests."""
    line = await read_line(reader)
    # RFC 9112 2.2: ignore empty lines before a request line.
    while line in (b"\r\n", b"\n"):
        line = await read_line(reader)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise BadRequest("truncated request line")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, version = parts

    headers = {}
    while True:
        line = await read_line(reader)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated headers")
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise BadRequest("malformed header line")
        name, value = name.strip().lower(), value.strip()
        # Repeated headers fold into one comma-separated value (RFC 9110 5.3).
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return method, target, version, headers


async def read_chunked_body(reader):
    body = bytearray()
    while True:
        size_line = await read_line(reader)
        if not size_line.endswith(b"\n"):
            raise BadRequest("truncated chunk size")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BadRequest("malformed chunk size") from exc
        if size == 0:
            break
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")
    # Trailer fields, up to the empty line; their values are not needed.
    while True:
        line = await read_line(reader)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated trailers")
        if line in (b"\r\n", b"\n"):
            return bytes(body)


async def read_body(reader, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await read_chunked_body(reader)
    length = headers.get("content-length")
    if length is None:
        return b""
    try:
        length = int(length)
    except ValueError as exc:
        raise BadRequest("malformed Content-Length") from exc
    if length < 0:
        raise BadRequest("negative Content-Length")
    return await reader.readexactly(length)


async def read_request(reader, writer):
    head = await read_request_head(reader)
    if head is None:
        return None
    method, target, version, headers = head
    # A client that asked to wait (libcurl does for larger bodies) would
    # otherwise stall for a second before sending the body anyway.
    if (headers.get("expect", "").lower() == "100-continue"
            and version == "HTTP/1.1"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    body = await read_body(reader, headers)
    return Request(method, target, version, headers, body)


def reason_phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {529: "Overloaded"}.get(status, "Unknown")


def response_head(status, content_length, extra_headers, keep_alive):
    """Status line and headers; extra headers replace defaults by name."""
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(content_length),
        "Connection": "keep-alive" if keep_alive else "close",
        "Server": "vectorbea-fake-provider",
    }
    for name, value in (extra_headers or {}).items():
        for existing in [h for h in headers if h.lower() == name.lower()]:
            del headers[existing]
        headers[name] = str(value)
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_response(writer, status, body, extra_headers=None,
                        keep_alive=True):
    writer.write(response_head(status, len(body), extra_headers, keep_alive))
    writer.write(body)
    await writer.drain()


def json_bytes(value):
    return json.dumps(value).encode("utf-8")


# ---------------------------------------------------------------------------
# Provider wire formats
# ---------------------------------------------------------------------------

def classify(request):
    if request.method == "POST":
        if request.path.endswith("/chat/completions"):
            return "openai"
        if request.path.endswith("/messages"):
            return "anthropic"
    return "unknown"


def parse_json_body(body):
    """Parsed JSON, or the raw text when the body is not JSON."""
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def message_text(content):
    """Text of a message's content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict)
                       and isinstance(part.get("text"), str))
    return ""


def default_answer(payload):
    messages = payload.get("messages") if isinstance(payload, dict) else None
    last_user = ""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = message_text(message.get("content"))
    return "fake answer: " + last_user[:60]


def estimate_tokens(characters):
    return max(1, math.ceil(characters / 4))


def default_input_tokens(payload):
    if not isinstance(payload, dict):
        return 1
    characters = len(json.dumps(payload.get("messages", [])))
    if "system" in payload:
        characters += len(json.dumps(payload["system"]))
    return estimate_tokens(characters)


def success_body(provider, model, text, input_tokens, output_tokens):
    if provider == "anthropic":
        return {
            "id": "msg_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens,
                      "output_tokens": output_tokens},
        }
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": input_tokens,
                  "completion_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens},
    }


def openai_error_type(status):
    """(type, code) as OpenAI reports them for this status."""
    if status == 401:
        return "authentication_error", "invalid_api_key"
    if status == 403:
        return "permission_error", None
    if status == 429:
        return "rate_limit_exceeded", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_type(status):
    if status >= 500 and status != 529:
        return "api_error"
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")


def error_body(provider, status, message, error_type=None):
    if provider == "anthropic":
        return {"type": "error",
                "error": {"type": error_type or anthropic_error_type(status),
                          "message": message}}
    default_type, code = openai_error_type(status)
    return {"error": {"message": message,
                      "type": error_type or default_type,
                      "param": None,
                      "code": code}}


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------

RULE_DEFAULTS = {"status": 200, "mode": "normal", "delay_ms": 0,
                 "headers": {}, "usage": {}, "text": None, "model": None,
                 "error_message": None, "error_type": None,
                 "huge_bytes": DEFAULT_HUGE_BYTES,
                 "location": DEFAULT_REDIRECT_LOCATION}


def require(condition, message):
    if not condition:
        raise ValueError(message)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Rule:
    spec: dict
    remaining: int

    @classmethod
    def from_json(cls, spec):
        """Validate a rule; typos must fail the test, not be ignored."""
        require(isinstance(spec, dict), "a rule must be an object")
        unknown = set(spec) - RULE_KEYS
        require(not unknown, f"unknown rule keys: {sorted(unknown)}")
        match = spec.get("match", {})
        require(isinstance(match, dict), "match must be an object")
        unknown = set(match) - MATCH_KEYS
        require(not unknown, f"unknown match keys: {sorted(unknown)}")
        require(match.get("provider", "openai") in PROVIDERS,
                f"match.provider must be one of {PROVIDERS}")
        require(isinstance(match.get("contains", ""), str),
                "match.contains must be a string")
        times = spec.get("times", 1)
        require(is_int(times) and times >= -1, "times must be an int >= -1")
        status = spec.get("status", 200)
        require(is_int(status) and 200 <= status <= 599,
                "status must be an int in 200..599")
        require(spec.get("mode", "normal") in MODES,
                f"mode must be one of {MODES}")
        for key in ("text", "error_message", "error_type", "model",
                    "location", "refusal"):
            require(isinstance(spec.get(key, ""), str),
                    f"{key} must be a string")
        for key in ("delay_ms", "huge_bytes"):
            require(is_int(spec.get(key, 0)) and spec.get(key, 0) >= 0,
                    f"{key} must be an int >= 0")
        require(isinstance(spec.get("truncated", False), bool),
                "truncated must be true or false")
        usage = spec.get("usage", {})
        require(isinstance(usage, dict)
                and set(usage) <= {"input", "output"}
                and all(is_int(v) for v in usage.values()),
                'usage must be {"input": int, "output": int}')
        require(isinstance(spec.get("headers", {}), dict),
                "headers must be an object")
        return cls(spec, times)

    def matches(self, provider, body_text):
        match = self.spec.get("match", {})
        if "provider" in match and match["provider"] != provider:
            return False
        return match.get("contains", "") in body_text

    def __getattr__(self, name):
        # rule.status etc. read the spec, falling back to the defaults.
        if name in RULE_DEFAULTS:
            return self.spec.get(name, RULE_DEFAULTS[name])
        raise AttributeError(name)


# The answer to a request that no rule matched.
DEFAULT_RULE = Rule({}, -1)


# ---------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------

@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0
    max_connections: int = 0

    def request_started(self):
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self):
        self.in_flight -= 1

    def connection_opened(self):
        self.connections += 1
        self.max_connections = max(self.max_connections, self.connections)

    def connection_closed(self):
        self.connections -= 1

    def reset(self):
        # Current values stay true; only history is forgotten.
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.max_connections = self.connections

    def as_json(self):
        return {"requests": self.requests, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "connections": self.connections,
                "max_connections": self.max_connections}


@dataclass(eq=False)    # identity equality, so it can live in a set
class Connection:
    writer: asyncio.StreamWriter
    counted: bool = False   # carried a provider request, so in the stats


@dataclass
class FakeProvider:
    rules: list = field(default_factory=list)
    records: list = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    connections: set = field(default_factory=set)

    # -- connection loop ----------------------------------------------------

    async def handle_connection(self, reader, writer):
        conn = Connection(writer)
        self.connections.add(conn)
        try:
            await self.serve_requests(reader, writer, conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass    # the client went away; nothing to answer
        except asyncio.CancelledError:
            # Only shutdown cancels these tasks.  Python 3.11's streams call
            # task.exception() on a finished handler, which raises (and logs
            # a traceback) for a cancelled one, so end normally instead.
            pass
        except Exception as exc:    # keep serving other connections
            # Where, but not the message: it might quote a request.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log(f"internal error: {type(exc).__name__} at line {frame.lineno}")
        finally:
            self.connections.discard(conn)
            if conn.counted:
                self.stats.connection_closed()
            writer.close()

    async def serve_requests(self, reader, writer, conn):
        while True:
            try:
                request = await read_request(reader, writer)
            except BadRequest as exc:
                body = json_bytes(error_body("openai", 400, str(exc)))
                await send_response(writer, 400, body, keep_alive=False)
                log(f"bad request: {exc}")
                return
            if request is None:
                return
            if request.path.startswith("/_fake/"):
                keep_open = await self.handle_control(request, writer)
            else:
                keep_open = await self.handle_provider(request, reader,
                                                       writer, conn)
            if not (keep_open and request.keep_alive):
                return

    # -- control endpoints --------------------------------------------------

    async def handle_control(self, request, writer):
        status, result = self.control(request)
        await send_response(writer, status, json_bytes(result),
                            keep_alive=request.keep_alive)
        log(f"{request.method} {request.path} {status}")
        return True

    def control(self, request):
        route = (request.method, request.path)
        if route == ("POST", "/_fake/script"):
            return self.add_rules(request.body)
        if route == ("POST", "/_fake/reset"):
            self.rules.clear()
            self.records.clear()
            self.stats.reset()
            return 200, {"reset": True}
        if route == ("GET", "/_fake/requests"):
            return 200, {"requests": self.records}
        if route == ("GET", "/_fake/stats"):
            return 200, self.stats.as_json()
        return 404, {"error": f"no control endpoint {request.method} "
                              f"{request.path}"}

    def add_rules(self, body):
        try:
            specs = json.loads(body)["rules"]
            require(isinstance(specs, list), "rules must be a list")
            # Validate them all before adding any, so a bad script adds none.
            new_rules = [Rule.from_json(spec) for spec in specs]
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"bad script: {exc}"}
        self.rules.extend(new_rules)
        return 200, {"rules": len(self.rules)}

    # -- provider requests --------------------------------------------------

    def record(self, request, provider, payload):
        self.records.append({
            "n": len(self.records) + 1,
            "provider": provider,
            "method": request.method,
            "path": request.target,
            "headers": request.headers,
            "body": payload,
            "received_at": time.time(),
        })

    def take_rule(self, provider, body_text):
        for rule in self.rules:
            if rule.remaining != 0 and rule.matches(provider, body_text):
                if rule.remaining > 0:
                    rule.remaining -= 1
                return rule
        return DEFAULT_RULE

    async def handle_provider(self, request, reader, writer, conn):
        if not conn.counted:
            conn.counted = True
            self.stats.connection_opened()
        provider = classify(request)
        payload = parse_json_body(request.body)
        self.record(request, provider, payload)
        self.stats.request_started()
        try:
            if provider == "unknown":
                outcome, keep_open = await self.not_found(request, writer)
            else:
                body_text = request.body.decode("utf-8", errors="replace")
                rule = self.take_rule(provider, body_text)
                outcome, keep_open = await self.answer(
                    rule, provider, payload, request, reader, writer)
        except ConnectionError:
            log(f"{request.method} {request.path} client went away")
            raise
        finally:
            self.stats.request_finished()
        log(f"{request.method} {request.path} {outcome}")
        return keep_open

    async def not_found(self, request, writer):
        message = f"Unknown request URL: {request.method} {request.path}"
        body = error_body("openai", 404, message)
        body["error"]["code"] = "unknown_url"
        await send_response(writer, 404, json_bytes(body),
                            keep_alive=request.keep_alive)
        return "404", True

    async def answer(self, rule, provider, payload, request, reader, writer):
        """Carry out a rule; returns (log outcome, keep connection open)."""
        if rule.delay_ms:
            await asyncio.sleep(rule.delay_ms / 1000)
        keep_alive = request.keep_alive
        mode = rule.mode
        if mode == "hang":
            await wait_for_eof(reader)
            return "hang (client closed)", False
        if mode == "reset":
            reset_connection(writer)
            return "reset", False
        if mode == "invalid_json":
            body = (rule.text.encode() if rule.text is not None
                    else b"this is not json {")
            await send_response(writer, 200, body, rule.headers, keep_alive)
            return "200 invalid_json", True
        if mode == "redirect":
            status = rule.status if 300 <= rule.status < 400 else 302
            headers = {"Location": rule.location, **rule.headers}
            body = json_bytes({"redirect": rule.location})
            await send_response(writer, status, body, headers, keep_alive)
            return f"{status} redirect", True
        if mode == "huge":
            await send_huge(writer, rule, provider, payload, keep_alive)
            return f"200 huge ({rule.huge_bytes} bytes of text)", True

        status = rule.status
        body = json_bytes(self.normal_body(rule, provider, payload, status))
        if mode == "truncate":
            await send_truncated(writer, status, body, rule.headers)
            return f"{status} truncated", False
        await send_response(writer, status, body, rule.headers, keep_alive)
        return str(status), True

    @staticmethod
    def normal_body(rule, provider, payload, status):
        if status >= 400:
            message = rule.error_message or f"fake error {status}"
            return error_body(provider, status, message, rule.error_type)
        text = rule.text if rule.text is not None else default_answer(payload)
        usage = rule.usage
        body = success_body(
            provider, response_model(rule, payload), text,
            usage.get("input", default_input_tokens(payload)),
            usage.get("output", estimate_tokens(len(text))))
        if "refusal" in rule.spec:
            refuse(body, provider, rule.spec["refusal"])
        if rule.spec.get("truncated"):
            if provider == "anthropic":
                body["stop_reason"] = "max_tokens"
            else:
                body["choices"][0]["finish_reason"] = "length"
        if "raw_usage" in rule.spec:
            if rule.spec["raw_usage"] is None:
                del body["usage"]
            else:
                body["usage"] = rule.spec["raw_usage"]
        return body


def refuse(body, provider, words):
    """Turns a success body into the provider's shape of a refusal."""
    if provider == "anthropic":
        body["content"] = [{"type": "text", "text": words}] if words else []
        body["stop_reason"] = "refusal"
    else:
        message = body["choices"][0]["message"]
        message["content"] = None
        message["refusal"] = words


def response_model(rule, payload):
    if rule.model is not None:
        return rule.model
    if isinstance(payload, dict) and isinstance(payload.get("model"), str):
        return payload["model"]
    return "fake-model"


# ---------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------

async def wait_for_eof(reader):
    # Anything further the client sends is ignored: it gets no answer.
    while await reader.read(65536):
        pass


def reset_connection(writer):
    # Linger 0 makes close() send RST instead of FIN: the client sees
    # "connection reset by peer" rather than a clean end of stream.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    writer.transport.abort()


async def send_truncated(writer, status, body, extra_headers):
    # Promise the whole body, deliver half, hang up.
    writer.write(response_head(status, len(body), extra_headers, False))
    writer.write(body[:len(body) // 2])
    await writer.drain()
    writer.close()


async def send_huge(writer, rule, provider, payload, keep_alive):
    """A valid 200 whose answer text is huge_bytes of "x", in chunks."""
    size = rule.huge_bytes
    marker = "@@HUGE_TEXT@@"
    template = json.dumps(success_body(
        provider, response_model(rule, payload), marker,
        rule.usage.get("input", default_input_tokens(payload)),
        rule.usage.get("output", estimate_tokens(size))))
    prefix, suffix = (part.encode("utf-8") for part in template.split(marker))
    length = len(prefix) + size + len(suffix)
    writer.write(response_head(200, length, rule.headers, keep_alive))
    writer.write(prefix)
    chunk = b"x" * HUGE_CHUNK
    remaining = size
    while remaining > 0:
        # drain() after each chunk keeps memory flat for a slow reader.
        writer.write(chunk[:remaining])
        remaining -= min(remaining, HUGE_CHUNK)
        await writer.drain()
    writer.write(suffix)
    await writer.drain()


# ---------------------------------------------------------------------------
# Process
# ---------------------------------------------------------------------------

def write_port_file(path, port):
    # Write then rename, so a test polling for the file never reads it
    # half-written.
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def raise_fd_limit():
    # Each of 300+ concurrent clients holds a socket; the usual soft limit
    # of 1024 is near that once the client side shares the machine.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass


async def serve(host, port, port_file):
    provider = FakeProvider()
    server = await asyncio.start_server(
        provider.handle_connection, host, port, limit=MAX_LINE,
        backlog=1024)   # bursts of hundreds of connects must not be dropped
    bound_port = server.sockets[0].getsockname()[1]
    if port_file:
        write_port_file(port_file, bound_port)
    log(f"listening on {host}:{bound_port}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log("stopping")
    server.close()
    # Hung and keep-alive connections would otherwise outlive the server.
    for conn in list(provider.connections):
        conn.writer.transport.abort()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(
        description="Scriptable fake OpenAI/Anthropic HTTP server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0,
                        help="0 picks a free port (default)")
    parser.add_argument("--port-file",
                        help="write the chosen port here, atomically")
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
