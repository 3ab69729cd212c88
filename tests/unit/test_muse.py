"""GE MUSE XML reader on the real fixtures and on crafted documents."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.data_ingest.crafted import ecg, muse_bytes
from heartbeit.data.leads import LEAD_INDEX
from heartbeit.data.ingest.muse import parse_muse, read_muse
from heartbeit.data.reasons import IngestError, Reason

MUSE_FIXTURES = ("example1.xml", "example2.xml", "muse_ecg1.xml")


@pytest.mark.parametrize("name", MUSE_FIXTURES)
def test_fixture_reads_12_leads_with_exact_derived_leads(ecg_fixtures, name):
    rec = read_muse(ecg_fixtures / "muse_xml" / name)
    x = rec.signals.astype(np.float64)
    assert rec.signals.dtype == np.float32 and x.shape == (12, 5000) and rec.fs == 500.0
    i, ii = x[LEAD_INDEX["I"]], x[LEAD_INDEX["II"]]
    np.testing.assert_allclose(x[LEAD_INDEX["III"]], ii - i, atol=1e-5)
    np.testing.assert_allclose(x[LEAD_INDEX["aVR"]], -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(x[LEAD_INDEX["aVL"]], i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(x[LEAD_INDEX["aVF"]], ii - i / 2, atol=1e-5)
    ptp = np.ptp(x, axis=1)
    assert (ptp > 0.1).all() and (ptp < 6).all()  # millivolts, 4.88 uV/bit applied
    assert rec.meta["measurements"]["qrs_duration_ms"] > 0


def test_median_waveform_is_optional(ecg_fixtures):
    rec = read_muse(ecg_fixtures / "muse_xml" / "example1.xml", waveform_type="Median")
    assert rec.signals.shape == (12, 600)


def test_fixture_identifiers_are_read_for_deid(ecg_fixtures):
    rec = read_muse(ecg_fixtures / "muse_xml" / "muse_ecg1.xml")
    assert rec.meta["patient_id"] == "JAX01234"
    assert rec.meta["last_name"] == "TEST 05"
    assert rec.meta["acquisition_date"].year == 2021 and rec.meta["sex"] == "M"


def test_crafted_document_roundtrip():
    x = ecg(7)
    rec = parse_muse(muse_bytes(x), "x.xml")
    # 4.88 uV quantisation
    np.testing.assert_allclose(rec.signals, x, atol=0.0049)
    assert rec.meta["accession"] and rec.meta["birth_date"].year == 1931
    assert rec.meta["measurements"]["ventricular_rate"] == 70


def test_waveform_selected_by_type_not_position():
    doc = muse_bytes(ecg(1)).replace(b"<Waveform><WaveformType>Rhythm",
                                     b"<Waveform><WaveformType>Median</WaveformType><SampleBase>500</SampleBase>"
                                     b"</Waveform><Waveform><WaveformType>Rhythm")
    rec = parse_muse(doc, "x.xml")
    assert rec.signals.shape[1] == 5000
    with pytest.raises(IngestError) as err:
        parse_muse(doc, "x.xml", "Median")
    assert err.value.reason is Reason.MISSING_LEAD


def test_errors_name_the_file_only():
    with pytest.raises(IngestError) as err:
        parse_muse(muse_bytes(ecg(1))[:3000], "site/file.xml")
    assert err.value.reason is Reason.TRUNCATED
    assert err.value.detail.startswith("site/file.xml")
