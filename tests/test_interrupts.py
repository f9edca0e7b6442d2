"""Interrupted and concurrent builds: dist/ only ever holds complete zip + manifest pairs.

Real builds run as `python -m layerbuild build` in their own process group and are hit with SIGINT
(as Ctrl-C does: the whole group) or SIGKILL at seeded random points spread over the measured
build duration. After each: no temp file a later build could mistake, every zip matches its
manifest, a previous good artifact is never lost, and the next build succeeds and cleans up.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_figures
from conftest import REPO

pytestmark = pytest.mark.network

PACKAGES = ["requests", "pymysql", "markupsafe"]  # several wheels: resolve, install and zip all take a while
STEM = "intr-python3.12-x86_64"
TRIALS = 12  # half SIGINT, half SIGKILL
BUILD_TIMEOUT = 300
SEED = int(os.environ.get("LAYERBUILD_INTERRUPT_SEED", "20261125"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A recipe, a private TMPDIR and an env for subprocess builds."""
    base = tmp_path_factory.mktemp("interrupts")
    recipe = base / "intr.yaml"
    recipe.write_text("name: intr\npackages: [%s]\n" % ", ".join(PACKAGES), encoding="utf-8")
    tmpdir = base / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(base / "xdg"))
    env.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    return {"base": base, "recipe": recipe, "tmpdir": tmpdir, "env": env}


def start_build(bench, out: Path, *extra: str, cache_home: Path | None = None) -> subprocess.Popen:
    env = dict(bench["env"], XDG_CACHE_HOME=str(cache_home)) if cache_home else bench["env"]
    return subprocess.Popen(
        [sys.executable, "-m", "layerbuild", "build", str(bench["recipe"]), "--out", str(out), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, so uv children get the signal too
    )  # fmt: skip


def run_build(bench, out: Path, *extra: str, cache_home: Path | None = None) -> subprocess.CompletedProcess:
    proc = start_build(bench, out, *extra, cache_home=cache_home)
    stdout, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_for_first_progress(proc: subprocess.Popen) -> str:
    """Block until the build printed its first progress line (the CLI is up and handling signals)."""
    line = proc.stderr.readline()  # bounded: the build ends (EOF) within BUILD_TIMEOUT at worst
    return line


def check_dist(out: Path, previous: dict | None = None) -> dict:
    """Every zip has its manifest and matches its sha256; returns {zip name: sha256}."""
    found = {}
    if not out.exists():
        return found
    names = {p.name for p in out.iterdir()}
    for name in names:
        if name.endswith(".zip"):
            manifest = out / (name[:-4] + ".json")
            if not manifest.exists():
                reliability_figures.count("artifacts_lost_or_corrupted", detail="zip without manifest")
                pytest.fail(f"{name} has no manifest")
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
            actual = hashlib.sha256((out / name).read_bytes()).hexdigest()
            if recorded != actual:
                reliability_figures.count("artifacts_lost_or_corrupted", detail="zip not matching manifest")
                pytest.fail(f"{name} does not match its manifest")
            found[name] = actual
        elif name.endswith(".json") and not name.startswith("."):
            assert name[:-5] + ".zip" in names, f"manifest {name} without its zip"
    for name in previous or {}:
        if name not in found:
            reliability_figures.count("artifacts_lost_or_corrupted", detail="good artifact lost")
            pytest.fail(f"the good artifact {name} was lost")
    return found


def check_cache(cache_home: Path) -> int:
    """Every published cache entry is intact and self-consistent; returns how many there are."""
    root = cache_home / "layerbuild" / "builds"
    entries = [d for d in root.glob("*/*") if d.is_dir() and not d.name.startswith(".")] if root.exists() else []
    for entry in entries:
        try:
            recorded = json.loads((entry / "entry.json").read_text(encoding="utf-8"))
            zip_sha = hashlib.sha256((entry / "layer.zip").read_bytes()).hexdigest()
            manifest_bytes = (entry / "manifest.json").read_bytes()
            ok = (zip_sha == recorded["zip_sha256"] == json.loads(manifest_bytes)["sha256"]
                  and hashlib.sha256(manifest_bytes).hexdigest() == recorded["manifest_sha256"])  # fmt: skip
        except (OSError, ValueError, KeyError):
            ok = False
        if not ok:
            reliability_figures.count("artifacts_lost_or_corrupted", detail="poisoned cache entry")
            pytest.fail(f"cache entry {entry} is poisoned")
    return len(entries)


def leftovers(out: Path, tmpdir: Path) -> list[str]:
    temps = [p.name for p in out.glob("*.tmp")] if out.exists() else []
    return temps + [p.name for p in tmpdir.glob("layerbuild-*")]


@pytest.fixture(scope="module")
def duration(bench):
    """Seconds from the first progress line to the end of a warm build (delays are spread over it)."""
    out = bench["base"] / "warm"
    assert run_build(bench, out).returncode == 0  # warms uv's cache
    proc = start_build(bench, out, "--no-cache")
    wait_for_first_progress(proc)
    started = time.monotonic()
    proc.communicate(timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0
    return time.monotonic() - started


def test_sigint_and_sigkill_at_random_points_never_leave_partial_output(bench, duration):
    """Half the trials rebuild (--no-cache); half build into a cold cache, so kills can land mid-store."""
    rng = random.Random(SEED)
    shared = bench["base"] / "shared"
    assert run_build(bench, shared, "--no-cache").returncode == 0
    outcomes = []
    for trial in range(TRIALS):
        sig = signal.SIGINT if trial % 2 == 0 else signal.SIGKILL
        # Alternate an empty output directory with one already holding a good artifact.
        out = shared if trial % 4 >= 2 else bench["base"] / f"fresh{trial}"
        cache_home = bench["base"] / f"cache{trial}" if trial % 3 == 2 or trial >= TRIALS // 2 else None
        extra = () if cache_home else ("--no-cache",)
        before = check_dist(out)
        delay = rng.uniform(0, duration * 0.9)
        proc = start_build(bench, out, *extra, cache_home=cache_home)
        wait_for_first_progress(proc)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            reliability_figures.count("interrupted_builds", detail=f"{signal.Signals(sig).name}")
        _, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
        outcomes.append((sig.name, "cache" if cache_home else "no-cache", round(delay, 2), proc.returncode))
        check_dist(out, before)
        if cache_home:
            check_cache(cache_home)
        if sig == signal.SIGINT:
            # A clean interrupt cleans up after itself and says so in one line.
            left = leftovers(out, bench["tmpdir"])
            assert left == [], (left, delay, stderr)
            if proc.returncode == -signal.SIGINT:
                # Landed after the work was done, while the interpreter was exiting: nothing to report.
                assert "] built " in stderr or "] cached " in stderr, stderr
            elif proc.returncode != 0:
                assert proc.returncode == 130, stderr
                assert stderr.strip().splitlines()[-1] == "error: interrupted", stderr
                assert "Traceback" not in stderr, stderr
        # Whatever happened, the next build succeeds and leaves nothing behind.
        result = run_build(bench, out, *extra, cache_home=cache_home)
        assert result.returncode == 0, result.stderr
        assert leftovers(out, bench["tmpdir"]) == [], (sig, delay)
        assert check_dist(out)
        if cache_home:
            assert check_cache(cache_home) == 1  # the rebuild stored (or reused) one intact entry
    print("interrupt trials (signal, mode, delay s, exit status):", outcomes)
    # The random points really spread over the build: some signals landed before it finished.
    assert any(code != 0 for *_, code in outcomes)


def test_stale_temps_of_dead_builds_are_removed_and_live_ones_kept(bench, tmp_path):
    out = tmp_path / "dist"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [out / f".{STEM}.{dead.pid}.abc123.zip.tmp", out / f".{STEM}.{dead.pid}.abc124.json.tmp",
             out / f".{STEM}.legacy.zip.tmp"]  # fmt: skip
    live = out / f".{STEM}.{os.getpid()}.abc125.zip.tmp"  # a concurrent build that is still running
    stale_dir = bench["tmpdir"] / f"layerbuild-{STEM}-{dead.pid}-x1y2"
    stale_dir.mkdir()
    (stale_dir / "junk").write_text("half-installed")
    for path in stale + [live]:
        path.write_bytes(b"PK\x03\x04 partial")
    # A zip whose manifest never got written (killed between the two renames) is not an artifact.
    (out / f"{STEM}.zip").write_bytes(b"PK orphan")
    reliability_figures.count("faults", len(stale) + 2, detail="stale leftovers planted")
    result = run_build(bench, out)
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in stale) and not stale_dir.exists()
    assert live.exists()
    assert check_dist(out) and (out / f"{STEM}.json").exists()


def test_publish_waits_for_the_lock_held_by_another_process(bench, tmp_path):
    """While someone holds dist/.STEM.lock, a build finishes its temp files but does not rename them."""
    out = tmp_path / "dist"
    out.mkdir()
    fd = os.open(out / f".{STEM}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = start_build(bench, out)
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while not list(out.glob(f".{STEM}.*.json.tmp")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        assert list(out.glob(f".{STEM}.*.json.tmp")), "the build never got to publishing"
        assert not (out / f"{STEM}.zip").exists()
    finally:
        os.close(fd)
    _, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, stderr
    assert check_dist(out) and not list(out.glob("*.tmp"))


def test_concurrent_builds_of_one_target_end_with_one_matching_pair(bench, tmp_path):
    for round_ in range(2):
        out = tmp_path / f"dist{round_}"
        procs = [start_build(bench, out) for _ in range(2)]
        reliability_figures.count("faults", detail="concurrent builds of one target")
        for proc in procs:
            _, stderr = proc.communicate(timeout=BUILD_TIMEOUT)  # one may be served from the other's cache entry
            assert proc.returncode == 0, stderr
        found = check_dist(out)
        assert list(found) == [f"{STEM}.zip"]
        assert not list(out.glob("*.tmp"))


# --- the build cache: never a poisoned entry ---------------------------------------------------


def test_corrupted_cache_entry_is_detected_and_rebuilt(bench, tmp_path):
    out, cache_home = tmp_path / "dist", tmp_path / "xdg"
    assert run_build(bench, out, cache_home=cache_home).returncode == 0
    [entry] = [d for d in (cache_home / "layerbuild" / "builds").glob("*/*") if not d.name.startswith(".")]
    data = bytearray((entry / "layer.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit of rot
    (entry / "layer.zip").write_bytes(bytes(data))
    reliability_figures.count("faults", detail="corrupted cache entry")
    result = run_build(bench, out, cache_home=cache_home)
    assert result.returncode == 0, result.stderr
    assert "corrupted" in result.stderr and result.stdout.startswith("built:"), result.stderr
    assert check_dist(out) and check_cache(cache_home) == 1
    again = run_build(bench, out, cache_home=cache_home)
    assert again.stdout.startswith("cached:"), again.stdout  # the re-stored entry is good


def test_cache_stores_this_builds_bytes_even_if_dist_changes_right_after_publish(tmp_path, monkeypatch, write_recipe):
    """A concurrent build may publish other bytes into dist/ right after us: the cache keeps ours."""
    import layerbuild.build.pipeline as build_module
    from layerbuild.model.recipe import load_recipe
    from layerbuild.model.runtimes import make_target

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_publish = build_module.publish_pair

    def publish_then_overwritten(tmp_zip, zip_path, tmp_manifest, manifest_path):
        real_publish(tmp_zip, zip_path, tmp_manifest, manifest_path)
        # Another build publishes its own (here: empty) layer the way layerbuild does: by rename.
        other = zip_path.with_name(".other.zip.tmp")
        other.write_bytes(b"PK\x05\x06" + bytes(18))
        manifest = json.loads(manifest_path.read_text())
        manifest["sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
        os.replace(other, zip_path)
        manifest_path.write_text(json.dumps(manifest))

    monkeypatch.setattr(build_module, "publish_pair", publish_then_overwritten)
    reliability_figures.count("faults", detail="dist replaced right after publish")
    recipe = load_recipe(str(write_recipe(name="race", packages=["six"])))
    outcome = build_module.build_target(recipe, make_target("3.12", "x86_64"), out_dir=tmp_path / "dist")
    [entry] = [d for d in (tmp_path / "xdg" / "layerbuild" / "builds").glob("*/*") if not d.name.startswith(".")]
    if hashlib.sha256((entry / "layer.zip").read_bytes()).hexdigest() != outcome.manifest.sha256:
        reliability_figures.count("artifacts_lost_or_corrupted", detail="poisoned cache entry")
        pytest.fail("the cache holds another build's zip under this build's key")


def test_publishing_a_hard_link_of_the_current_zip_leaves_no_temp_name(tmp_path):
    """rename(2) is a no-op between two links to one inode (cache hits link entries into dist/)."""
    from layerbuild.build.outputs import publish_pair

    out = tmp_path / "dist"
    out.mkdir()
    zip_path, manifest_path = out / f"{STEM}.zip", out / f"{STEM}.json"
    zip_path.write_bytes(b"PK zip")
    manifest_path.write_text("{}")
    tmp_zip, tmp_manifest = out / f".{STEM}.{os.getpid()}.a.zip.tmp", out / f".{STEM}.{os.getpid()}.a.json.tmp"
    os.link(zip_path, tmp_zip)
    os.link(manifest_path, tmp_manifest)
    publish_pair(tmp_zip, zip_path, tmp_manifest, manifest_path)
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == [f"{STEM}.json", f"{STEM}.zip"]


def test_repeated_cache_hits_leave_no_temp_files(bench, tmp_path):
    out, cache_home = tmp_path / "dist", tmp_path / "xdg"
    statuses = []
    for _ in range(3):
        result = run_build(bench, out, cache_home=cache_home)
        assert result.returncode == 0, result.stderr
        statuses.append(result.stdout.split(":", 1)[0])
        assert not list(out.glob("*.tmp")), statuses
    assert statuses == ["built", "cached", "cached"]
    assert check_dist(out)


def test_interrupted_lock_write_leaves_no_temp_file_in_the_lock_directory(write_recipe, monkeypatch):
    """Lock directories are committed to git: a Ctrl-C while writing one must not litter it."""
    import layerbuild.build.pipeline as build_module
    from layerbuild.model.recipe import load_recipe

    path = write_recipe(name="lockint", packages=["six"])
    real_replace = os.replace

    def interrupted_replace(src, dst):
        if str(dst).endswith(".txt"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(build_module.os, "replace", interrupted_replace)
    reliability_figures.count("interrupted_builds", detail="SIGINT while writing a lock")
    with pytest.raises(KeyboardInterrupt):
        build_module.lock_recipe(load_recipe(str(path)))
    lock_dir = path.parent / "lockint.lock"
    assert not list(lock_dir.glob("*")), list(lock_dir.iterdir())


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_fails_in_one_line_and_keeps_the_good_artifact(bench, small_disk):
    out = small_disk / "dist"
    assert run_build(bench, out, "--no-cache").returncode == 0
    good = check_dist(out)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(bytes(max(0, free - 64 * 1024)))  # leave 64 KiB: far less than the zip needs
    reliability_figures.count("faults", detail="disk full")
    result = run_build(bench, out, "--no-cache")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last, result.stderr
    assert "Traceback" not in result.stderr
    assert check_dist(out, good) == good and not list(out.glob("*.tmp"))
    filler.unlink()
    assert run_build(bench, out, "--no-cache").returncode == 0


def test_unusable_output_directory_is_one_line(bench, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_build(bench, blocker / "dist")
    reliability_figures.count("bad_inputs", detail="unusable --out")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: --out {blocker / 'dist'}: cannot create the output directory: Not a directory"


def test_ctrl_c_is_held_until_the_block_ends_even_with_worker_threads_alive():
    """A process-directed SIGINT may be handed to any thread; the hold must not depend on which."""
    import threading

    from layerbuild.util.process import sigint_held

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigint_held():
                with sigint_held():  # nested: the inner hold hands the signal to the outer one
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)  # a handler that was not held would raise here
                    reached.append("inner")
                reached.append("outer")
    finally:
        stop.set()
    assert reached == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


POOL_SCRIPT = """
import json, os, signal, sys, threading, time
from layerbuild.util.threadpool import ThreadPool

started, finished = [], []

def job(n):
    started.append(n)
    time.sleep(1.0)
    finished.append(n)

# Ctrl-C while the caller waits for the pool at the end of its block.
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
futures = []
try:
    with ThreadPool(max_workers=2) as pool:
        futures = [pool.submit(job, n) for n in range(6)]
except KeyboardInterrupt:
    alive = [t.name for t in threading.enumerate() if t.name.startswith("ThreadPool")]
    print(json.dumps({"started": len(started), "finished": len(finished), "cancelled": sum(f.cancelled() for f in futures),
                      "pool_threads_alive": alive}))
"""


def test_ctrl_c_while_waiting_for_a_thread_pool_never_leaves_a_job_running_unjoined(tmp_path):
    """Python 3.11's Thread.join, interrupted, counts a still-running thread as stopped (later 'release
    unlocked lock' or a hang at exit: both seen in interrupt trials). ThreadPool waits through futures and joins
    with Ctrl-C held: when the interrupt surfaces, the jobs that had started are done and the rest cancelled."""
    reliability_figures.count("interrupted_builds", detail="SIGINT while waiting for a thread pool")
    proc = subprocess.run([sys.executable, "-c", POOL_SCRIPT], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert state["started"] == state["finished"] == 2, state  # two workers: two jobs ran, both to the end
    assert state["cancelled"] == 4, state  # the others never started
    assert state["pool_threads_alive"] == [], state
