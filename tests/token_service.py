"""A minimal Docker token service (distribution token auth spec), run as its own process.

Anonymous requests get pull access to repositories under ``public/``; requests with valid
Basic credentials get pull access to everything they ask for.  Every request is logged as
a JSON line so tests can see the service and scope the gateway sent.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

PORT, KEY_FILE, KID, SERVICE, USERS, LOG = sys.argv[1:7]
KEY = serialization.load_pem_private_key(Path(KEY_FILE).read_bytes(), password=None)
USERS_MAP = json.loads(USERS)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": KID}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, params: list[tuple[str, str]]) -> None:
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if USERS_MAP.get(name) != password:
                return self._send(
                    401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
                )
            user = name
        if dict(params).get("grant_type") == "password":
            name, password = dict(params).get("username"), dict(params).get("password")
            if USERS_MAP.get(name) != password:
                return self._send(
                    401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
                )
            user = name
        scopes = [s for k, v in params if k == "scope" for s in v.split(" ")]
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"method": self.command, "params": params, "user": user}) + "\n")
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and user:
                access.append({"type": "repository", "name": name, "actions": actions.split(",")})
            elif kind == "repository" and name.startswith("public/"):
                access.append({"type": "repository", "name": name, "actions": ["pull"]})
        now = int(time.time())
        claims = {
            "iss": "gatepost-test-issuer",
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        token = sign(claims)
        self._send(200, {"token": token, "access_token": token, "expires_in": 300})

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, {})
        return self._answer(parse_qsl(url.query, keep_blank_values=True))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self._answer(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
