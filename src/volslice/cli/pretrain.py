"""Self-supervised pretraining: 2D-VoCo for the classifier's backbone, Volume Fusion for the segmentation network.

    volslice pretrain --cache CACHE [--method voco|volume-fusion] [--extra NIFTI_DIR ...] [--volumes DIR]
        [--extra-cache CACHE ...] [--config FILE] [--resume] [key=value ...]
    torchrun --nproc_per_node=N -m volslice pretrain ...   (DDP; the batch size is per process)

voco (default) writes pretrain.train.out_dir/: config.yaml, last.pt, best.pt, summary.csv,
learning_curve.png and backbone.safetensors, which fine-tuning loads with model.init=file
model.weights=OUT/backbone.safetensors. volume-fusion pretrains the whole segmentation network on
every cached series (segmentation.fusion.*) and writes segmentation.fusion.train.out_dir/, with
volume_fusion.safetensors for ``volslice segment segmentation.weights=...``; --extra-cache adds
the series of another step-01 cache made with the same settings (e.g. a real CT) to its training
samples (``segmentation.fusion.extra_caches``).
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--cache", type=Path, help="cache folder from step 01 (needed with pretrain.use_cache)")
    parser.add_argument("--method", default="voco", choices=["voco", "volume-fusion"])
    parser.add_argument("--extra", type=Path, action="append", default=[], help="folder of unlabeled NIfTI volumes")
    parser.add_argument("--extra-cache", type=Path, action="append", default=[],
                        help="volume-fusion: another cache folder of unlabeled series, same cache settings")
    parser.add_argument("--volumes", type=Path, help="folder of prepared volumes (shared between runs)")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--resume", action="store_true", help="continue from pretrain.train.out_dir/last.pt")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. pretrain.train.epochs=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.config import load_config

    cfg = load_config(*args.config, overrides=args.overrides)
    if args.method == "volume-fusion":
        from volslice.segmentation.run import pretrain_volume_fusion

        if args.cache is None:
            args.parser.error("--method volume-fusion needs --cache")
        cfg.segmentation.fusion.extra_caches += [str(p) for p in args.extra_cache]
        print(f"Volume Fusion pretraining written to {pretrain_volume_fusion(cfg, args.cache, args.resume)}")
        return 0
    from volslice.pretraining.run import pretrain

    if args.extra_cache:
        args.parser.error("--extra-cache is for --method volume-fusion (2D-VoCo takes NIfTI folders with --extra)")
    cfg.pretrain.extra_dirs += [str(p) for p in args.extra]
    out = pretrain(cfg, args.cache, args.volumes, args.resume)
    print(f"pretraining written to {out}")
    return 0
