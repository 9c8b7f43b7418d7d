"""The committed generated code is what scripts/gen-protos makes of protos/."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "extproc" / "admin" / "_gen"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_committed_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-protos"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert 0 == done.returncode, done.stderr

    fresh, committed = _files(tmp_path), _files(COMMITTED)

    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert [] == stale, (
        f"{stale} differ from protos/ as grpcio-tools "
        f"{importlib.metadata.version('grpcio-tools')} generates them: run "
        "scripts/gen-protos, or install the version the dev extra pins"
    )


def test_generated_service_imports_its_messages_from_its_own_package() -> None:
    from extproc.admin._gen import admin_pb2, admin_pb2_grpc

    assert admin_pb2 is admin_pb2_grpc.tollgate_dot_admin_dot_v1_dot_admin__pb2
    assert (
        "tollgate.admin.v1.Admin"
        == admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
    )
