"""Build and cache: C source -> a cffi extension module, compiled by gcc, stored in a
private on-disk cache and loaded.

An entry is KEY.json (the manifest: module name, binary SHA-256, kernel metadata) next to
the binary and its C file. A hit needs no compiler: the manifest is read, the binary's
hash checked, the module imported. Builds run under an flock on KEY.lock (released by the
kernel if the process dies), in a private temp dir, then os.replace into place.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading

from .errors import CacheSecurityError, CompileError

_LOADED = {}                  # binary path -> module, for this process
_LOCK = threading.Lock()


def cache_root():
    """$RNNC_CACHE_DIR, else $XDG_CACHE_HOME/rnncompiler, else ~/.cache/rnncompiler."""
    root = os.environ.get("RNNC_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "rnncompiler")
    os.makedirs(root, mode=0o700, exist_ok=True)
    check_private(root)
    return root


def check_private(path):
    """Refuse a path that another user owns or that group/others can write."""
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheSecurityError(
            "refusing the rnncompiler cache entry %s: it is writable by other users or owned "
            "by another user (mode %o); use a private directory (chmod 700) or set "
            "RNNC_CACHE_DIR" % (path, stat.S_IMODE(st.st_mode)))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def machine_identity():
    """What the binary depends on besides the C: CPU features, Python ABI, BLAS."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "abi": sysconfig.get_config_var("EXT_SUFFIX") or "", "blas": blas_identity()}


def blas_identity():
    try:
        import scipy_openblas32 as ob
        return "scipy_openblas32-%s" % ob.__version__
    except ImportError:
        return ""


def blas_flags():
    """Compile and link flags for scipy-openblas32 (OpenBLAS with a C header)."""
    import scipy_openblas32 as ob
    lib = ob.get_lib_dir()
    return (["-I" + ob.get_include_dir(), "-pthread"],
            ["-L" + lib, "-l" + ob.get_library(), "-Wl,-rpath," + lib, "-pthread"])


# ---------------------------------------------------------------- the cache

def load_cached(key):
    """(module, meta) for a valid cache entry, or None (missing or corrupt)."""
    root = cache_root()
    manifest = os.path.join(root, key + ".json")
    if not os.path.exists(manifest):
        return None
    check_private(manifest)
    try:
        with open(manifest) as f:
            entry = json.load(f)
        binary = os.path.join(root, entry["binary"])
        check_private(binary)
        if _sha256(binary) != entry["sha256"]:
            return None
        return _import(entry["module"], binary), entry["meta"]
    except CacheSecurityError:
        raise
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None


def load_or_build(key, generate, *, opt_level=2, blas=True):
    """The cached module for `key`, building it from generate() -> (CSource, meta) if needed."""
    hit = load_cached(key)
    if hit is not None:
        return hit
    root = cache_root()
    lock_path = os.path.join(root, key + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        hit = load_cached(key)          # another process may have built it meanwhile
        if hit is not None:
            return hit
        csrc, meta = generate()
        return _build(root, key, csrc, meta, opt_level, blas)
    finally:
        os.close(fd)


def _build(root, key, csrc, meta, opt_level, blas):
    import cffi
    tmp = tempfile.mkdtemp(prefix="build-", dir=root)
    try:
        module = "_rnnc_%s_%s" % (key[:16], os.urandom(4).hex())
        ffi = cffi.FFI()
        ffi.cdef(csrc.cdef)
        ffi.set_source(module, csrc.text)
        c_file = os.path.join(tmp, module + ".c")
        with contextlib.redirect_stdout(io.StringIO()):   # cffi announces "generating ..."
            ffi.emit_c_code(c_file)
        binary = os.path.join(tmp, module + sysconfig.get_config_var("EXT_SUFFIX"))
        _run_gcc(c_file, binary, opt_level, blas)
        os.chmod(binary, 0o700)          # whatever the umask: entries are private
        final = os.path.join(root, os.path.basename(binary))
        kept_c = os.path.join(root, key + ".c")
        _write_private(os.path.join(tmp, "kernel.c"), csrc.text)
        os.replace(os.path.join(tmp, "kernel.c"), kept_c)
        os.replace(binary, final)
        entry = {"module": module, "binary": os.path.basename(final), "sha256": _sha256(final),
                 "c_file": os.path.basename(kept_c), "meta": meta}
        manifest_tmp = os.path.join(tmp, "manifest.json")
        _write_private(manifest_tmp, json.dumps(entry))
        os.replace(manifest_tmp, os.path.join(root, key + ".json"))
        return _import(module, final), meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_private(path, text):
    """Write a new file readable and writable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def compiler_command(c_file, binary, opt_level, blas):
    """The gcc command line for one extension module."""
    cc = os.environ.get("CC", "gcc")
    inc = sysconfig.get_paths()["include"]
    # -fno-math-errno lets gcc inline and vectorise sqrt/fmin; no -ffast-math anywhere
    cmd = [cc, "-shared", "-fPIC", "-O%d" % opt_level, "-fno-math-errno", "-I" + inc,
           c_file, "-o", binary, "-lm"]
    if platform.machine() in ("x86_64", "AMD64"):
        cmd.insert(4, "-march=native")
    if blas:
        cflags, ldflags = blas_flags()
        cmd[4:4] = cflags
        cmd += ldflags
    return cmd


def _run_gcc(c_file, binary, opt_level, blas):
    cmd = compiler_command(c_file, binary, opt_level, blas)
    if os.environ.get("RNNC_DEBUG", "") >= "3":
        print(" ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise CompileError("no C compiler: %s (set CC or install gcc)" % exc) from None
    if proc.returncode != 0:
        kept = os.path.join(tempfile.gettempdir(), os.path.basename(c_file))
        shutil.copyfile(c_file, kept)
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise CompileError("the C compiler failed (exit %d); C file kept at %s:\n%s"
                           % (proc.returncode, kept, tail), c_file=kept, stderr=proc.stderr)


def _import(module_name, path):
    with _LOCK:
        if path in _LOADED:
            return _LOADED[path]
        loader = importlib.machinery.ExtensionFileLoader(module_name, path)
        spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _LOADED[path] = module
        return module


def build_from_source(key, csrc_text, cdef, meta, *, opt_level=2, blas=True):
    """Rebuild an entry from kept C text (unpickling a kernel whose entry is gone)."""
    from .codegen import CSource
    csrc = CSource(csrc_text, cdef, None, meta.get("prefix", "rnnc"), meta["dtype"], blas)
    return load_or_build(key, lambda: (csrc, meta), opt_level=opt_level, blas=blas)


def read_kept_c(key):
    root = cache_root()
    with open(os.path.join(root, key + ".c")) as f:
        return f.read()
