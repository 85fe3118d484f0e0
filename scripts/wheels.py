"""Build and prove the release artefacts: manylinux wheels and an sdist.

    python3 scripts/wheels.py build [PYTHON ...]    # dist/: a wheel per interpreter, an sdist
    python3 scripts/wheels.py check [PYTHON ...]    # each wheel, installed without Rust: pytest
    python3 scripts/wheels.py check-sdist [PYTHON]  # the sdist builds and runs where Rust is

PYTHON is a name on PATH or a path; without any, every CPython 3.10-3.13 found on
the machine (on PATH, else under pyenv). The Makefile targets `wheels`,
`check-wheels` and `check-sdist` call this. Standard library only: it runs under
any of the interpreters, and inside the check venvs (`pytest-installed`).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
DIST = REPO / "dist"
TOOLS_VENV = REPO / ".venv-wheels"
MINORS = ("3.10", "3.11", "3.12", "3.13")

# glibc 2.17 is the oldest that Rust's std supports (since Rust 1.64), so no
# wheel of ours can claim less; our other dependencies (ring, bundled SQLite,
# tokio) ask for nothing newer, which `auditwheel show` confirms on each wheel.
GLIBC = (2, 17)
COMPATIBILITY = "manylinux_{}_{}".format(*GLIBC)
# The legacy names that maturin also writes into the file name.
LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

WHEEL_NAME = re.compile(r"^cachu-[^-]+-cp(\d)(\d+)-cp\d+-(?P<platform>[^-]+)\.whl$")


def run(cmd, **kwargs):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def fail(message):
    sys.exit(f"wheels.py: {message}")


# -- interpreters --------------------------------------------------------------


def describe(python):
    """(executable, "3.X", implementation) of an interpreter, or None if it does not run."""
    code = (
        "import sys; print(sys.executable); "
        "print('%d.%d' % sys.version_info[:2]); print(sys.implementation.name)"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[0], out[1], out[2]


def find_cpython(minor):
    """A CPython `minor` ("3.12") on this machine: `python3.12` on PATH (a pyenv
    shim runs only for the active versions), else pyenv's own build."""
    candidates = [f"python{minor}"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob(f"versions/{minor}.*/bin/python{minor}"))
    for candidate in candidates:
        found = describe(candidate)
        if found and found[1] == minor and found[2] == "cpython":
            return found[0]
    return None


def interpreters(names):
    """{"3.X": executable} for the interpreters named, or every CPython 3.10-3.13 found."""
    if not names:
        found = {minor: find_cpython(minor) for minor in MINORS}
        pythons = {minor: exe for minor, exe in found.items() if exe}
        if not pythons:
            fail("no CPython 3.10-3.13 found; name interpreters with PYTHONS=...")
        missing = sorted(set(MINORS) - set(pythons))
        if missing:
            print(f"note: no CPython {', '.join(missing)} on this machine", flush=True)
        return pythons
    pythons = {}
    for name in names:
        found = describe(name)
        if found is None:
            fail(f"interpreter {name!r} (from PYTHONS) does not run")
        exe, minor, implementation = found
        if implementation != "cpython" or minor not in MINORS:
            fail(f"{name!r} is {implementation} {minor}: the wheels are for CPython 3.10-3.13")
        pythons[minor] = exe
    return pythons


# -- build ------------------------------------------------------------------------


def glibc_of_machine():
    name, version = platform.libc_ver()
    if name != "glibc":
        fail(f"this machine's C library is {name or 'unknown'}, not glibc: manylinux needs glibc")
    return tuple(int(part) for part in version.split(".")[:2])


def tools(need_zig):
    """The build tools' own venv: maturin, auditwheel, and zig (from PyPI) when
    this machine's glibc is newer than the one the wheels target."""
    if not (TOOLS_VENV / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", TOOLS_VENV])
    # The same maturin range as pyproject's [build-system].
    packages = ["maturin>=1.7,<2", "auditwheel"] + (["ziglang"] if need_zig else [])
    run([TOOLS_VENV / "bin" / "python", "-m", "pip", "install", "-q", *packages])
    return TOOLS_VENV / "bin"


def platform_glibc(tag):
    """The glibc a platform tag asks for: manylinux_2_17_x86_64 -> (2, 17), and
    the legacy manylinux2014_x86_64 -> (2, 17)."""
    match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if match:
        return int(match[1]), int(match[2])
    legacy = tag.split("_", 1)[0]
    if legacy in LEGACY_GLIBC:
        return LEGACY_GLIBC[legacy]
    fail(f"platform tag {tag!r} is not manylinux")


def audit(bin_dir, wheel):
    """`auditwheel show` must find the wheel's symbols within what its tags promise."""
    out = subprocess.run(
        [bin_dir / "auditwheel", "show", wheel], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r'consistent with the following platform tag:\s*"([^"]+)"', out)
    if not found:
        fail(f"auditwheel show {wheel.name} said:\n{out}")
    needed = platform_glibc(found[1])
    tags = WHEEL_NAME.match(wheel.name)["platform"].split(".")
    claimed = min(platform_glibc(tag) for tag in tags)
    if claimed < needed:
        fail(f"{wheel.name} is tagged for glibc {claimed} but needs {needed}:\n{out}")
    print(f"  auditwheel: consistent with {found[1]}, as tagged ({', '.join(tags)})")


def elf_sections(library):
    out = subprocess.run(
        ["readelf", "-S", "-W", library], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(r"\]\s+(\.\S+)", out)


def check_stripped(wheel):
    """No debug information and no symbol table in the extension module."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        modules = [n for n in zf.namelist() if n.endswith(".so")]
        if len(modules) != 1:
            fail(f"{wheel.name} holds {len(modules)} extension modules, expected 1")
        library = Path(zf.extract(modules[0], tmp))
        unstripped = [s for s in elf_sections(library) if s.startswith(".debug") or s == ".symtab"]
        if unstripped:
            fail(f"{wheel.name}: {modules[0]} is not stripped ({', '.join(unstripped)})")
        size = library.stat().st_size
    print(f"  stripped: {modules[0]} has no .debug* or .symtab ({size / 2**20:.1f} MiB unpacked)")


def build(names):
    pythons = interpreters(names)
    machine = glibc_of_machine()
    need_zig = machine > GLIBC
    bin_dir = tools(need_zig)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for old in DIST.glob("cachu-*"):
        old.unlink()
    DIST.mkdir(exist_ok=True)
    # The release profile of Cargo.toml (the one `pip install .` uses), and no
    # debug symbols in the wheel. zig links against glibc 2.17's symbols when
    # this machine's glibc is newer (maturin finds it as `python -m ziglang`).
    for minor, exe in pythons.items():
        print(f"== CPython {minor}: {exe}", flush=True)
        cmd = [bin_dir / "maturin", "build", "--release", "--strip"]
        cmd += ["--compatibility", COMPATIBILITY, "--interpreter", exe, "--out", DIST]
        run(cmd + (["--zig"] if need_zig else []), env=env, cwd=REPO)
    run([bin_dir / "maturin", "sdist", "--out", DIST], env=env, cwd=REPO)

    print(f"\n== dist/ (this machine: glibc {'.'.join(map(str, machine))})")
    for artefact in sorted(DIST.glob("cachu-*")):
        print(f"{artefact.name}  {artefact.stat().st_size / 2**20:.2f} MiB")
        if artefact.suffix == ".whl":
            audit(bin_dir, artefact)
            check_stripped(artefact)


# -- check ------------------------------------------------------------------------


def without_rust(environ):
    """The environment with no Rust toolchain reachable: PATH loses every
    directory holding cargo, rustc or rustup, and the Rust variables go."""
    rust = ("cargo", "rustc", "rustup")
    kept = [
        d
        for d in environ.get("PATH", "").split(os.pathsep)
        if d and not any(os.access(os.path.join(d, tool), os.X_OK) for tool in rust)
    ]
    env = {
        k: v
        for k, v in environ.items()
        if not k.startswith(("CARGO", "RUSTUP", "RUSTC", "RUSTFLAGS", "PYO3", "MATURIN"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PATH"] = os.pathsep.join(kept)
    for tool in rust:
        if shutil.which(tool, path=env["PATH"]):
            fail(f"could not hide {tool} from PATH")
    return env


def fresh_venv(python, path, env):
    run([python, "-m", "venv", "--clear", path], env=env)
    return path / "bin" / "python"


def assert_installed_from(python, artefact, cwd, env):
    """In the venv of `python`: `import cachu` is the package installed from `artefact`."""
    run([python, SCRIPT, "installed-from", artefact.name], cwd=cwd, env=env)


def installed_from(artefact_name):
    """Run inside a venv: cachu and its compiled module are in this venv's
    site-packages, the repo's python/ is not importable, and pip installed
    cachu from the file `artefact_name` (PEP 610's direct_url.json)."""
    import importlib.metadata

    import cachu
    import cachu._cachu

    site = sysconfig.get_paths()["platlib"]
    for mod in (cachu, cachu._cachu):
        if not mod.__file__.startswith(site):
            raise RuntimeError(f"{mod.__name__} comes from {mod.__file__}, not {site}")
    source = str(REPO / "python")
    if any(os.path.realpath(p or ".") == source for p in sys.path):
        raise RuntimeError(f"{source} is on sys.path")
    dist = importlib.metadata.distribution("cachu")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if not url.endswith("/" + artefact_name):
        raise RuntimeError(f"cachu was installed from {url!r}, not {artefact_name}")
    print(f"  cachu {dist.version} from {cachu.__file__}, installed from {artefact_name}")


def wheels_for(pythons):
    wheels = {}
    for wheel in DIST.glob("cachu-*.whl"):
        match = WHEEL_NAME.match(wheel.name)
        if match:
            wheels[f"{match[1]}.{match[2]}"] = wheel
    missing = sorted(set(pythons) - set(wheels))
    if missing:
        fail(f"no wheel in dist/ for CPython {', '.join(missing)}: run `make wheels` first")
    return wheels


def check(names):
    pythons = interpreters(names)
    wheels = wheels_for(pythons)
    env = without_rust(os.environ)
    results = []
    for minor, exe in pythons.items():
        wheel = wheels[minor]
        print(f"\n== {wheel.name} on CPython {minor}, no Rust on PATH", flush=True)
        venv = REPO / f".venv-wheel-py{minor}"
        python = fresh_venv(exe, venv, env)
        venv_env = dict(env, PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
        # --only-binary: pip may not fall back to building cachu (or anything) from source.
        pip = [python, "-m", "pip", "install", "-q", "--only-binary", ":all:"]
        run([*pip, f"{wheel}[test]"], env=venv_env)
        # Outside the repo, so that neither the cwd nor python/ can be imported.
        with tempfile.TemporaryDirectory() as cwd:
            assert_installed_from(python, wheel, cwd, venv_env)
            run([python, "-m", "cachu"], cwd=cwd, env=venv_env, stdout=subprocess.DEVNULL)
            print("  python -m cachu: ok")
            summary = Path(cwd) / "summary.json"
            status = subprocess.run(
                [python, SCRIPT, "pytest-installed", wheel.name, summary], cwd=cwd, env=venv_env
            ).returncode
            counts = json.loads(summary.read_text()) if summary.exists() else {}
        results.append((minor, wheel, status, counts))

    print("\n== check-wheels")
    for minor, wheel, status, counts in results:
        tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no result"
        print(f"CPython {minor}  {wheel.name}  {'ok' if status == 0 else 'FAILED'}  ({tally})")
    if any(status != 0 for _, _, status, _ in results):
        sys.exit(1)


class ImportsTheInstalledPackage:
    """pytest plugin: after collection (conftest loaded, every test module
    imported), cachu must be the installed one; afterwards, keep the counts."""

    def __init__(self, artefact_name):
        self.artefact_name = artefact_name
        self.counts = {}

    def pytest_collection_finish(self, session):
        installed_from(self.artefact_name)

    def pytest_terminal_summary(self, terminalreporter):
        for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
            n = len(terminalreporter.stats.get(key, []))
            if n:
                self.counts[key] = n


def pytest_installed(artefact_name, summary):
    """Run inside a check venv: the whole suite of the repo against the installed package."""
    import pytest

    plugin = ImportsTheInstalledPackage(artefact_name)
    args = ["-q", "-p", "no:cacheprovider", "-c", REPO / "pyproject.toml", "--rootdir", REPO]
    status = pytest.main([str(a) for a in [*args, REPO / "tests"]], plugins=[plugin])
    Path(summary).write_text(json.dumps(plugin.counts))
    return int(status)


def check_sdist(names):
    pythons = interpreters(names[:1] or [sys.executable])
    ((minor, exe),) = pythons.items()
    sdists = sorted(DIST.glob("cachu-*.tar.gz"))
    if len(sdists) != 1:
        fail(f"expected one sdist in dist/, found {len(sdists)}: run `make wheels` first")
    sdist = sdists[0]
    print(f"== {sdist.name} on CPython {minor}, built from source with Rust", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python = fresh_venv(exe, REPO / ".venv-sdist", env)
    run([python, "-m", "pip", "install", "-q", "--no-binary", "cachu", sdist], env=env)
    with tempfile.TemporaryDirectory() as cwd:
        assert_installed_from(python, sdist, cwd, env)
        run([python, "-m", "cachu"], cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    print("  python -m cachu: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "check", "check-sdist"):
        sub.add_parser(name).add_argument("pythons", nargs="*")
    sub.add_parser("installed-from").add_argument("artefact")
    pytest_parser = sub.add_parser("pytest-installed")
    pytest_parser.add_argument("artefact")
    pytest_parser.add_argument("summary")
    args = parser.parse_args()
    if args.command == "build":
        build(args.pythons)
    elif args.command == "check":
        check(args.pythons)
    elif args.command == "check-sdist":
        check_sdist(args.pythons)
    elif args.command == "installed-from":
        installed_from(args.artefact)
    else:
        sys.exit(pytest_installed(args.artefact, args.summary))


if __name__ == "__main__":
    main()
