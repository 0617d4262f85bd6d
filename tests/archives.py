"""Reproducible tar archives for test fixtures (image layers, sdists)."""

from __future__ import annotations

import io
import tarfile


def tar_bytes(files: dict[str, bytes], *, gzip: bool = False) -> bytes:
    """A tar (gzipped when asked) of ``files``, with a fixed mtime so digests never change."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gzip else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()
