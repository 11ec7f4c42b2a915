#!/usr/bin/env python3
"""Vendor GraphiQL's browser assets into app/graphiql/static/vendor/ from the npm registry.

Flowdeck serves GraphiQL from its own package, so the page works offline and loads nothing
from a CDN. This script is how those files get there, and the only way they change:

    python scripts/vendor_graphiql.py           # fetch the pinned tarballs, write the files
    python scripts/vendor_graphiql.py --check   # fetch them again: do the files still match?

Each package is pinned to a version and to the SHA-512 of its registry tarball (npm's
``dist.integrity``); a tarball with any other digest is refused before anything is written.
The chosen files are copied byte for byte with the package's licence, and
``manifest.json`` records each file's SHA-384 as a Subresource Integrity value: the page's
``integrity`` attributes come from it, so a browser refuses a file that drifted from what
was pinned, and a test compares the files with the manifest.

To upgrade: change a version, run ``npm view <package>@<version> dist.integrity`` for the
new digest, run this script, and load /graphql in a browser. React stays on 18 (the last
line that ships UMD builds) and GraphiQL on 3 (the last line that ships one).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "app" / "graphiql" / "static" / "vendor"
REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")


@dataclass(frozen=True)
class Package:
    """An npm package pinned by version and tarball digest, and the files taken from it."""

    name: str
    version: str
    integrity: str  # the registry's dist.integrity of the tarball
    files: dict[str, str]  # path inside the tarball (under package/) -> vendored file name

    @property
    def tarball_url(self) -> str:
        """The registry URL of the tarball."""
        return f"{REGISTRY}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


PACKAGES = (
    Package(
        name="react",
        version="18.3.1",
        integrity="sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
        files={
            "umd/react.production.min.js": "react-18.3.1.production.min.js",
            "LICENSE": "react-18.3.1.LICENSE.txt",
        },
    ),
    Package(
        name="react-dom",
        version="18.3.1",
        integrity="sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==",
        files={
            "umd/react-dom.production.min.js": "react-dom-18.3.1.production.min.js",
            "LICENSE": "react-dom-18.3.1.LICENSE.txt",
        },
    ),
    Package(
        name="graphiql",
        version="3.9.0",
        integrity="sha512-rJYFlHdBbug9+YbFSwRVvgfPjCayC7wHecZkx/qB4XLuQPFQZw/yB9pmHFtOJV6RiNBBHro3u1GdocKa3YcGRA==",
        files={
            "graphiql.min.js": "graphiql-3.9.0.min.js",
            "graphiql.min.css": "graphiql-3.9.0.min.css",
            "LICENSE": "graphiql-3.9.0.LICENSE.txt",
        },
    ),
)


def sri(data: bytes, algorithm: str = "sha384") -> str:
    """A Subresource Integrity value (``sha384-<base64>``) of ``data``."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def fetch_tarball(package: Package) -> bytes:
    """The package's tarball from the registry, refused unless its digest is the pinned one."""
    with urllib.request.urlopen(package.tarball_url, timeout=60) as response:  # noqa: S310
        data: bytes = response.read()
    digest = sri(data, "sha512")
    if digest != package.integrity:
        raise SystemExit(
            f"{package.name}@{package.version}: tarball digest {digest} is not the pinned "
            f"{package.integrity}; nothing written"
        )
    return data


def extract(package: Package, tarball: bytes) -> dict[str, bytes]:
    """The vendored files' contents, by vendored name."""
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for inner, name in package.files.items():
            member = archive.extractfile(f"package/{inner}")
            if member is None:
                raise SystemExit(f"{package.name}@{package.version}: no package/{inner}")
            contents[name] = member.read()
    return contents


def manifest(files: dict[str, tuple[Package, str, bytes]]) -> dict[str, object]:
    """What manifest.json holds: each file's origin and SRI digest."""
    return {
        "registry": REGISTRY,
        "files": {
            name: {
                "package": package.name,
                "version": package.version,
                "path": f"package/{inner}",
                "tarball": package.tarball_url,
                "tarballIntegrity": package.integrity,
                "integrity": sri(data),
            }
            for name, (package, inner, data) in sorted(files.items())
        },
    }


def collect() -> dict[str, tuple[Package, str, bytes]]:
    """Every vendored file, fetched and verified, by vendored name."""
    files: dict[str, tuple[Package, str, bytes]] = {}
    for package in PACKAGES:
        contents = extract(package, fetch_tarball(package))
        for inner, name in package.files.items():
            files[name] = (package, inner, contents[name])
        print(f"{package.name}@{package.version}: tarball {package.integrity[:23]}… verified")
    return files


def write(files: dict[str, tuple[Package, str, bytes]]) -> None:
    """Replace the vendor directory's files with ``files`` and their manifest."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    for stale in VENDOR.iterdir():
        if stale.name not in files and stale.name != "manifest.json":
            stale.unlink()
    for name, (_, _, data) in files.items():
        (VENDOR / name).write_bytes(data)
        print(f"  {name}  {len(data):>9} bytes  {sri(data)}")
    text = json.dumps(manifest(files), indent=2) + "\n"
    (VENDOR / "manifest.json").write_text(text, encoding="utf-8")


def check(files: dict[str, tuple[Package, str, bytes]]) -> int:
    """0 when the vendored files and manifest are exactly what the pinned tarballs give."""
    problems = []
    for name, (_, _, data) in files.items():
        path = VENDOR / name
        if not path.exists() or path.read_bytes() != data:
            problems.append(f"{name}: differs from the pinned tarball")
    recorded = (VENDOR / "manifest.json").read_text(encoding="utf-8")
    if recorded != json.dumps(manifest(files), indent=2) + "\n":
        problems.append("manifest.json: differs from the pinned tarballs")
    extra = {p.name for p in VENDOR.iterdir()} - set(files) - {"manifest.json"}
    problems += [f"{name}: not from a pinned package" for name in sorted(extra)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print("vendored GraphiQL assets match the pinned tarballs" if not problems else "MISMATCH")
    return 1 if problems else 0


def main() -> int:
    """Fetch, verify and write (or, with --check, compare) the vendored assets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare the vendored files; write nothing"
    )
    args = parser.parse_args()
    files = collect()
    if args.check:
        return check(files)
    write(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
