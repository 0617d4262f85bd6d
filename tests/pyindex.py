"""Tiny real Python distributions and a static PEP 503 index serving them (with PEP 658
metadata files), built with the standard library only."""

from __future__ import annotations

import base64
import hashlib
import io
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

from archives import tar_bytes

WHEEL_TEMPLATE = "{name}-{version}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def metadata_text(project: str, version: str) -> str:
    return (
        f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
        "Requires-Python: >=3.8\nSummary: Gatepost test package\n"
    )


def wheel_bytes(project: str, version: str) -> bytes:
    """A pure-Python wheel pip installs: module, METADATA, WHEEL, RECORD."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": metadata_text(project, version).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gatepost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return out.getvalue()


BACKEND = '''
"""An in-tree PEP 517 backend: no build dependencies, so pip needs no index to build."""
import base64, hashlib, io, os, zipfile

PROJECT, VERSION = {project!r}, {version!r}
MODULE = PROJECT.replace("-", "_")
METADATA = {metadata!r}


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    name = f"{{MODULE}}-{{VERSION}}.dist-info"
    os.makedirs(os.path.join(metadata_directory, name))
    with open(os.path.join(metadata_directory, name, "METADATA"), "w") as fh:
        fh.write(METADATA)
    return name


def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist_info = f"{{MODULE}}-{{VERSION}}.dist-info"
    files = {{
        f"{{MODULE}}/__init__.py": f'__version__ = "{{VERSION}}"\\n'.encode(),
        f"{{dist_info}}/METADATA": METADATA.encode(),
        f"{{dist_info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    record = "".join(f"{{p}},{{_hash(d)}},{{len(d)}}\\n" for p, d in files.items()) + f"{{dist_info}}/RECORD,,\\n"
    files[f"{{dist_info}}/RECORD"] = record.encode()
    name = f"{{MODULE}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return name
'''


def sdist_bytes(project: str, version: str) -> bytes:
    module = project.replace("-", "_")
    root = f"{module}-{version}"
    files = {
        f"{root}/PKG-INFO": metadata_text(project, version).encode(),
        f"{root}/pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]
            """
        ).encode(),
        f"{root}/backend.py": BACKEND.format(
            project=project, version=version, metadata=metadata_text(project, version)
        ).encode(),
        f"{root}/{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
    }
    return tar_bytes(files, gzip=True)


@dataclass
class IndexFile:
    project: str
    filename: str
    sha256: str
    metadata_sha256: str | None
    yanked: str | None = None


def build_index(
    root: Path, dists: list[tuple[str, str, str]], yanked: dict[str, str] | None = None
) -> dict[str, IndexFile]:
    """Write ``root/simple/<project>/index.html`` and ``root/files/*`` for
    ``(project, version, "wheel"|"sdist")`` entries; returns files by name."""
    yanked = yanked or {}
    files_dir = root / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[IndexFile]] = {}
    out: dict[str, IndexFile] = {}
    for project, version, kind in dists:
        module = project.replace("-", "_")
        if kind == "wheel":
            filename = WHEEL_TEMPLATE.format(name=module, version=version)
            data = wheel_bytes(project, version)
            meta = metadata_text(project, version).encode()
            (files_dir / f"{filename}.metadata").write_bytes(meta)
            meta_hash: str | None = hashlib.sha256(meta).hexdigest()
        else:
            filename = f"{module}-{version}.tar.gz"
            data = sdist_bytes(project, version)
            meta_hash = None
        (files_dir / filename).write_bytes(data)
        entry = IndexFile(
            project, filename, hashlib.sha256(data).hexdigest(), meta_hash, yanked.get(filename)
        )
        by_project.setdefault(project, []).append(entry)
        out[filename] = entry
    simple = root / "simple"
    simple.mkdir(exist_ok=True)
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>"
        + "".join(f'<a href="{p}/">{p}</a>' for p in sorted(by_project))
        + "</body></html>"
    )
    for project, entries in by_project.items():
        links = []
        for e in entries:
            attrs = (
                f'href="../../files/{e.filename}#sha256={e.sha256}" data-requires-python="&gt;=3.8"'
            )
            if e.metadata_sha256:
                attrs += f' data-dist-info-metadata="sha256={e.metadata_sha256}"'
            if e.yanked is not None:
                attrs += f' data-yanked="{e.yanked}"'
            links.append(f"<a {attrs}>{e.filename}</a><br/>")
        page = simple / project
        page.mkdir(exist_ok=True)
        (page / "index.html").write_text(
            f"<!DOCTYPE html><html><head><title>Links for {project}</title></head><body>"
            + "\n".join(links)
            + "</body></html>"
        )
    return out
