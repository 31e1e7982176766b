"""The OCI host-container image: building it, reading and checking an archive.

`build` runs image/build.sh of this source checkout (wheel + mmdebstrap +
umoci, no container daemon) for one or more architectures and prints the
archive's path, manifest digests and size. An archive holds one image per
architecture, each listed in index.json with its platform. `inspect` opens an
OCI image archive and checks each image: layout, manifest, config, platform,
entrypoint, labels, and that the scheduler object inside matches the
`io.scx-slo.object.sha256` label. `unpack` lays an image's root filesystem out
in a directory (umoci raw unpack), e.g. for a VM test that runs the entrypoint.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scx_slo.errors import ScxSloError

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "image" / "build.sh"
OBJECT_SUFFIX = "scx_slo/data/scx_slo.bpf.o"
OBJECT_LABEL = "io.scx-slo.object.sha256"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
ARCHITECTURES = ("amd64", "arm64")      # what image/build.sh --arch can build


class ImageError(ScxSloError):
    """The image could not be built, or an archive is not the image we expect."""


@dataclass
class BuildResult:
    archive: Path
    digest: str                 # the first architecture's manifest digest
    size: int
    manifests: dict[str, str] = field(default_factory=dict)   # architecture -> manifest digest


@dataclass
class OciImage:
    """What an OCI image archive holds, read with tarfile and json only."""
    path: Path
    ref: str
    manifest_digest: str
    manifest: dict
    config: dict
    layers: list[dict] = field(default_factory=list)
    index: dict = field(default_factory=dict)
    descriptor: dict = field(default_factory=dict)     # the manifest's entry in index.json

    @property
    def architecture(self) -> str:
        return self.config.get("architecture", "")

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("config", {}).get("Entrypoint") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("config", {}).get("Labels") or {})

    @property
    def compressed_size(self) -> int:
        """Bytes a registry stores: the layers plus the config blob."""
        return sum(layer["size"] for layer in self.layers) + self.manifest["config"]["size"]


def build(out: Path | None = None, work: Path | None = None, keep_work: bool = False,
          quiet: bool = False, arches: list[str] | None = None) -> BuildResult:
    """Run image/build.sh for `arches` (default amd64) into one archive; its
    progress goes to stderr (or nowhere if quiet)."""
    if not BUILD_SCRIPT.is_file():
        raise ImageError(f"{BUILD_SCRIPT} not found: `scx-slo image build` needs a source "
                         "checkout of scx-slo (installed editable)")
    arches = list(arches or ["amd64"])
    unknown = [a for a in arches if a not in ARCHITECTURES]
    if unknown or len(set(arches)) != len(arches):
        raise ImageError(f"--arch {','.join(arches)}: give each of {', '.join(ARCHITECTURES)} "
                         "at most once")
    cmd = ["bash", str(BUILD_SCRIPT), "--arch", ",".join(arches)]
    if out:
        cmd += ["--out", str(out)]
    if work:
        cmd += ["--work", str(work)]
    if keep_work:
        cmd.append("--keep-work")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                       stderr=subprocess.DEVNULL if quiet else None)
    if p.returncode != 0:
        raise ImageError(f"{BUILD_SCRIPT.relative_to(REPO)} failed with exit status "
                         f"{p.returncode} (its messages are above)")
    kv = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    manifests = {k.removeprefix("manifest."): v for k, v in kv.items()
                 if k.startswith("manifest.")}
    try:
        result = BuildResult(Path(kv["archive"]), kv["digest"], int(kv["size"]), manifests)
    except (KeyError, ValueError) as e:
        raise ImageError(f"{BUILD_SCRIPT.name} printed no archive/digest/size: {p.stdout!r}") from e
    if list(manifests) != arches:
        raise ImageError(f"{BUILD_SCRIPT.name} built {list(manifests)}, asked for {arches}")
    return result


def _blob(tar: tarfile.TarFile, desc: dict, archive: Path) -> bytes:
    """The blob a descriptor points at, checked against its digest and size."""
    digest = desc["digest"]
    algo, _, hexd = digest.partition(":")
    name = f"blobs/{algo}/{hexd}"
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ImageError(f"{archive}: blob {digest} is missing ({name})") from None
    data = tar.extractfile(member).read()
    if algo != "sha256" or hashlib.sha256(data).hexdigest() != hexd:
        raise ImageError(f"{archive}: blob {name} does not match its digest")
    if len(data) != desc.get("size"):
        raise ImageError(f"{archive}: blob {name} is {len(data)} bytes, its descriptor "
                         f"says {desc.get('size')}")
    return data


def _json_member(tar: tarfile.TarFile, name: str, archive: Path) -> dict:
    try:
        return json.loads(tar.extractfile(tar.getmember(name)).read())
    except KeyError:
        raise ImageError(f"{archive}: no {name}: not an OCI image layout") from None
    except json.JSONDecodeError as e:
        raise ImageError(f"{archive}: {name} is not JSON: {e}") from None


def read_archive(archive: Path, arch: str | None = None) -> OciImage:
    """The image of an oci-archive: its only one, or the one for `arch`."""
    images = read_images(archive)
    if arch is None:
        if len(images) != 1:
            raise ImageError(f"{archive}: index.json lists {len(images)} images "
                             f"({', '.join(i.architecture for i in images)}): name an architecture")
        return images[0]
    for image in images:
        if image.architecture == arch:
            return image
    raise ImageError(f"{archive}: no {arch} image (it has "
                     f"{', '.join(i.architecture for i in images)})")


def read_images(archive: Path) -> list[OciImage]:
    """Open an oci-archive (a tar of an OCI image layout) and read every image
    index.json lists, in its order."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError) as e:
        raise ImageError(f"{archive}: cannot open as a tar archive: {e}") from None
    with tar:
        try:
            tar.getmembers()
        except (OSError, tarfile.TarError) as e:
            raise ImageError(f"{archive}: damaged or truncated tar archive: {e}") from None
        layout = _json_member(tar, "oci-layout", archive)
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise ImageError(f"{archive}: oci-layout imageLayoutVersion is "
                             f"{layout.get('imageLayoutVersion')!r}, expected '1.0.0'")
        index = _json_member(tar, "index.json", archive)
        manifests = index.get("manifests") or []
        if not manifests:
            raise ImageError(f"{archive}: index.json lists no manifests")
        images = []
        for desc in manifests:
            if desc.get("mediaType") != MANIFEST_TYPE:
                raise ImageError(f"{archive}: index.json manifest mediaType is "
                                 f"{desc.get('mediaType')!r}, expected {MANIFEST_TYPE}")
            manifest = json.loads(_blob(tar, desc, archive))
            config = json.loads(_blob(tar, manifest["config"], archive))
            for layer in manifest.get("layers", []):
                _blob(tar, layer, archive)     # present and intact
            ref = desc.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            images.append(OciImage(archive, ref, desc["digest"], manifest, config,
                                   list(manifest.get("layers", [])), index, desc))
        archs = [i.architecture for i in images]
        if len(set(archs)) != len(archs):
            raise ImageError(f"{archive}: index.json lists two images for one architecture: {archs}")
        return images


def find_in_layers(image: OciImage, suffix: str) -> bytes | None:
    """The content of the last file whose path ends with `suffix`, across layers."""
    found = None
    with tarfile.open(image.path) as tar:
        for layer in image.layers:
            algo, _, hexd = layer["digest"].partition(":")
            f = tar.extractfile(tar.getmember(f"blobs/{algo}/{hexd}"))
            try:
                with tarfile.open(fileobj=f, mode="r|*") as lt:
                    for m in lt:
                        if m.isfile() and m.name.lstrip("./").endswith(suffix):
                            found = lt.extractfile(m).read()
            except (OSError, EOFError, tarfile.TarError) as e:
                raise ImageError(f"{image.path}: layer {layer['digest']} is not a readable "
                                 f"tar stream: {e}") from None
    return found


def check(image: OciImage) -> list[str]:
    """Problems with the image as the scx-slo host-container image (empty: none)."""
    problems = []
    # the image-spec: both SHOULD carry their mediaType (build.sh sets them)
    for what, doc, expected in (("index.json", image.index, INDEX_TYPE),
                                ("the manifest", image.manifest, MANIFEST_TYPE)):
        if doc.get("mediaType") != expected:
            problems.append(f"{what} has mediaType {doc.get('mediaType')!r}, expected {expected}")
    platform = image.descriptor.get("platform")
    if platform is None:
        problems.append("the index.json descriptor has no platform")
    elif (platform.get("os"), platform.get("architecture")) != \
            (image.config.get("os"), image.config.get("architecture")):
        problems.append(f"the index.json descriptor's platform {platform} is not the config's "
                        f"{image.config.get('os')}/{image.config.get('architecture')}")
    if image.entrypoint != ["/opt/scx-slo/hostcontainer/start"]:
        problems.append(f"entrypoint is {image.entrypoint}, expected the hostcontainer start script")
    for key in ("org.opencontainers.image.version", "org.opencontainers.image.source",
                "org.opencontainers.image.revision", OBJECT_LABEL):
        if not image.labels.get(key):
            problems.append(f"label {key} is missing")
    obj = find_in_layers(image, OBJECT_SUFFIX)
    if obj is None:
        problems.append(f"no {OBJECT_SUFFIX} in the image's layers")
    elif hashlib.sha256(obj).hexdigest() != image.labels.get(OBJECT_LABEL):
        problems.append(f"the scheduler object's sha256 {hashlib.sha256(obj).hexdigest()} "
                        f"differs from label {OBJECT_LABEL}={image.labels.get(OBJECT_LABEL)}")
    return problems


def unpack_rootfs(archive: Path, dest: Path, arch: str | None = None) -> Path:
    """Lay the image's (or its `arch` image's) root filesystem out at dest (must
    not exist) with umoci."""
    umoci = shutil.which("umoci")
    if umoci is None:
        raise ImageError("umoci not found: apt-get install umoci")
    image = read_archive(archive, arch)
    dest = Path(dest)
    if dest.exists():
        raise ImageError(f"{dest} already exists: unpack needs a new directory")
    with tempfile.TemporaryDirectory(prefix="scx-slo-oci.") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if not image.ref and len(image.index.get("manifests", [])) > 1:
            raise ImageError(f"{archive}: the {image.architecture} image has no ref.name "
                             "annotation for umoci to find it by")
        ref = f"{tmp}:{image.ref}" if image.ref else tmp
        p = subprocess.run([umoci, "raw", "unpack", "--image", ref, str(dest)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise ImageError(f"umoci raw unpack of {archive} failed: {p.stderr.strip()}")
    return dest
