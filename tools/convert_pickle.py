"""mdi-convert's helper for pickle-based checkpoints (needs torch): turns a nanoGPT ckpt.pt (+ meta.pkl)
or a Hugging Face pytorch_model.bin into OUT/model.safetensors (the state dict as it is, names and
layout untouched) + OUT/info.json (nanoGPT: model_args and the char vocabulary), which the C++ tool
then converts, so every HDF5 file is written by one C++ path. Exit status: 0 ok, 2 bad input,
3 torch missing. Also home of write_safetensors(), used by tools/make_hf_fixture.py.
    python3 tools/convert_pickle.py nanogpt ckpt.pt [--meta meta.pkl] --out DIR
    python3 tools/convert_pickle.py hf-bin pytorch_model.bin --out DIR
"""
import argparse
import json
import os
import pickle
import struct
import sys

try:
    import torch
except ImportError:
    torch = None

ST_DTYPES = {}  # torch dtype -> safetensors dtype, filled when torch is there
if torch is not None:
    ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                 torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
                 torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


class BadInput(Exception):
    pass


def _raw(t):
    """The little-endian bytes of tensor t, row-major."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> torch tensor (any dtype in ST_DTYPES). Tensors that share storage (tied
    weights) are written twice, as safetensors has no aliasing."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        if t.dtype not in ST_DTYPES:
            raise BadInput(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        b = _raw(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def _load(path):
    """torch.load, first without running pickled code (weights_only); torch 1.13's restricted
    unpickler refuses plain floats, which nanoGPT's ckpt.pt holds (its config), so then a full
    load follows, with a warning: convert only checkpoints you trust, as nanoGPT itself loads them."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only
        pass
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        if not os.path.isfile(path):
            raise BadInput(f"{path}: no such file") from None
        print(f"convert_pickle.py: note: torch's weights_only loader refused {path} "
              f"({type(e).__name__}); loading it in full: convert only files you trust", file=sys.stderr)
    try:
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{path}: torch.load failed: {e}") from None


def _state_dict(sd, path):
    if not isinstance(sd, dict) or not sd:
        raise BadInput(f"{path}: expected a state dict (name -> tensor)")
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise BadInput(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out


def char_vocab(meta_path):
    """nanoGPT's meta.pkl -> the characters in id order (itos)."""
    with open(meta_path, "rb") as f:
        meta = pickle.load(f)
    if not isinstance(meta, dict) or "itos" not in meta:
        raise BadInput(f"{meta_path}: expected nanoGPT's meta.pkl (a dict with itos/stoi)")
    itos = meta["itos"]
    n = len(itos)
    if sorted(itos) != list(range(n)):
        raise BadInput(f"{meta_path}: itos must map ids 0..{n - 1}")
    vocab = [itos[i] for i in range(n)]
    for i, ch in enumerate(vocab):
        if not isinstance(ch, str) or len(ch) != 1:
            raise BadInput(f"{meta_path}: token {i} is {ch!r}, not one character "
                           "(only char-level meta.pkl is supported)")
    stoi = meta.get("stoi")
    if stoi is not None and any(stoi.get(ch) != i for i, ch in enumerate(vocab)):
        raise BadInput(f"{meta_path}: stoi and itos disagree")
    return vocab


def nanogpt(ckpt_path, meta_path, out):
    ck = _load(ckpt_path)
    if not isinstance(ck, dict) or "model" not in ck or "model_args" not in ck:
        raise BadInput(f"{ckpt_path}: not a nanoGPT checkpoint (needs 'model' and 'model_args')")
    args = {k: (v if isinstance(v, (bool, int, float, str)) or v is None else str(v))
            for k, v in dict(ck["model_args"]).items()}
    info = {"model_args": args, "tokenizer": None}
    if meta_path:
        info["tokenizer"] = {"type": "char", "vocab": char_vocab(meta_path)}
    write_safetensors(os.path.join(out, "model.safetensors"), _state_dict(ck["model"], ckpt_path))
    with open(os.path.join(out, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False)


def hf_bin(bin_path, out):
    write_safetensors(os.path.join(out, "model.safetensors"), _state_dict(_load(bin_path), bin_path))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("nanogpt")
    a1.add_argument("ckpt")
    a1.add_argument("--meta")
    a1.add_argument("--out", required=True)
    a2 = sub.add_parser("hf-bin")
    a2.add_argument("bin")
    a2.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if torch is None:
        print(f"convert_pickle.py: {sys.executable} has no torch (pip install torch)", file=sys.stderr)
        sys.exit(3)
    try:
        if a.cmd == "nanogpt":
            nanogpt(a.ckpt, a.meta, a.out)
        else:
            hf_bin(a.bin, a.out)
    except (BadInput, OSError, pickle.UnpicklingError, EOFError) as e:
        print(f"convert_pickle.py: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
