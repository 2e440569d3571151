import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from volslice.cli import main as cli
from volslice.competitions import rsna2023 as comp
from volslice.config import PROJECT_ROOT
from volslice.data.cache import cache_series
from volslice.data.manifest import load_manifest
from volslice.data.dataset import SeriesDataset
from volslice.dicom import read_series
from volslice.inference import predict
from volslice.classifier.predictor import Predictor

SMALL = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "train.n_slices=4", "train.crop=24",
         "train.batch_size=2", "train.epochs=1", "train.workers=0", "train.progress=false", "model.context=1"]
# not the defaults, so that the agreement below covers them
AGREEMENT = ["train.series_aggregation=max", "train.tta=true", "train.amp=bf16"]


@pytest.fixture(scope="module")
def trained(tiny_data, tiny_cache, tmp_path_factory):
    prepared, run = tiny_cache(32, 8), tmp_path_factory.mktemp("infer") / "run"
    assert cli(["train", "--data", str(tiny_data), "--cache", str(prepared / "cache"), "--folds",
                str(prepared / "folds.csv"), *SMALL, *AGREEMENT, f"train.out_dir={run}"]) == 0
    return run


def test_the_best_validation_score_is_the_folds_oof_score(tiny_data, trained):
    """Trained under bf16 autocast, validated and OOF-predicted in full precision alike: the best
    epoch's validation score in summary.csv is its oof.csv's score."""
    labels = pd.read_csv(tiny_data / "train.csv")
    for fold in ("fold0", "fold1"):
        oof = pd.read_csv(trained / fold / "oof.csv")
        solution = labels[labels.patient_id.isin(oof.patient_id)]
        best = pd.read_csv(trained / fold / "summary.csv").val_score.min()
        assert comp.COMPETITION.score(solution, oof).score == pytest.approx(best, rel=1e-6)


def test_infer_writes_a_validated_scored_submission(tiny_data, trained, tmp_path, capsys):
    out, report = tmp_path / "sub.csv", tmp_path / "report.json"
    assert cli(["infer", "--data", str(tiny_data), "--models", str(trained), "--out", str(out),
                "--report", str(report), "--device", "cpu"]) == 0
    sub = pd.read_csv(out)
    test_ids = pd.read_csv(tiny_data / "test_series_meta.csv").patient_id.unique()
    comp.COMPETITION.validate_submission(sub, test_ids)
    result = json.loads(report.read_text())
    scored = comp.COMPETITION.score(pd.read_csv(tiny_data / "test_solution.csv"), sub)
    assert result["test"] == pytest.approx(scored.score) and result["submission"] == str(out)
    assert result["test_groups"] == pytest.approx(scored.group_losses)
    assert 0 < result["inference_share_reading"] < 1
    assert f"test score {scored.score:.4f}" in capsys.readouterr().out


def test_inference_command_reproduces_the_oof_rows(tiny_data, trained, tmp_path):
    """The inference command, run with fold 0's model on the train split, gives fold 0's
    validation patients the rows of fold0/oof.csv: same input, TTA, aggregation (max) and fill."""
    out = tmp_path / "train_split.csv"
    assert cli(["infer", "--data", str(tiny_data), "--models", str(trained / "fold0"), "--split", "train",
                "--out", str(out), "--device", "cpu"]) == 0
    oof = pd.read_csv(trained / "fold0" / "oof.csv").set_index("patient_id")
    inferred = pd.read_csv(out).set_index("patient_id").loc[oof.index]
    assert len(oof) >= 2
    pd.testing.assert_frame_equal(inferred, oof, atol=1e-6, rtol=0)
    # the agreement is not trivial: the other fold's model gives these patients other rows
    other = Predictor.load(trained / "fold1", torch.device("cpu"))
    assert other.cfg.train.series_aggregation == "max" and other.cfg.train.tta
    run_oof = pd.read_csv(trained / "oof.csv").set_index("patient_id")
    comp.COMPETITION.validate_submission(run_oof.reset_index(), pd.read_csv(tiny_data / "train.csv").patient_id)
    other_rows = tmp_path / "other_fold.csv"
    assert cli(["infer", "--data", str(tiny_data), "--models", str(trained / "fold1"), "--split", "train",
                "--out", str(other_rows), "--device", "cpu"]) == 0
    other_rows = pd.read_csv(other_rows).set_index("patient_id").loc[oof.index]
    assert not np.allclose(other_rows.to_numpy(), oof.to_numpy(), atol=1e-4)


def test_inference_input_equals_the_training_validation_input(tiny_data, tiny_cache, trained):
    """Raw DICOM read and windowed with the run's saved cache settings, then sampled by the
    Predictor, is the validation item training saw from the cache (windows, crop, context slices)."""
    predictor = Predictor.load(trained / "fold0", torch.device("cpu"))
    cache = tiny_cache(32, 8) / "cache"  # the cache the run trained on
    assert predictor.cfg.cache.size == 32 and predictor.cfg.cache.n_slices == 8  # adopted from the cache folder
    rows = load_manifest(cache)
    rows = rows[rows.split == "train"]
    heads = {h: comp.GROUPS[h] for h in predictor.cfg.model.heads}
    dataset = SeriesDataset(cache, rows, heads, spec=predictor.spec, train=False)
    for index in range(2):
        row = rows.iloc[index]
        folder = tiny_data / "train_images" / str(row.patient_id) / str(row.series_id)
        images, _, _ = cache_series(read_series(folder), predictor.cfg.cache)
        _, slices = predictor.model_input(images)
        assert slices.shape[1] == 3  # one window, one neighbour on each side
        np.testing.assert_array_equal(slices, dataset[index]["image"].numpy())


def test_inference_applies_the_calibration_fitted_on_every_oof_row(tiny_data, trained, tmp_path):
    """``score --oof --fit`` saves the fit made on every OOF row; ``infer --ensemble`` predicts the
    same rows as the runs alone, then applies exactly that fit."""
    from volslice.calibration import EnsembleFit, apply_shifts, fit_shifts

    fit_file, report = tmp_path / "fits" / "ensemble.json", tmp_path / "report.json"
    assert cli(["score", "--data", str(tiny_data), "--oof", str(trained), "--fit", str(fit_file),
                "--report", str(report)]) == 0
    fit = EnsembleFit.load(fit_file)
    oof = pd.read_csv(trained / "oof.csv")
    labels = pd.read_csv(tiny_data / "train.csv")
    assert fit.shifts == pytest.approx(fit_shifts(comp.COMPETITION, labels, oof, per=fit.calibration), abs=1e-6)
    assert fit.run_folders(fit_file)[0].resolve() == trained.resolve()
    assert json.loads(report.read_text())["oof_calibrated"] == pytest.approx(fit.oof_calibrated)
    fit.shifts = {c: 0.5 for c in comp.COMPETITION.calibration_groups()[2][1:]}  # a fit that surely moves the rows
    fit.save(fit_file)
    calibrated = predict(tiny_data, ensemble=fit_file, device="cpu", progress=False).submission
    raw = predict(tiny_data, [trained], device="cpu", progress=False).submission
    pd.testing.assert_frame_equal(calibrated, apply_shifts(comp.COMPETITION, raw, fit.shifts), atol=1e-9)
    assert not np.allclose(calibrated[comp.PREDICTION_COLUMNS], raw[comp.PREDICTION_COLUMNS])
    # the bundle carries the file with its runs named as the bundle's model folders
    from volslice.bundle import bundled_ensemble
    from volslice.predictors import export_run

    for run in bundled_ensemble(fit_file, tmp_path / "bundle" / "models"):
        export_run(run, tmp_path / "bundle" / "models")
    bundled = predict(tiny_data, ensemble=tmp_path / "bundle" / "models" / "ensemble.json", device="cpu",
                      progress=False).submission
    pd.testing.assert_frame_equal(bundled, calibrated, atol=1e-6)


def test_weights_unreadable_patients_and_stray_entries(tiny_data, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    meta = pd.read_csv(data / "test_series_meta.csv")
    victim = int(meta.patient_id.iloc[0])
    for series_dir in (data / "test_images" / str(victim)).iterdir():
        for f in series_dir.glob("*.dcm"):
            f.write_bytes(b"broken")
    (data / "test_images" / "__MACOSX").mkdir()
    (data / "test_images" / ".DS_Store").write_bytes(b"\0")
    once = predict(data, [trained], device="cpu", progress=False)
    # two different runs (each fold alone), weighted 1 : 3: every value is their weighted mean
    first, second = (predict(data, [trained / f"fold{k}"], device="cpu", progress=False).submission for k in (0, 1))
    weighted = predict(data, [trained / "fold0", trained / "fold1"], weights=[1.0, 3.0], device="cpu",
                       progress=False).submission
    columns = comp.PREDICTION_COLUMNS
    np.testing.assert_allclose(weighted[columns], (first[columns] + 3 * second[columns]) / 4, atol=1e-6)
    assert not np.allclose(weighted[columns], (first[columns] + second[columns]) / 2, atol=1e-4)
    comp.COMPETITION.validate_submission(once.submission, meta.patient_id.unique())
    reasons = [p["reason"] for p in once.problems]
    assert any(p["patient_id"] == victim and "no readable series" in p["reason"] for p in once.problems)
    assert any("__MACOSX" in r for r in reasons) and any(".DS_Store" in r for r in reasons)
    priors = [json.loads((trained / f"fold{k}" / "prior.json").read_text()) for k in (0, 1)]
    row = once.submission.set_index("patient_id").loc[victim]
    for col in comp.PREDICTION_COLUMNS:
        assert row[col] == pytest.approx((priors[0][col] + priors[1][col]) / 2)


def test_missing_models_are_named(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a trained run: no config.yaml"):
        predict(tiny_data, [tmp_path], device="cpu", progress=False)


def test_notebook_runs_with_papermill(tiny_data, trained, tmp_path):
    import papermill

    out = tmp_path / "nb_sub.csv"
    nb = papermill.execute_notebook(str(PROJECT_ROOT / "notebooks" / "inference.ipynb"), str(tmp_path / "run.ipynb"),
                                    parameters=dict(DATA_ROOT=str(tiny_data), MODEL_DIRS=[str(trained)],
                                                    OUTPUT=str(out), DEVICE="cpu", REPORT=str(tmp_path / "r.json"),
                                                    PROGRESS=False), progress_bar=False)
    notebook_sub = pd.read_csv(out)
    command_sub = predict(tiny_data, [trained], device="cpu", progress=False).submission
    pd.testing.assert_frame_equal(notebook_sub, command_sub, atol=1e-6, rtol=0)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "test score" in printed
    assert json.loads((tmp_path / "r.json").read_text())["submission"] == str(out)


def test_slice_importance_figure(tiny_data, trained, tmp_path):
    from PIL import Image

    from volslice.interpretation import explain

    patient = int(pd.read_csv(tiny_data / "train.csv").patient_id.iloc[0])
    out = tmp_path / "importance.png"
    assert cli(["interpret", "--data", str(tiny_data), "--model", str(trained / "fold0"), "--patient", str(patient),
                "--out", str(out)]) == 0
    with Image.open(out) as figure:
        pixels = np.asarray(figure.convert("L"))
    assert figure.size[0] > figure.size[1] and pixels.std() > 10  # a drawn strip, not a blank page
    importance = explain(tiny_data, trained, patient, out=tmp_path / "again.png")
    assert set(importance) == set(comp.GROUP_NAMES)
    for values in importance.values():
        assert values.shape == (4,) and np.isclose(values.max(), 1.0) and values.min() >= 0
    with pytest.raises(ValueError, match="no train series of patient 1 "):
        explain(tiny_data, trained, 1, out=tmp_path / "x.png")


def test_the_notebook_finds_the_bundle_and_the_data_on_kaggle(tiny_data, trained, tmp_path):
    """Kaggle's layout: the bundle and the competition data under /kaggle/input, /kaggle/working.
    The notebook run with its parameters as they are finds both, predicts with every run of the
    bundle and writes working/submission.csv: the command's submission."""
    import papermill

    from volslice.bundle import BUNDLE_FILE, write_models

    kaggle = tmp_path / "kaggle"
    (kaggle / "working").mkdir(parents=True)
    (kaggle / "input").mkdir()
    (kaggle / "input" / "rsna-2023-abdominal-trauma-detection").symlink_to(tiny_data, target_is_directory=True)
    bundle = write_models([trained], kaggle / "input" / "volslice-bundle", kaggle_id="someone/volslice-bundle")
    record = json.loads((bundle / BUNDLE_FILE).read_text())
    assert record == {"competition": "rsna2023", "runs": [trained.name], "ensemble": None}
    assert json.loads((bundle / "dataset-metadata.json").read_text())["id"] == "someone/volslice-bundle"
    papermill.execute_notebook(str(bundle / "inference.ipynb"), str(tmp_path / "run.ipynb"), cwd=str(tmp_path),
                               parameters=dict(KAGGLE_INPUT=str(kaggle / "input"), KAGGLE_WORKING=str(kaggle / "working"),
                                               DEVICE="cpu", PROGRESS=False), progress_bar=False)
    command = predict(tiny_data, [trained], device="cpu", progress=False).submission
    pd.testing.assert_frame_equal(pd.read_csv(kaggle / "working" / "submission.csv"), command, atol=1e-6, rtol=0)


def test_the_bundle_pins_every_runtime_distribution_but_torch_for_its_target_python():
    from importlib import metadata

    from volslice.bundle import runtime_closure

    pins = dict(line.split("==") for line in runtime_closure(False))
    for name in ("numpy", "timm", "segmentation-models-pytorch", "pydicom", "huggingface-hub", "packaging"):
        assert pins[name] == metadata.version(name), name  # the versions tested here, dependencies included
    assert not {"torch", "torchvision", "pytest", "pydicom-data", "tensorboard", "papermill"} & set(pins)
    assert "torch" in dict(line.split("==") for line in runtime_closure(True))
    with pytest.raises(FileNotFoundError, match=r"tomli \(needed to predict on Python 3.10\)"):
        runtime_closure(False, "3.10")  # huggingface-hub needs tomli there, which this Python lacks


# the "Kaggle image" the bundle is installed over: the project's torch (no second download) with
# other versions of the packages the bundle pins, as Kaggle's image has its own
IMAGE_VERSIONS = ["numpy==1.26.4", "timm==1.0.15", "segmentation-models-pytorch==0.5.0"]


def torch_layer(folder: Path) -> Path:
    """Links to this environment's torch, torchvision and what they need (numpy aside) in
    ``folder``: a site directory that a fresh venv can see through a .pth file, as if the image had
    torch installed."""
    from volslice.bundle import requirement_closure

    folder.mkdir()
    for distribution in requirement_closure(["torch", "torchvision"], skip={"numpy"}).values():
        site = Path(distribution.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in distribution.files or [] if not str(f).startswith("..")}:
            if not (folder / top).exists() and (site / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


def offline(command: list[str]) -> list[str]:
    """``command`` in a network namespace of its own (no network at all) where the machine allows
    ``unshare``; elsewhere as it is, where pip's ``--no-index`` (the notebook's install) is what
    keeps it off the network. (Building the bundle and the image beforehand needs PyPI.)"""
    import subprocess

    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn", *command]
    return command


def notebook_script(notebook: Path, parameters: dict) -> str:
    """The notebook's code as one script, ``parameters`` set after its parameters cell (as
    papermill injects them), to run in an interpreter that has no Jupyter."""
    import nbformat

    cells = nbformat.read(str(notebook), as_version=4).cells
    code = []
    for cell in cells:
        if cell.cell_type != "code":
            continue
        code.append(cell.source)
        if "parameters" in cell.metadata.get("tags", []):
            code.append("\n".join(f"{key} = {value!r}" for key, value in parameters.items()))
    return "\n\n".join(code) + "\n"


@pytest.mark.slow
def test_kaggle_bundle_installs_offline_over_an_image_with_torch_and_runs_the_notebook(tiny_data, trained, tmp_path):
    """The bundle as Kaggle meets it: a fresh venv that already holds the project's torch and other
    versions of numpy, timm and segmentation-models-pytorch. With no network, the notebook as
    bundled installs the bundle's pinned wheels over them (torch untouched) and writes the
    command's submission to /kaggle/working/submission.csv."""
    import os
    import subprocess
    import sys

    from volslice.bundle import build

    kaggle = tmp_path / "kaggle"
    (kaggle / "working").mkdir(parents=True)
    (kaggle / "input").mkdir()
    (kaggle / "input" / "rsna-2023-abdominal-trauma-detection").symlink_to(tiny_data, target_is_directory=True)
    bundle = build([trained], kaggle / "input" / "volslice-bundle")
    exported = sorted((bundle / "models" / trained.name).glob("fold*/model.safetensors"))
    assert len(exported) == 2 and (bundle / "inference.ipynb").exists()
    assert any(p.name.startswith("volslice-") for p in (bundle / "wheels").glob("*.whl"))
    requirements = (bundle / "requirements.txt").read_text().split()
    assert {"timm==1.0.31", "numpy==2.4.6", "segmentation-models-pytorch==0.6.0"} <= set(requirements)
    assert not [r for r in requirements if r.split("==")[0] in {"torch", "torchvision", "pytest", "pydicom-data"}]
    assert not [p.name for p in (bundle / "wheels").glob("torch-*")]
    # the exported safetensors predict exactly what the checkpoints predict
    assert sorted(p.name for p in exported[0].parent.iterdir()) == ["config.yaml", "model.safetensors", "prior.json"]
    from_bundle = predict(tiny_data, [bundle / "models" / trained.name], device="cpu", progress=False)
    command = predict(tiny_data, [trained], device="cpu", progress=False).submission
    pd.testing.assert_frame_equal(from_bundle.submission, command)

    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(image)], check=True)
    python = image / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "kaggle_image.pth").write_text(f"{torch_layer(tmp_path / 'torch_layer')}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}
    subprocess.run([str(python), "-m", "pip", "install", "-q", *IMAGE_VERSIONS], check=True, env=env, timeout=900)

    def versions() -> dict:
        code = ("import json, importlib.metadata as m, torch; print(json.dumps({n: m.version(n) for n in "
                "['numpy', 'timm', 'segmentation-models-pytorch', 'torch']} | {'torch_at': torch.__file__}))")
        return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                                         env=env).stdout)

    before = versions()
    assert [f"{n}=={before[n]}" for n in ("numpy", "timm", "segmentation-models-pytorch")] == IMAGE_VERSIONS
    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(bundle / "inference.ipynb", dict(
        KAGGLE_INPUT=str(kaggle / "input"), KAGGLE_WORKING=str(kaggle / "working"), DEVICE="cpu", PROGRESS=False)))
    subprocess.run(offline([str(python), str(script)]), check=True, env=env, cwd=tmp_path, timeout=900)
    after = versions()
    assert (after["numpy"], after["timm"], after["segmentation-models-pytorch"]) == ("2.4.6", "1.0.31", "0.6.0")
    assert after["torch_at"] == before["torch_at"] and str(tmp_path / "torch_layer") in after["torch_at"]
    pd.testing.assert_frame_equal(pd.read_csv(kaggle / "working" / "submission.csv"), command, atol=1e-6, rtol=0)


def die_on(task, *, victim, trace=None, **options):
    import os

    from volslice.data.cache import read_for_prediction

    if task.series_id == victim:
        os.abort()
    return read_for_prediction(task, trace=trace, **options)


def test_a_series_that_kills_the_reader_gets_the_prior_and_is_listed(tiny_data, trained, monkeypatch):
    import sys

    import cloudpickle

    import volslice.inference

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    meta = pd.read_csv(tiny_data / "test_series_meta.csv")
    sizes = meta.groupby("patient_id").size()
    patient = int(sizes.index[sizes.argmin()])
    victims = meta[meta.patient_id == patient].series_id.tolist()
    assert len(victims) == 1
    monkeypatch.setattr(volslice.inference, "read_for_prediction",
                        lambda task, **kw: die_on(task, victim=victims[0], **kw))
    result = predict(tiny_data, [trained], device="cpu", progress=False)
    comp.COMPETITION.validate_submission(result.submission, meta.patient_id.unique())
    crashed = [p for p in result.problems if "reader crashed" in p["reason"]]
    assert [p["series_id"] for p in crashed] == victims
    assert any(p["patient_id"] == patient and "no readable series" in p["reason"] for p in result.problems)
    others = predict(tiny_data, [trained], device="cpu", progress=False).submission.set_index("patient_id")
    survivors = result.submission.set_index("patient_id").drop(index=patient)
    pd.testing.assert_frame_equal(survivors, others.drop(index=patient))
