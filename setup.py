"""Build steps that pyproject.toml cannot express: the cffi extension and the BPF object.

The BPF scheduler (bpf/*.bpf.c) is compiled with clang into the package's data
directory so that an installed scx_slo carries its default scheduler object.
"""
import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CLANG = os.environ.get("BPF_CLANG", "clang-19")


def compile_bpf(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # Relative paths, run from the checkout, and a fixed debug compilation
    # directory: the debug info then records the same paths wherever the
    # checkout lives, so every build of the same source is the same object.
    for src in sorted((HERE / "bpf").glob("*.bpf.c")):
        obj = out_dir.resolve() / (src.name[: -len(".c")] + ".o")
        cmd = [CLANG, "-target", "bpf", "-mcpu=v3", "-g", "-O2", "-Wall", "-Werror",
               "-fdebug-compilation-dir=.", "-D__TARGET_ARCH_x86",
               "-I", "bpf/include", "-I", "bpf",
               "-c", str(src.relative_to(HERE)), "-o", str(obj)]
        print(" ".join(cmd))
        # clang-19 orders the BTF forward declarations of some objects one way
        # when SOURCE_DATE_EPOCH is set (as the image build sets it) and another
        # when it is not (seen: the same source, two objects). Always set it.
        env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
        subprocess.run(cmd, check=True, cwd=HERE, env=env)


class BuildPyWithBpf(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            compile_bpf(HERE / "plugin" / "scx_slo" / "data")
        else:
            compile_bpf(Path(self.build_lib) / "scx_slo" / "data")


cffi_modules = []
if (HERE / "plugin" / "scx_slo" / "loader" / "libbpf" / "_build.py").exists():
    cffi_modules.append("plugin/scx_slo/loader/libbpf/_build.py:ffibuilder")

setup(cmdclass={"build_py": BuildPyWithBpf}, cffi_modules=cffi_modules)
