"""A loopback fake of the few Hugging Face Hub endpoints that create_repo + upload_folder and
hf_hub_download use.

Implemented (huggingface_hub 2.x, dataset and model repos, files committed inline as base64;
``{kind}`` is ``datasets`` or ``models``):

- ``POST /api/repos/create``                                  -> 200 ``{"url"}``, 409 if it exists
  (no ``type`` in the payload is a model repo, as on the Hub)
- ``POST /api/validate-yaml``                                 -> 400 unless the card's YAML parses
  and has ``configs``, ``dataset_info`` and ``license`` (dataset) or ``license`` (model)
- ``GET  /api/{kind}/{ns}/{name}/tree/{rev}[/{path}]``        -> the repo's files (for delete_patterns)
- ``POST /api/{kind}/{ns}/{name}/preupload/{rev}``            -> ``uploadMode: "regular"`` for every
  file, so no LFS or xet transfer is needed
- ``POST /api/{kind}/{ns}/{name}/commit/{rev}``               -> applies the NDJSON ``file`` and
  ``deletedFile`` operations, returns ``commitUrl``/``commitOid``
- ``HEAD|GET /{ns}/{name}/resolve/{rev}/{path}`` (model repos) -> the file, with ``ETag`` and
  ``X-Repo-Commit`` (what hf_hub_download reads); 404 ``EntryNotFound`` for a missing file

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
    repo_types: dict[str, str] = field(default_factory=dict)  # repo id -> "dataset" / "model"
    heads: dict[str, str] = field(default_factory=dict)  # repo id -> its last commit oid
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

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

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
        elif method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(method, f"{parts[0]}/{parts[1]}", "/".join(parts[4:]))
        elif len(parts) >= 6 and parts[0] == "api" and parts[1] in ("datasets", "models"):
            repo_id, action = f"{parts[2]}/{parts[3]}", parts[4]
            kind = "dataset" if parts[1] == "datasets" else "model"
            if self.fake.repo_types.get(repo_id) != kind:
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
        kind = payload.get("type") or "model"
        if kind not in ("dataset", "model"):
            self._reply(400, {"error": f"fake hub only makes dataset and model repos, got {kind}"})
            return
        repo_id = f"{payload['organization']}/{payload['name']}"
        prefix = "datasets/" if kind == "dataset" else ""
        url = f"{self.fake.endpoint}/{prefix}{repo_id}"
        if repo_id in self.fake.repos:
            self._reply(409, {"error": f"You already created this {kind} repo", "url": url})
            return
        self.fake.repos[repo_id] = {}
        self.fake.repo_types[repo_id] = kind
        self._reply(200, {"url": url})

    def _resolve(self, method: str, repo_id: str, path: str) -> None:
        files = (
            self.fake.repos.get(repo_id) if self.fake.repo_types.get(repo_id) == "model" else None
        )
        if files is None:
            self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        if path not in files:
            self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        data = files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", self.fake.heads.get(repo_id, "0" * 40))
        self.end_headers()
        if method == "GET":
            self.wfile.write(data)

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
        required = ("configs", "dataset_info", "license")
        if payload.get("repoType") == "model":
            required = ("license",)
        missing = [k for k in required if k not in (meta or {})]
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
        self.fake.heads[repo_id] = oid
        prefix = "datasets/" if self.fake.repo_types[repo_id] == "dataset" else ""
        url = f"{self.fake.endpoint}/{prefix}{repo_id}/commit/{oid}"
        self._reply(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    def _reply(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD reply has headers only
            self.wfile.write(data)
