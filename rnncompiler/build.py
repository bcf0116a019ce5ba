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

def _verified_entry(root, name):
    """(manifest dict, binary path) of a private entry whose binary matches its SHA-256,
    or None (missing or corrupt); an entry others can write raises CacheSecurityError."""
    manifest = os.path.join(root, name + ".json")
    if not os.path.exists(manifest):
        return None
    check_private(manifest)
    try:
        with open(manifest) as f:
            entry = json.load(f)
        binary = os.path.join(root, entry["binary"])
        check_private(binary)
        return (entry, binary) if _sha256(binary) == entry["sha256"] else None
    except CacheSecurityError:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _install(root, tmp, name, binary, entry):
    """Move a built binary into the cache and write its manifest, atomically."""
    os.chmod(binary, 0o700)          # whatever the umask: entries are private
    final = os.path.join(root, os.path.basename(binary))
    os.replace(binary, final)
    entry = dict(entry, binary=os.path.basename(final), sha256=_sha256(final))
    manifest_tmp = os.path.join(tmp, "manifest.json")
    _write_private(manifest_tmp, json.dumps(entry))
    os.replace(manifest_tmp, os.path.join(root, name + ".json"))
    return final


@contextlib.contextmanager
def _locked(root, name):
    """An flock on NAME.lock: released by the kernel if the process dies."""
    fd = os.open(os.path.join(root, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_cached(key):
    """(module, meta) for a valid cache entry, or None (missing or corrupt)."""
    hit = _verified_entry(cache_root(), key)
    if hit is None:
        return None
    entry, binary = hit
    try:
        return _import(entry["module"], binary), entry["meta"]
    except (ImportError, KeyError):
        return None


def runtime_object():
    """The runtime object file every JIT kernel links (the GEMM helpers and microkernel),
    built once per machine, compiler and generator, and verified like any entry."""
    from .codegen.helpers import runtime_c
    text = runtime_c()
    root = cache_root()
    flags = compiler_command("runtime.c", "runtime.o", 3, True, compile_only=True)
    ident = json.dumps([text, flags, machine_identity()], sort_keys=True)
    name = "runtime-" + hashlib.sha256(ident.encode()).hexdigest()[:40]
    hit = _verified_entry(root, name)
    if hit is not None:
        return hit[1]
    with _locked(root, name):
        hit = _verified_entry(root, name)
        if hit is not None:
            return hit[1]
        tmp = tempfile.mkdtemp(prefix="build-", dir=root)
        try:
            c_file, obj = os.path.join(tmp, name + ".c"), os.path.join(tmp, name + ".o")
            _write_private(c_file, text)
            _run_gcc([(compiler_command(c_file, obj, 3, True, compile_only=True), c_file)])
            return _install(root, tmp, name, obj, {"what": "runtime object"})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(key, generate, *, opt_level=2, blas=True):
    """The cached module for `key`, building it from generate() -> (CSource, meta) if needed."""
    hit = load_cached(key)
    if hit is not None:
        return hit
    root = cache_root()
    with _locked(root, key):
        hit = load_cached(key)          # another process may have built it meanwhile
        if hit is not None:
            return hit
        csrc, meta = generate()
        return _build(root, key, csrc, meta, opt_level, blas)


def _build(root, key, csrc, meta, opt_level, blas):
    tmp = tempfile.mkdtemp(prefix="build-", dir=root)
    try:
        module = "_rnnc_%s_%s" % (key[:16], os.urandom(4).hex())
        binary = os.path.join(tmp, module + sysconfig.get_config_var("EXT_SUFFIX"))
        # the runtime object is made (once per machine) after the kernel's own code compiled
        objects = lambda: [runtime_object()] if meta.get("runtime") else []  # noqa: E731
        if csrc.units:
            _build_units(tmp, module, csrc, binary, objects, opt_level, blas)
        else:
            c_file = _emit_wrapper(tmp, module, csrc.cdef, csrc.text)
            _run_gcc([(compiler_command(c_file, binary, opt_level, blas, objects()), c_file)])
        kept_c = os.path.join(root, key + ".c")
        _write_private(os.path.join(tmp, "kernel.c"), csrc.text)
        os.replace(os.path.join(tmp, "kernel.c"), kept_c)
        final = _install(root, tmp, key, binary, {"module": module, "c_file": os.path.basename(kept_c),
                                                   "meta": meta})
        return _import(module, final), meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _emit_wrapper(tmp, module, cdef, source):
    """cffi's C for an extension module exposing `cdef`, around `source`."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source(module, source)
    c_file = os.path.join(tmp, module + ".c")
    with contextlib.redirect_stdout(io.StringIO()):   # cffi announces "generating ..."
        ffi.emit_c_code(c_file)
    return c_file


def _build_units(tmp, module, csrc, binary, objects, opt_level, blas):
    """Compile the cffi wrapper (prototypes only) and the kernel's translation units in
    parallel, then link them with objects()."""
    jobs = []
    for k, text in enumerate(csrc.units):
        path = os.path.join(tmp, "unit%d.c" % k)
        _write_private(path, text)
        jobs.append((path, opt_level))
    # the wrapper last: a compiler error is reported for the kernel's own code first
    jobs.append((_emit_wrapper(tmp, module, csrc.cdef, "#include <stddef.h>\n" + csrc.cdef), 1))
    commands = [(compiler_command(c, c[:-2] + ".o", level, blas, compile_only=True), c)
                for c, level in jobs]
    _run_gcc(commands)
    objs = [c[:-2] + ".o" for c, _ in jobs]
    _run_gcc([(link_command(objs + objects(), binary, blas), jobs[0][0])])


def _write_private(path, text):
    """Write a new file readable and writable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def compiler_command(c_file, binary, opt_level, blas, objects=(), compile_only=False):
    """The gcc command line for one extension module (linked with `objects`), or for an
    object file (compile_only)."""
    cc = os.environ.get("CC", "gcc")
    inc = sysconfig.get_paths()["include"]
    # -fno-math-errno lets gcc inline and vectorise sqrt/fmin; no -ffast-math anywhere
    cflags = ["-fPIC", "-O%d" % opt_level, "-fno-math-errno", "-I" + inc]
    if platform.machine() in ("x86_64", "AMD64"):
        cflags.insert(2, "-march=native")
    ldflags = ["-lm"]
    if blas:
        blas_cflags, blas_ldflags = blas_flags()
        cflags += blas_cflags
        ldflags += blas_ldflags
    if compile_only:
        return [cc, "-c"] + cflags + [c_file, "-o", binary]
    return [cc, "-shared"] + cflags + [c_file] + list(objects) + ["-o", binary] + ldflags


def link_command(objects, binary, blas):
    """The gcc command line that links object files into an extension module."""
    ldflags = ["-lm"] + (blas_flags()[1] if blas else [])
    return [os.environ.get("CC", "gcc"), "-shared"] + list(objects) + ["-o", binary] + ldflags


def _run_gcc(commands):
    """Run compiler commands [(argv, C file)] at once; CompileError for the first that fails."""
    debug = os.environ.get("RNNC_DEBUG", "") >= "3"
    procs = []
    for cmd, c_file in commands:
        if debug:
            print(" ".join(cmd), file=sys.stderr)
        try:
            procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True), c_file))
        except FileNotFoundError as exc:
            for p, _ in procs:
                p.kill()
            raise CompileError("no C compiler: %s (set CC or install gcc)" % exc) from None
    failed = None
    for proc, c_file in procs:
        stderr = proc.communicate()[1]
        if proc.returncode != 0 and failed is None:
            failed = (proc.returncode, c_file, stderr)
    if failed:
        code, c_file, stderr = failed
        kept = os.path.join(tempfile.gettempdir(), os.path.basename(c_file))
        shutil.copyfile(c_file, kept)
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        raise CompileError("the C compiler failed (exit %d); C file kept at %s:\n%s"
                           % (code, kept, tail), c_file=kept, stderr=stderr)


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
    csrc = CSource(csrc_text, cdef, None, meta.get("prefix", "rnnc"), meta["dtype"], blas,
                   meta.get("runtime", False))
    return load_or_build(key, lambda: (csrc, meta), opt_level=opt_level, blas=blas)


def read_kept_c(key):
    root = cache_root()
    with open(os.path.join(root, key + ".c")) as f:
        return f.read()
