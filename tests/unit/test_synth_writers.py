"""Each writer on its own, including every defect it can produce (some formats are rare in small corpora)."""
import base64
import binascii
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import wfdb

from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX
from heartbeit.data.reasons import Reason
from heartbeit.data.synth.ecg import simulate_ecg
from heartbeit.data.synth.writers import MUSE_DEFECTS, WFDB_DEFECTS, write_npz, write_wfdb_record
from heartbeit.data.synth.writers.muse_xml import muse_xml_bytes
from heartbeit.data.synth.writers.npz import npz_bytes

SIG = simulate_ecg(3, fs=250, noise_mv=0.02)
IND = SIG[[LEAD_INDEX[n] for n in INDEPENDENT_LEADS]]


def _muse(defect=None):
    return muse_xml_bytes(IND, IND[:, :250], 250, 4.88, {"PatientID": "12345678"}, {"DataType": "RESTING"},
                          {"AccessionNumber": "1"}, {"VentricularRate": 70}, ["Normal ECG"], defect=defect)


def test_muse_round_trip_and_quantisation():
    root = ET.fromstring(_muse())
    rhythm = next(w for w in root.iter("Waveform") if w.findtext("WaveformType") == "Rhythm")
    leads = {ld.findtext("LeadID"): np.frombuffer(base64.b64decode(ld.findtext("WaveFormData")), "<i2")
             for ld in rhythm.iter("LeadData")}
    assert tuple(leads) == INDEPENDENT_LEADS
    for k, name in enumerate(INDEPENDENT_LEADS):
        assert np.abs(leads[name] * 4.88 / 1000 - IND[k]).max() <= 4.88 / 2000 + 1e-6
    # every line of base64 is at most 68 characters, as GE writes them
    text = rhythm.find("LeadData/WaveFormData").text.strip().splitlines()
    assert max(map(len, text)) == 68


@pytest.mark.parametrize("defect", MUSE_DEFECTS)
def test_muse_defects_differ_from_good(defect):
    assert _muse(defect) != _muse()
    if defect is Reason.BAD_BASE64:
        root = ET.fromstring(_muse(defect))
        with pytest.raises(binascii.Error):
            for ld in root.iter("LeadData"):
                base64.b64decode(ld.findtext("WaveFormData"), validate=False)


def test_muse_rejects_unknown_defect():
    with pytest.raises(ValueError):
        _muse(Reason.NAN)


@pytest.mark.parametrize("defect", [None, *WFDB_DEFECTS])
def test_wfdb_defects(tmp_path, defect):
    hea = write_wfdb_record(tmp_path, 1234, SIG, 250, defect=defect)
    assert hea.relative_to(tmp_path).as_posix() == "records250/01000/01234_hr.hea"
    if defect is Reason.TRUNCATED:
        assert hea.with_suffix(".dat").stat().st_size < SIG.size * 2
        with pytest.raises(Exception):
            rec = wfdb.rdrecord(str(hea.with_suffix("")))
            assert rec.p_signal.shape == (SIG.shape[1], 12)  # a short read counts as failure too
        return
    x = wfdb.rdrecord(str(hea.with_suffix(""))).p_signal.T
    if defect is Reason.IMPLAUSIBLE_AMPLITUDE:
        assert np.abs(x).max() / np.abs(SIG).max() == pytest.approx(4.88, rel=0.01)
    elif defect is Reason.FLAT_LINE:
        assert (np.ptp(x, axis=1) == 0).sum() == 1
    else:
        assert np.abs(x - SIG).max() <= 0.0005 + 1e-6


def test_npz_bytes_deterministic_and_units(tmp_path):
    assert npz_bytes(SIG, "uV") == npz_bytes(SIG, "uV")
    path = write_npz(tmp_path / "a.npz", SIG, 250, "uV", {"site": "s"})
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_allclose(z["signals"], SIG * 1000, rtol=1e-6)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert list(z.keys()) == ["signals"]
