"""Generated RAW containers (never committed) in the layouts cameras write, with real JPEG
previews and real make/model/date records, sensor data left out (as in the corpus):

- Minolta MRW: "\\0MRM" + PRD, TTW (a big-endian TIFF: IFD0, EXIF, the Minolta maker note with
  PreviewImageStart/Length), WBG and RIF blocks, like a DiMAGE A2's.
- Canon CRW: a CIFF heap with JpgFromRaw and ThumbnailImage records and an ImageProps heap
  holding MakeModel, TimeStamp and ImageInfo, like an EOS 10D's.
- Sigma X3F: a version 2.2 header and a section directory with a JPEG preview (IMA2), the
  sensor data (IMAG, not JPEG) and PROP (CAMMANUF, CAMMODEL, TIME), like an SD10's; `exif=True`
  gives the preview the camera's EXIF, as later models (DP1, DP2) write it.
- Phase One IIQ: a little-endian TIFF with the Phase One maker-note block right after the header
  (where the backs put it) and a JPEG preview in IFD0.
- Kyocera Contax N Digital RAW: the 156-byte header with its strings stored back to front.

exiftool reads each of them as the format meant (tests/test_raw_formats.py checks FileType).
"""

from __future__ import annotations

import io
import random
import struct
from calendar import timegm
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageDraw

ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 2, 3, 4, 5, 7


def picture_jpeg(width: int, height: int, *, seed: int = 0, exif: bytes | None = None,
                 jfif: bool = True) -> bytes:
    """A JPEG with shapes on it (so a decode of the wrong one shows). `jfif=False` leaves out
    Pillow's JFIF segment, as cameras do: the EXIF (if any) or the tables follow SOI."""
    rnd = random.Random(seed)
    im = Image.new("RGB", (width, height), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x0, y0 = rnd.randrange(width), rnd.randrange(height)
        draw.rectangle([x0, y0, x0 + width // 3, y0 + height // 3],
                       fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=80, **({"exif": exif} if exif else {}))
    data = out.getvalue()
    if not jfif and data[2:4] == b"\xff\xe0":
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]
    return data


@dataclass(frozen=True)
class Ref:
    """An entry whose value is already written at `pos` (an IFD that is also an entry's value)."""

    pos: int
    count: int


Value = bytes | str | list[int] | list[tuple[int, int]] | Ref


class TiffWriter:
    """A TIFF written piece by piece; offsets are relative to its header, as in the file."""

    def __init__(self, endian: str, header: bytes | None = None) -> None:
        self.e = endian
        order = b"II" if endian == "<" else b"MM"
        self.buf = bytearray(order + struct.pack(endian + "HI", 42, 0))
        if header:
            self.buf += header

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        pos = len(self.buf)
        self.buf += data
        return pos

    def ifd(self, entries: list[tuple[int, int, Value]], next_ifd: int = 0) -> int:
        """An IFD followed by the values that do not fit in its entries (as cameras lay them out,
        so a maker note's byte range holds its values too)."""
        if len(self.buf) % 2:
            self.buf += b"\0"
        pos = len(self.buf)
        values_at = pos + 2 + 12 * len(entries) + 4
        packed, values = [], bytearray()
        for tag, typ, value in sorted(entries, key=lambda x: x[0]):
            if isinstance(value, Ref):
                packed.append(struct.pack(self.e + "HHII", tag, typ, value.count, value.pos))
                continue
            if isinstance(value, str):
                raw, n = value.encode() + b"\0", len(value) + 1
            elif isinstance(value, bytes):
                raw, n = value, len(value)
            elif typ == RATIONAL:
                raw = b"".join(struct.pack(self.e + "II", a, b) for a, b in value)  # type: ignore[misc]
                n = len(value)
            else:
                fmt = {SHORT: "H", LONG: "I"}[typ]
                raw, n = struct.pack(f"{self.e}{len(value)}{fmt}", *value), len(value)
            if len(raw) <= 4:
                field = raw.ljust(4, b"\0")
            else:
                field = struct.pack(self.e + "I", values_at + len(values))
                values += raw + (b"\0" if len(raw) % 2 else b"")
            packed.append(struct.pack(self.e + "HHI", tag, typ, n) + field)
        self.buf += struct.pack(self.e + "H", len(packed)) + b"".join(packed)
        self.buf += struct.pack(self.e + "I", next_ifd) + values
        return pos

    def first(self, pos: int) -> None:
        struct.pack_into(self.e + "I", self.buf, 4, pos)

    def bytes(self) -> bytes:
        return bytes(self.buf)


def _exif_date(taken: str) -> str:
    return taken.replace("-", ":").replace("T", " ")


# --- Minolta MRW ------------------------------------------------------------------------------


def make_mrw(preview: tuple[int, int] | None = (640, 424), *, make: str = "KONICA MINOLTA",
             model: str = "DiMAGE A2", taken: str = "2004:05:06 07:08:09", orientation: int = 1,
             size: tuple[int, int] = (3264, 2448), bad_first_byte: bool = False,
             thumbnail: tuple[int, int] | None = None) -> bytes:
    ttw = TiffWriter(">")
    note: list[tuple[int, int, Value]] = [(0x0000, UNDEFINED, b"MLT0")]
    if preview is not None:
        jpeg = bytearray(picture_jpeg(*preview, seed=1, jfif=False))
        if bad_first_byte:
            jpeg[0] = 0x00
        at = ttw.blob(bytes(jpeg))
        note += [(0x0088, LONG, [at]), (0x0089, LONG, [len(jpeg)])]
    if thumbnail is not None:
        note.append((0x0081, UNDEFINED, picture_jpeg(*thumbnail, seed=2, jfif=False)))
    note_at = ttw.ifd(note)
    note_len = len(ttw.buf) - note_at
    exif = ttw.ifd([(0x829A, RATIONAL, [(1, 250)]), (0x829D, RATIONAL, [(56, 10)]),
                    (0x9003, ASCII, taken), (0x9004, ASCII, taken),
                    (0x927C, UNDEFINED, Ref(note_at, note_len))])
    ifd0 = ttw.ifd([(0x010F, ASCII, make), (0x0110, ASCII, model), (0x0112, SHORT, [orientation]),
                    (0x0131, ASCII, "1.00"), (0x0132, ASCII, taken), (0x8769, LONG, [exif])])
    ttw.first(ifd0)
    width, height = size
    # PRD: firmware id, sensor and image sizes, raw and bit depth, storage method, Bayer pattern.
    prd = (b"21810002" + struct.pack(">HHHHBBB", height + 24, width + 8, height, width, 12, 12, 0x59)
           + bytes(4) + b"\x01")
    blocks = [(b"\0PRD", prd), (b"\0TTW", ttw.bytes()), (b"\0WBG", bytes([0, 0, 0, 0]) + bytes(8)),
              (b"\0RIF", bytes(92))]
    meta = b"".join(name + struct.pack(">I", len(payload)) + payload for name, payload in blocks)
    return b"\0MRM" + struct.pack(">I", len(meta)) + meta + bytes(4096)   # sensor data left out


# --- Canon CRW (CIFF) -------------------------------------------------------------------------


def ciff_heap(records: list[tuple[int, bytes]], endian: str = "<") -> bytes:
    """A heap: the values, then the directory (count, 10-byte records), then its offset. A
    record whose tag has bit 0x4000 keeps its 8-byte value in the directory."""
    body, entries = bytearray(), []
    for tag, payload in records:
        if tag & 0x4000:
            entries.append(struct.pack(endian + "H", tag) + payload[:8].ljust(8, b"\0"))
            continue
        offset = len(body)
        body += payload + (b"\0" if len(payload) % 2 else b"")
        entries.append(struct.pack(endian + "HII", tag, len(payload), offset))
    directory = len(body)
    return bytes(body) + struct.pack(endian + "H", len(entries)) + b"".join(entries) \
        + struct.pack(endian + "I", directory)


def make_crw(jpg_from_raw: tuple[int, int] | None = (1536, 1024),
             thumbnail: tuple[int, int] | None = (160, 120), *, make: str = "Canon",
             model: str = "Canon EOS 10D", taken: str = "2003:04:05 06:07:08",
             size: tuple[int, int] = (3072, 2048), rotation: int = 0) -> bytes:
    e = "<"
    seconds = timegm(datetime.strptime(taken, "%Y:%m:%d %H:%M:%S").timetuple())
    camera = ciff_heap([(0x080A, make.encode() + b"\0" + model.encode() + b"\0"),
                        (0x0810, b"Owner\0".ljust(32, b"\0"))])
    description = ciff_heap([(0x0805, b"EOS 10D CMOS RAW\0".ljust(32, b"\0")),
                             (0x080B, b"Firmware Version 2.0.0\0")])
    exif_info = ciff_heap([(0x5817, struct.pack(e + "I", 1001234))])   # FileNumber, in the directory
    width, height = size
    props = ciff_heap([
        (0x2804, description), (0x2807, camera), (0x300B, exif_info),
        (0x180E, struct.pack(e + "IiI", seconds, 0, 0)),
        (0x1810, struct.pack(e + "IIfiIII", width, height, 1.0, rotation, 12, 12, 0)),
        (0x1803, struct.pack(e + "If", 0x00020001, 0.0)),
    ])
    root: list[tuple[int, bytes]] = [(0x2005, bytes(2048)), (0x300A, props)]   # RawData stripped
    if jpg_from_raw is not None:
        root.append((0x2007, picture_jpeg(*jpg_from_raw, seed=3)))
    if thumbnail is not None:
        root.append((0x2008, picture_jpeg(*thumbnail, seed=4)))
    header = b"II" + struct.pack(e + "I", 26) + b"HEAPCCDR" + struct.pack(e + "III", 0x00010002, 0, 0)
    return header + ciff_heap(root)


# --- Sigma X3F --------------------------------------------------------------------------------


def x3f_properties(props: dict[str, str]) -> bytes:
    chars: list[int] = []
    table = b""
    for name, value in props.items():
        name_at = len(chars)
        chars += [ord(c) for c in name] + [0]
        value_at = len(chars)
        chars += [ord(c) for c in value] + [0]
        table += struct.pack("<II", name_at, value_at)
    return (b"SECp" + struct.pack("<IIIII", 0x00020000, len(props), 0, 0, len(chars))
            + table + struct.pack(f"<{len(chars)}H", *chars))


def make_x3f(preview: tuple[int, int] | None = (640, 426), *, make: str = "SIGMA",
             model: str = "SIGMA SD10", taken: str = "2005:03:04 12:34:56",
             size: tuple[int, int] = (2268, 1512), rotation: int = 0, exif: bool = False) -> bytes:
    width, height = size
    header = (b"FOVb" + struct.pack("<I", 0x00020002) + bytes(range(16)) + struct.pack("<I", 0)
              + struct.pack("<IIi", width, height, rotation) + b"Auto".ljust(32, b"\0"))
    header += bytes(160)   # version 2.1+ extended header: 32 tag ids, 32 floats
    seconds = timegm(datetime.strptime(taken, "%Y:%m:%d %H:%M:%S").timetuple())
    sections: list[tuple[bytes, bytes]] = []
    if preview is not None:
        blob = None
        if exif:
            tags = Image.Exif()
            tags[0x010F], tags[0x0110] = make, model
            tags.get_ifd(0x8769)[0x9003] = taken
            blob = tags.tobytes()
        jpeg = picture_jpeg(*preview, seed=5, exif=blob, jfif=not exif)
        pw, ph = preview
        sections.append((b"IMA2", b"SECi" + struct.pack("<IIIIII", 0x00020000, 2, 18, pw, ph, 0) + jpeg))
    # The sensor data: type 3 (raw), format 30; not a picture for a thumbnail.
    sections.append((b"IMAG", b"SECi" + struct.pack("<IIIIII", 0x00020000, 3, 30, width, height, 0)
                     + bytes(1024)))
    sections.append((b"PROP", x3f_properties({"AEMODE": "8", "CAMMANUF": make, "CAMMODEL": model,
                                              "TIME": str(seconds), "ISO": "100"})))
    body = bytearray(header)
    directory = b""
    for kind, payload in sections:
        directory += struct.pack("<II4s", len(body), len(payload), kind)
        body += payload
    dir_at = len(body)
    body += b"SECd" + struct.pack("<II", 0x00020000, len(sections)) + directory
    return bytes(body) + struct.pack("<I", dir_at)


# --- Phase One IIQ ----------------------------------------------------------------------------


def phase_one_note(size: tuple[int, int], serial: str = "LF012345") -> bytes:
    """The Phase One maker-note block: "IIII" + "TwaR", the directory offset, then 16-byte
    entries (tag, value size class, size, value or offset from the block's start)."""
    width, height = size
    serial_raw = serial.encode() + b"\0"
    entries = [(0x0100, 4, 4, 0), (0x0102, 1, len(serial_raw), 0), (0x0108, 4, 4, width + 64),
               (0x0109, 4, 4, height + 32), (0x010C, 4, 4, width), (0x010D, 4, 4, height)]
    directory_at = 12
    data_at = directory_at + 8 + 16 * len(entries)
    packed = b""
    for tag, fmt, n, value in entries:
        packed += struct.pack("<IIII", tag, fmt, n, data_at if tag == 0x0102 else value)
    return (b"IIIITwaR" + struct.pack("<I", directory_at) + struct.pack("<II", len(entries), 0)
            + packed + serial_raw)


def make_iiq(preview: tuple[int, int] = (1200, 900), *, make: str = "Phase One",
             model: str = "P 45+", taken: str = "2009:10:11 12:13:14",
             size: tuple[int, int] = (7216, 5412), orientation: int = 1) -> bytes:
    note = phase_one_note(size)
    tw = TiffWriter("<", header=note)   # the block right after the TIFF header, as backs write it
    jpeg = picture_jpeg(*preview, seed=6)
    at = tw.blob(jpeg)
    exif = tw.ifd([(0x9003, ASCII, taken), (0x927C, UNDEFINED, Ref(8, len(note)))])
    ifd0 = tw.ifd([(0x0100, LONG, [size[0]]), (0x0101, LONG, [size[1]]), (0x010F, ASCII, make),
                   (0x0110, ASCII, model), (0x0112, SHORT, [orientation]),
                   (0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)]), (0x8769, LONG, [exif])])
    tw.first(ifd0)
    return tw.bytes() + bytes(2048)


# --- Kyocera ----------------------------------------------------------------------------------


def make_kyocera(*, model: str = "N DIGITAL", taken: str = "2002:11:12 13:14:15") -> bytes:
    head = bytearray(156)

    def put(pos: int, length: int, text: str) -> None:
        raw = text.encode()[::-1]
        head[pos:pos + length] = raw.ljust(length, b"\0")[:length]

    put(0x01, 10, "V1.00")
    put(0x0C, 12, model)
    head[0x19:0x20] = b"ARECOYK"
    put(0x21, 20, taken)
    struct.pack_into(">I", head, 0x34, 13)   # ISO 100
    return bytes(head) + bytes(4096)
