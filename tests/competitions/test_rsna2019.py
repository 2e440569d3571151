import math

import numpy as np
import pandas as pd
import pytest

from volslice.competitions import SubmissionError
from volslice.competitions import rsna2019 as comp


def wide(rows):
    """rows: image id -> set of positive subtypes (any is derived)."""
    out = []
    for image, positive in rows.items():
        out.append({"image_id": image, **{s: int(s in positive) for s in comp.SUBTYPES[:-1]}, "any": int(bool(positive))})
    return pd.DataFrame(out)


SOLUTION = comp.to_long(wide({"ID_a": set(), "ID_b": {"subdural"}, "ID_c": {"epidural", "subarachnoid"}}))


def test_long_and_wide_round_trip():
    assert SOLUTION.ID.iloc[6] == "ID_b_epidural" and len(SOLUTION) == 18
    back = comp.to_wide(SOLUTION)
    assert back.image_id.tolist() == ["ID_a", "ID_b", "ID_c"]
    assert back.loc[2, ["epidural", "subarachnoid", "any"]].tolist() == [1, 1, 1]


def test_metric_weights_any_twice_by_hand():
    sub = SOLUTION.assign(Label=0.5)
    assert comp.COMPETITION.score(SOLUTION, sub).score == pytest.approx(math.log(2))
    # one wrong 'any' (p = 0.1 where truth is 1) among otherwise perfect predictions
    sub = SOLUTION.assign(Label=SOLUTION.Label.astype(float))
    sub.loc[sub.ID == "ID_b_any", "Label"] = 0.1
    expected = 2 * -math.log(0.1) / (7 * 3)  # weights: five subtypes 1, any 2 -> 7 per image
    result = comp.COMPETITION.score(SOLUTION, sub)
    assert result.score == pytest.approx(expected, rel=1e-9)
    assert result.group_losses["any"] == pytest.approx(-math.log(0.1) / 3)


def test_rows_in_any_order_score_the_same():
    sub = SOLUTION.assign(Label=np.linspace(0.05, 0.95, len(SOLUTION)))
    assert comp.COMPETITION.score(SOLUTION, sub).score == pytest.approx(comp.COMPETITION.score(SOLUTION, sub.iloc[::-1]).score)


def test_malformed_ids_and_probabilities_are_named():
    bad = SOLUTION.assign(Label=0.5)
    bad.loc[0, "ID"] = "ID_a_haemorrhage"
    bad.loc[1, "Label"] = 1.5
    with pytest.raises(SubmissionError) as err:
        comp.COMPETITION.validate_submission(bad, ["ID_a", "ID_b", "ID_c"])
    text = str(err.value)
    assert "ID_a_haemorrhage" in text and "outside [0, 1]" in text and "missing" in text


def test_prior_is_smoothed_frequency():
    labels = comp.to_wide(SOLUTION)
    prior = comp.COMPETITION.prior_probabilities(labels)
    assert prior["any"] == pytest.approx((2 + 0.5) / 4) and prior["intraventricular"] == pytest.approx(0.5 / 4)


def test_best_constant_is_each_subtypes_frequency_and_no_perturbation_beats_it():
    rng = np.random.default_rng(0)
    rates = dict(zip(comp.SUBTYPES[:-1], (0.05, 0.2, 0.1, 0.3, 0.4)))
    labels = wide({f"ID_{i:03d}": {s for s, rate in rates.items() if rng.random() < rate} for i in range(60)})
    solution = comp.to_long(labels)
    best = comp.COMPETITION.best_constant(labels)
    assert best == pytest.approx(labels[list(comp.SUBTYPES)].mean().to_dict())
    def constant_score(probabilities):
        return comp.COMPETITION.score(solution, comp.COMPETITION.constant_submission(labels.image_id, probabilities)).score

    best_score = constant_score(best)
    assert best_score < constant_score(comp.COMPETITION.prior_probabilities(labels))
    for subtype in comp.SUBTYPES:
        for delta in (-0.01, -1e-4, 1e-4, 0.01):
            assert constant_score({**best, subtype: best[subtype] + delta}) > best_score


def test_best_constant_is_clipped_away_from_zero_and_one():
    labels = wide({"ID_a": set(), "ID_b": {"subdural"}})
    labels["subdural"] = 1
    best = comp.COMPETITION.best_constant(labels)
    assert best["epidural"] == comp.MIN_PROBABILITY and best["subdural"] == 1 - comp.MIN_PROBABILITY
    assert best["any"] == 0.5 and comp.COMPETITION.best_constant_per_group(labels) == best


def test_a_rerun_reads_only_new_or_changed_headers(tiny_head_data, tmp_path, monkeypatch):
    import os
    import shutil

    data, index = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(tiny_head_data / "stage_2_train", data / "stage_2_train")
    plain = comp.COMPETITION.find_series(data, splits=("train",))
    assert comp.COMPETITION.find_series(data, splits=("train",), index=index) == plain
    assert len(pd.read_csv(index / "stage_2_train_headers.csv")) == sum(len(t.files) for t in plain)
    reads, read = [], comp.pydicom.dcmread
    monkeypatch.setattr(comp.pydicom, "dcmread", lambda path, **kw: reads.append(path.name) or read(path, **kw))
    assert comp.COMPETITION.find_series(data, splits=("train",), index=index) == plain and reads == []
    files = sorted((data / "stage_2_train").glob("*.dcm"))
    files[0].unlink()
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (data / "stage_2_train" / "ID_broken.dcm").write_bytes(b"not a DICOM file")
    skipped = []
    again = comp.COMPETITION.find_series(data, skipped, splits=("train",), index=index)
    assert sorted(reads) == sorted([files[1].name, "ID_broken.dcm"])
    assert sum(len(t.files) for t in again) == sum(len(t.files) for t in plain) - 1
    assert [(e.path.name, "not a readable DICOM" in e.reason) for e in skipped] == [("ID_broken.dcm", True)]
    reads.clear()
    skipped = []
    assert comp.COMPETITION.find_series(data, skipped, splits=("train",), index=index) == again and reads == []
    assert [e.path.name for e in skipped] == ["ID_broken.dcm"]  # still named, from the index


def test_intercept_fix_undoes_the_12_bit_offset():
    header = {"BitsStored": 12, "PixelRepresentation": 0, "RescaleIntercept": 0.0}
    values, fixed = comp.intercept_fix(np.array([0, 3000, 3100]), header)
    assert values.tolist() == [1000, 4000, 4]  # 3100 + 1000 wraps past 4096
    assert fixed["RescaleIntercept"] == -1000.0
    untouched, same = comp.intercept_fix(np.array([5]), {**header, "RescaleIntercept": -1024.0})
    assert untouched.tolist() == [5] and same["RescaleIntercept"] == -1024.0
