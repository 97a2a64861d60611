"""Which files the status page may serve, decided from the request's path alone and then
checked again after resolving symlinks.

A path from a request is taken apart component by component: no empty, ``.``, ``..`` or
hidden component (that also keeps ``.facedrop/state.db`` out), no backslash or NUL, the first
component one of the allow-listed hot folders, the file type one that folder legitimately
holds. The resolved target must still lie inside the root and pass the same test (so a
symlink in a hot folder that points at ``/etc/passwd`` or at the database is refused).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from werkzeug.security import safe_join

IMAGES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
          ".webp": "image/webp"}
VIDEOS = {".mp4": "video/mp4"}
# what each top folder may serve; other folders (inbox, targets, failed, .facedrop) serve nothing
AREAS: dict[str, dict[str, str]] = {
    "review": {**IMAGES, ".json": "application/json"},
    "approved": {**IMAGES, ".json": "application/json"},
    "models": {**IMAGES, ".csv": "text/csv"},
    "output": {**IMAGES, **VIDEOS, ".json": "application/json"},
}
JSON_NAMES = ("review.json", ".provenance.json", "coverage.json")


@dataclass(frozen=True)
class FileTarget:
    path: Path
    mimetype: str
    attachment: bool


def _parts(rel: str) -> list[str] | None:
    """The components of a relative request path, or None when any of them is suspect."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.startswith(".") or part.startswith("~"):
            return None
    return parts


def _type_for(parts: list[str] | tuple[str, ...]) -> str | None:
    """The MIME type this relative path may be served as, or None if it may not be served."""
    if len(parts) < 2 or parts[0] not in AREAS:
        return None
    name = parts[-1].lower()
    suffix = PurePosixPath(name).suffix
    mimetype = AREAS[parts[0]].get(suffix)
    if mimetype is None:
        return None
    if suffix == ".json" and not name.endswith(JSON_NAMES):
        return None
    if suffix == ".csv" and name != "loss.csv":
        return None
    return mimetype


def resolve_file(root: Path, rel: str, images_only: bool = False) -> FileTarget | None:
    """The file ``rel`` names under ``root`` (already resolved) if it may be served, else None."""
    parts = _parts(rel)
    if parts is None or _type_for(parts) is None:
        return None
    if safe_join(str(root), *parts) is None:
        return None
    try:
        resolved = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    real_parts = resolved.relative_to(root).parts
    if any(p.startswith(".") for p in real_parts):
        return None
    mimetype = _type_for(real_parts)
    if mimetype is None or (images_only and not mimetype.startswith("image/")):
        return None
    return FileTarget(resolved, mimetype, attachment=mimetype == "text/csv")


def resolve_model_dir(root: Path, name: str) -> Path | None:
    """``root/models/<name>`` if ``name`` is one plain folder name that resolves inside it."""
    if _parts(name) is None or "/" in name:
        return None
    models = (root / "models").resolve()
    try:
        folder = (models / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if folder.parent != models or not folder.is_dir():
        return None
    return folder


def rel_url_path(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` in URL form (forward slashes) for building links."""
    return path.relative_to(root).as_posix()
