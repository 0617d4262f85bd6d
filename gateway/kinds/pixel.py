"""``kind = "pixel"``: a 1×1 transparent image that records a ``page_view``.

Pixels are defined once in ``[pixels.<id>]`` (name, value class, package); a pixel
route only says where they are served, e.g. ``/px/{id}.png`` or the ``<img>``-friendly
``/a.png?x-pxid={id}``.  The image is always returned — an unknown id must never break
a page — but only known ids are recorded.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from ..config import Pixel, RouteTable
from ..decisions import Decision, Respond
from ..events import Event
from ..request import Request
from ..templates import PathTemplate
from .base import COMMON_KEYS, Route, RouteContext, TemplatePlacement, compile_path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# 1×1 RGBA, fully transparent: signature, IHDR, IDAT (filter byte + 4 zero bytes), IEND.
TRANSPARENT_PNG = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00", 9))
    + _png_chunk(b"IEND", b"")
)
TRANSPARENT_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = (
    ("cache-control", "no-store, no-cache, must-revalidate, max-age=0"),
    ("pragma", "no-cache"),
    ("expires", "0"),
    ("access-control-allow-origin", "*"),
)
IMAGES = {
    "png": Respond(200, TRANSPARENT_PNG, (("content-type", "image/png"), *_NO_STORE)),
    "gif": Respond(200, TRANSPARENT_GIF, (("content-type", "image/gif"), *_NO_STORE)),
}


@dataclass(eq=False)
class PixelRoute(TemplatePlacement, Route):
    kind = "pixel"
    template: PathTemplate | None = None
    image: Respond = IMAGES["png"]
    pixels: dict[str, Pixel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cacheable = True  # the image never depends on the request

    def target_text(self) -> str:
        return f"(1x1 {self.image.headers[0][1]}, {len(self.pixels)} pixels)"

    def decide(self, request: Request, values: dict[str, str], ctx: RouteContext) -> Decision:
        return self.image

    def make_event(
        self, request: Request, values: dict[str, str], decision: Decision, ctx: RouteContext
    ) -> Event | None:
        pixel = self.pixels.get(values.get("id", ""))
        if pixel is None:
            ctx.count("pixel_unknown_total")
            return None
        event = self.event(request, 200, values)
        event.package = pixel.package or self.package
        event.data = {
            "pixel_id": pixel.id,
            "pixel_name": pixel.name,
            "value_class": pixel.value,
            "page_url": request.header("referer"),
        }
        return event

    def url_for(self, pixel_id: str) -> str:
        """Path (and query) that serves ``pixel_id`` through this route."""
        assert self.template is not None
        return self.template.source.replace("{id}", pixel_id)


class PixelKind:
    name = "pixel"
    keys = COMMON_KEYS | {"path", "format"}
    default_event = "page_view"

    def build(self, table: RouteTable, common: dict) -> Route:
        template = compile_path(table, "/px/{id}.png")
        if "id" not in template.variables:
            raise table.error("path", "a pixel path must capture the pixel id as {id}")
        image = IMAGES[table.choice("format", tuple(IMAGES), "png")]
        return PixelRoute(
            template=template, image=image, pixels=table.shared.get("pixels", {}), **common
        )
