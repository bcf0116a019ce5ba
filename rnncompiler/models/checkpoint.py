"""Saving and loading, as `.npz` files with one array per path and no pickles:

- `save(path, tree)` / `load(path, like=None)`: any tree of arrays (parameters, optimizer
  state);
- `save(model, path, params, optimizer=None)` / `load(path)`: a whole model — its
  architecture, parameters and optimizer state in one file, rebuilt by `load`. The
  architecture is a JSON text in the entry "__rnnc__": the model's constructor arguments,
  each cell as an import reference ("module:name") with a hash of what it computes, the
  optimizer's class and arguments. Loading imports the cells again; nothing else is
  executed.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from typing import NamedTuple

import numpy as np

from .tree import check_like, flatten, unflatten

MODEL_ENTRY = "__rnnc__"      # the npz entry holding a whole model's JSON description
FORMAT = 1


class SavedModel(NamedTuple):
    """What `load` returns for a file written by `save(model, path, params, ...)`."""
    model: object
    params: dict
    optimizer: object = None


def save(target, path, params=None, *, optimizer=None):
    """`save(path, tree)` writes a tree of arrays; `save(model, path, params,
    optimizer=None)` writes a whole model (see the module text). Atomic: a crash leaves
    the old file or the new one, never half of one."""
    if isinstance(target, (str, os.PathLike)):
        if params is not None or optimizer is not None:
            raise TypeError("save(path, tree) writes a tree of arrays; a whole model is "
                            "save(model, path, params, optimizer=None)")
        tree = path                                  # save(path, tree)
        return _write(target, _numeric(flatten(tree), "tree"))
    if getattr(target, "config", None) is None or type(target).__name__ not in _model_classes():
        raise TypeError("save: expected save(path, tree) or save(model, path, params, "
                        "optimizer=None) with an rm.SequenceModel, rm.RNN or rm.Seq2Seq, "
                        "got %s first" % type(target).__name__)
    if params is None:
        raise TypeError("params: the model's parameters live in their own tree (from "
                        "model.init()); pass them: rm.save(model, path, params)")
    return _write(path, _model_entries(target, params, optimizer))


def load(path, like=None, *, cells=None):
    """What `save` wrote at `path`: a tree, or for a whole model a `SavedModel(model,
    params, optimizer)` (optimizer None if none was saved). For a tree, `like` (e.g.
    `model.init()`) checks every path and shape and casts to its dtypes, so a checkpoint
    of another model is refused with the first difference named. `cells` ({name: cell})
    supplies cells that cannot be imported where the file is loaded (defined in a script
    or a function)."""
    with np.load(path, allow_pickle=False) as data:
        flat = {k: data[k] for k in data.files}
    where = "load(%r)" % os.fspath(path)
    if MODEL_ENTRY in flat:
        if like is not None:
            raise TypeError("like: %s holds a whole model, checked against its own "
                            "architecture; call load(path) without like" % where)
        return _load_model(where, flat, cells or {})
    tree = unflatten(flat)
    return tree if like is None else _cast_like(where, tree, like)


# ---------------------------------------------------------------- files

def _numeric(flat, what):
    """flat arrays, refusing object arrays (np.load could not read them back)."""
    flat = {k: np.asarray(v) for k, v in flat.items()}
    for k, v in flat.items():
        if v.dtype == object:
            raise TypeError("%s[%r]: expected a numeric array, got objects" % (what, k))
    return flat


def _write(path, flat):
    """Write the npz atomically (a temporary file renamed over `path`)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".save-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cast_like(where, tree, like):
    """tree checked against like's paths and shapes, in like's dtypes."""
    check_like(where, tree, like)
    ref = flatten(like)
    return unflatten({k: np.asarray(v, dtype=np.asarray(ref[k]).dtype)
                      for k, v in flatten(tree).items()})


def _model_classes():
    from .model import SequenceModel
    from .rnn import RNN
    from .seq2seq import Seq2Seq
    return {"SequenceModel": SequenceModel, "RNN": RNN, "Seq2Seq": Seq2Seq}


# ---------------------------------------------------------------- whole models: writing

def _model_entries(model, params, optimizer):
    """The npz entries of a whole model: params/..., optimizer/... and the JSON header."""
    check_like("params", params, model.init(seed=0))
    header = {"format": FORMAT, "class": type(model).__name__,
              "config": _encode(model.config), "optimizer": None}
    flat = {"params/" + k: v for k, v in _numeric(flatten(params), "params").items()}
    if optimizer is not None:
        header["optimizer"] = _optimizer_header(optimizer)
        state = _numeric(flatten(optimizer.state_dict()), "optimizer")
        flat.update({"optimizer/" + k: v for k, v in state.items()})
    flat[MODEL_ENTRY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return flat


def _encode(value):
    """A model's constructor arguments as JSON values, each cell as a reference."""
    from ..compiler.dsl import Cell
    if isinstance(value, Cell):
        return {"cell": _cell_reference(value), "name": value.name,
                "fingerprint": _cell_hash(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _cell_reference(cell):
    """"module:name" where the cell can be imported from: the cells library's name for it,
    else the module and qualified name of its function."""
    from .. import cells as library
    for name, value in vars(library).items():
        if value is cell:
            return "rnncompiler.cells:" + name
    fn = cell.fn
    return "%s:%s" % (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", cell.name))


def _cell_hash(cell):
    """A hash of what the cell computes (its traced graph), to notice a changed cell."""
    from ..compiler.pipeline import fingerprint
    return hashlib.sha256(fingerprint(cell.spec).encode()).hexdigest()[:16]


def _optimizer_header(opt):
    """The optimizer's class reference and constructor arguments, as JSON."""
    args, kwargs = getattr(opt, "_arguments", ((), {}))
    if any(callable(a) for a in list(args) + list(kwargs.values())):
        raise TypeError("optimizer: its learning rate is a schedule (a function), which a "
                        "file cannot hold; save a constant-rate optimizer, or save "
                        "opt.state_dict() with rm.save(path, tree) and rebuild the optimizer "
                        "with its schedule")
    cls = type(opt)
    return {"class": "%s:%s" % (cls.__module__, cls.__qualname__),
            "args": _encode(list(args)), "kwargs": _encode(kwargs)}


# ---------------------------------------------------------------- whole models: reading

def _load_model(where, flat, cells):
    header = json.loads(bytes(flat.pop(MODEL_ENTRY)).decode())
    if header.get("format") != FORMAT or header.get("class") not in _model_classes():
        raise ValueError("%s: not a model file this version reads (format %r, class %r)"
                         % (where, header.get("format"), header.get("class")))
    config = _decode(where, header["config"], cells)
    model = _model_classes()[header["class"]](**config)
    params = _cast_like(where, _section(flat, "params/"), model.init(seed=0))
    optimizer = None
    if header.get("optimizer"):
        optimizer = _rebuild_optimizer(where, header["optimizer"])
        optimizer.load_state_dict(_section(flat, "optimizer/"))
    return SavedModel(model, params, optimizer)


def _section(flat, prefix):
    """The tree of the entries under `prefix`."""
    return unflatten({k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)})


def _decode(where, value, cells):
    """The constructor arguments back from JSON, each cell imported (or taken from
    `cells`) and checked to compute what the saved one did."""
    if isinstance(value, dict) and set(value) == {"cell", "name", "fingerprint"}:
        return _resolve_cell(where, value, cells)
    if isinstance(value, dict):
        return {k: _decode(where, v, cells) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(where, v, cells) for v in value]
    return value


def _resolve_cell(where, saved, cells):
    from ..compiler.dsl import Cell
    name, ref = saved["name"], saved["cell"]
    cell = cells.get(name, cells.get(ref))
    if cell is None:
        try:
            cell = _import(ref)
        except (ImportError, AttributeError) as e:
            raise ImportError(
                "%s: the cell %r was saved as a reference to %s, which cannot be imported "
                "here (%s); define the cell in an importable module, or give it: "
                "load(path, cells={%r: %s})" % (where, name, ref, e, name, name)) from None
    if not isinstance(cell, Cell):
        raise TypeError("%s: %s is a %s, not a cell made with @rc.cell"
                        % (where, ref, type(cell).__name__))
    if _cell_hash(cell) != saved["fingerprint"]:
        raise ValueError("%s: the cell %r found as %s computes something else than the saved "
                         "one (its definition changed since saving); give the saved "
                         "definition: load(path, cells={%r: cell})" % (where, name, ref, name))
    return cell


def _import(ref):
    """The object named by "module:qualified.name"."""
    module, _, qualname = ref.partition(":")
    if "<locals>" in qualname:
        raise ImportError("it was defined inside a function")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild_optimizer(where, saved):
    from .optim import Optimizer
    try:
        cls = _import(saved["class"])
    except (ImportError, AttributeError) as e:
        raise ImportError("%s: the optimizer class %s cannot be imported here (%s)"
                          % (where, saved["class"], e)) from None
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError("%s: %s is not an rm optimizer" % (where, saved["class"]))
    return cls(*saved["args"], **saved["kwargs"])
