"""Real head CT for RSNA 2019 runs: write it in the competition's layout, and say what a run predicts.

    volslice real-heads --out WORK/real_heads [--atlas ct_brain_atlas_1mm.nii.gz]
        [--models RUN_DIR ...] [--report WORK/report.json]

Writes the CT brain atlas of the totalsegmentator wheel (fetched with pip download --no-deps
unless --atlas names the file; 5 mm slices, 12-bit intercept quirk) and pydicom-data's CQ500 slice
into OUT/stage_2_test/ with a sample submission. With --models, predicts them through the one
prediction path (as volslice infer and the notebook do) and prints, per study, the mean and the
highest probabilities over its slices; --report records that table as ``real_ct_predictions``.
These scans have no labels: the table says what the model thinks, not whether it is right.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--out", type=Path, required=True, help="folder to write (stage_2_test/ and a sample submission)")
    parser.add_argument("--atlas", type=Path, help="the atlas NIfTI (default: from the totalsegmentator wheel)")
    parser.add_argument("--models", nargs="+", help="RSNA 2019 run folders to predict the scans with")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", type=Path, help="JSON report to record the predictions in")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.inference import predict
    from volslice.io import atomic_write_csv, update_json
    from volslice.synthetic.real_head import describe_predictions, fetch_brain_atlas, write_real_heads

    atlas = args.atlas or fetch_brain_atlas(args.out / "source")
    studies = write_real_heads(args.out, atlas)
    print(f"real head CT written to {args.out}: " + ", ".join(f"{k} ({len(v)} slices)" for k, v in studies.items()))
    if args.models:
        result = predict(args.out, args.models, device=args.device, progress=False)
        atomic_write_csv(args.out / "predictions.csv", result.submission)
        print(result.describe())
        table = describe_predictions(result.submission, studies)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.report:
            update_json(args.report, real_ct_predictions=table.to_dict(orient="records"))
    return 0
