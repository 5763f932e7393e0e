"""The DICOM files lgms-edge writes, read by an independent reader (pydicom)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import numpy as np
import pydicom

from lgms_models import phantom

MODEL = os.path.join(phantom.REPO_ROOT, "tests", "fixtures", "tiny_dark.onnx")


def _ask(sock, reader, cmd: dict) -> dict:
    sock.sendall((json.dumps(cmd) + "\n").encode())
    return json.loads(reader.readline())


def test_snapshot_and_cine_read_back_with_pydicom(tmp_path):
    ctl, spool = tmp_path / "ctl.sock", tmp_path / "spool"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'display = "null"\nframes = 150\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n'
        "[measure]\ndepth_mm = 32\n"
        f"[control]\nsocket = {json.dumps(str(ctl))}\ncine_seconds = 0.5\n"
        f"spool_dir = {json.dumps(str(spool))}\nsnapshot_dir = {json.dumps(str(tmp_path / 'snaps'))}\n"
        'patient_id = "PY-1"\npatient_name = "Doe^Jane"\n'
        f"[model]\npath = {json.dumps(MODEL)}\n"
    )
    run = subprocess.Popen(
        [phantom.require_binary(), "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if ctl.exists():
                break
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(ctl))
            reader = s.makefile("r")
            for _ in range(200):
                if _ask(s, reader, {"cmd": "status"}).get("cine_frames", 0) >= 15:
                    break
                time.sleep(0.05)
            shot = _ask(s, reader, {"cmd": "save-snapshot"})
            cine = _ask(s, reader, {"cmd": "save-cine"})
    finally:
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err.decode()
    assert shot["ok"] and cine["ok"], (shot, cine)

    ds = pydicom.dcmread(shot["dicom"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert os.path.basename(shot["dicom"]) == f"{ds.SOPInstanceUID}.dcm"
    assert (ds.PatientID, str(ds.PatientName)) == ("PY-1", "Doe^Jane")
    assert ds.ImageComments == "AI overlay - not for diagnosis"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.pixel_array.shape == (64, 96, 3) and ds.pixel_array.dtype == np.uint8
    # 32 mm over 64 rows: 0.05 cm per pixel.
    region = ds.SequenceOfUltrasoundRegions[0]
    assert (region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection) == (3, 3)
    assert abs(region.PhysicalDeltaX - 0.05) < 1e-9 and abs(region.PhysicalDeltaY - 0.05) < 1e-9
    with open(os.path.splitext(shot["dicom"])[0] + ".json") as f:
        assert json.load(f)["sop_instance_uid"] == ds.SOPInstanceUID

    mf = pydicom.dcmread(cine["dicom"])
    assert mf.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    assert mf.StudyInstanceUID == ds.StudyInstanceUID
    assert int(mf.NumberOfFrames) == 15
    assert mf.pixel_array.shape == (15, 64, 96, 3)
    assert 20.0 < float(mf.FrameTime) < 50.0
