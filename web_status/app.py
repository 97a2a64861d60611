"""The read-only status page: a Flask app served by waitress from ``facedrop run``.

Routes (GET and HEAD only; every other method gets 405, on known and unknown paths alike):

- ``/``                       the page: queue, running job, people, models, outputs, failures;
- ``/api/status``             the same as JSON (the page polls it to update without reload);
- ``/metrics``                Prometheus text format;
- ``/models/<name>/loss.svg`` the loss chart of a model, drawn server-side;
- ``/file/<rel>``             an image, output video or manifest from the root's own folders;
- ``/thumb/<rel>``            a small JPEG of a face image (so a page of thumbnails stays light);
- ``/healthz``                "ok" (for probes).

Why so strict: the page shows names of files that anybody who can write into a hot folder
chose, and it runs next to people's private videos. Jinja escapes every name; file routes
accept only paths under an allow-listed top folder of the root, with an allow-listed file
type, no hidden components, and a resolved target that is still inside the root (a symlink
pointing out is refused); the database is opened read-only; responses carry a strict
Content-Security-Policy (scripts and styles only from the app itself).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from hotfolders import safefs
from hotfolders.errors import InputError

from . import charts
from .status import StatusReader, metrics_text
from .safety import resolve_file, resolve_model_dir
from .thumbs import ThumbCache

log = logging.getLogger(__name__)

ALLOWED_METHODS = frozenset({"GET", "HEAD"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
THUMB_SIZES = (64, 96, 128, 192, 256)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_allowed(header: str, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` header names this page (port ignored, any case).

    DNS rebinding: a web page the operator visits can point its own host name at 127.0.0.1
    and read the answers, unless the server refuses Host values that are not its own.
    """
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8765
        host = host[1:host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return bool(host) and host.rstrip(".") in allowed


def create_app(root: Path, db_path: Path | None = None, *, status_ttl: float = 1.0,
               poll_seconds: float = 2.0, allowed_hosts: list[str] | tuple[str, ...] = (),
               settings: list[dict[str, Any]] | None = None) -> Flask:
    """Build the app for hot-folder ``root`` (state in ``root/.facedrop/state.db`` unless
    ``db_path`` is given). ``status_ttl`` bounds how often the status is rebuilt however many
    clients poll; ``poll_seconds`` is how often the page asks for an update. The page
    answers only requests whose ``Host`` is localhost, 127.0.0.1, [::1] or one of
    ``allowed_hosts`` (the configured host and the ``allowed_hosts`` setting); others get 421.
    ``settings``: the settings in force, as ``daemon.settings.describe`` lists them (the
    daemon hands them over; the page imports nothing from the daemon)."""
    root = Path(root).expanduser().resolve()
    hosts = frozenset(h.strip().lower().strip("[]").rstrip(".")
                      for h in (*LOCAL_HOSTS, *allowed_hosts) if h and h.strip())
    db = Path(db_path) if db_path is not None else root / ".facedrop" / "state.db"
    app = Flask(__name__)
    app.config.update(DEBUG=False, TESTING=False, PROPAGATE_EXCEPTIONS=False,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    app.url_map.merge_slashes = False  # "/file//etc/x" is refused, not redirected
    _register_filters(app)
    reader = StatusReader(root, db, ttl=status_ttl, settings=settings)
    losses = reader.losses
    thumbs = ThumbCache()
    app.extensions["facedrop"] = reader

    def file_url(rel: str) -> str:
        return url_for("file", rel=rel)

    def thumb_url(rel: str, size: int = 96) -> str:
        return url_for("thumb", rel=rel, s=size)

    reader.urls = {"file": file_url, "thumb": thumb_url,
                   "chart": lambda name, it: url_for("loss_chart", name=name, i=it)}

    @app.before_request
    def read_only() -> Response | None:
        if not host_allowed(request.headers.get("Host", ""), hosts):
            return Response("421 Misdirected Request: this page answers only to its own host "
                            "name (see allowed_hosts in facedrop.toml)\n", 421,
                            mimetype="text/plain")
        # before routing errors are raised, so unknown paths answer 405 too
        if request.method not in ALLOWED_METHODS:
            resp = Response("405 Method Not Allowed: this page is read-only\n", 405,
                            mimetype="text/plain")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        h = resp.headers
        h.setdefault("Content-Security-Policy", CSP)
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        resp = Response(f"{exc.code} {exc.name}\n", exc.code or 500, mimetype="text/plain")
        if exc.code == 405:
            resp.headers["Allow"] = "GET, HEAD"
        return resp

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Response:
        log.exception("status page error")
        return Response("500 Internal Server Error (see the daemon log)\n", 500,
                        mimetype="text/plain")

    @app.get("/")
    def index() -> Response:
        body = reader.rendered("html", lambda s: render_template(
            "index.html", s=s, poll_ms=int(poll_seconds * 1000)).encode("utf-8"))
        return Response(body, mimetype="text/html")

    @app.get("/api/status")
    def api_status() -> Response:
        body = reader.rendered("json", lambda s: json.dumps(
            s, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        return Response(body, mimetype="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        body = reader.rendered("metrics", lambda s: metrics_text(s).encode("utf-8"))
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/models/<name>/loss.svg")
    def loss_chart(name: str) -> Response:
        folder = resolve_model_dir(root, name)
        if folder is None:
            abort(404)
        svg = charts.loss_svg(losses.get(folder / "loss.csv"), title=name)
        resp = Response(svg, mimetype="image/svg+xml")
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/file/<path:rel>")
    def file(rel: str) -> Response:
        target = resolve_file(root, rel)
        if target is None:
            abort(404)
        try:  # the file checked is the file sent: a FIFO swapped in meanwhile is refused
            fh = safefs.open_regular(target.path)
        except (InputError, OSError):
            abort(404)
        with fh:
            st = os.fstat(fh.fileno())
            resp = send_file(safefs.media_path(fh), mimetype=target.mimetype, conditional=True,
                             download_name=target.path.name, as_attachment=target.attachment,
                             etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
                             last_modified=st.st_mtime)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/thumb/<path:rel>")
    def thumb(rel: str) -> Response:
        target = resolve_file(root, rel, images_only=True)
        if target is None:
            abort(404)
        try:
            size = int(request.args.get("s", "96"))
        except ValueError:
            size = 96
        size = min(THUMB_SIZES, key=lambda s: abs(s - size))
        data = thumbs.get(target.path, size)
        if data is None:
            abort(404)
        resp = Response(data, mimetype="image/jpeg")
        resp.headers["Cache-Control"] = "max-age=60"
        return resp

    return app


def _register_filters(app: Flask) -> None:
    """Formatting for the page; all return plain strings, so Jinja still escapes them."""
    from . import fmt

    for name in ("num", "ago", "clock", "loss", "rate", "speed", "filesize", "jobline",
                 "duration"):
        app.jinja_env.filters[name] = getattr(fmt, name)
