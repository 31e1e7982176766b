"""The OCI host-container image: built once per session by image/build.sh
(mmdebstrap + umoci, no container daemon), then opened and checked.

The session's archive holds the amd64 image and, where arm64 programs can run
under qemu-user (qemu-user-static, binfmt-support, arch-test: scripts/setup.sh
installs them), the arm64 image too; most tests check the amd64 image, the
arm64 ones run its Python under qemu.

Set SCX_SLO_IMAGE_ARCHIVE=PATH to check an archive built earlier instead.
The build needs root, mmdebstrap and umoci (scripts/setup.sh installs them);
without them these tests are skipped and say which tool is missing.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from scx_slo.dev import oci as img

REPO = Path(__file__).resolve().parents[1]
SHIPPED_OBJECT = REPO / "plugin" / "scx_slo" / "data" / "scx_slo.bpf.o"
TARGET_COMPRESSED = 150 * 10**6
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
BUILT_FROM: dict[str, str | None] = {}      # source_digest() around the session's build


def source_digest() -> str:
    """sha256 over what goes into the image from this checkout (paths and contents)."""
    h = hashlib.sha256()
    dirs = ["setup.py", "pyproject.toml", "bpf", "plugin", "hostcontainer", "image"]
    # the sources git sees (tracked and untracked, not ignored: no build products)
    p = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z",
                        "--", *dirs], capture_output=True)
    if p.returncode == 0:
        files = [REPO / n for n in p.stdout.decode().split("\0") if n and (REPO / n).is_file()]
    else:
        files = [f for d in dirs for f in ([REPO / d] if (REPO / d).is_file() else
                                           (REPO / d).rglob("*"))
                 if f.is_file() and "__pycache__" not in f.parts and ".egg-info" not in str(f)
                 and f.suffix not in (".o", ".so", ".pyc")]
    for f in sorted(files):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _missing_build_tools() -> str | None:
    if os.geteuid() != 0:
        return "the image build needs root (mmdebstrap --mode=root)"
    for tool in ("mmdebstrap", "umoci"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install mmdebstrap umoci skopeo)"
    return None


def _missing_arm64_tools() -> str | None:
    """Why arm64 cannot be built here (None: it can; build.sh itself mounts
    binfmt_misc and registers qemu-aarch64 if need be, or fails saying why)."""
    if os.uname().machine != "x86_64":
        return f"the arm64 build under qemu-user is for x86_64 machines, this is {os.uname().machine}"
    for tool, package in (("qemu-aarch64-static", "qemu-user-static"),
                          ("update-binfmts", "binfmt-support"), ("arch-test", "arch-test")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {package}; scripts/setup.sh does)"
    return None


ARCHES = ["amd64"] if _missing_arm64_tools() else ["amd64", "arm64"]


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """The session's archive: the amd64 image, and the arm64 one where it can be built."""
    if os.environ.get("SCX_SLO_IMAGE_ARCHIVE"):
        return Path(os.environ["SCX_SLO_IMAGE_ARCHIVE"])
    missing = _missing_build_tools()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("image") / f"scx-slo-{VERSION}-{'-'.join(ARCHES)}.oci.tar"
    before = source_digest()
    result = img.build(out=out, arches=ARCHES)
    BUILT_FROM["first"] = before if source_digest() == before else None
    assert result.archive == out and out.is_file()
    assert result.size == out.stat().st_size
    assert list(result.manifests) == ARCHES and result.digest == result.manifests["amd64"]
    return out


@pytest.fixture(scope="session")
def image(archive) -> img.OciImage:
    return img.read_archive(archive, "amd64")


@pytest.fixture(scope="session")
def arm64_image(archive) -> img.OciImage:
    images = {i.architecture: i for i in img.read_images(archive)}
    if "arm64" not in images:
        pytest.skip(_missing_arm64_tools() or f"{archive} has no arm64 image")
    return images["arm64"]


@pytest.fixture(scope="session")
def layer_files(image) -> dict[str, tarfile.TarInfo]:
    """Every path in the (single) layer, normalised without './'."""
    assert len(image.layers) == 1, "the image is one layer"
    files = {}
    with tarfile.open(image.path) as tar:
        hexd = image.layers[0]["digest"].split(":")[1]
        with tarfile.open(fileobj=tar.extractfile(f"blobs/sha256/{hexd}"), mode="r|gz") as lt:
            for m in lt:
                files[m.name.removeprefix("./")] = m
    return files


def _layer_file(image, path: str) -> bytes:
    data = img.find_in_layers(image, path)
    assert data is not None, f"{path} is not in the image"
    return data


def test_oci_layout(archive, image):
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.load(tar.extractfile("index.json"))
        descs = index["manifests"]
        (desc,) = [d for d in descs if d["platform"]["architecture"] == "amd64"]
        manifest_blob = tar.extractfile("blobs/sha256/" + desc["digest"].split(":")[1]).read()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
    # one image: its ref.name is the tag; several: tag-architecture
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == \
        (VERSION if len(descs) == 1 else f"{VERSION}-amd64")
    # the manifest names its own mediaType; index.json points at these very bytes
    assert desc["digest"] == "sha256:" + hashlib.sha256(manifest_blob).hexdigest()
    assert desc["size"] == len(manifest_blob)
    assert json.loads(manifest_blob) == image.manifest
    assert image.manifest["schemaVersion"] == 2
    assert image.manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert image.manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in image.layers] == \
        ["application/vnd.oci.image.layer.v1.tar+gzip"]
    assert image.config["os"] == "linux" and image.config["architecture"] == "amd64"
    # the config's rootfs lists the uncompressed layer digest (diff_id)
    assert image.config["rootfs"]["type"] == "layers"
    assert len(image.config["rootfs"]["diff_ids"]) == 1
    # every blob in the archive is referenced (umoci gc ran) and intact (read_archive checked)
    blobs = {n.split("/")[-1] for n in names if n.startswith("blobs/sha256/")}
    referenced = {digest for i in img.read_images(archive) for digest in
                  (i.manifest_digest, i.manifest["config"]["digest"],
                   *(layer["digest"] for layer in i.layers))}
    assert blobs == {d.split(":")[1] for d in referenced}


def test_skopeo_reads_the_archive(archive, image):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (apt-get install skopeo)")
    p = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}:{image.ref}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["Digest"] == image.manifest_digest
    assert info["Labels"] == image.labels
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"


def test_entrypoint_is_the_hostcontainer_start_script(image, layer_files):
    assert image.entrypoint == ["/opt/scx-slo/hostcontainer/start"]
    assert not image.config["config"].get("Cmd")
    start = layer_files["opt/scx-slo/hostcontainer/start"]
    assert start.isfile() and start.mode & 0o111 == 0o111
    assert _layer_file(image, "opt/scx-slo/hostcontainer/start") == \
        (REPO / "hostcontainer" / "start").read_bytes()
    assert "opt/scx-slo/hostcontainer/CONTRACT.md" in layer_files
    # what start needs from the image: a shell, coreutils' stat/sha256sum, nsenter, the agent
    # (bookworm is merged-/usr: /bin is a symlink to usr/bin)
    assert layer_files["bin"].issym() and layer_files["bin"].linkname == "usr/bin"
    for path in ("usr/bin/sh", "usr/bin/stat", "usr/bin/sha256sum", "usr/bin/nsenter",
                 "usr/local/bin/scx-slo", "usr/bin/python3.11"):
        assert path in layer_files, path
    assert "PYTHONUNBUFFERED=1" in image.config["config"]["Env"]


def test_labels(image):
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.source"]
    revision = labels["org.opencontainers.image.revision"]
    m = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", revision)
    assert m, revision
    if (REPO / ".git").exists() and not os.environ.get("SCX_SLO_IMAGE_ARCHIVE"):
        # the commit the image was built from is this checkout's HEAD or an ancestor of it
        p = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", m[1], "HEAD"])
        assert p.returncode == 0, f"{revision} is not in this checkout's history"
    assert re.fullmatch(r"[0-9a-f]{64}", labels[img.OBJECT_LABEL])
    assert img.check(image) == []


def test_scheduler_object_inside_matches_the_shipped_object(image):
    inside = hashlib.sha256(_layer_file(image, img.OBJECT_SUFFIX)).hexdigest()
    assert inside == image.labels[img.OBJECT_LABEL]
    if not SHIPPED_OBJECT.exists():
        pytest.fail(f"{SHIPPED_OBJECT} is missing: build it (pip install -e .)")
    assert inside == hashlib.sha256(SHIPPED_OBJECT.read_bytes()).hexdigest(), (
        "the image carries a different scheduler object than plugin/scx_slo/data: either "
        "bpf/ changed since data/ was built (reinstall: pip install -e .), or data/ was "
        "compiled another way (the object's debug info records the compile paths)")


def test_libbpf_and_python_from_debian(image, layer_files):
    status = _layer_file(image, "var/lib/dpkg/status").decode()
    versions = dict(re.findall(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)", status, re.M))
    assert re.match(r"1:1\.(4|[5-9]|\d\d)\.", versions["libbpf1"]), versions["libbpf1"]
    assert versions["python3-minimal"].startswith("3.11")
    assert "libsystemd0" in versions
    assert any(re.fullmatch(r"usr/lib/x86_64-linux-gnu/libbpf\.so\.1\.\d+\.\d+", n) for n in layer_files)
    # the runtime dependencies were installed from wheels, pip itself is not left behind
    site = "usr/local/lib/python3.11/dist-packages/"
    for pkg in ("scx_slo", "cffi", "elftools", "tomlkit", "systemd", "kubernetes"):
        assert site + pkg in layer_files, pkg
    assert not any(n.startswith(site + "pip/") for n in layer_files)
    assert not any(n.startswith("tmp/wheels") for n in layer_files)


def test_small_no_docs_or_locales(image, layer_files):
    doc = [n for n in layer_files if n.startswith("usr/share/doc/") and layer_files[n].isfile()]
    assert doc and all(n.endswith("/copyright") for n in doc)
    for d in ("usr/share/man/", "usr/share/locale/", "usr/share/info/", "dev/"):
        assert not any(n.startswith(d) and layer_files[n].isfile() for n in layer_files), d
    assert not any(layer_files[n].ischr() or layer_files[n].isblk() for n in layer_files)
    size = image.compressed_size
    print(f"\nimage {VERSION}: {size} bytes compressed ({size / 1e6:.1f} MB, "
          f"{100 * size / TARGET_COMPRESSED:.0f}% of the 150 MB target), "
          f"{sum(m.size for m in layer_files.values()) / 1e6:.1f} MB unpacked")
    assert size <= TARGET_COMPRESSED


def test_inspect_cli_and_damaged_archive(archive, tmp_path, capsys):
    from scx_slo.cli import main

    assert main(["image", "inspect", str(archive), "--arch", "amd64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == [] and out["entrypoint"] == ["/opt/scx-slo/hostcontainer/start"]
    # flip one byte of the config blob: the digest check names the blob
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    config_digest = json.loads(
        next(d for m, d in members if m.name == "index.json"))["manifests"][0]["digest"]
    bad = tmp_path / "bad.oci.tar"
    with tarfile.open(bad, "w") as out_tar:
        for m, data in members:
            if data is not None and m.name.endswith(config_digest.split(":")[1]):
                data = bytes([data[0] ^ 1]) + data[1:]
            out_tar.addfile(m, io.BytesIO(data) if data is not None else None)
    assert main(["image", "inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "does not match its digest" in err and config_digest.split(":")[1] in err

    def with_index(name: str, change) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as out_tar:
            for m, data in members:
                if m.name == "index.json":
                    index = json.loads(data)
                    change(index)
                    data = json.dumps(index).encode()
                    m = tarfile.TarInfo("index.json")
                    m.size = len(data)
                out_tar.addfile(m, io.BytesIO(data) if data is not None else None)
        return path

    # index.json without its mediaType: readable, but inspect names the problem
    assert main(["image", "inspect", "--json", "--arch", "amd64",
                 str(with_index("no-type.oci.tar", lambda i: i.pop("mediaType")))]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == [
        f"index.json has mediaType None, expected {img.INDEX_TYPE}"]
    # a manifest descriptor whose size is not the manifest's
    assert main(["image", "inspect", str(with_index(
        "bad-size.oci.tar", lambda i: i["manifests"][0].update(size=1)))]) == 1
    assert "its descriptor says 1" in capsys.readouterr().err


# --- The programs the Python code runs must be in the image -------------------------------
# Found in the source, not at run time: every call of a function that starts a program (or
# looks one up, shutil.which), with the program resolved from a string literal, a list
# literal's first element, or a variable assigned such a value in the same function or at
# module level. Anything else (a parameter, a computed name, subprocess.run passed around
# as a value) is an UnresolvedCall: extend the scanner or name the program literally.

PLUGIN = REPO / "plugin" / "scx_slo"
# Code that never runs inside the image: development and test tooling.
NOT_IN_IMAGE = {
    "dev": "development tooling, left out of the image: the test VM, the benchmark, the "
           "image build (qemu, apt-get, bash build.sh, umoci)",
    "loader/libbpf/_build.py": "the cffi build script, run by `pip wheel` (pkg-config)",
    "commands/image.py": "scx_slo.dev.oci's command line",
    "commands/vm.py": "scx_slo.dev.vm's command line",
    "commands/bench.py": "scx_slo.dev.bench's command line",
    "commands/demo.py": "the quick benchmark in the VM",
}
# (module, function) -> where the program is: an argv ("argv"), a shell command line
# ("shell"), or a program name/path ("program"); and the positional index of that argument.
_SPAWNERS: dict[tuple[str, str], tuple[str, int]] = {
    **{("subprocess", f): ("argv", 0) for f in ("run", "call", "check_call", "check_output",
                                                "Popen")},
    ("subprocess", "getoutput"): ("shell", 0),
    ("subprocess", "getstatusoutput"): ("shell", 0),
    ("os", "system"): ("shell", 0),
    ("os", "popen"): ("shell", 0),
    **{("os", f): ("program", 0) for f in ("execv", "execve", "execl", "execle", "execlp",
                                           "execlpe", "execvp", "execvpe", "posix_spawn",
                                           "posix_spawnp")},
    **{("os", f): ("program", 1) for f in ("spawnl", "spawnle", "spawnlp", "spawnlpe",
                                           "spawnv", "spawnve", "spawnvp", "spawnvpe")},
    ("shutil", "which"): ("program", 0),
    ("asyncio", "create_subprocess_exec"): ("program", 0),
    ("asyncio", "create_subprocess_shell"): ("shell", 0),
    ("pty", "spawn"): ("argv", 0),
}
_SPAWN_MODULES = {m for m, _ in _SPAWNERS}


class UnresolvedCall(Exception):
    """A call that starts a program the scanner cannot name."""


def _own_nodes(scope: ast.AST):
    """The nodes of a function or module body, not those of functions defined in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


class _ModuleScan:
    def __init__(self, path: Path, rel: str):
        self.rel = rel
        self.tree = ast.parse(path.read_text(), str(path))
        self.parent = {c: n for n in ast.walk(self.tree) for c in ast.iter_child_nodes(n)}
        self.modules: dict[str, str] = {}                  # local name -> spawn module
        self.functions: dict[str, tuple[str, str]] = {}    # local name -> (module, function)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top in _SPAWN_MODULES and (a.asname is None or a.name == top):
                        self.modules[a.asname or top] = top
            elif isinstance(node, ast.ImportFrom) and node.module in _SPAWN_MODULES:
                for a in node.names:
                    if a.name == "*":
                        self.fail(node, f"`from {node.module} import *`")
                    if (node.module, a.name) in _SPAWNERS:
                        self.functions[a.asname or a.name] = (node.module, a.name)

    def fail(self, node: ast.AST, what: str):
        raise UnresolvedCall(f"{self.rel}:{node.lineno}: {what}: cannot tell which program "
                             "it runs (name it literally or extend the scanner in "
                             "tests/test_image.py)")

    def spawner(self, node: ast.AST) -> tuple[str, str] | None:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in self.modules:
            key = (self.modules[node.value.id], node.attr)
            return key if key in _SPAWNERS else None
        if isinstance(node, ast.Name):
            return self.functions.get(node.id)
        return None

    def in_annotation(self, node: ast.AST) -> bool:
        """node is (part of) a type annotation, e.g. `-> subprocess.Popen`."""
        while node in self.parent:
            parent = self.parent[node]
            if node is getattr(parent, "annotation", None) or node is getattr(parent, "returns", None):
                return True
            node = parent
        return False

    def scopes(self, node: ast.AST) -> list[ast.AST]:
        chain = []
        while node in self.parent:
            node = self.parent[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                chain.append(node)
        return chain

    def strings(self, node: ast.AST, at: ast.AST, depth: int = 0) -> set[str]:
        """The string values node can have; `at` is the call, for scopes and messages."""
        if depth > 10:
            self.fail(at, "a chain of assignments too long")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.List, ast.Tuple)):        # an argv: its program comes first
            if not node.elts or isinstance(node.elts[0], ast.Starred):
                self.fail(at, "an argv that does not start with the program")
            return self.strings(node.elts[0], at, depth + 1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):   # [prog] + args
            return self.strings(node.left, at, depth + 1)
        if isinstance(node, ast.Call) and self.spawner(node.func) == ("shutil", "which") \
                and node.args:
            return self.strings(node.args[0], at, depth + 1)
        if isinstance(node, ast.Name):
            for scope in self.scopes(at):
                values = [n.value for n in _own_nodes(scope)
                          if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None
                          and any(isinstance(t, ast.Name) and t.id == node.id
                                  for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
                if values:
                    return set().union(*(self.strings(v, at, depth + 1) for v in values))
            self.fail(at, f"`{node.id}` is not assigned a program in the function or module")
        self.fail(at, f"`{ast.unparse(node)}`")

    def programs(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and node.id in self.modules:
                parent = self.parent.get(node)
                if not (isinstance(parent, ast.Attribute) and parent.value is node):
                    self.fail(node, f"the module `{node.id}` used as a value")
            key = self.spawner(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if key is None or self.in_annotation(node):
                continue
            call = self.parent.get(node)
            if not (isinstance(call, ast.Call) and call.func is node):
                self.fail(node, f"{'.'.join(key)} used other than by calling it")
            kind, index = _SPAWNERS[key]
            kwargs = {k.arg: k.value for k in call.keywords if k.arg}
            if None in (k.arg for k in call.keywords) or any(
                    isinstance(a, ast.Starred) for a in call.args[:index + 1]):
                self.fail(call, f"{'.'.join(key)} called with *args or **kwargs")
            if len(call.args) > index:
                arg = call.args[index]
            elif key[0] == "subprocess" and "args" in kwargs:
                arg = kwargs["args"]
            else:
                self.fail(call, f"{'.'.join(key)} called without its program argument")
            shell = kind == "shell" or (isinstance(kwargs.get("shell"), ast.Constant)
                                        and kwargs["shell"].value is True)
            if "shell" in kwargs and not isinstance(kwargs["shell"], ast.Constant):
                self.fail(call, "shell= that is not a constant")
            names = {shlex.split(s)[0] if shell and shlex.split(s) else s
                     for s in self.strings(arg, call)}
            if shell:
                names.add("sh")
            if "executable" in kwargs:
                names |= self.strings(kwargs["executable"], call)
            for name in names:
                found.setdefault(name, set()).add(f"{self.rel}:{call.lineno}")
        return found


def programs_run(root: Path = PLUGIN, not_in_image=NOT_IN_IMAGE) -> dict[str, set[str]]:
    """program -> the call sites (file:line) that run it, over the Python code under root."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(rel == x or rel.startswith(x + "/") for x in not_in_image):
            continue
        for name, sites in _ModuleScan(path, rel).programs().items():
            found.setdefault(name, set()).update(sites)
    return found


def _lookup(files: dict[str, tarfile.TarInfo], path: str) -> tarfile.TarInfo | None:
    """The layer member at path, following symlinks (bookworm's /bin -> usr/bin and others)."""
    todo, done, hops = [p for p in path.split("/") if p], [], 0
    while todo:
        part = todo.pop(0)
        if part in (".", ""):
            continue
        if part == "..":
            done = done[:-1]
            continue
        member = files.get("/".join(done + [part]))
        if member is None:
            return None
        if member.issym():
            hops += 1
            if hops > 40:
                return None
            if member.linkname.startswith("/"):
                done = []
            todo = [p for p in member.linkname.split("/") if p] + todo
            continue
        done.append(part)
    return files.get("/".join(done))


def in_image(files: dict[str, tarfile.TarInfo], env_path: str, program: str) -> str | None:
    """Where program (a name looked up in env_path, or an absolute path) is an executable
    file in the layer, or None."""
    candidates = [program] if "/" in program else \
        [f"{d.rstrip('/')}/{program}" for d in env_path.split(":") if d.startswith("/")]
    for cand in candidates:
        m = _lookup(files, cand)
        if m is not None and (m.isfile() or m.islnk()) and m.mode & 0o111:
            return cand
    return None


def test_program_scan_of_this_checkout():
    """What the scan finds here (and that the excluded paths still exist, so the list
    does not silently outlive the code it names)."""
    for rel in NOT_IN_IMAGE:
        assert (PLUGIN / rel).exists(), f"NOT_IN_IMAGE names {rel}, which is gone"
    found = programs_run()
    assert "mount" in found and any(s.startswith("loader/pins.py:") for s in found["mount"]), found
    # the excluded tooling is left out, and would be found otherwise
    fewer = {k: v for k, v in NOT_IN_IMAGE.items() if k != "loader/libbpf/_build.py"}
    assert set(programs_run(not_in_image=fewer)) - set(found) == {"pkg-config"}


def test_program_scan_resolves_names_and_fails_on_what_it_cannot(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text(
        "import os, shutil\n"
        "import subprocess as sp\n"
        "from subprocess import check_output as co\n"
        "TOOL = 'ip'\n"
        "def f(x):\n"
        "    cmd = ['nsenter', '-t', '1']\n"
        "    sp.run(cmd + x)\n"
        "    sp.run([TOOL, 'link'])\n"
        "    co('/usr/bin/stat', text=True)\n"
        "    sp.call('tc qdisc show', shell=True)\n"
        "    exe = shutil.which('ethtool')\n"
        "    sp.run([exe, '-i'])\n"
        "    os.execvp('true', ['true'])\n"
        "    os.path.join('a', 'b'); sp.PIPE\n"
        "def g() -> sp.Popen: pass\n")
    assert {k: sorted(v) for k, v in programs_run(pkg, {}).items()} == {
        "nsenter": ["ok.py:7"], "ip": ["ok.py:8"], "/usr/bin/stat": ["ok.py:9"],
        "tc": ["ok.py:10"], "sh": ["ok.py:10"], "ethtool": ["ok.py:11", "ok.py:12"],
        "true": ["ok.py:13"]}
    for body in ("import subprocess\ndef f(cmd):\n    subprocess.run(cmd)\n",
                 "import subprocess\nsubprocess.run([*base, 'x'])\n",
                 "import subprocess\nsubprocess.run(f'{x} y', shell=True)\n",
                 "import subprocess\nrun = subprocess.run\n",
                 "import subprocess as s\nimport functools\nfunctools.partial(s.run, ['a'])\n",
                 "import os\nos.system(command_line)\n",
                 "import subprocess\nsubprocess.run(**kw)\n",
                 "import subprocess\nsp = subprocess\nsp.run(['a'])\n",
                 "from subprocess import *\nrun(['a'])\n"):
        (pkg / "ok.py").unlink(missing_ok=True)
        (pkg / "bad.py").write_text(body)
        with pytest.raises(UnresolvedCall, match=r"bad\.py:\d+: .*cannot tell which program"):
            programs_run(pkg, {})
    # excluded code is not read
    assert programs_run(pkg, {"bad.py": "dev tooling"}) == {}


def test_in_image_follows_merged_usr_links():
    def member(name, kind=tarfile.REGTYPE, mode=0o755, link=""):
        m = tarfile.TarInfo(name)
        m.type, m.mode, m.linkname = kind, mode, link
        return m
    files = {m.name: m for m in (
        member("usr", tarfile.DIRTYPE), member("usr/bin", tarfile.DIRTYPE),
        member("bin", tarfile.SYMTYPE, link="usr/bin"), member("usr/bin/mount"),
        member("usr/bin/readme", mode=0o644),
        member("usr/bin/python3", tarfile.SYMTYPE, link="python3.11"),
        member("usr/bin/python3.11"))}
    assert in_image(files, "/sbin:/bin", "mount") == "/bin/mount"
    assert in_image(files, "/usr/bin", "python3") == "/usr/bin/python3"
    assert in_image(files, "/usr/bin", "/bin/mount") == "/bin/mount"
    assert in_image(files, "/usr/bin:/bin", "readme") is None       # not executable
    assert in_image(files, "/usr/bin:/bin", "nsenter") is None


def test_every_program_the_python_code_runs_is_in_the_image(image, layer_files):
    env = dict(e.split("=", 1) for e in image.config["config"]["Env"])
    missing = {prog: sorted(sites) for prog, sites in programs_run().items()
               if in_image(layer_files, env["PATH"], prog) is None}
    assert not missing, (f"the Python code runs programs the image lacks (PATH={env['PATH']}): "
                         f"{missing}; add their Debian packages to image/build.sh")


def test_unpack_gives_a_root_filesystem(archive, tmp_path):
    if shutil.which("umoci") is None:
        pytest.skip("umoci not installed (apt-get install umoci)")
    root = img.unpack_rootfs(archive, tmp_path / "rootfs", "amd64")
    assert os.access(root / "opt/scx-slo/hostcontainer/start", os.X_OK)
    assert (root / "usr/local/bin/scx-slo").read_text().startswith("#!/usr/bin/python3")
    if os.geteuid() == 0 and shutil.which("chroot"):
        p = subprocess.run(["chroot", str(root), "scx-slo", "--version"], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"scx-slo {VERSION}"


def test_reproducible_with_source_date_epoch(archive, image, tmp_path, monkeypatch):
    """A second build of the same checkout with the same SOURCE_DATE_EPOCH gives
    the same layer, config and manifest digests."""
    if os.environ.get("SCX_SLO_IMAGE_ARCHIVE"):
        pytest.skip("checking a prebuilt archive: nothing to rebuild against")
    created = image.config["created"]
    epoch = subprocess.run(["date", "-u", "-d", created, "+%s"], capture_output=True,
                           text=True, check=True).stdout.strip()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    before = source_digest()
    # amd64 alone: its manifest does not depend on what else the archive holds
    again = img.read_archive(img.build(out=tmp_path / "again.oci.tar", quiet=True).archive)
    if not (BUILT_FROM.get("first") == before == source_digest()):
        pytest.skip("the checkout changed during or between the two builds "
                    "(a shared working tree): nothing to compare")
    assert [layer["digest"] for layer in again.layers] == [layer["digest"] for layer in image.layers]
    assert again.manifest_digest == image.manifest_digest


def test_build_refuses_an_unknown_or_repeated_architecture():
    for arches in (["riscv64"], ["amd64", "amd64"]):
        with pytest.raises(img.ImageError, match="at most once"):
            img.build(arches=arches)
    if _missing_build_tools() is None:      # build.sh gets as far as reading --arch
        p = subprocess.run(["bash", str(img.BUILD_SCRIPT), "--arch", "amd64,riscv64"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1
        assert "unsupported architecture 'riscv64' in --arch amd64,riscv64" in p.stderr


EM_AARCH64 = 183       # ELF e_machine


def test_index_lists_an_amd64_and_an_arm64_image(archive, image, arm64_image, capsys):
    from scx_slo.cli import main

    descs = image.index["manifests"]
    assert [(d["mediaType"], d["platform"], d["annotations"]["org.opencontainers.image.ref.name"])
            for d in descs] == [
        (img.MANIFEST_TYPE, {"architecture": "amd64", "os": "linux"}, f"{VERSION}-amd64"),
        (img.MANIFEST_TYPE, {"architecture": "arm64", "os": "linux"}, f"{VERSION}-arm64")]
    assert image.index["mediaType"] == img.INDEX_TYPE
    assert [d["digest"] for d in descs] == [image.manifest_digest, arm64_image.manifest_digest]
    assert arm64_image.manifest["mediaType"] == img.MANIFEST_TYPE
    assert (arm64_image.config["os"], arm64_image.config["architecture"]) == ("linux", "arm64")
    assert img.check(arm64_image) == []
    # the same code and scheduler object (BPF is the same bytes on every architecture),
    # one root filesystem per architecture
    assert arm64_image.labels == image.labels
    assert arm64_image.layers[0]["digest"] != image.layers[0]["digest"]
    assert arm64_image.entrypoint == image.entrypoint
    assert arm64_image.config["config"]["Env"] == image.config["config"]["Env"]
    ext = img.find_in_layers(arm64_image, "scx_slo/loader/libbpf/_libbpf.abi3.so")
    assert ext is not None and ext[:4] == b"\x7fELF"
    assert int.from_bytes(ext[18:20], "little") == EM_AARCH64, "the cffi extension is not arm64"
    assert arm64_image.compressed_size <= TARGET_COMPRESSED
    # inspect checks every image when not told which
    assert main(["image", "inspect", str(archive), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(o["architecture"], o["problems"]) for o in out] == [("amd64", []), ("arm64", [])]
    with pytest.raises(img.ImageError, match="lists 2 images .*name an architecture"):
        img.read_archive(archive)
    if shutil.which("skopeo"):
        p = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}:{arm64_image.ref}"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        info = json.loads(p.stdout)
        assert (info["Architecture"], info["Digest"]) == ("arm64", arm64_image.manifest_digest)
    with capsys.disabled():
        print(f"\narm64 image {VERSION}: {arm64_image.compressed_size} bytes compressed "
              f"({arm64_image.compressed_size / 1e6:.1f} MB); amd64: "
              f"{image.compressed_size / 1e6:.1f} MB")


def test_arm64_python_runs_the_binding_under_qemu(archive, arm64_image, tmp_path):
    """The arm64 image's own Python, run by qemu-aarch64-static (-L: the image is
    the root for the dynamic linker and every absolute path), imports the agent,
    its arm64 wheels and the cffi libbpf binding, which calls into libbpf.so.1."""
    root = img.unpack_rootfs(archive, tmp_path / "rootfs", "arm64")
    qemu = ["qemu-aarch64-static", "-L", str(root), str(root / "usr/bin/python3")]
    code = ("import platform, scx_slo.loader.libbpf as l, scx_slo.loader.libbpf._libbpf as ext, scx_slo.agent.loop, "
            "grpc, google.protobuf, systemd.journal, scx_slo.agent.policies, kubernetes.client, "
            "cryptography.hazmat.bindings._rust; "
            "print(platform.machine(), l.version_string(), l.num_possible_cpus() > 0, ext.__file__)")
    p = subprocess.run([*qemu, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    machine, version, cpus, ext = p.stdout.split()
    assert machine == "aarch64" and cpus == "True"
    assert re.fullmatch(r"v?1\.([4-9]|\d\d)(\.\d+)?", version), version
    # the image's own extension (python3 finds its prefix from its path: the rootfs)
    assert ext == str(root / "usr/local/lib/python3.11/dist-packages/scx_slo/loader/libbpf/_libbpf.abi3.so")
    p = subprocess.run([*qemu, str(root / "usr/local/bin/scx-slo"), "--version"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"scx-slo {VERSION}"


def test_entrypoint_runs_unchanged_in_the_host_ctr_layout(archive, tmp_path):
    """hostcontainer/emulate-host-ctr lays the unpacked image out as host-ctr does for a
    superpowered container (fresh sysfs, host root read-only at /.bottlerocket/rootfs,
    persistent storage with user-data, host PID namespace) and runs the entrypoint. On a
    kernel without sched_ext the real agent must refuse in its preflight, cleanly; the
    pin directory must have been made in the HOST's bpffs. (The VM test runs the same
    harness on a sched_ext kernel and sees the scheduler attached.)"""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("umoci") is None:
        pytest.skip("needs root, unshare and umoci")
    if Path("/sys/kernel/sched_ext").exists():
        pytest.skip("this kernel has sched_ext: the agent would really run; the VM test covers it")
    bpf = tmp_path / "host-bpffs"
    bpf.mkdir()
    if subprocess.run(["mount", "-t", "bpf", "bpf", str(bpf)]).returncode != 0:
        pytest.skip("cannot mount bpffs here")
    try:
        root = img.unpack_rootfs(archive, tmp_path / "rootfs", "amd64")
        storage = tmp_path / "local-host-containers-scx-slo"
        storage.mkdir()
        (storage / "user-data").write_bytes(
            (REPO / "settings" / "examples" / "guide-demo.toml").read_bytes())
        host = "/.bottlerocket/rootfs"       # the host root as host-ctr mounts it
        env = [*image_env(archive), f"SCX_SLO_HOST_ROOT={host}",
               f"SCX_SLO_PIN_DIR={host}{bpf}/scx-slo"]
        p = subprocess.run([str(REPO / "hostcontainer" / "emulate-host-ctr"),
                            "--rootfs", str(root), "--name", "scx-slo", "--storage", str(storage),
                            *[a for e in env for a in ("--env", e)]],
                           capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        print(out)
        assert "user-data /.bottlerocket/host-containers/current/user-data" in out
        assert ("host container scx-slo: exec scx-slo run --user-data "
                "/.bottlerocket/host-containers/current/user-data "
                "--state-dir /.bottlerocket/host-containers/current --name scx-slo") in out
        assert (bpf / "scx-slo").is_dir(), "the pin directory is not in the host's bpffs"
        assert p.returncode == 1 and "sched_ext" in out and "Traceback" not in out
        # the harness's mount namespace died with the entrypoint
        mounts = Path("/proc/self/mounts").read_text()
        assert str(root) not in mounts
    finally:
        subprocess.run(["umount", str(bpf)], check=False)


@pytest.mark.vm
def test_entrypoint_attaches_the_scheduler_on_a_sched_ext_kernel(archive, vm_factory, tmp_path):
    """The image's root filesystem in the VM, laid out as host-ctr lays out a superpowered
    host container (tests/vm/hostctr_guest.py): the entrypoint runs unchanged with the
    image's own Python, libbpf and object, attaches scx_slo, pins it in the host's bpffs,
    prints its status lines; disabled in the API and sent SIGTERM, it detaches and unpins."""
    if shutil.which("umoci") is None:
        pytest.skip("umoci not installed (apt-get install umoci)")
    root = img.unpack_rootfs(archive, tmp_path / "rootfs", "amd64")
    vm = vm_factory(cpus=2, mem_mb=2048, trees={"/srv/image-rootfs": root})
    r = vm.run(["python3", "/opt/scx-slo/src/tests/vm/hostctr_guest.py",
                "--rootfs", "/srv/image-rootfs",
                "--user-data", "/opt/scx-slo/src/settings/examples/guide-demo.toml"], timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    console = seen["console"]
    print(console)
    assert seen["before"][0] == "disabled"
    assert seen["attached"] and seen["after_start"] == ["enabled", "scx_slo"], console[-3000:]
    # the entrypoint found its user-data and storage where Bottlerocket puts them
    assert "user-data /.bottlerocket/host-containers/current/user-data" in console
    assert ("host container scx-slo: exec scx-slo run --user-data "
            "/.bottlerocket/host-containers/current/user-data "
            "--state-dir /.bottlerocket/host-containers/current --name scx-slo") in console
    # the process host-ctr signals is the agent itself, chrooted in the image
    assert seen["agent_cmdline"][1:3] == ["/usr/local/bin/scx-slo", "run"], seen["agent_cmdline"]
    assert seen["agent_root"] == "/srv/image-rootfs"
    # the object the image carries is what was loaded and pinned in the HOST's bpffs
    sha = img.read_archive(archive, "amd64").labels[img.OBJECT_LABEL]
    assert f"({sha[:16]})" in console
    assert any(p.startswith(sha[:16] + "/") for p in seen["pins"]), seen["pins"]
    # the status line (journalctl -u host-containers@scx-slo) and status.json in storage
    assert seen["status_line"], console[-3000:]
    assert seen["status_json"]["config_source"] and not seen["status_json"]["given_up"]
    assert [c["name"] for c in seen["status_json"]["classes"]] == \
        ["default", "frontend", "interactive"]
    # disabled + SIGTERM: detached and unpinned, a clean exit, no mounts left behind
    assert seen["exit_code"] == 0, console[-3000:]
    assert "is disabled: scheduler detached and unpinned" in console
    assert seen["after_stop"][0] == "disabled"
    assert not any(p.startswith(sha[:16]) for p in seen["pins_after_stop"]), seen["pins_after_stop"]
    assert seen["mounts_left"] == []
    assert "Traceback" not in console


def image_env(archive) -> list[str]:
    return img.read_archive(archive, "amd64").config["config"]["Env"]
