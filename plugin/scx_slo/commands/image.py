"""`scx-slo image build|inspect|unpack`: the command line of scx_slo.dev.oci."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scx_slo.dev.oci import ImageError, build, check, read_archive, read_images, unpack_rootfs


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build the OCI image archive (no container daemon)")
    b.add_argument("--arch", default="amd64",
                   help="comma-separated architectures, one image each in the one archive: "
                        "amd64, arm64 or amd64,arm64 (default amd64; arm64 on an amd64 "
                        "machine runs under qemu-user)")
    b.add_argument("--out", type=Path, help="archive path (default build/image/scx-slo-VERSION-ARCHES.oci.tar)")
    b.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    b.add_argument("--keep-work", action="store_true", help="keep the work directory")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    i = sub.add_parser("inspect", help="open an image archive and check it")
    i.add_argument("archive", type=Path)
    i.add_argument("--arch", help="only the image of this architecture (default: every image)")
    i.add_argument("--json", action="store_true",
                   help="print the result as JSON (a list when several images are inspected)")
    u = sub.add_parser("unpack", help="lay the image's root filesystem out in a directory")
    u.add_argument("archive", type=Path)
    u.add_argument("dest", type=Path)
    u.add_argument("--arch", help="the architecture's image (needed when there are several)")


def run(args) -> int:
    try:
        if args.image_command == "build":
            arches = [a.strip() for a in args.arch.split(",") if a.strip()]
            r = build(args.out, args.work, args.keep_work, arches=arches)
            if args.json:
                print(json.dumps({"archive": str(r.archive), "digest": r.digest, "size": r.size,
                                  "manifests": r.manifests}))
            else:
                print(f"archive: {r.archive}")
                for arch, digest in r.manifests.items():
                    print(f"digest:  {digest}  ({arch})")
                print(f"size:    {r.size} bytes ({r.size / 2**20:.1f} MiB)")
            return 0
        if args.image_command == "inspect":
            images = ([read_archive(args.archive, args.arch)] if args.arch
                      else read_images(args.archive))
            results = []
            for image in images:
                problems = check(image)
                results.append(problems)
                if args.json:
                    continue
                print(f"archive:      {image.path}")
                print(f"ref:          {image.ref}  ({image.config.get('os')}/{image.architecture})")
                print(f"digest:       {image.manifest_digest}")
                print(f"entrypoint:   {image.entrypoint}")
                print(f"compressed:   {image.compressed_size} bytes ({image.compressed_size / 2**20:.1f} MiB)")
                for k, v in sorted(image.labels.items()):
                    print(f"label:        {k}={v}")
                for prob in problems:
                    print(f"PROBLEM:      {prob}")
                print("ok: the scx-slo host-container image" if not problems else "not ok")
            if args.json:
                docs = [{"archive": str(image.path), "ref": image.ref,
                         "digest": image.manifest_digest, "entrypoint": image.entrypoint,
                         "labels": image.labels, "compressed_size": image.compressed_size,
                         "architecture": image.architecture, "problems": problems}
                        for image, problems in zip(images, results)]
                print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
            return 0 if not any(results) else 1
        if args.image_command == "unpack":
            print(unpack_rootfs(args.archive, args.dest, args.arch))
            return 0
    except ImageError as e:
        print(f"scx-slo image: {e}", file=sys.stderr)
        return 1
    return 2
