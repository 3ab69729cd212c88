"""File writers for the synthetic corpus, one per real export format: GE MUSE XML, WFDB (PTB-XL layout)
and npz arrays with a JSON sidecar. Each takes millivolt signals plus metadata and an optional defect
(a `heartbeit.data.reasons.Reason` value) to write a deliberately broken file for ingest to reject."""
from heartbeit.data.synth.writers.muse_xml import MUSE_DEFECTS, write_muse_xml
from heartbeit.data.synth.writers.npz import NPZ_DEFECTS, write_npz
from heartbeit.data.synth.writers.wfdb_ptbxl import PTBXL_COLUMNS, WFDB_DEFECTS, ptbxl_record_path, write_ptbxl_database, write_wfdb_record

__all__ = [
    "MUSE_DEFECTS", "NPZ_DEFECTS", "WFDB_DEFECTS", "PTBXL_COLUMNS",
    "write_muse_xml", "write_npz", "write_wfdb_record", "write_ptbxl_database", "ptbxl_record_path",
]
