import json
import shutil

import pandas as pd
import pytest

from volslice.competitions import rsna2023 as comp
from volslice.config import CacheConfig
from volslice.data.cache_runner import run_cache
from volslice.data.folds import make_folds
from volslice.infer import main as infer_main
from volslice.inference import predict
from volslice.train import main as train_main

SMALL = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "train.n_slices=4", "train.crop=24",
         "train.batch_size=2", "train.epochs=1", "train.workers=0", "train.progress=false",
         "cache.size=32", "cache.n_slices=8"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    run_cache(tiny_data, root / "cache", CacheConfig(size=32, z_mode="count", n_slices=8, workers=1), progress=False)
    make_folds(pd.read_csv(tiny_data / "train.csv"), pd.read_csv(tiny_data / "train_series_meta.csv"), 2, 0).to_csv(
        root / "folds.csv", index=False)
    train_main(["--data", str(tiny_data), "--cache", str(root / "cache"), "--folds", str(root / "folds.csv"),
                *SMALL, f"train.out_dir={root / 'run'}"])
    return root / "run"


def test_infer_writes_a_validated_scored_submission(tiny_data, trained, tmp_path, capsys):
    out, report = tmp_path / "sub.csv", tmp_path / "report.json"
    assert infer_main(["--data", str(tiny_data), "--models", str(trained), "--out", str(out),
                       "--report", str(report), "--device", "cpu"]) == 0
    sub = pd.read_csv(out)
    test_ids = pd.read_csv(tiny_data / "test_series_meta.csv").patient_id.unique()
    comp.validate_submission(sub, test_ids)
    result = json.loads(report.read_text())
    expected = comp.score(pd.read_csv(tiny_data / "test_solution.csv"), sub).score
    assert result["test"] == pytest.approx(expected) and result["submission"] == str(out)
    assert 0 < result["inference_share_reading"] < 1
    assert "test score" in capsys.readouterr().out


def test_tta_weights_and_unreadable_patients(tiny_data, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    meta = pd.read_csv(data / "test_series_meta.csv")
    sizes = meta.groupby("patient_id").size()
    victim_patient = int(sizes.index[sizes.argmin()])  # a patient with one series, if there is one
    victim_series = int(meta[meta.patient_id == victim_patient].series_id.iloc[0])
    files = list((data / "test_images" / str(victim_patient) / str(victim_series)).glob("*.dcm"))
    assert files
    for f in files:
        f.write_bytes(b"broken")
    with_tta = predict(data, [trained], device="cpu", progress=False)
    without = predict(data, [trained], device="cpu", tta=False, progress=False)
    assert not with_tta.submission.equals(without.submission)
    twice = predict(data, [trained, trained], weights=[1.0, 3.0], device="cpu", progress=False)
    pd.testing.assert_frame_equal(twice.submission, with_tta.submission, atol=1e-6, rtol=0)
    assert any(p["series_id"] == victim_series for p in with_tta.problems)
    if sizes.min() == 1:  # no readable series: the training prior
        row = with_tta.submission.set_index("patient_id").loc[victim_patient]
        prior = comp.prior_probabilities(pd.read_csv(data / "train.csv"))
        assert row["liver_low"] == pytest.approx(prior["liver_low"])
    comp.validate_submission(with_tta.submission, meta.patient_id.unique())


def test_missing_models_are_named(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="best.pt"):
        predict(tiny_data, [tmp_path], device="cpu", progress=False)


def test_notebook_runs_on_the_demo_data(tiny_data, trained, tmp_path):
    from volslice.config import PROJECT_ROOT
    from volslice.notebook import execute, parse_parameters, printed_output

    out = tmp_path / "nb_sub.csv"
    nb = execute(PROJECT_ROOT / "notebooks" / "inference.ipynb",
                 parse_parameters([f"DATA_ROOT={tiny_data}", f"MODEL_DIRS=['{trained}']", f"OUTPUT={out}",
                                   "DEVICE=cpu", f"REPORT={tmp_path / 'report.json'}", "PROGRESS=False"]),
                 tmp_path / "executed.ipynb")
    sub = pd.read_csv(out)
    comp.validate_submission(sub, pd.read_csv(tiny_data / "test_series_meta.csv").patient_id.unique())
    assert "test score" in printed_output(nb)
    assert json.loads((tmp_path / "report.json").read_text())["submission"] == str(out)
    assert (tmp_path / "executed.ipynb").exists()
    assert parse_parameters(["A=1", "B='x'", "C=word", "D=[1, 2]"]) == {"A": 1, "B": "x", "C": "word", "D": [1, 2]}


def test_slice_importance_figure(tiny_data, trained, tmp_path):
    import numpy as np

    from volslice.interpret import main as interpret_main

    patient = int(pd.read_csv(tiny_data / "train.csv").patient_id.iloc[0])
    out = tmp_path / "importance.png"
    assert interpret_main(["--data", str(tiny_data), "--model", str(trained / "fold0"), "--patient", str(patient),
                           "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    from volslice.interpret import explain

    importance = explain(tiny_data, trained, patient, out=tmp_path / "again.png")
    assert set(importance) == set(comp.GROUP_NAMES)
    for values in importance.values():
        assert values.shape == (4,) and np.isclose(values.max(), 1.0) and values.min() >= 0
    with pytest.raises(FileNotFoundError, match="no folder for patient"):
        explain(tiny_data, trained, 1, out=tmp_path / "x.png")


@pytest.mark.slow
def test_kaggle_bundle_installs_offline_into_an_empty_venv(tiny_data, trained, tmp_path):
    import os
    import subprocess
    import sys

    from volslice.bundle import build

    bundle = build([trained], tmp_path / "bundle")
    exported = sorted((bundle / "models" / trained.name).glob("fold*/model.safetensors"))
    assert len(exported) == 2 and (bundle / "inference.ipynb").exists()
    assert any(p.name.startswith("volslice-") for p in (bundle / "wheels").glob("*.whl"))
    requirements = (bundle / "requirements.txt").read_text()
    assert "pydicom==" in requirements and "torch==" not in requirements and "pytest" not in requirements
    # the exported safetensors predict exactly what the checkpoints predict
    from_bundle = predict(tiny_data, [bundle / "models" / trained.name], device="cpu", progress=False)
    from_run = predict(tiny_data, [trained], device="cpu", progress=False)
    pd.testing.assert_frame_equal(from_bundle.submission, from_run.submission)

    venv = tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(bundle / "wheels"),
                    "-r", str(bundle / "requirements.txt")], check=True, env=env, timeout=600)
    series_dir = sorted((tiny_data / "test_images").glob("*/*"))[0]
    code = ("import sys, volslice.dicom as d, volslice.data.cache as c; s = d.read_series(sys.argv[1]); "
            "print(s.hu.shape, 'torch' in sys.modules)")
    out = subprocess.run([str(python), "-c", code, str(series_dir)], check=True, capture_output=True, text=True,
                         env=env, cwd=tmp_path).stdout
    assert out.strip().endswith("False") and "64, 64)" in out
