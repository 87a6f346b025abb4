"""Generate the corpus of hostile and broken inputs (issue #8) into a folder; nothing committed.

    .venv/bin/python tests/security/make_corpus.py /tmp/corpus     # writes files, lists cases

Every case says which loader or API call it targets and which fragments a clear message must
contain (any one of them, case-insensitive). Files are made from code in well under a second
(no TensorFlow, no torch.export): byte-level truncation and corruption of small valid files,
hand-written ``.keras`` archives, a real zip bomb, pickles whose payload would create
``marker`` if they were ever unpickled. Argument cases (bad ratios, num_subnet, MACs ranges,
input signatures) are listed too, with a small JSON file recording their arguments.
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import pathlib
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MARKER_NAME = "PWNED_MARKER"
SMALL_LIMIT_MB = 1  # the upload limit (MB) the tests set for the "over the limit" case


@dataclass(frozen=True)
class Case:
    """One bad input: where its bytes are, what it is fed to, what the message must say."""

    name: str
    path: Path
    target: str
    expect: tuple[str, ...]
    upload_name: str = ""
    upload: bool = False
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


class TouchPayload:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: proof that a pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


# -- small valid files to break -----------------------------------------------------------
def _torch_bytes(obj: Any, zip_format: bool = True) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


def _resnet20_state() -> dict:
    """The sample ResNet-20's architecture, seeded (weights do not matter for bad inputs)."""
    import torch

    from uif_explorer.zoo import build_torch

    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_torch("resnet20").state_dict().items()}


def _wrong_arch_state() -> dict:
    import torch

    from uif_explorer.zoo import build_torch

    torch.manual_seed(0)
    return build_torch("vgg_small").state_dict()


def _safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def _flip_middle(data: bytes, span: int = 64) -> bytes:
    """Invert ``span`` bytes in the middle (lengths and headers stay, contents break)."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + span]) + data[mid + span:]


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    members = {}
    for key, arr in arrays.items():
        b = io.BytesIO()
        np.lib.format.write_array(b, arr, allow_pickle=arr.dtype == object)
        members[f"{key}.npy"] = b.getvalue()
    return _zip(members)


def _raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written byte by byte from ``(name, body, crc, size, method)``: what zipfile will
    not write (a deflated body claiming any size) and fast for many members."""
    local, central, offset = [], [], 0
    for member, body, crc, size, method in members:
        name = member.encode()
        head = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(body),
                           size, len(name), 0) + name
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21,
                                   crc, len(body), size, len(name), 0, 0, 0, 0, 0, offset)
                       + name)
        local.append(head + body)
        offset += len(head) + len(body)
    directory = b"".join(central)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory),
                      offset, 0)
    return b"".join(local) + directory + end


def _zip_bomb(member: str, size: int = 96 * 1024**2) -> bytes:
    """A real bomb: ``size`` zero bytes deflated to ~100 kB (ratio ~1000)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1024**2)
    body = b"".join(comp.compress(chunk) for _ in range(size // len(chunk))) + comp.flush()
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    return _raw_zip([(member, body, crc, size, zipfile.ZIP_DEFLATED)])


# -- hand-written .keras archives (no TensorFlow needed) ----------------------------------
def _layer(class_name: str, name: str, config: dict, inbound: str | None,
           module: str = "keras.layers") -> dict:
    nodes = [] if inbound is None else [{"args": [{"class_name": "__keras_tensor__", "config": {
        "shape": [None, 4], "dtype": "float32", "keras_history": [inbound, 0, 0]}}],
        "kwargs": {}}]
    return {"module": module, "class_name": class_name, "config": {"name": name, **config},
            "registered_name": None, "name": name, "inbound_nodes": nodes}


def _keras_config(extra: dict | None = None) -> dict:
    """Input(4) -> Dense 'd'(4) [-> extra layer 'x'], as Keras 3 writes ``config.json``."""
    layers = [
        _layer("InputLayer", "input_layer", {"batch_shape": [None, 4], "dtype": "float32"}, None),
        _layer("Dense", "d", {"units": 4, "activation": "linear", "use_bias": True}, "input_layer"),
    ]
    out = "d"
    if extra is not None:
        layers.append(extra)
        out = extra["name"]
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": "functional", "trainable": True, "layers": layers,
                       "input_layers": ["input_layer", 0, 0], "output_layers": [out, 0, 0]},
            "registered_name": "Functional", "build_config": {"input_shape": None},
            "compile_config": {}}


def _keras_weights(kernel: np.ndarray | None = None) -> bytes:
    import h5py

    kernel = np.eye(4, dtype=np.float32) if kernel is None else kernel
    buf = io.BytesIO()
    with h5py.File(buf, "w", track_order=False) as f:
        f.create_group("vars").attrs["name"] = "functional"
        f.create_group("layers/input_layer/vars").attrs["name"] = "input_layer"
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "d"
        g.create_dataset("0", data=kernel, track_times=False)
        g.create_dataset("1", data=np.zeros(4, np.float32), track_times=False)
    return buf.getvalue()


def _keras_file(config: dict | str, weights: bytes | None = None) -> bytes:
    text = config if isinstance(config, str) else json.dumps(config)
    return _zip({"metadata.json": b'{"keras_version": "3.15.1", "date_saved": "2024-01-01"}',
                 "config.json": text.encode(), "model.weights.h5": weights or _keras_weights()},
                zipfile.ZIP_DEFLATED)


def _lambda_layer(marker: Path) -> dict:
    """A Lambda whose marshalled code touches ``marker`` when the layer is called."""
    fn = eval(f"lambda v: (__import__('pathlib').Path({str(marker)!r}).touch(), v)[1]")  # noqa: S307
    code = base64.encodebytes(marshal.dumps(fn.__code__)).decode()
    return _layer("Lambda", "x", {"function": {"class_name": "__lambda__", "config": {
        "code": code, "defaults": None, "closure": None}}, "arguments": {}}, "d")


def _onnx_bytes() -> bytes:
    """A tiny valid ONNX model (Relu) made with onnx.helper."""
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, producer_name="onnx-uif-corpus",
                              opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _pt2_like() -> bytes:
    """An archive shaped like ``torch.export.save`` output, with garbage inside."""
    return _zip({"model/archive_format": b"pt2", "model/version": b"7",
                 "model/models/model.json": b'{"graph_module": {"graph": {"nodes": [',
                 "model/data/weights/weight_0": bytes(range(256)) * 4})


# -- the corpus ----------------------------------------------------------------------------
STATE_DICT_REFUSED = ("not only tensors", "not unpickled", "trust")
UNREADABLE = ("cannot be read", "truncated", "corrupt", "expected", "not a", "refused",
              "cannot", "could not", "invalid", "unsupported", "damaged")


def build_corpus(folder: str | Path) -> list[Case]:
    """Write every bad input into ``folder`` and return the cases (deterministic for a given
    folder: the payloads embed the marker path; a few seconds, most of it importing torch)."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER_NAME
    cases: list[Case] = []

    def add(name: str, data: bytes, target: str, expect: tuple[str, ...], upload_name: str = "",
            upload: bool = True) -> None:
        path = folder / name
        path.write_bytes(data)
        cases.append(Case(name, path, target, expect, upload_name or name, upload))

    def arg(name: str, target: str, expect: tuple[str, ...], **args: Any) -> None:
        path = folder / f"{name}.args.json"
        path.write_text(json.dumps(args, default=str))
        cases.append(Case(name, path, target, expect, "", False, args))

    state = _resnet20_state()
    sd_zip = _torch_bytes(state)
    sd_legacy = _torch_bytes(state, zip_format=False)
    safet = _safetensors_bytes(state)
    payload = TouchPayload(marker)

    # PyTorch weights ------------------------------------------------------------------
    add("empty.pt", b"", "state_dict", ("empty",))
    add("truncated_state_dict.pt", sd_zip[: len(sd_zip) // 2], "state_dict", UNREADABLE)
    add("corrupt_state_dict.pt", _flip_middle(sd_zip), "state_dict", ("corrupt", "CRC"))
    add("truncated_legacy_state_dict.pt", sd_legacy[: len(sd_legacy) // 3], "state_dict",
        UNREADABLE)
    add("pickle_payload.pt", __import__("pickle").dumps(payload, protocol=4), "state_dict",
        STATE_DICT_REFUSED)
    add("torch_zip_payload.pt", _torch_bytes({"conv1.weight": payload}), "state_dict",
        STATE_DICT_REFUSED)
    add("pickle_payload_module.pt", __import__("pickle").dumps(payload, protocol=4),
        "pickled_module", ("trust",))
    add("corrupt_safetensors.safetensors", safet[:8] + b"{" + b"\x00garbage" * 8 + safet[90:],
        "state_dict", ("corrupt", "expected"))
    add("truncated_safetensors.safetensors", safet[: len(safet) // 2], "state_dict",
        UNREADABLE)
    add("not_a_state_dict.pt", _torch_bytes([torch.ones(3)]), "state_dict",
        ("expected a state dict",))
    add("wrong_architecture.pt", _torch_bytes(_wrong_arch_state()), "apply_state_dict",
        ("do not fit",))
    nan = dict(state)
    nan["conv1.weight"] = nan["conv1.weight"].clone()
    nan["conv1.weight"][0, 0, 0, 0] = float("nan")
    add("nan_weights.pt", _torch_bytes(nan), "apply_state_dict", ("nan or inf",))
    inf = dict(state)
    inf["fc.weight"] = inf["fc.weight"].clone()
    inf["fc.weight"][1, 2] = float("inf")
    add("inf_weights.safetensors", _safetensors_bytes(inf), "apply_state_dict",
        ("nan or inf",))
    add("traversal_name.pt", b"\x00" * 32, "state_dict", ("expected pytorch weights",),
        upload_name="../../../../tmp/evil/../x.pt")
    add("text_as_weights.pt", b"import os\nos.system('touch /tmp/x')\n", "state_dict",
        ("expected pytorch weights",))
    add("zip_bomb_weights.pt", _zip_bomb("archive/data.pkl"), "state_dict",
        ("zip bomb",))
    add("onnx_as_weights.pt", _onnx_bytes(), "state_dict", ("onnx",))
    onnx = _onnx_bytes()
    add("truncated_model.onnx", onnx[: len(onnx) // 2], "state_dict", ("expected",))
    add("corrupt_model.onnx", b"\x08\x07" + _flip_middle(onnx, 16)[2:], "state_dict",
        ("expected",))
    add("pt2_as_weights.pt", _pt2_like(), "state_dict", ("pt2", "expected"))

    # torch.export programs --------------------------------------------------------------
    add("truncated_program.pt2", _pt2_like()[:300], "exported_program", UNREADABLE)
    add("corrupt_program.pt2", _pt2_like(), "exported_program", UNREADABLE)
    add("state_dict_as_program.pt2", sd_zip, "exported_program", UNREADABLE + ("pt2",))

    # Keras -----------------------------------------------------------------------------
    good_keras = _keras_file(_keras_config())
    add("lambda_layer.keras", _keras_file(_keras_config(_lambda_layer(marker))), "keras_config",
        ("lambda",))
    add("custom_layer.keras", _keras_file(_keras_config(_layer(
        "EvilLayer", "x", {}, "d", module="evil_package.layers"))), "keras_config",
        ("evillayer", "not allowed", "unknown", "custom"))
    add("os_system_layer.keras", _keras_file(_keras_config(_layer(
        "system", "x", {}, "d", module="os"))), "keras_config",
        ("system", "not allowed", "unknown", "custom"))
    add("corrupt_config.keras", _keras_file('{"module": "keras.src.models", "class_name": '),
        "keras_config", ("config.json", "json", "corrupt", "cannot", "not"))
    add("truncated_model.keras", good_keras[: len(good_keras) // 2], "keras_model", UNREADABLE)
    add("nan_weights.keras", _keras_file(_keras_config(), _keras_weights(
        np.full((4, 4), np.nan, np.float32))), "keras_model", ("nan or inf",))
    add("zip_bomb.keras", _zip_bomb("config.json"), "keras_model", ("zip bomb", "expected"))
    h5 = b"\x89HDF\r\n\x1a\n" + _keras_weights()[8:]
    add("truncated_model.h5", h5[: len(h5) // 3], "keras_model", UNREADABLE)
    add("corrupt_model.h5", _flip_middle(h5, 512), "keras_model", UNREADABLE)

    # datasets (.npz) ---------------------------------------------------------------------
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8, dtype=np.int64)
    add("wrong_shape.npz", _npz(x=x[:, :, :14], y=y), "npz", ("expected samples of shape",))
    add("labels_out_of_range.npz", _npz(x=x, y=y + 5), "npz", ("expected labels in 0..9",))
    add("negative_labels.npz", _npz(x=x, y=y - 3), "npz", ("expected labels in 0..9",))
    add("nan_images.npz", _npz(x=np.where(x > 2, np.nan, x).astype(np.float32), y=y), "npz",
        ("nan or inf",))
    obj = np.empty(1, dtype=object)
    obj[0] = payload
    add("pickled_objects.npz", _npz(x=obj), "npz", ("pickle",))
    add("no_x.npz", _npz(images=x), "npz", ("named 'x'",))
    npz = _npz(x=x, y=y)
    add("truncated.npz", npz[: len(npz) // 2], "npz", ("expected an .npz",))
    add("zip_bomb.npz", _zip_bomb("x.npy"), "npz", ("zip bomb",))

    # size limit (the tests lower the limit to SMALL_LIMIT_MB) ----------------------------
    over = SMALL_LIMIT_MB * 1024**2 + 1024
    add("over_the_limit.safetensors", (safet * 2)[:over], "upload_size", ("limited to",))

    # zipped workspace folders (names inside must never become paths) -----------------------
    ws = b'{"format_version": 1, "kind": "uif-explorer-workspace"}'
    add("workspace_traversal.zip", _zip({"workspace.json": ws, "../../evil.sens": b"{}"}),
        "workspace_zip", ("outside its folder",))
    add("workspace_absolute.zip", _zip({"workspace.json": ws, "/tmp/evil.sens": b"{}"}),
        "workspace_zip", ("outside its folder",))
    link = zipfile.ZipInfo("link.sens", date_time=(2024, 1, 1, 0, 0, 0))
    link.external_attr = (0o120777 << 16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("workspace.json", ws)
        zf.writestr(link, "/etc/passwd")
    add("workspace_symlink.zip", buf.getvalue(), "workspace_zip", ("symbolic link",))
    add("workspace_with_code.zip", _zip({"workspace.json": ws, "run_me.py": b"import os"}),
        "workspace_zip", ("not a workspace file",))

    # argument cases ----------------------------------------------------------------------
    for value in (-1, 0, 1, 2, "nan"):
        arg(f"removal_ratio_{value}", "removal_ratio", ("removal_ratio",), value=value)
    for value in (0, 10**9):
        arg(f"num_subnet_{value}", "num_subnet", ("num_subnet",), value=value)
    arg("sens_ratio_nan", "sens_ratios", ("ratios",), value="nan")
    arg("macs_range_above", "macs_range", ("no subnet has",), min_macs=1e6, max_macs=2e6)
    arg("macs_range_below", "macs_range", ("no subnet has",), min_macs=0.0, max_macs=1e-6)
    arg("macs_range_inverted", "macs_range", ("min_macs <= max_macs",), min_macs=5.0,
        max_macs=1.0)
    arg("input_signature_channels", "input_signature", ("input signature",),
        shape=[1, 3, 28, 28])
    arg("input_signature_rank", "input_signature", ("input signature",), shape=[28, 28])
    return cases + _image_folder_cases(folder)


def _image_folder_cases(folder: Path) -> list[Case]:
    """Zips of class folders (issue 17) for ``image_folder.extract_image_zip``; not uploads to
    the Model page's existing buttons (``upload=False``). ``args`` may hold ``num_outputs``."""
    support = str(Path(__file__).resolve().parent.parent / "support")
    if support not in sys.path:  # run as a script: tests/support is not on the path
        sys.path.insert(0, support)
    from image_files import class_members, image_bytes, png_claiming, zip_bytes

    from uif_explorer.io.image_folder import MAX_FILES

    cases: list[Case] = []

    def image(name: str, data: bytes, expect: tuple[str, ...], **args: Any) -> None:
        path = folder / name
        path.write_bytes(data)
        cases.append(Case(name, path, "image_folder", expect, name, False, args))

    good = class_members({"cats": 2, "dogs": 2}, size=(16, 12))
    png, jpeg = image_bytes("PNG", (16, 12)), image_bytes("JPEG", (16, 12))
    outside = ("outside its folder",)
    broken = ("truncated or corrupt",)
    image("images_zip_bomb.zip", _zip_bomb("cats/bomb.png"), ("zip bomb",))
    image("images_traversal.zip", zip_bytes({**good, "../../evil.png": png}), outside)
    image("images_backslash_traversal.zip", zip_bytes({**good, "cats\\..\\..\\e.png": png}),
          outside)
    image("images_absolute.zip", zip_bytes({**good, "/tmp/evil/cats/a.png": png}), outside)
    image("images_drive_letter.zip", zip_bytes({**good, "C:/evil/a.png": png}), outside)
    link = zipfile.ZipInfo("cats/link.png", date_time=(2024, 1, 1, 0, 0, 0))
    link.external_attr = 0o120777 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        zf.writestr(link, "/etc/passwd")
    image("images_symlink.zip", buf.getvalue(), ("symbolic link",))
    image("images_nested_archive.zip", zip_bytes({**good, "dogs/more.zip": zip_bytes(good)}),
          ("archive inside",))
    image("images_nested_tar_gz.zip", zip_bytes({**good, "dogs/x.tar.gz": b"\x1f\x8b\x08" * 9}),
          ("archive inside",))
    image("images_only_text.zip", zip_bytes({"cats/a.txt": b"a", "dogs/b.csv": b"b"}),
          ("holds no jpeg, png or webp images",))
    image("images_empty.zip", zip_bytes({}), ("holds no jpeg, png or webp images",))
    image("images_truncated_png.zip", zip_bytes({**good, "cats/t.png": png[: len(png) // 2]}),
          broken)
    image("images_truncated_jpeg.zip", zip_bytes({**good, "dogs/t.jpg": jpeg[: len(jpeg) // 2]}),
          broken)
    image("images_corrupt_png.zip", zip_bytes({**good, "cats/c.png": _flip_middle(png, 24)}),
          broken)
    image("images_text_named_jpeg.zip", zip_bytes({**good, "cats/x.jpg": b"not an image"}),
          broken)
    image("images_empty_class_folder.zip", zip_bytes(good, dirs=("fish",)),
          ("class folder 'fish'",))
    image("images_class_of_text.zip", zip_bytes({**good, "fish/readme.txt": b"x"}),
          ("class folder 'fish'",))
    image("images_single_class.zip", zip_bytes({k: v for k, v in good.items()
                                                if k.startswith("cats/")}), ("single class",))
    image("images_pixel_bomb.zip", zip_bytes({**good, "cats/big.png": png_claiming(20000, 20000)}),
          ("decompression bomb",))
    image("images_pixel_warning.zip", zip_bytes({**good, "cats/big.png": png_claiming(10000,
                                                                                     10000)}),
          ("decompression bomb",))
    image("images_at_root.zip", zip_bytes({**good, "stray.png": png}), ("not in a class folder",))
    image("images_not_a_zip.zip", b"cats/a.png\ndogs/b.png\n", ("not a zip",))
    archive = zip_bytes(good, method=zipfile.ZIP_STORED)
    image("images_truncated_zip.zip", archive[: len(archive) // 2], ("not a readable archive",))
    image("images_crc_mismatch.zip", _flip_middle(archive, 16), ("corrupt", "crc"))
    image("images_too_deep.zip", zip_bytes({**good, "cats/" + "d/" * 9 + "a.png": png}),
          ("nested more than",))
    image("images_control_char_class.zip", zip_bytes({**good, "ca\x07ts/a.png": png}),
          ("control characters",))
    image("images_too_many_files.zip", _raw_zip([(f"c{i % 2}/{i}.txt", b"", 0, 0, 0)
                                                 for i in range(MAX_FILES + 1)]),
          (f"the limit is {MAX_FILES}",))
    image("images_wrong_class_count.zip", zip_bytes(good), ("expected 10 class folders",),
          num_outputs=10)
    return cases


def nan_or(value: Any) -> Any:
    """The argument value a case means (``"nan"`` -> float NaN)."""
    return float("nan") if value == "nan" else value


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for case in build_corpus(out):
        print(f"{case.name:40s} {case.target:18s} {case.path.stat().st_size:>10,d} B")
