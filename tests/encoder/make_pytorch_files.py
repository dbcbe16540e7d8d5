#!/usr/bin/env python3
"""Writes hand-made torch.save-format files for the PyTorch reader tests:

    /usr/bin/python3 tests/encoder/make_pytorch_files.py tests/fixtures/encoder/pytorch

Torch itself is not needed: fake `torch` / `torch._utils` modules are put in
sys.modules so that Python's own pickle writes exactly the GLOBALs, persistent
ids and REDUCEs torch.save writes. Some files are valid variations (protocol
4, BUILD with _metadata, nested "state_dict", _rebuild_parameter, dict
instead of OrderedDict); the rest are hostile or broken and must be refused
with the message fragment given in expect.json. Deterministic output.
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


def _storage(name):
    cls = type(name, (), {})
    cls.__module__ = "torch"
    setattr(torch, name, cls)
    return cls


FloatStorage = _storage("FloatStorage")
HalfStorage = _storage("HalfStorage")
LongStorage = _storage("LongStorage")
DoubleStorage = _storage("DoubleStorage")
BoolStorage = _storage("BoolStorage")


def _fn(mod, name):
    def f(*a):
        raise RuntimeError("never called")
    f.__module__, f.__name__, f.__qualname__ = mod.__name__, name, name
    setattr(mod, name, f)
    return f


rebuild_tensor = _fn(utils, "_rebuild_tensor_v2")
rebuild_param = _fn(utils, "_rebuild_parameter")
ESIZE = {FloatStorage: 4, HalfStorage: 2, LongStorage: 8, DoubleStorage: 8, BoolStorage: 1}


class Ref:
    def __init__(self, key, stype, numel):
        self.key, self.stype, self.numel = key, stype, numel


class T:
    def __init__(self, ref, offset, size, stride, param=False):
        self.args = (ref, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        self.param = param

    def __reduce__(self):
        t = (rebuild_tensor, self.args)
        if self.param:
            return (rebuild_param, (_Inner(self.args), False, collections.OrderedDict()))
        return t


class _Inner:
    def __init__(self, args):
        self.args = args

    def __reduce__(self):
        return (rebuild_tensor, self.args)


class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Ref):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


def dumps(obj, proto=2):
    b = io.BytesIO()
    P(b, protocol=proto).dump(obj)
    return b.getvalue()


def zip_bytes(pkl, storages, compress=False, prefix="archive", align=False):
    """align: pad each entry's local header so its data starts at a multiple
    of 64 bytes, as torch.save does (its readers then map tensors in place)."""
    b = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(b, "w", method) as z:
        def put(name, data):  # fixed dates: the output is deterministic
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            if align:
                pad = -(b.tell() + 30 + len(name.encode()) + 4) % 64
                info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            z.writestr(info, data, compress_type=method)
        put(prefix + "/data.pkl", pkl)
        put(prefix + "/byteorder", "little")
        for k, data in storages.items():
            put(prefix + "/data/" + k, data)
        put(prefix + "/version", "3\n")
    return b.getvalue()


def floats(n, scale=1.0):
    return struct.pack(f"<{n}f", *[scale * (i - n / 2) for i in range(n)])


def legacy_bytes(obj, storages):
    """storages: key -> (numel, bytes)."""
    out = io.BytesIO()
    for v in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.Pickler(out, protocol=2).dump(v)
    b = io.BytesIO()

    class LP(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Ref):
                return ("storage", o.stype, o.key, "cpu", o.numel, None)
            return None
    LP(b, protocol=2).dump(obj)
    out.write(b.getvalue())
    pickle.Pickler(out, protocol=2).dump(list(storages))
    for k, (n, data) in storages.items():
        out.write(struct.pack("<q", n) + data)
    return out.getvalue()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/inferd_pwned",))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    expect = {}
    ref = Ref("0", FloatStorage, 12)
    good = collections.OrderedDict([("w", T(ref, 0, (3, 4), (4, 1))),
                                    ("wt", T(ref, 0, (4, 3), (1, 4))),
                                    ("row", T(ref, 8, (4,), (1,)))])
    stor = {"0": floats(12)}

    def put(name, data, ok=None, error=None):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        expect[name] = {"ok": ok} if ok is not None else {"error": error}

    vals = {"w": [i - 6.0 for i in range(12)],
            "wt": [float(r + 4 * c - 6) for r in range(4) for c in range(3)],
            "row": [i - 6.0 for i in range(8, 12)]}
    put("good_proto2.bin", zip_bytes(dumps(good), stor), ok=vals)
    put("good_proto4.bin", zip_bytes(dumps(good, 4), stor, prefix="model"), ok=vals)
    put("good_plain_dict.bin", zip_bytes(dumps(dict(good)), stor), ok=vals)
    nested = {"epoch": 3, "state_dict": good, "lr": 0.5, "name": "x", "flags": [True, None]}
    put("good_nested.bin", zip_bytes(dumps(nested), stor), ok=vals)
    with_meta = collections.OrderedDict(good)
    with_meta._metadata = collections.OrderedDict([("", {"version": 1})])
    put("good_metadata.bin", zip_bytes(dumps(with_meta), stor), ok=vals)
    param = collections.OrderedDict([("w", T(ref, 0, (3, 4), (4, 1), param=True))])
    put("good_parameter.bin", zip_bytes(dumps(param), stor), ok={"w": vals["w"]})
    skipped = collections.OrderedDict(good)
    skipped["mask"] = T(Ref("1", BoolStorage, 4), 0, (4,), (1,))
    put("good_skips_bool.bin", zip_bytes(dumps(skipped), {**stor, "1": b"\1\0\1\0"}), ok=vals)
    other = collections.OrderedDict([("x", T(Ref("7", FloatStorage, 4), 0, (2, 2), (2, 1))),
                                     ("y", T(Ref("7", FloatStorage, 4), 2, (2,), (1,)))])
    put("good_shard_b.bin", zip_bytes(dumps(other), {"7": floats(4)}),
        ok={"x": [-2.0, -1.0, 0.0, 1.0], "y": [0.0, 1.0]})
    put("good_legacy.bin", legacy_bytes(good, {"0": (12, floats(12))}), ok=vals)

    # hostile and broken
    put("evil_os_system.bin", zip_bytes(pickle.dumps(Evil(), protocol=2), {}),
        error="refusing pickle global 'posix.system'")
    put("evil_os_system_proto4.bin", zip_bytes(pickle.dumps(Evil(), protocol=4), {}),
        error="refusing pickle global 'posix.system'")
    evil_in_dict = collections.OrderedDict(good)
    evil_in_dict["x"] = Evil()
    put("evil_inside_state_dict.bin", zip_bytes(dumps(evil_in_dict), stor),
        error="refusing pickle global 'posix.system'")
    put("evil_builtins_eval.bin",
        zip_bytes(b"\x80\x02c__builtin__\neval\nX\x04\x00\x00\x001+1\x85R.", {}),
        error="refusing pickle global '__builtin__.eval'")
    put("evil_legacy.bin", legacy_bytes(Evil(), {}), error="refusing pickle global")
    full = zip_bytes(dumps(good), stor)
    put("truncated_half.bin", full[: len(full) // 2], error="no zip end-of-central-directory")
    put("truncated_tail.bin", full[:-10], error="")
    put("compressed.bin", zip_bytes(dumps(good), {"0": bytes(4096)}, compress=True),
        error="is compressed")
    put("storage_too_small.bin", zip_bytes(dumps(good), {"0": floats(11)}),
        error="holds 44 bytes but data.pkl says 12 elements")
    big = collections.OrderedDict([("w", T(Ref("0", FloatStorage, 12), 0, (4, 4), (4, 1)))])
    put("view_past_storage.bin", zip_bytes(dumps(big), stor), error="reaches element 15")
    off = collections.OrderedDict([("w", T(Ref("0", FloatStorage, 12), 10, (3,), (1,)))])
    put("offset_past_storage.bin", zip_bytes(dumps(off), stor), error="reaches element 12")
    huge = collections.OrderedDict([("w", T(Ref("0", FloatStorage, 12), 0,
                                            (1 << 40, 1 << 40), (1, 1)))])
    put("shape_overflow.bin", zip_bytes(dumps(huge), stor), error="overflow")
    put("missing_storage.bin", zip_bytes(dumps(good), {}), error="missing from the zip")
    clash = collections.OrderedDict([("a", T(Ref("0", FloatStorage, 12), 0, (12,), (1,))),
                                     ("b", T(Ref("0", FloatStorage, 6), 0, (6,), (1,)))])
    put("storage_clash.bin", zip_bytes(dumps(clash), stor), error="declared twice")
    put("not_a_dict.bin", zip_bytes(dumps([1, 2, 3]), {}), error="does not hold a dict")
    put("no_tensors.bin", zip_bytes(dumps({"a": 1}), {}), error="holds no tensors")
    put("memo_huge_index.bin", zip_bytes(b"\x80\x02Nr\xff\xff\xff\x03.", {}),
        error="memo index 67108863 too large")
    put("memo_missing.bin", zip_bytes(b"\x80\x02h\x05.", {}), error="memo entry 5")
    put("stack_underflow.bin", zip_bytes(b"\x80\x02(t0.", {}), error="opcode 0x30")
    put("underflow_setitem.bin", zip_bytes(b"\x80\x02}s.", {}), error="underflow")
    put("newobj.bin", zip_bytes(b"\x80\x02ccollections\nOrderedDict\n)\x81.", {}),
        error="opcode 0x81")
    put("pickle_truncated.bin", zip_bytes(dumps(good)[:-30], stor), error="truncated")
    put("no_pickle.bin", zip_bytes(b"", {}, prefix="a/b"), error="without data.pkl")
    put("garbage.bin", b"GARBAGE" * 10, error="neither a torch.save zip")
    put("legacy_wrong_count.bin", legacy_bytes(good, {"0": (13, floats(12))}),
        error="holds 13 elements")
    put("legacy_truncated.bin", legacy_bytes(good, {"0": (12, floats(12))})[:-5],
        error="truncated")
    deep = b"\x80\x02" + b"]" * 20000 + b"."
    put("deep_stack.bin", zip_bytes(deep, {}), error="stops with")
    with open(os.path.join(out, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)
    print(len(expect), "files")


if __name__ == "__main__":
    main()
