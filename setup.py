"""Build steps that pyproject.toml cannot express: the cffi extension and the BPF object.

The BPF scheduler (bpf/*.bpf.c) is compiled with clang into the package's data
directory so that an installed scx_slo carries its default scheduler object,
and once more with its test hooks into scx_slo/dev/data (see bpf/scx_slo.bpf.c).
"""
import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CLANG = os.environ.get("BPF_CLANG", "clang-19")


def compile_bpf(out: Path, src: Path, defines: tuple[str, ...] = ()) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Relative paths, run from the checkout, and a fixed debug compilation
    # directory: the debug info then records the same paths wherever the
    # checkout lives, so every build of the same source is the same object.
    cmd = [CLANG, "-target", "bpf", "-mcpu=v3", "-g", "-O2", "-Wall", "-Werror",
           "-fdebug-compilation-dir=.", "-D__TARGET_ARCH_x86", *(f"-D{d}" for d in defines),
           "-I", "bpf/include", "-I", "bpf",
           "-c", str(src.relative_to(HERE)), "-o", str(out.resolve())]
    print(" ".join(cmd))
    # clang-19 orders the BTF forward declarations of some objects one way
    # when SOURCE_DATE_EPOCH is set (as the image build sets it) and another
    # when it is not (seen: the same source, two objects). Always set it.
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    subprocess.run(cmd, check=True, cwd=HERE, env=env)


def compile_objects(pkg: Path) -> None:
    """Every bpf/*.bpf.c into the package's data directory; and the scheduler's
    test build (its test hooks compiled in) into scx_slo.dev, which the image
    leaves out."""
    for src in sorted((HERE / "bpf").glob("*.bpf.c")):
        compile_bpf(pkg / "data" / (src.name[: -len(".c")] + ".o"), src)
    compile_bpf(pkg / "dev" / "data" / "scx_slo_hooks.bpf.o", HERE / "bpf" / "scx_slo.bpf.c",
                ("SCX_SLO_TEST_HOOKS",))


class BuildPyWithBpf(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            compile_objects(HERE / "plugin" / "scx_slo")
        else:
            compile_objects(Path(self.build_lib) / "scx_slo")


cffi_modules = []
if (HERE / "plugin" / "scx_slo" / "loader" / "libbpf" / "_build.py").exists():
    cffi_modules.append("plugin/scx_slo/loader/libbpf/_build.py:ffibuilder")

setup(cmdclass={"build_py": BuildPyWithBpf}, cffi_modules=cffi_modules)
