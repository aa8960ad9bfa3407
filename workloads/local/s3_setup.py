"""SeaweedFS (Apache-2.0), the local S3 server, built once from the Go module proxy.

SeaweedFS's go.mod carries a ``replace`` directive, so ``go install M@V`` refuses it. We
build from a small main module of our own instead: it requires SeaweedFS at the pinned
(pseudo-)version as a ``tool`` and repeats the replace. The binary lands in
``~/.cache/strata/bin/weed-<version>`` (keyed by version, so a pin change rebuilds and an
unchanged pin never does); a file lock makes concurrent sessions wait for one build.

    python -m workloads.local.s3_setup        # build (once) and print the binary's path
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from workloads.local.errors import MissingDependencyError, ServiceFailedError

MODULE = "github.com/seaweedfs/seaweedfs"
# The proxy serves SeaweedFS only as pseudo-versions (its tags are not semver).
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
# Repeated from SeaweedFS's own go.mod at this version (a main module's replaces only apply to itself).
REPLACES = {"github.com/tyler-smith/go-bip39": "github.com/cosmos/go-bip39 v1.0.0"}
GO_FIX = "install Go 1.24+ (the `go` command) so SeaweedFS can be built once from the Go module proxy"


def bin_dir() -> Path:
    home = os.environ.get("STRATA_CACHE_HOME") or str(Path.home() / ".cache" / "strata")
    return Path(home) / "bin"


def weed_path() -> Path:
    return bin_dir() / f"weed-{VERSION}"


def _main_module(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    replaces = "".join(f"replace {old} => {new}\n" for old, new in REPLACES.items())
    (src / "go.mod").write_text(f"module strata.local/weed\n\ngo 1.24\n\n{replaces}")


def ensure_weed(log=None) -> Path:
    """The SeaweedFS ``weed`` binary, building it the first time only (minutes, at nice 19)."""
    target = weed_path()
    if target.exists():
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise MissingDependencyError("s3", "Go (`go`) to build SeaweedFS once", GO_FIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".weed-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another session built it meanwhile
            return target
        if log:
            log(f"building SeaweedFS {VERSION} from the Go module proxy into {target} (once; minutes)")
        src = target.parent.parent / "build" / "weed"
        shutil.rmtree(src, ignore_errors=True)
        _main_module(src)
        partial = target.with_name(target.name + ".partial")
        env = {**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0"}
        steps = (
            [go, "get", "-tool", f"{MODULE}/weed@{VERSION}"],
            ["nice", "-n", "19", go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), f"{MODULE}/weed"],
        )
        for step in steps:
            res = subprocess.run(step, cwd=src, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise ServiceFailedError("s3", f"`{' '.join(step)}` failed:\n{res.stderr[-4000:]}")
        partial.rename(target)
    return target
