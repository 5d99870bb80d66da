#!/usr/bin/env python3
"""Worst cases at the edge of every budget: time and peak memory of `vit-convert inspect` and
`convert` on each (release build). Run by hand; the figures go into SECURITY.md.

    cargo build --release && python3 fuzz/measure_budgets.py [OUTDIR [NAME-PART...]]

Writes the files into OUTDIR (default: a temp dir) and prints one line per file. Uses only the
standard library and /usr/bin/time.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "vit-convert")
MiB = 1 << 20

PROTO2 = b"\x80\x02"
STOP = b"."


def binunicode(s: bytes) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s


def torch_zip(pkl: bytes, storages=()) -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for k, d in storages:
            z.writestr(f"archive/data/{k}", d)
        z.writestr("archive/version", b"3\n")
    return buf.getvalue()


def tensor_call(numel=6) -> bytes:
    # _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', numel), 0, (numel,), (1,), False, OrderedDict())
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" +
            b"(" + binunicode(b"storage") + b"ctorch\nFloatStorage\n" + binunicode(b"0") +
            binunicode(b"cpu") + b"J" + struct.pack("<i", numel) + b"tQ" +
            b"J\x00\x00\x00\x00" + b"(J" + struct.pack("<i", numel) + b"t" + b"(J\x01\x00\x00\x00t" +
            b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def mp_str(b: bytes) -> bytes:
    return b"\xdb" + struct.pack(">I", len(b)) + b


def mp_map1(key: bytes, value: bytes) -> bytes:
    return b"\x81" + mp_str(key) + value


def mp_array(shape, dtype: str, data: bytes) -> bytes:
    """A flax ndarray: ext 1 holding (shape, dtype name, bytes)."""
    dims = b"".join(b"\xcf" + struct.pack(">Q", d) for d in shape)
    payload = (b"\x93" + bytes([0x90 | len(shape)]) + dims + mp_str(dtype.encode()) +
               b"\xc6" + struct.pack(">I", len(data)) + data)
    return b"\xc9" + struct.pack(">I", len(payload)) + b"\x01" + payload


def cases():
    six = struct.pack("<6f", *range(6))
    # 1. One string just under the payload and pickle-size budgets.
    yield "payload_250mb.pth", torch_zip(PROTO2 + binunicode(b"a" * (250 * MiB)) + STOP)
    # 2. Two strings over the payload budget.
    yield "payload_over.pth", torch_zip(PROTO2 + b"(" + binunicode(b"a" * (130 * MiB)) * 2 + b"t" + STOP)
    # 3. 128 Mi no-op opcodes (PROTO) filling the pickle budget: pure opcode-loop time.
    yield "opcode_spam.pth", torch_zip(PROTO2 * (128 * MiB - 2) + b"N" + STOP)
    # 4. Nodes: 8 × 512 Ki NONE appended (4 Mi nodes is the budget).
    yield "nodes_4m.pth", torch_zip(PROTO2 + b"]" + (b"(" + b"N" * (512 * 1024) + b"e") * 7 + STOP)
    # 5. Container items near 16 Mi: one memoised empty list referenced 15 Mi times.
    body = PROTO2 + b"]q\x000]" + (b"(" + b"h\x00" * ((1 << 20) - 16) + b"e") * 15 + STOP
    yield "items_15m.pth", torch_zip(body)
    # 6. A dict of 8 Mi entries (16 Mi items) all holding the same empty list.
    body = PROTO2 + b"]q\x000}" + (b"(" + (b"K\x01h\x00") * (512 * 1024 - 16) + b"u") * 15 + STOP
    yield "dict_items.pth", torch_zip(body)
    # 7. 262000 tensors (the tensor budget is 262144), one shared rebuild call under int keys.
    body = PROTO2 + tensor_call() + b"r\x00\x00\x00\x00" + b"0}"
    for c in range(262):
        body += b"(" + b"".join(b"J" + struct.pack("<i", c * 1000 + i) + b"j\x00\x00\x00\x00"
                                for i in range(1000)) + b"u"
    yield "tensors_262k.pth", torch_zip(body + STOP, [("0", six)])
    # 8. Tensor names near the name budget: 60 000 tensors named by 1 KiB keys.
    keys = b"".join(binunicode(b"%08d" % i + b"k" * 1016) + b"j\x00\x00\x00\x00" for i in range(60000))
    body = PROTO2 + tensor_call() + b"r\x00\x00\x00\x00" + b"0}(" + keys + b"u" + STOP
    yield "names_60mb.pth", torch_zip(body, [("0", six)])
    # 9. safetensors: a 100 MB header of 1.6 M small entries.
    entries = {}
    n = 0
    size = 2
    while size < 99_000_000:
        k = "t%07d" % n
        entries[k] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
        size += len(k) + 52
        n += 1
    h = json.dumps(entries, separators=(",", ":")).encode()
    yield "st_entries.safetensors", struct.pack("<Q", len(h)) + h
    # 10. safetensors: one tensor whose shape lists 45 M ones.
    shape = "[" + ",".join(["1"] * 45_000_000) + "]"
    h = ('{"a":{"dtype":"U8","shape":%s,"data_offsets":[0,1]}}' % shape).encode()
    yield "st_shape.safetensors", struct.pack("<Q", len(h)) + h + b"\x00"
    # 11. A torch zip listing 1 Mi (the budget) empty entries.
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", PROTO2 + b"N" + STOP)
        for i in range((1 << 20) - 2):
            z.writestr(f"archive/x{i}", b"")
    yield "zip_1m_entries.pth", buf.getvalue()
    # 12. An npz of 200 000 tiny members.
    buf = io.BytesIO()
    member = b"\x93NUMPY\x01\x00v\x00" + b"{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }".ljust(117) + b"\n" + b"\x00"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(200_000):
            z.writestr(f"m{i}.npy", member)
    yield "npz_200k.npz", buf.getvalue()
    # 13–18. Flax msgpack at the edge of the value, nesting, tensor and name budgets, a 250 MB
    # array, and a 256 MB chunked array (read by concatenation).
    yield "flax_values_1m.msgpack", mp_map1(b"a", b"\xdd" + struct.pack(">I", (1 << 20) - 3) + b"\xc0" * ((1 << 20) - 3))
    deep = b""
    for _ in range(1023):
        deep += b"\x81" + mp_str(b"k")
    yield "flax_nesting_1023.msgpack", deep + mp_array((1,), "uint8", b"\x01")
    n = (1 << 18) - 1
    yield "flax_tensors_256k.msgpack", mp_map1(b"a", b"\xdd" + struct.pack(">I", n) + mp_array((), "uint8", b"\x01") * n)
    yield "flax_names_63mb.msgpack", mp_map1(b"k" * MiB, b"\xdc" + struct.pack(">H", 63) + mp_array((), "uint8", b"\x01") * 63)
    yield "flax_array_250mb.msgpack", mp_map1(b"a", mp_array((250 * MiB,), "uint8", bytes(250 * MiB)))
    chunk = mp_array((1 << 20,), "float32", bytes(4 << 20))
    chunks = b"\xde" + struct.pack(">H", 64) + b"".join(mp_str(str(i).encode()) + chunk for i in range(64))
    yield "flax_chunked_256mb.msgpack", mp_map1(b"w", b"\x83" + mp_str(b"__msgpack_chunked_array__") + b"\xc3" +
                                                 mp_str(b"shape") + b"\x81" + mp_str(b"0") + b"\xce" + struct.pack(">I", 64 << 20) +
                                                 mp_str(b"chunks") + chunks)


def measure(args):
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M", BIN, *args], capture_output=True, text=True)
    secs, kb = r.stderr.strip().splitlines()[-1].split()
    first = r.stderr.strip().splitlines()[0] if len(r.stderr.strip().splitlines()) > 1 else ""
    return r.returncode, float(secs), int(kb) // 1024, first


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="vitc-budgets-")
    os.makedirs(out, exist_ok=True)
    print(f"{'file':24} {'MB':>6}  {'inspect':>22}  {'convert':>22}  first line")
    only = sys.argv[2:]
    for name, data in cases():
        if only and not any(o in name for o in only):
            continue
        path = os.path.join(out, name)
        with open(path, "wb") as f:
            f.write(data)
        del data
        i = measure(["inspect", path])
        c = measure(["--from", "timm", path, "-o", os.path.join(out, "out-" + name)])
        mb = os.path.getsize(path) / MiB
        print(f"{name:24} {mb:6.0f}  exit {i[0]} {i[1]:5.1f}s {i[2]:5d}MiB  "
              f"exit {c[0]} {c[1]:5.1f}s {c[2]:5d}MiB  {i[3][:110]}", flush=True)
        os.remove(path)


if __name__ == "__main__":
    main()
