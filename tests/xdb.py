"""A small ip2region xdb file (IPv4, structure 2.0) written for the tests.

The real database (data/ip2region_v4.xdb of the ip2region project, about 11 MB)
is the operator's to install (PORTAL_IP2REGION_XDB): no PyPI package ships it.
The tests write one of a few ranges in the same format, which the real reader
(py-ip2region's searcher) then reads: header (256 bytes), vector index (256 x 256
x 8 bytes: first and last segment of each /16), region strings, then segments
of 14 bytes (start, end, length, pointer; little-endian).
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

HEADER = 256
VECTOR = 256 * 256 * 8
SEGMENT = 14


def write(path: Path, ranges: list[tuple[str, str, str]]) -> Path:
    """``ranges``: (first address, last address, region) each inside one /16, in order."""
    regions: dict[str, int] = {}
    data = bytearray()
    base = HEADER + VECTOR
    for _, _, region in ranges:
        if region not in regions:
            regions[region] = base + len(data)
            data += region.encode()
    segments_at = base + len(data)
    vector = bytearray(VECTOR)
    segments = bytearray()
    for i, (first, last, region) in enumerate(ranges):
        start, end = int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
        if start >> 16 != end >> 16:
            raise ValueError("each range stays inside one /16 here")
        ptr = segments_at + i * SEGMENT
        segments += struct.pack("<IIHI", start, end, len(region.encode()), regions[region])
        slot = (start >> 16) * 8
        first_ptr, _ = struct.unpack_from("<II", vector, slot)
        struct.pack_into("<II", vector, slot, first_ptr or ptr, ptr)
    header = bytearray(HEADER)
    end_ptr = segments_at + (len(ranges) - 1) * SEGMENT
    struct.pack_into("<HHIII", header, 0, 2, 1, 0, segments_at, end_ptr)
    path.write_bytes(bytes(header + vector + data + segments))
    return path
