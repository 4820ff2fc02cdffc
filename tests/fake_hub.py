"""A stand-in for the Hugging Face hub on localhost: the few endpoints `snapshot_download` calls
(repo info, the recursive tree listing, HEAD and GET of `/resolve/`), serving local folders.

    python tests/fake_hub.py ROOT [--port 8765] [--gated mistralai/Mistral-7B-v0.1 --token T]
    HF_ENDPOINT=http://127.0.0.1:8765 snakemake ...

ROOT holds `models/<owner>/<name>/` and `datasets/<owner>/<name>/`, each one repository at one
commit (a hash of its files). A gated repository answers 401 GatedRepo without
`Authorization: Bearer <token>`, as the hub does. Every request is recorded (`FakeHub.requests`).
Used by tests/test_hub.py and the paper-shaped SLURM run, where the login node reaches this hub
and the compute jobs cannot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        digest = hashlib.sha1()
        for name in self.files:
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
        self.commit = digest.hexdigest()

    def blob(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


class FakeHub:
    def __init__(
        self, root: Path, gated: tuple[str, ...] = (), token: str = "", port: int = 0
    ) -> None:
        self.root = Path(root)
        self.gated = set(gated)
        self.token = token
        self.requests: list[tuple[str, str, bool]] = []  # method, path, authorised
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- routing -------------------------------------------------------------------------------

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        folder = self.root / f"{kind}s" / repo_id
        return Repo(folder) if folder.is_dir() else None

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        auth = handler.headers.get("Authorization", "")
        authorised = bool(self.token) and auth == f"Bearer {self.token}"
        self.requests.append((handler.command, path, authorised))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 4:  # api/{kind}s/owner/name/...
            kind, repo_id, rest = parts[1].removesuffix("s"), "/".join(parts[2:4]), parts[4:]
        else:  # [datasets/]owner/name/resolve/rev/file
            kind = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:] if kind == "dataset" else parts
            repo_id, rest = "/".join(parts[:2]), ["file", *parts[2:]]
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", f"{repo_id} not found", body)
        if repo_id in self.gated and not authorised:
            message = f"Access to {repo_id} is restricted"
            return self._error(handler, 401, "GatedRepo", message, body)
        headers = {"X-Repo-Commit": repo.commit}
        if rest[:1] == ["revision"] or not rest:
            info = {
                "id": repo_id,
                "sha": repo.commit,
                "private": False,
                "gated": "manual" if repo_id in self.gated else False,
                "siblings": [{"rfilename": f} for f in repo.files],
            }
            return self._send(handler, 200, json.dumps(info).encode(), headers, body)
        if rest[:1] == ["tree"]:
            tree = [
                {
                    "type": "file",
                    "path": f,
                    "size": len(repo.blob(f)),
                    "oid": _git_blob_id(repo.blob(f)),
                }
                for f in repo.files
            ]
            return self._send(handler, 200, json.dumps(tree).encode(), headers, body)
        if rest[:2] == ["file", "resolve"] and len(rest) >= 4:
            name = "/".join(rest[3:])
            if name not in repo.files:
                headers["X-Error-Code"] = "EntryNotFound"
                return self._send(handler, 404, b"", headers, body)
            data = repo.blob(name)
            headers["ETag"] = f'"{_git_blob_id(data)}"'
            return self._send(handler, 200, data, headers, body)
        return self._error(handler, 404, "NotFound", path, body)

    @staticmethod
    def _send(handler, status: int, data: bytes, headers: dict, body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _error(self, handler, status: int, code: str, message: str, body: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        self._send(handler, status, json.dumps({"error": message}).encode(), headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--gated", nargs="*", default=[])
    parser.add_argument("--token", default="")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeHub(args.root, tuple(args.gated), args.token, args.port) as hub:
        print(f"HF_ENDPOINT={hub.url}", flush=True)
        hub.thread.join()


if __name__ == "__main__":
    main()
