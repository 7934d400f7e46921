"""A loopback fake of the few Hugging Face Hub endpoints that create_repo + upload_folder use.

Implemented (huggingface_hub 2.x, dataset repos, files committed inline as base64):

- ``POST /api/repos/create``                                  -> 200 ``{"url"}``, 409 if it exists
- ``POST /api/validate-yaml``                                 -> 400 unless the card's YAML parses
  and has ``configs``, ``dataset_info`` and ``license``
- ``GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]``      -> the repo's files (for delete_patterns)
- ``POST /api/datasets/{ns}/{name}/preupload/{rev}``          -> ``uploadMode: "regular"`` for every
  file, so no LFS or xet transfer is needed
- ``POST /api/datasets/{ns}/{name}/commit/{rev}``             -> applies the NDJSON ``file`` and
  ``deletedFile`` operations, returns ``commitUrl``/``commitOid``

Every request is recorded with its method, path and Authorization header; any request without
``Bearer <token>`` gets 401 and any other route 404, so a test sees unexpected traffic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class Request:
    """One request the fake Hub received."""

    method: str
    path: str
    authorization: str | None


@dataclass
class FakeHub:
    """Run with ``with FakeHub(token) as hub:``; ``hub.endpoint`` is its ``http://127.0.0.1:<port>``."""

    token: str
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> path -> bytes
    requests: list[Request] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL of the running server."""
        assert self._server is not None, "FakeHub is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization")
        self.fake.requests.append(Request(method, path, auth))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if auth != f"Bearer {self.fake.token}":
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
            return
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            self._create(json.loads(body))
        elif method == "POST" and path == "/api/validate-yaml":
            self._validate_yaml(json.loads(body))
        elif len(parts) >= 6 and parts[:2] == ["api", "datasets"]:
            repo_id, action = f"{parts[2]}/{parts[3]}", parts[4]
            if repo_id not in self.fake.repos:
                self._reply(
                    404,
                    {"error": f"Repository {repo_id} not found"},
                    {"X-Error-Code": "RepoNotFound"},
                )
            elif method == "GET" and action == "tree":
                self._tree(repo_id, "/".join(parts[6:]))
            elif method == "POST" and action == "preupload":
                self._preupload(json.loads(body))
            elif method == "POST" and action == "commit":
                self._commit(repo_id, body)
            else:
                self._reply(404, {"error": f"no route {method} {path}"})
        else:
            self._reply(404, {"error": f"no route {method} {path}"})

    def _create(self, payload: dict) -> None:
        if payload.get("type") != "dataset":
            self._reply(
                400, {"error": f"fake hub only makes dataset repos, got {payload.get('type')}"}
            )
            return
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.fake.endpoint}/datasets/{repo_id}"
        if repo_id in self.fake.repos:
            self._reply(409, {"error": "You already created this dataset repo", "url": url})
            return
        self.fake.repos[repo_id] = {}
        self._reply(200, {"url": url})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload["content"]
        parts = content.split("---\n")
        if not content.startswith("---\n") or len(parts) < 3:
            self._reply(400, {"errors": [{"message": "README.md has no YAML front matter"}]})
            return
        try:
            meta = yaml.safe_load(parts[1])
        except yaml.YAMLError as err:
            self._reply(400, {"errors": [{"message": f"invalid YAML: {err}"}]})
            return
        missing = [k for k in ("configs", "dataset_info", "license") if k not in (meta or {})]
        if missing:
            self._reply(400, {"errors": [{"message": f"metadata lacks {missing}"}]})
            return
        self._reply(200, {"errors": [], "warnings": []})

    def _tree(self, repo_id: str, prefix: str) -> None:
        files = self.fake.repos[repo_id]
        entries = [
            {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
            for p, b in sorted(files.items())
            if p.startswith(prefix)
        ]
        self._reply(200, entries)

    def _preupload(self, payload: dict) -> None:
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in payload["files"]
        ]
        self._reply(200, {"files": files, "commitOid": "0" * 40})

    def _commit(self, repo_id: str, body: bytes) -> None:
        files = self.fake.repos[repo_id]
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    self._reply(400, {"error": f"unsupported encoding {value.get('encoding')}"})
                    return
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key != "header":
                self._reply(400, {"error": f"fake hub does not support {key!r} operations"})
                return
        oid = hashlib.sha1(body).hexdigest()
        self.fake.commits.append(oid)
        url = f"{self.fake.endpoint}/datasets/{repo_id}/commit/{oid}"
        self._reply(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    def _reply(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
