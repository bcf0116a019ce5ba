"""Build and cache: C source -> a cffi extension module, compiled by gcc, stored in a
private on-disk cache and loaded.

An entry is KEY.json (the manifest: module name, binary SHA-256, kernel metadata) next to
the binary and its C file. A hit needs no compiler: the manifest is read, the binary's
hash checked, the module imported. Builds run under an flock on KEY.lock (released by the
kernel if the process dies), in a private temp dir, then os.replace into place.

$CC names the compiler (default gcc), $RNNC_CC_TIMEOUT bounds each compiler run (seconds,
default 600), and $RNNC_SANITIZE=address,undefined builds every kernel instrumented by
the sanitizers (a test mode, keyed apart from plain builds; see docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

from .. import options
from ..errors import CacheSecurityError, CompileError

_LOADED = {}                  # binary path -> module, for this process
_LOCK = threading.Lock()


def cache_dir():
    """$RNNC_CACHE_DIR, else $XDG_CACHE_HOME/rnncompiler, else ~/.cache/rnncompiler."""
    root = os.environ.get("RNNC_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "rnncompiler")
    return root


def cache_root():
    """The cache directory, created private (0700) and checked."""
    root = cache_dir()
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _unusable_cache(root, exc) from None
    if not os.path.isdir(root):             # makedirs accepts a symlink to a file
        raise _unusable_cache(root, NotADirectoryError())
    check_private(root)
    return root


def _unusable_cache(root, exc):
    """An OSError of exc's kind naming the cache directory that failed and how to move it."""
    is_file = os.path.exists(root) and not os.path.isdir(root)
    what = "is a file, not a directory" if is_file else \
        "cannot be created (%s)" % (exc.strerror or type(exc).__name__)
    if os.environ.get("RNNC_CACHE_DIR"):
        msg = "RNNC_CACHE_DIR=%s: the kernel cache %s; point RNNC_CACHE_DIR at a directory" % (root, what)
    else:
        msg = "the kernel cache %s (the default) %s; set RNNC_CACHE_DIR to a directory" % (root, what)
    return (NotADirectoryError if is_file else type(exc))(msg)


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
    """What the binary depends on besides the C: CPU features, Python ABI, BLAS, and the
    sanitizers (read from the environment on every call)."""
    return dict(_fixed_machine_identity(), sanitize=sanitize_flags())


@functools.lru_cache(maxsize=None)
def _fixed_machine_identity():
    """The part of machine_identity that cannot change while the process runs: read once."""
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


@functools.lru_cache(maxsize=None)
def openblas_files():
    """(library file, include directory, version) of scipy-openblas32, or None when it is
    not installed: found without importing the package, whose import loads the library
    (and with it OpenBLAS's choice of kernels, which load_openblas makes)."""
    import importlib.metadata
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.origin:
        return None
    base = os.path.dirname(spec.origin)
    lib_dir = os.path.join(base, "lib")
    try:
        lib = sorted(f for f in os.listdir(lib_dir) if f.startswith("libscipy_openblas"))[0]
        version = importlib.metadata.version("scipy-openblas32")
    except (OSError, IndexError, importlib.metadata.PackageNotFoundError):
        return None
    return os.path.join(lib_dir, lib), os.path.join(base, "include"), version


def blas_identity():
    files = openblas_files()
    return "scipy_openblas32-%s" % files[2] if files else ""


_OPENBLAS_LOCK = threading.Lock()
_OPENBLAS_RUNS = None           # the kernel set of the OpenBLAS this process loaded


def load_openblas(core=""):
    """Load scipy-openblas32 into this process with OpenBLAS's kernels for `core` (an
    OPENBLAS_CORETYPE name; "" lets OpenBLAS pick) and return the name of the kernels it
    runs. OpenBLAS reads the core type once, when the library is loaded: so this comes
    before the first kernel that links it, and once loaded the library keeps its kernels.
    The library is rnncompiler's own copy (numpy and scipy load theirs), so the tuning
    run's choice applies whatever $OPENBLAS_CORETYPE says: it was measured with and
    without it. "" when scipy-openblas32 is not installed."""
    import ctypes
    files = openblas_files()
    if files is None:               # not installed: the build says so (blas_flags)
        return ""
    path = files[0]
    global _OPENBLAS_RUNS
    with _OPENBLAS_LOCK:
        if _OPENBLAS_RUNS is not None:      # loaded by this function: its kernels stay
            return _OPENBLAS_RUNS
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        except OSError:                 # not loaded yet
            saved = os.environ.pop("OPENBLAS_CORETYPE", None)
            if core:
                os.environ["OPENBLAS_CORETYPE"] = core
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
            finally:
                os.environ.pop("OPENBLAS_CORETYPE", None)
                if saved is not None:
                    os.environ["OPENBLAS_CORETYPE"] = saved
        lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
        _OPENBLAS_RUNS = lib.scipy_openblas_get_corename().decode()
        return _OPENBLAS_RUNS


def blas_flags():
    """Compile and link flags for scipy-openblas32 (OpenBLAS with a C header)."""
    files = openblas_files()
    if files is None:
        raise ImportError("scipy-openblas32 is not installed")
    lib_dir, name = os.path.split(files[0])
    return (["-I" + files[1], "-pthread"],
            ["-L" + lib_dir, "-l" + name[3:].split(".so")[0], "-Wl,-rpath," + lib_dir, "-pthread"])


# ---------------------------------------------------------------- the compiler

SANITIZERS = ("address", "undefined", "leak")
DEFAULT_CC_TIMEOUT = 600.0


def compiler():
    """The C compiler's command name: $CC, else gcc."""
    return os.environ.get("CC") or "gcc"


def require_compiler():
    """Fail fast, before any C is generated, when the compiler cannot be found."""
    cc = compiler()
    if shutil.which(cc) is None:
        raise CompileError("no C compiler: %r is not an executable file%s; install gcc, or set "
                           "CC to a C compiler (kernels already in the cache load without one)"
                           % (cc, "" if os.sep in cc else " on PATH"))


def sanitize_flags():
    """The sanitizer flags of $RNNC_SANITIZE (e.g. "address,undefined"), or []."""
    names = options.env_names("RNNC_SANITIZE", SANITIZERS)
    if not names:
        return []
    # frame pointers and -g make the reports readable; every finding stops the process
    return ["-fsanitize=" + ",".join(names), "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g"]


def check_sanitizer_runtime():
    """An AddressSanitizer build loaded into a process without the ASan runtime first
    aborts the interpreter: refuse with advice instead."""
    if not any("address" in f for f in sanitize_flags() if f.startswith("-fsanitize=")):
        return
    try:
        with open("/proc/self/maps") as f:
            loaded = "libasan" in f.read()
    except OSError:
        return
    if not loaded:
        raise RuntimeError(
            "RNNC_SANITIZE=%s builds kernels with AddressSanitizer, whose runtime must be the "
            "first library of the process: run Python as LD_PRELOAD=$(%s "
            "-print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 python ..., or unset "
            "RNNC_SANITIZE" % (os.environ.get("RNNC_SANITIZE"), compiler()))


def cc_timeout():
    """Seconds one compiler run may take: $RNNC_CC_TIMEOUT, default 600."""
    return options.env_float("RNNC_CC_TIMEOUT", DEFAULT_CC_TIMEOUT, "a positive number of seconds")


# ---------------------------------------------------------------- the cache

def _verified_entry(root, name):
    """(manifest dict, binary path) of a private entry whose binary matches its SHA-256,
    or None (missing or corrupt); an entry others can write raises CacheSecurityError."""
    entry = _manifest(root, name)
    if entry is None:
        return None
    try:
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


def locked(root, name):
    """An flock on NAME.lock in root, for other stages' cache files (the tuning table)."""
    return _locked(root, name)


def write_entry_file(root, name, text):
    """Write NAME into the cache root atomically (a reader sees the old file or the new)."""
    tmp = new_build_dir(root)
    try:
        path = os.path.join(tmp, name)
        _write_private(path, text)
        os.replace(path, os.path.join(root, name))
    finally:
        remove_build_dir(tmp)


@contextlib.contextmanager
def _locked(root, name):
    """An flock on NAME.lock: released by the kernel if the process dies."""
    fd = os.open(os.path.join(root, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


BUILD_START_SECONDS = 5       # a newer build-* dir may not hold its lock yet
UNLOCKED_BUILD_SECONDS = 600  # a build-* dir without a lock (older versions) this old is left over
_BUILD_LOCKS = {}             # build dir of this process -> the fd holding its .lock


def new_build_dir(root):
    """A new private build-* directory in the cache, marked live by an flock on its .lock
    (released by the kernel when the process dies: what a killed build leaves is known)."""
    tmp = tempfile.mkdtemp(prefix="build-", dir=root)
    fd = os.open(os.path.join(tmp, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with _LOCK:
        _BUILD_LOCKS[tmp] = fd
    return tmp


def remove_build_dir(tmp):
    """Remove a build directory of this process, then release its lock."""
    shutil.rmtree(tmp, ignore_errors=True)
    with _LOCK:
        fd = _BUILD_LOCKS.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def build_dir_is_stale(path):
    """Whether a build-* directory was left by a build that no longer runs: its lock is
    free (the process holding it died), or it has none and is older than any build."""
    try:
        age = time.time() - os.lstat(path).st_mtime
    except OSError:
        return False
    if age < BUILD_START_SECONDS:
        return False
    try:
        fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return os.path.isdir(path) and age >= UNLOCKED_BUILD_SECONDS
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def remove_stale_builds(root):
    """Remove the build-* directories of killed builds; the names of those removed."""
    removed = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith("build-") and not os.path.islink(path) and build_dir_is_stale(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def load_cached(key):
    """(module, meta) for a valid cache entry, or None (missing or corrupt)."""
    check_sanitizer_runtime()
    hit = _verified_entry(cache_root(), key)
    if hit is None:
        return None
    entry, binary = hit
    try:
        return _import(entry["module"], binary), entry["meta"]
    except (ImportError, KeyError):
        return None


def runtime_objects(sources):
    """The runtime object files every JIT kernel links (the GEMM helpers and the
    microkernel's variants), compiled from their C texts `sources` in parallel, once per
    machine, compiler and text, and verified like any entry."""
    level = 1 if sanitize_flags() else 3     # instrumented -O3 takes 3x longer to build
    return _cached_objects("runtime", sources, level)


SHARED_WRAPPER = "_rnnc_wrapper"


@functools.lru_cache(maxsize=None)
def shared_wrapper_c(cdef):
    """The C of the cffi wrapper exposing `cdef`, compiled once per real type and linked
    into every kernel, whose own module entry (entry_c) passes its name in; None if this
    cffi writes its module init in a shape not recognised (each kernel then compiles its
    whole wrapper). Emitted once per process and cdef."""
    tmp = new_build_dir(cache_root())
    try:
        with open(_emit_wrapper(tmp, SHARED_WRAPPER, cdef, "#include <stddef.h>\n" + cdef)) as f:
            text = f.read()
    finally:
        remove_build_dir(tmp)
    init = 'PyInit_%s(void)\n{\n  return _cffi_init("%s",' % (SHARED_WRAPPER, SHARED_WRAPPER)
    if text.count(init) != 1:
        return None
    return text.replace(init, "rnnc_wrapper_init(const char *name)\n{\n  return _cffi_init(name,")


def entry_c(module):
    """The module entry of one kernel: the shared wrapper's init under the kernel's own
    module name (a name shared between kernels would make them replace each other in
    sys.modules)."""
    return ("/* module entry of %s: the shared cffi wrapper under this name */\n"
            "extern void *rnnc_wrapper_init(const char *name);\n"
            "__attribute__((visibility(\"default\"))) void *PyInit_%s(void)\n"
            "{\n    return rnnc_wrapper_init(\"%s\");\n}\n" % (module, module, module))


def _cached_objects(kind, texts, level):
    """Object files compiled from C texts (in parallel), each cached under a name hashing
    its text, the compiler command and the machine, verified like any entry."""
    root = cache_root()
    flags = compiler_command("object.c", "object.o", level, True, compile_only=True)
    names = [kind + "-" + hashlib.sha256(json.dumps([text, flags, machine_identity()],
                                                    sort_keys=True).encode()).hexdigest()[:40]
             for text in texts]

    def hits():
        return [_verified_entry(root, name) for name in names]
    found = hits()
    if all(found):
        return [hit[1] for hit in found]
    require_compiler()
    # one lock for the kind: two processes never build the same objects at once
    with _locked(root, kind + "-build"):
        found = hits()
        missing = [(name, text) for name, text, hit in zip(names, texts, found, strict=True)
                   if hit is None]
        if missing:
            tmp = new_build_dir(root)
            try:
                jobs = []
                for name, text in missing:
                    c_file, obj = os.path.join(tmp, name + ".c"), os.path.join(tmp, name + ".o")
                    _write_private(c_file, text)
                    jobs.append((name, c_file, obj))
                _run_gcc([(compiler_command(c, o, level, True, compile_only=True), c)
                          for _, c, o in jobs])
                for name, _, obj in jobs:
                    _install(root, tmp, name, obj, {"what": kind + " object"})
            finally:
                remove_build_dir(tmp)
        return [hit[1] for hit in hits()]


def load_or_build(key, generate, *, opt_level=2, blas=True):
    """The cached module for `key`, building it from generate() -> (csrc, meta) if needed:
    csrc the kernel's C (text, cdef, units: the text as translation units or empty, and
    runtime_source: the C of the runtime object it links, or empty)."""
    hit = load_cached(key)
    if hit is not None:
        return hit
    require_compiler()                  # before the (slow) C generation
    root = cache_root()
    remove_stale_builds(root)
    with _locked(root, key):
        hit = load_cached(key)          # another process may have built it meanwhile
        if hit is not None:
            return hit
        csrc, meta = generate()
        return _build(root, key, csrc, meta, opt_level, blas)


def _build(root, key, csrc, meta, opt_level, blas):
    tmp = new_build_dir(root)
    try:
        module = "_rnnc_%s_%s" % (key[:16], os.urandom(4).hex())
        binary = os.path.join(tmp, module + sysconfig.get_config_var("EXT_SUFFIX"))
        # the runtime object is made (once per machine) after the kernel's own code compiled
        objects = lambda: runtime_objects(csrc.runtime_source) if csrc.runtime_source else []  # noqa: E731
        if csrc.units:
            _build_units(tmp, module, csrc, binary, objects, opt_level, blas)
        else:
            c_file = _emit_wrapper(tmp, module, csrc.cdef, csrc.text)
            _run_gcc([(compiler_command(c_file, binary, opt_level, blas, objects()), c_file)])
        kept_c = os.path.join(root, key + ".c")
        _write_private(os.path.join(tmp, "kernel.c"), csrc.text)
        os.replace(os.path.join(tmp, "kernel.c"), kept_c)
        c_hash = hashlib.sha256(csrc.text.encode()).hexdigest()
        final = _install(root, tmp, key, binary, {
            "module": module, "c_file": os.path.basename(kept_c), "c_sha256": c_hash,
            "c_size": len(csrc.text.encode()), "verified": False, "meta": meta})
        return _import(module, final), meta
    finally:
        remove_build_dir(tmp)


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
    """Compile the kernel's translation units and its module entry in parallel, then link
    them with the cffi wrapper (compiled once per real type) and objects()."""
    jobs = []
    for k, text in enumerate(csrc.units):
        path = os.path.join(tmp, "unit%d.c" % k)
        _write_private(path, text)
        # the batch-1 unit (the last) at -O3 whatever the level: gcc 12 vectorises its
        # fixed-size loops there, not at -O2 (an LSTM at H = 32: 116 ns a step against 142)
        batch1 = csrc.batch1 and k == len(csrc.units) - 1
        jobs.append((path, 3 if batch1 else opt_level))
    wrapper = shared_wrapper_c(csrc.cdef)
    if wrapper is None:
        jobs.append((_emit_wrapper(tmp, module, csrc.cdef, "#include <stddef.h>\n" + csrc.cdef), 1))
    else:
        jobs.append((os.path.join(tmp, "entry.c"), 1))
        _write_private(jobs[-1][0], entry_c(module))
    commands = [(compiler_command(c, c[:-2] + ".o", level, blas, compile_only=True), c)
                for c, level in jobs]
    _run_gcc(commands)
    # the shared wrapper is compiled (once per real type) after the kernel's own code
    objs = [c[:-2] + ".o" for c, _ in jobs] + ([_cached_objects("wrapper", (wrapper,), 1)[0]]
                                              if wrapper else [])
    _run_gcc([(link_command(objs + objects(), binary, blas), jobs[0][0])])


def _write_private(path, text):
    """Write a new file readable and writable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def compiler_command(c_file, binary, opt_level, blas, objects=(), compile_only=False):
    """The gcc command line for one extension module (linked with `objects`), or for an
    object file (compile_only)."""
    cc = compiler()
    inc = sysconfig.get_paths()["include"]
    # -fno-math-errno lets gcc inline and vectorise sqrt/fmin, -fno-trapping-math lets it
    # if-convert a division (as in log's) where nothing reads the exception flags; the
    # values stay IEEE: no -ffast-math anywhere
    cflags = ["-fPIC", "-O%d" % opt_level, "-fno-math-errno", "-fno-trapping-math",
              "-I" + inc] + sanitize_flags()
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


def executable_command(c_file, binary, objects):
    """The gcc command line for a small program linked with `objects` and OpenBLAS (the
    tuning run's timer)."""
    cmd = compiler_command(c_file, binary, 2, True, objects)
    return [a for a in cmd if a not in ("-shared", "-fPIC")]


def run_compiler(cmd, c_file):
    """Run one compiler command (CompileError if it fails, as for kernels)."""
    _run_gcc([(cmd, c_file)])


def link_command(objects, binary, blas):
    """The gcc command line that links object files into an extension module."""
    ldflags = ["-lm"] + (blas_flags()[1] if blas else [])
    return [compiler(), "-shared"] + sanitize_flags() + list(objects) + ["-o", binary] + ldflags


def _run_gcc(commands):
    """Run compiler commands [(argv, C file)] at once; CompileError for the first that fails
    or when they outlast $RNNC_CC_TIMEOUT (then every one of them is killed)."""
    debug = options.debug_level() >= 3
    timeout = cc_timeout()
    env = _compiler_env()
    procs = []
    for cmd, c_file in commands:
        if debug:
            print(" ".join(cmd), file=sys.stderr)
        try:
            # a session of its own: a timeout kills the driver and the cc1 it started
            procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True, start_new_session=True, env=env), c_file))
        except FileNotFoundError as exc:
            _kill_all(procs)
            raise CompileError("no C compiler: %s (set CC or install gcc)" % exc) from None
    deadline = time.monotonic() + timeout
    failed = None
    for proc, c_file in procs:
        try:
            stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 0.0))[1]
        except subprocess.TimeoutExpired:
            _kill_all(procs)
            kept = keep_c(c_file)
            raise CompileError("the C compiler did not finish within %g s (RNNC_CC_TIMEOUT) and "
                               "was stopped; C file kept at %s" % (timeout, kept),
                               c_file=kept) from None
        except BaseException:            # Ctrl-C: the compilers are in sessions of their own
            _kill_all(procs)
            raise
        if proc.returncode != 0 and failed is None:
            failed = (proc.returncode, c_file, stderr)
    if failed:
        code, c_file, stderr = failed
        kept = keep_c(c_file)
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        raise CompileError("the C compiler failed (exit %d); C file kept at %s:\n%s"
                           % (code, kept, tail), c_file=kept, stderr=stderr)


def _compiler_env():
    """The environment less a preloaded sanitizer runtime: it slows the compiler by half."""
    libs = [lib for lib in re.split(r"[\s:]+", os.environ.get("LD_PRELOAD", "")) if lib]
    kept = [lib for lib in libs if not re.search(r"lib(a|ub)san", lib)]
    if kept == libs:
        return None
    env = dict(os.environ)
    if kept:
        env["LD_PRELOAD"] = " ".join(kept)
    else:
        env.pop("LD_PRELOAD")
    return env


def _kill_all(procs):
    for proc, _ in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def keep_c(c_file):
    """A copy of a C file that failed, outside the build dir that is about to go: in a new
    private directory (a fixed name in the shared /tmp could be a planted symlink)."""
    kept = os.path.join(tempfile.mkdtemp(prefix="rnnc-failed-"), os.path.basename(c_file))
    shutil.copyfile(c_file, kept)
    return kept


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


def _manifest(root, key):
    """The manifest of an entry (checked private), or None when there is none or it is
    unreadable."""
    path = os.path.join(root, key + ".json")
    if not os.path.exists(path):
        return None
    check_private(path)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_kept_c(key, entry=None):
    """The C source kept with an entry, checked against the hash its manifest records:
    None when it is missing or truncated (the caller rebuilds the entry); CacheSecurityError
    when it is writable by others or was modified, for it would be compiled again when a
    pickled kernel is rebuilt."""
    root = cache_root()
    entry = (_manifest(root, key) or {}) if entry is None else entry
    path = os.path.join(root, key + ".c")
    if "c_sha256" not in entry or not os.path.exists(path):
        return None
    check_private(path)
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() == entry["c_sha256"]:
        return data.decode()
    if len(data) < entry.get("c_size", 0):
        return None                         # cut short (a full disk, a killed copy)
    raise CacheSecurityError(
        "refusing the rnncompiler cache entry %s: its C source does not match the SHA-256 "
        "recorded when it was built (it was modified); remove the entry (rnnc cache clear) "
        "or set RNNC_CACHE_DIR" % path)


def read_entry(key):
    """(kept C text or None, whether the kernel passed its check against the reference
    evaluator) of an entry, from one read of its manifest; see read_kept_c."""
    entry = _manifest(cache_root(), key) or {}
    return read_kept_c(key, entry), bool(entry.get("verified"))


def is_verified(key):
    """Whether the entry's kernel has passed its check against the reference evaluator."""
    return read_entry(key)[1]


def mark_verified(key):
    """Record in the manifest that the entry's kernel passed its check (atomically)."""
    root = cache_root()
    with _locked(root, key):
        entry = _manifest(root, key)
        if entry is None:
            return
        tmp = new_build_dir(root)
        try:
            _write_private(os.path.join(tmp, "manifest.json"), json.dumps(dict(entry, verified=True)))
            os.replace(os.path.join(tmp, "manifest.json"), os.path.join(root, key + ".json"))
        finally:
            remove_build_dir(tmp)


def discard(key):
    """Remove an entry (manifest first, so that no process loads it meanwhile); its kept C
    is copied to a new private directory first, and that path returned (None if none)."""
    root = cache_root()
    with _locked(root, key):
        entry = _manifest(root, key) or {}
        c_path = os.path.join(root, key + ".c")
        kept = keep_c(c_path) if os.path.exists(c_path) else None
        names = [key + ".json", key + ".c"] + ([entry["binary"]] if "binary" in entry else [])
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(root, name))
        return kept
