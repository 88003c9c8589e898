"""The mdi-llm HDF5 weight file (schema in DESIGN.md, "The weight file"): writer, reader, shapes.
numpy + h5py only, so converters, fixture makers and benchmark tools can share it without torch.
Tensor names are the DESIGN names without the leading slash ("wte", "h/0/attn/c_attn/weight").
Dims: L n_layer, NH n_head, C n_embd, T block_size, V vocab_size.
"""
import os

import h5py
import numpy as np

FORMAT = "mdi-llm"
FORMAT_VERSION = 1
MODEL_TYPES = ("gpt2", "nanogpt")
DTYPES = {"float32": np.float32, "float16": np.float16}
INT_ATTRS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def check_config(cfg):
    """Validates a config dict; returns a normalised copy (ints, bool bias, tied_lm_head default True)."""
    c = dict(cfg)
    if c.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {c.get('model_type')!r}")
    for k in INT_ATTRS:
        if k not in c:
            raise ValueError(f"config is missing {k!r}")
        v = c[k]
        if isinstance(v, bool) or int(v) != v or int(v) <= 0:
            raise ValueError(f"config {k} must be a positive integer, got {v!r}")
        c[k] = int(v)
    if c["n_embd"] % c["n_head"]:
        raise ValueError(f"n_embd = {c['n_embd']} is not a multiple of n_head = {c['n_head']}")
    c["bias"] = bool(c.get("bias", True))
    c["layer_norm_eps"] = float(c.get("layer_norm_eps", 1e-5))
    if not c["layer_norm_eps"] > 0:
        raise ValueError(f"layer_norm_eps must be > 0, got {c['layer_norm_eps']}")
    c["tied_lm_head"] = bool(c.get("tied_lm_head", True))
    return c


def layer_shapes(cfg, i):
    """(name, shape) of layer i's tensors, in file order; no bias entries when cfg bias is false."""
    C, b = cfg["n_embd"], cfg["bias"]
    p = f"h/{i}/"
    out = []
    for name, w, bshape in (("ln_1", (C,), (C,)),
                            ("attn/c_attn", (3 * C, C), (3 * C,)),
                            ("attn/c_proj", (C, C), (C,)),
                            ("ln_2", (C,), (C,)),
                            ("mlp/c_fc", (4 * C, C), (4 * C,)),
                            ("mlp/c_proj", (C, 4 * C), (C,))):
        out.append((p + name + "/weight", w))
        if b:
            out.append((p + name + "/bias", bshape))
    return out


def head_shapes(cfg):
    """(name, shape) of the tensors only rank 0 holds: embeddings, ln_f, untied lm_head."""
    C, V, T = cfg["n_embd"], cfg["vocab_size"], cfg["block_size"]
    out = [("wte", (V, C)), ("wpe", (T, C)), ("ln_f/weight", (C,))]
    if cfg["bias"]:
        out.append(("ln_f/bias", (C,)))
    if not cfg["tied_lm_head"]:
        out.append(("lm_head/weight", (V, C)))
    return out


def tensor_shapes(cfg):
    """Every tensor the file must hold, name -> shape, in file order (head first, then layers)."""
    cfg = check_config(cfg)
    out = dict(head_shapes(cfg))
    for i in range(cfg["n_layer"]):
        out.update(layer_shapes(cfg, i))
    return out


def char_vocab(text):
    """nanoGPT prepare.py's vocabulary: the sorted distinct characters (code points) of text."""
    return sorted(set(text))


# ---- HDF5 objects: 1.8 file format (compact groups; the 1.6 default costs ~1 KB per group),
# readable by every HDF5 >= 1.8, and no timestamps, so the same content gives the same bytes.

def create_file(path):
    """Creates (truncates) path for writing; returns an h5py.File."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V18, h5py.h5f.LIBVER_V18)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def require_group(f, path):
    """The group at path ("h/0/attn"), creating missing components without timestamps."""
    g = f
    for part in [p for p in path.split("/") if p]:
        if part not in g:
            gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
            gcpl.set_obj_track_times(False)
            h5py.h5g.create(g.id, part.encode(), gcpl=gcpl)
        g = g[part]
    return g


def create_dataset(f, name, data):
    """Contiguous dataset (no chunks, no filters) at name, parent groups created as needed."""
    parent, _, leaf = name.rpartition("/")
    g = require_group(f, parent) if parent else f
    return g.create_dataset(leaf, data=np.ascontiguousarray(data), track_times=False)


def _token_bytes(tok):
    return tok if isinstance(tok, (bytes, bytearray)) else str(tok).encode("utf-8")


def _check_tokenizer(tok, V):
    if tok.get("type") not in ("char", "gpt2-bpe", "bpe"):
        raise ValueError(f"tokenizer type must be char, gpt2-bpe or bpe, got {tok.get('type')!r}")
    vocab = list(tok["vocab"])
    if len(vocab) > V:
        raise ValueError(f"tokenizer has {len(vocab)} tokens but vocab_size is {V}")
    if tok["type"] == "char":
        for i, t in enumerate(vocab):
            if not isinstance(t, str) or len(t) != 1:
                raise ValueError(f"char tokenizer: token {i} must be one character, got {t!r}")
    if len(set(_token_bytes(t) for t in vocab)) != len(vocab):
        raise ValueError("tokenizer vocabulary has duplicate tokens")
    eot = int(tok.get("eot_token", -1))
    if eot < -1 or eot >= len(vocab):
        raise ValueError(f"eot_token {eot} is not -1 or a token id below {len(vocab)}")
    return vocab, eot


class ModelWriter:
    """Streams one model file: put() tensors one at a time in any order, close() checks all arrived.
    Usable as a context manager; on an exception the partial file is removed."""

    def __init__(self, path, cfg, tokenizer, dtype="float32"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        self.cfg = check_config(cfg)
        self.dtype = DTYPES[dtype]
        self.expected = tensor_shapes(self.cfg)
        self.written = set()
        vocab, eot = _check_tokenizer(tokenizer, self.cfg["vocab_size"])
        self.path = path
        self.f = create_file(path)
        a = self.f.attrs
        a["format"] = FORMAT
        a["format_version"] = np.int64(FORMAT_VERSION)
        a["model_type"] = self.cfg["model_type"]
        for k in INT_ATTRS:
            a[k] = np.int64(self.cfg[k])
        a["bias"] = np.int64(1 if self.cfg["bias"] else 0)
        a["layer_norm_eps"] = np.float64(self.cfg["layer_norm_eps"])
        g = require_group(self.f, "tokenizer")
        g.attrs["type"] = tokenizer["type"]
        g.attrs["eot_token"] = np.int64(eot)
        pieces = [_token_bytes(t) for t in vocab]
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in pieces], dtype=np.int64)
        create_dataset(g, "vocab", np.frombuffer(b"".join(pieces), dtype=np.uint8))
        create_dataset(g, "offsets", offsets)
        # Extra data a non-char tokenizer needs (e.g. merges): any numpy array in the dict.
        for k, v in tokenizer.items():
            if k not in ("type", "vocab", "eot_token") and isinstance(v, np.ndarray):
                create_dataset(g, k, v)

    def put(self, name, arr):
        if name not in self.expected:
            raise ValueError(f"unexpected tensor {name!r} for this config "
                             f"(bias={int(self.cfg['bias'])}, tied_lm_head={self.cfg['tied_lm_head']})")
        if name in self.written:
            raise ValueError(f"tensor {name!r} written twice")
        arr = np.asarray(arr)
        want = self.expected[name]
        if tuple(arr.shape) != want:
            raise ValueError(f"tensor {name}: expected shape {want}, got {tuple(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"tensor {name}: expected floating-point values, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"tensor {name}: has non-finite values")
        with np.errstate(over="ignore"):
            data = arr.astype(self.dtype, copy=False)
        if self.dtype == np.float16 and not np.all(np.isfinite(data)):
            raise ValueError(f"tensor {name}: overflows float16")
        create_dataset(self.f, name, data)
        self.written.add(name)

    def close(self):
        missing = [n for n in self.expected if n not in self.written]
        self.f.close()
        if missing:
            raise ValueError(f"{self.path}: tensors never written: {', '.join(missing[:5])}"
                             + (" ..." if len(missing) > 5 else ""))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.f.close()
            os.remove(self.path)


def write_model(path, cfg, tensors, tokenizer, dtype="float32"):
    """Writes a whole model from a dict of numpy arrays. The lm_head is untied exactly when
    tensors holds "lm_head/weight" (cfg's tied_lm_head, if given, must agree)."""
    cfg = dict(cfg)
    untied = "lm_head/weight" in tensors
    if "tied_lm_head" in cfg and bool(cfg["tied_lm_head"]) == untied:
        raise ValueError(f"cfg tied_lm_head={cfg['tied_lm_head']} but lm_head/weight is "
                         f"{'present' if untied else 'absent'}")
    cfg["tied_lm_head"] = not untied
    expected = tensor_shapes(cfg)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(f"unexpected tensors for this config: {', '.join(extra)}")
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ValueError(f"missing tensors: {', '.join(missing)}")
    for n, shape in expected.items():  # check every shape before creating the file
        if tuple(np.shape(tensors[n])) != shape:
            raise ValueError(f"tensor {n}: expected shape {shape}, got {tuple(np.shape(tensors[n]))}")
    with ModelWriter(path, cfg, tokenizer, dtype) as w:
        for n in expected:
            w.put(n, tensors[n])


def _str(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_tokenizer(f):
    g = f["tokenizer"]
    vocab_bytes = g["vocab"][()].tobytes()
    offsets = g["offsets"][()]
    pieces = [vocab_bytes[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    tok = {"type": _str(g.attrs["type"]), "eot_token": int(g.attrs["eot_token"])}
    if tok["type"] == "char":
        tok["vocab"] = [p.decode("utf-8") for p in pieces]
    else:
        tok["vocab"] = pieces
    for k in g:
        if k not in ("vocab", "offsets"):
            tok[k] = g[k][()]
    return tok


def read_model(path):
    """Returns (cfg, tensors as float32 numpy, tokenizer dict); checks format, names and shapes."""
    with h5py.File(path, "r") as f:
        a = f.attrs
        if _str(a.get("format", "")) != FORMAT:
            raise ValueError(f"{path}: format attribute is {a.get('format')!r}, not {FORMAT!r}")
        if int(a["format_version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {int(a['format_version'])} is not {FORMAT_VERSION}")
        cfg = {"model_type": _str(a["model_type"])}
        for k in INT_ATTRS:
            cfg[k] = int(a[k])
        cfg["bias"] = bool(int(a["bias"]))
        cfg["layer_norm_eps"] = float(a["layer_norm_eps"])
        cfg["tied_lm_head"] = "lm_head" not in f
        cfg = check_config(cfg)
        tensors = {}
        for n, shape in tensor_shapes(cfg).items():
            if n not in f:
                raise ValueError(f"{path}: dataset /{n} is missing")
            d = f[n]
            if d.shape != shape:
                raise ValueError(f"{path}: dataset /{n}: expected shape {shape}, got {d.shape}")
            tensors[n] = d[()].astype(np.float32)
        tok = read_tokenizer(f)
    return cfg, tensors, tok


# ---- random weights (shared by gpt_ref.random_tensors and tools/make_random_model.py) ----

def random_tensor(name, shape, rng, std=0.02):
    """GPT-2-like init that still exercises every parameter: matrices and embeddings ~ std*randn,
    LayerNorm weights ~ 1 + 0.1*randn, every bias ~ std*randn. float32."""
    x = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("/weight") and len(shape) == 1:  # LayerNorm gain
        x *= np.float32(0.1)
        x += np.float32(1.0)
    else:
        x *= np.float32(std)
    return x


def iter_random_tensors(cfg, seed, std=0.02):
    """Yields (name, array) in file order, one tensor at a time (so huge models stream)."""
    rng = np.random.default_rng(seed)
    for n, shape in tensor_shapes(cfg).items():
        yield n, random_tensor(n, shape, rng, std)


def char_tokens(V):
    """V distinct characters for a synthetic char vocabulary: code points from 32 upward, skipping
    C1 controls and DEL (127-159), surrogates and Unicode non-characters. The first 95 are the
    printable ASCII characters, so ordinary English prompts encode."""
    out = []
    cp = 32
    while len(out) < V:
        if cp > 0x10FFFF:
            raise ValueError(f"cannot make {V} distinct characters")
        skip = (127 <= cp <= 159 or 0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF
                or (cp & 0xFFFE) == 0xFFFE)
        if not skip:
            out.append(chr(cp))
        cp += 1
    return out
