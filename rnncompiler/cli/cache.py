"""`rnnc cache info|clear`: what the kernel cache holds, and emptying it.

Only files whose names the cache itself makes (manifests, binaries, kept C, locks, the
runtime objects — the helpers and the cffi wrappers — and unfinished build directories)
are counted or removed, so a cache pointed by mistake at a directory of other files
(RNNC_CACHE_DIR=$HOME) loses none of them. An entry whose build is running (its flock is
held) is left alone, and so is a build directory whose build runs (build.py marks each
with a lock of its own).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
from dataclasses import dataclass, field

from ..compiler import build

# what each cache file is, from its name (see rnncompiler/compiler/build.py)
_KINDS = (
    ("kernel", re.compile(r"(?P<key>[0-9a-f]{64})\.json\Z")),
    ("kept", re.compile(r"(?P<key>[0-9a-f]{64})\.(c|lock)\Z")),
    ("binary", re.compile(r"_rnnc_(?P<key>[0-9a-f]{16})_[0-9a-f]{8}\.[\w.-]*so\Z")),
    ("runtime", re.compile(r"(?P<key>(runtime|wrapper)-[0-9a-f]{40})\.o\Z")),
    ("kept", re.compile(r"(?P<key>(runtime|wrapper)-[0-9a-f]{40})\.(json|lock)\Z")),
    ("kept", re.compile(r"(?P<key>(runtime|wrapper)-build)\.lock\Z")),
    ("tuning", re.compile(r"(?P<key>tuning-[0-9a-f]{40})\.json\Z")),
    ("kept", re.compile(r"(?P<key>tuning-[0-9a-f]{40})\.lock\Z")),
    ("build", re.compile(r"build-[A-Za-z0-9_]+\Z")),
)


@dataclass
class CacheContents:
    """The cache files of a directory, by kind, with their total size in bytes."""
    root: str
    exists: bool
    private: bool = True
    files: dict = field(default_factory=dict)       # name -> (kind, key or None)
    bytes: int = 0

    def names(self, kind):
        return sorted(n for n, (k, _) in self.files.items() if k == kind)


def _kind(name):
    for kind, pattern in _KINDS:
        m = pattern.match(name)
        if m:
            return kind, m.groupdict().get("key")
    return None


def _size(path):
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for top, dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(top, f)).st_size for f in files)
    return total


def scan(root=None):
    """The cache files in `root` (default: the cache directory); creates nothing."""
    root = root or build.cache_dir()
    if not os.path.isdir(root):
        return CacheContents(root, exists=False)
    try:
        build.check_private(root)
        private = True
    except PermissionError:
        private = False
    contents = CacheContents(root, True, private)
    for name in sorted(os.listdir(root)):
        kind = _kind(name)
        if kind is not None:
            contents.files[name] = kind
            contents.bytes += _size(os.path.join(root, name))
    return contents


def _busy_keys(root, contents, held):
    """Keys whose build holds its lock now (each other lock is taken into `held`)."""
    busy = set()
    for name, (_, key) in contents.files.items():
        if not name.endswith(".lock"):
            continue
        try:
            fd = os.open(os.path.join(root, name), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(fd)
        except BlockingIOError:
            os.close(fd)
            busy.add(key)
    return busy


def clear(root=None):
    """Remove every cache entry from the cache directory; (removed contents, number of
    entries left because they are being built). Refuses (CacheSecurityError) a directory
    that another user owns or others can write."""
    contents = scan(root)
    if not contents.exists:
        return contents, 0
    build.check_private(contents.root)
    held = []
    try:
        busy = _busy_keys(contents.root, contents, held)
        removed = CacheContents(contents.root, True)
        busy_prefixes = {b[:16] for b in busy}        # binaries carry key[:16]
        for name, (kind, key) in contents.files.items():
            path = os.path.join(contents.root, name)
            if (key and (key in busy or key[:16] in busy_prefixes)) or (
                    kind == "build" and not build.build_dir_is_stale(path)):
                continue            # an entry or a build dir of a running build
            size = _size(path)
            if kind == "build" and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            removed.files[name] = (kind, key)
            removed.bytes += size
    finally:
        for fd in held:
            os.close(fd)
    return removed, len(busy)


def plural(n, one, many):
    """"1 entry", "2 entries"."""
    return "%d %s" % (n, one if n == 1 else many)


def _megabytes(n):
    return "%.1f MB" % (n / 1e6) if n >= 1e5 else "%d bytes" % n


def _tuning_lines(info):
    """What the autotuning run chose on this machine (tuning.py), or that it has not run."""
    from ..compiler import tuning
    path = tuning.table_path(info.root)
    if os.path.basename(path) not in info.files:
        return ["tuning: not measured on this machine yet (the first compile measures it)"]
    data = tuning.load_table(path)
    if data is None:
        return ["tuning: %s cannot be read (the next compile measures again)" % path]
    lines = ["tuning: %s (measured on this machine, %s)" % (path, data.get("core", "?"))]
    for dtype, chosen in sorted(tuning.decide(data["measured"]).items()):
        variant, hoisted = chosen.variant, chosen.hoisted
        mk = ["%dx%d" % (n, k) for n, k, use in hoisted if use]
        lines.append("  %s: microkernel %s; hoisted products (N x K) on the microkernel: %s, "
                     "on OpenBLAS: the other %d of %d" % (dtype, variant, ", ".join(mk) or "none",
                                                          len(hoisted) - len(mk), len(hoisted)))
        tn = ["%dx%d" % (n, k) for n, k, use in chosen.tn if use]
        lines.append("    weight gradients (N x K) on the microkernel: %s, on OpenBLAS: the "
                     "other %d of %d" % (", ".join(tn) or "none", len(chosen.tn) - len(tn), len(chosen.tn)))
    lines += _openblas_lines(data["measured"].get("openblas"))
    override = os.environ.get("RNNC_TUNING", "").strip()
    if override:
        lines.append("  RNNC_TUNING=%s overrides it in this environment" % override)
    return lines


def _openblas_lines(openblas):
    """OpenBLAS's kernel set chosen, and each set's time over the hoisted shapes."""
    if not openblas:
        return []
    from ..compiler import tuning
    cores = openblas["cores"]
    total = {core: sum(sum(c[dtype]) for dtype, _ in tuning.DTYPES) for core, c in cores.items()}
    best = min(total.values())
    timed = ", ".join("%s%s %.2fx" % (c["runs"], " (its own pick)" if not core else "", total[core] / best)
                      for core, c in sorted(cores.items(), key=lambda kv: total[kv[0]]))
    chosen = openblas["chosen"]
    return ["  OpenBLAS: %s; hoisted shapes timed under each (time / best): %s"
            % ("its own pick, %s kernels" % cores[chosen]["runs"] if not chosen
               else "%s kernels" % chosen, timed)]


def cmd_cache(args):
    """rnnc cache info / rnnc cache clear."""
    if args.action == "clear":
        removed, busy = clear()
        print("removed %s and %s (%s, %s) from %s%s"
              % (plural(len(removed.names("kernel")), "kernel entry", "kernel entries"),
                 plural(len(removed.names("runtime")), "runtime object", "runtime objects"),
                 plural(len(removed.files), "file", "files"), _megabytes(removed.bytes),
                 removed.root, "; left %s being built" % plural(busy, "entry that is",
                                                                "entries that are")
                 if busy else ""))
        return 0
    info = scan()
    print("cache directory: %s%s" % (info.root, "" if info.exists else " (not created yet)"))
    if not info.exists:
        return 0
    if not info.private:
        print("WARNING: other users can write this directory, or it is not yours: "
              "rnncompiler refuses to use it (chmod 700 it, or set RNNC_CACHE_DIR)")
    runtime = info.names("runtime")
    print("kernels: %s" % plural(len(info.names("kernel")), "entry", "entries"))
    print("runtime objects: %s" % (", ".join(os.path.join(info.root, n) for n in runtime)
                                   if runtime else "none yet (built with the first kernel)"))
    for line in _tuning_lines(info):
        print(line)
    builds = info.names("build")
    if builds:
        print("unfinished builds: %d (running, or left by a killed build; the next compile "
              "removes those of killed builds)" % len(builds))
    print("total: %s, %s" % (plural(len(info.files), "file", "files"), _megabytes(info.bytes)))
    return 0
