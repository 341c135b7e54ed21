"""The one layer that touches the filesystem layout: schemas, atomic writes, parts, manifests, locks."""

from sbe.storage.arrays import fixed_size_list, to_numpy_matrix
from sbe.storage.atomic import (
    atomic_path,
    clean_stale_temps,
    write_json_atomic,
    write_parquet_atomic,
)
from sbe.storage.lock import DirLock, LockedError
from sbe.storage.manifest import (
    InputFingerprint,
    Manifest,
    SkipLog,
    StageTimer,
    config_hash,
    fingerprint_file,
    fingerprint_paths,
    load_manifest,
    manifest_is_current,
    output_files,
    write_manifest,
)
from sbe.storage.parts import (
    list_parts,
    part_is_current,
    read_part_meta,
    remove_stale_parts,
    write_part,
)

__all__ = [
    "DirLock",
    "InputFingerprint",
    "LockedError",
    "Manifest",
    "SkipLog",
    "StageTimer",
    "atomic_path",
    "clean_stale_temps",
    "config_hash",
    "fingerprint_file",
    "fingerprint_paths",
    "fixed_size_list",
    "list_parts",
    "load_manifest",
    "manifest_is_current",
    "output_files",
    "part_is_current",
    "read_part_meta",
    "remove_stale_parts",
    "to_numpy_matrix",
    "write_json_atomic",
    "write_manifest",
    "write_parquet_atomic",
    "write_part",
]
