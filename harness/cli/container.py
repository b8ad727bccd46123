"""`python -m harness.cli.container` (`make container`): build the harness container
(harness.build.container) from the command line."""
from __future__ import annotations

import argparse
import json
import sys

from harness.build import container as C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.cli.container",
                                 description="Build the NeMo Evaluator-compatible harness container "
                                             f"({C.LATEST}) offline.")
    ap.add_argument("--force", action="store_true", help="rebuild even if an image with the same inputs exists")
    ap.add_argument("--base-image", default=None,
                    help=f"registry base image (e.g. {C.ONLINE_BASE}) instead of the offline debootstrap base")
    ap.add_argument("--with-test-data", action="store_true",
                    help="bake the verified test_data.h5 (about 1 GB) into the image")
    ap.add_argument("--quiet", "-q", action="store_true", help="print only the image id")
    args = ap.parse_args(argv)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        res = C.build(force=args.force, base_image=args.base_image, with_test_data=args.with_test_data,
                      progress=progress)
    except C.ContainerError as e:
        print(f"container: {e}", file=sys.stderr)
        return 1
    if args.quiet:
        print(res.image_id)
    else:
        print(json.dumps({"image": res.image_id, "tags": res.tags, "skipped": res.skipped,
                          "seconds": res.seconds, "size_mb": round((res.size_bytes or 0) / 1e6),
                          "steps": res.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
