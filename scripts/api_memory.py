"""Does the API's memory grow with upload size? Uploads ever larger bodies and reads its peak RSS.

Starts ``voicegender api`` alone (SQLite, the filesystem broker, no worker: the
jobs stay queued) on a loopback port in a temporary data directory, then, for
each size, streams one multipart upload of that many bytes (one WAV file, and
one stored zip of the same size) from a generator, so the client holds one
64 KiB block at a time. While each upload runs it samples the API process's
resident memory (``VmRSS``, every 10 ms; the high-water mark ``VmHWM`` is no
use here, start-up already sets it). The registry already holds the model, as
after a deployment's first start (``voicegender models`` adopts it first);
``--empty-registry`` lets the API adopt it itself, which reads the checkpoint
and so imports torch into the API. Prints a table; with ``--json`` one
object. Exits 1 when the most RSS during the largest upload exceeds that during
the smallest by more than ``--max-growth-mb``::

    .venv/bin/python scripts/api_memory.py                    # 16, 256 and 1024 MiB
    .venv/bin/python scripts/api_memory.py --sizes-mb 8 64    # a quick run
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.loadtest import _health, free_port, process, wait_for  # noqa: E402  (after the path)

BLOCK = 64 * 1024
BOUNDARY = "voicegender-api-memory"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 256, 1024], help="upload sizes in MiB, ascending")
    p.add_argument("--max-growth-mb", type=float, default=64.0, help="allowed growth of the peak RSS from the smallest to the largest upload")
    p.add_argument("--empty-registry", action="store_true", help="start the API on an empty registry (it adopts the default model itself, importing torch)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def wav_stream(n_bytes: int) -> Iterator[bytes]:
    """A 16 kHz 16-bit mono WAV of exactly ``n_bytes`` (quiet noise), block by block."""
    data_bytes = n_bytes - 44
    yield b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    yield b"data" + struct.pack("<I", data_bytes)
    block = os.urandom(BLOCK)
    for start in range(0, data_bytes, BLOCK):
        yield block[: min(BLOCK, data_bytes - start)]


def stored_zip_stream(n_bytes: int) -> Iterator[bytes]:
    """A zip holding one stored (uncompressed) WAV of about ``n_bytes``, written block by block."""
    name = b"big.wav"
    size = n_bytes - 200
    blocks = list(wav_stream(size))
    crc = 0
    for b in blocks:
        crc = zlib.crc32(b, crc)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, zipfile.ZIP_STORED, 0, 0, crc, size, size, len(name), 0) + name
    yield local
    yield from blocks
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, zipfile.ZIP_STORED, 0, 0, crc, size, size, len(name), 0, 0, 0, 0, 0, 0) + name
    yield central
    yield struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + size, 0)


def multipart(filename: str, content_type: str, body: Iterator[bytes]) -> Iterator[bytes]:
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\n"
           f"Content-Type: {content_type}\r\n\r\n").encode()
    yield from body
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


class RssSampler(threading.Thread):
    """The largest ``VmRSS`` of ``pid`` seen while the block runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.most_mb, self.stopped = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.most_mb = max(self.most_mb, peak_rss_mb(self.pid)[1])
            self.stopped.wait(0.01)

    def __enter__(self) -> "RssSampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.join()
        self.most_mb = max(self.most_mb, peak_rss_mb(self.pid)[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vg-api-memory-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
        env.update(PYTHONPATH=str(REPO), VOICEGENDER_DATA_DIR=str(tmp / "data"),
                   VOICEGENDER_MAX_UPLOAD_BYTES=str(2 * max(args.sizes_mb) * 1024**2))
        if not args.empty_registry:
            subprocess.run([sys.executable, "-m", "voicegender", "models"], env=env, check=True, capture_output=True, timeout=300)
        with process([sys.executable, "-m", "voicegender", "api", "--port", str(port)], tmp / "api.log", env) as api:
            base = f"http://127.0.0.1:{port}"
            wait_for("the API", lambda: _health(base) is not None, [api], timeout_s=300)
            idle = peak_rss_mb(api.pid)
            for size_mb in args.sizes_mb:
                for kind, name, ctype, stream in (("wav", "big.wav", "audio/wav", wav_stream), ("zip", "big.zip", "application/zip", stored_zip_stream)):
                    started = time.perf_counter()
                    with RssSampler(api.pid) as rss:
                        r = httpx.post(f"{base}/jobs", content=multipart(name, ctype, stream(size_mb * 1024**2)),
                                       headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, timeout=600)
                    if r.status_code != 201:
                        print(f"api_memory: {kind} upload of {size_mb} MiB got {r.status_code}: {r.text[:300]}", file=sys.stderr)
                        return 1
                    rows.append({"kind": kind, "upload_mb": size_mb, "seconds": round(time.perf_counter() - started, 2), "most_rss_mb": round(rss.most_mb, 1)})
                    if not args.json:
                        print(f"{kind:>4} {size_mb:>6} MiB  {rows[-1]['seconds']:>7.2f} s  most RSS during the upload {rss.most_mb:8.1f} MiB", flush=True)
    smallest = max(r["most_rss_mb"] for r in rows if r["upload_mb"] == args.sizes_mb[0])
    largest = max(r["most_rss_mb"] for r in rows if r["upload_mb"] == args.sizes_mb[-1])
    growth = largest - smallest
    result = {"idle_rss_mb": round(idle[1], 1), "startup_peak_rss_mb": round(idle[0], 1), "uploads": rows, "rss_growth_mb": round(growth, 1), "max_growth_mb": args.max_growth_mb}
    print(json.dumps(result) if args.json else
          f"API idle RSS {idle[1]:.1f} MiB (start-up peak {idle[0]:.1f}); RSS during uploads grew {growth:.1f} MiB "
          f"from {args.sizes_mb[0]} to {args.sizes_mb[-1]} MiB uploads (allowed {args.max_growth_mb:.0f})")
    return 0 if growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())
