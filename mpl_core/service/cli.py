"""The headless command line:
`python -m mpl_core {train,evaluate,inspect,pseudo-label,review,retrain,export,import,status,attach}`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mpl_core.config import (
    ALGORITHMS,
    EXPORT_FORMATS,
    FEEDBACK_SIGNS,
    FROM_SCRATCH,
    INIT_ROLES,
    OVERRIDES,
    PSEUDO_LABEL_VIEWS,
    VIEW_BATCHES,
    RunConfig,
    TrainConfig,
)
from mpl_core.errors import MPLStudioError
from mpl_core.presets import FINETUNE_ROUND_LR, PRESETS, RETRAIN_LR, build_retrain_config, build_run_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpl_core", description="MPL Studio: Meta Pseudo Labels "
                                     "training, pseudo-labeling and review, headless.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and print its test accuracy")
    t.add_argument("--dataset", default=None, help="fashion-mnist (default), mnist, cifar10, svhn, or a folder/zip")
    t.add_argument("--algorithm", choices=ALGORITHMS, default="mpl")
    _training_flags(t)
    t.add_argument("--out", default="runs/latest", help="output folder without --workspace (checkpoints, result.json)")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    t.add_argument("--workspace", default=None, help="train inside this workspace (created if new)")
    t.add_argument("--resume-run", type=int, default=None, help="with --workspace: resume this run from its checkpoint")

    pl = sub.add_parser("pseudo-label", help="label the unlabeled pool with a run's teacher or student")
    _workspace_flags(pl)
    pl.add_argument("--run", type=int, default=None, help="run id (default: the newest with a checkpoint)")
    pl.add_argument("--model", choices=("auto", "teacher", "student"), default="auto",
                    help="auto = the teacher for MPL runs, else the student")

    r = sub.add_parser("review", help="accept or reject pseudo-labels by threshold, or undo (scripted review)")
    _workspace_flags(r)
    action = r.add_mutually_exclusive_group(required=True)
    action.add_argument("--accept-above", type=float, help="accept pseudo-labels with confidence >= this")
    action.add_argument("--reject-below", type=float, help="reject pseudo-labels with confidence < this")
    action.add_argument("--accept-at-precision", type=float, metavar="P",
                        help="accept above the lowest threshold whose estimated precision reaches P (the demo's "
                             "rule, e.g. 0.9)")
    action.add_argument("--undo", action="store_true", help="undo the last batch of decisions")
    r.add_argument("--per-class", action="store_true",
                   help="with --accept-at-precision: a threshold per predicted class, each reaching P on its own")
    r.add_argument("--class", dest="classes", action="append", default=None,
                   help="only this predicted class (name or number; repeatable)")
    r.add_argument("--include-decided", action="store_true", help="also change samples already decided")
    r.add_argument("--who", default="cli", help="reviewer name recorded with the decisions")
    r.add_argument("--dry-run", action="store_true", help="count, do not record")

    rt = sub.add_parser("retrain", help="a retrain round on given + accepted + relabeled labels")
    _workspace_flags(rt)
    rt.add_argument("--algorithm", choices=ALGORITHMS, default="supervised")
    rt.add_argument("--trusted-share", type=float, default=None,
                    help="the share of each labeled batch drawn from the labels people gave (given, relabeled, "
                         "by hand) rather than from all labels alike (default: 0.5 for a supervised round, 0 for "
                         "the others)")
    rt.add_argument("--mixup", action=argparse.BooleanOptionalAction, default=None,
                    help="supervised rounds: mix each labeled image with another and their labels alike, which "
                         "resists the wrong accepted pseudo-labels (default: on from scratch, at learning rate "
                         f"{RETRAIN_LR:g} unless --lr is given; off fine-tuning)")
    _training_flags(rt)

    x = sub.add_parser("export", help="export reviewed labels or a checkpoint")
    _workspace_flags(x)
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    x.add_argument("--out", required=True, help="file (csv, zip) or folder (label-studio, imagefolder, checkpoint)")
    x.add_argument("--run", type=int, default=None, help="checkpoint: run id (default: newest)")
    x.add_argument("--image-url-prefix", default=None,
                   help="label-studio: the URL the images will be served under (default: Label Studio's local "
                        "files, /data/local-files/?d=images/, as the export's README.txt explains)")

    im = sub.add_parser("import", help="record labels corrected elsewhere (a Label Studio JSON export) as decisions")
    _workspace_flags(im)
    im.add_argument("--format", choices=("label-studio",), default="label-studio")
    im.add_argument("file", help="the JSON file of Label Studio's Export > JSON")
    im.add_argument("--who", default="label-studio", help="reviewer name recorded with the decisions")
    im.add_argument("--dry-run", action="store_true", help="check and count, record nothing")

    at = sub.add_parser("attach", help="add a checkpoint trained elsewhere (train --out, torchrun) as a run")
    _workspace_flags(at)
    at.add_argument("checkpoint", help="a .safetensors checkpoint or the folder a run wrote to")

    s = sub.add_parser("status", help="runs, pseudo-label rounds and review counts of a workspace")
    _workspace_flags(s)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    e.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    e.add_argument("--which", choices=("auto", "student", "teacher"), default="auto",
                   help="the model to evaluate; auto: the one the run hands back (ahead on validation)")
    e.add_argument("--dataset", default=None, help="defaults to the checkpoint's dataset")
    e.add_argument("--data-root", default="data")
    e.add_argument("--device", default="auto")

    i = sub.add_parser("inspect", help="check dataset folders or zips and print a report for each")
    i.add_argument("paths", nargs="+", metavar="path")
    i.add_argument("--image-size", type=int, default=0, help="training size (default: from the images and the "
                   "device)")
    i.add_argument("--max-files", type=int, default=None, help="refuse a folder or zip with more entries")
    i.add_argument("--max-total-mb", type=int, default=None, help="refuse one that reads more bytes in all")
    return parser


def _workspace_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", required=True, help="workspace name (under data/workspaces/) or folder")
    p.add_argument("--data-root", default="data")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _training_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--preset", choices=sorted(PRESETS), default=None, help="budget preset (overridden by flags)")
    t.add_argument("--labels-per-class", type=int, default=None)
    t.add_argument("--val-per-class", type=int, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--finetune-steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--mu", type=int, default=None, help="unlabeled images per labeled image")
    t.add_argument("--lr", type=float, default=None, help=f"SGD learning rate (default {TrainConfig.lr:g}; a retrain "
                   f"round: {RETRAIN_LR:g} from scratch with mixup, {FINETUNE_ROUND_LR:g} fine-tuning)")
    t.add_argument("--threshold", type=float, default=None)
    t.add_argument("--feedback-sign", choices=FEEDBACK_SIGNS, default=None)
    t.add_argument("--feedback-baseline", type=float, default=None, help="EMA decay of h's baseline (0 = none)")
    t.add_argument("--pseudo-label-view", choices=PSEUDO_LABEL_VIEWS, default=None,
                   help="MPL: the view whose teacher argmax the student learns from (weak: default; "
                        "strong: the official code)")
    t.add_argument("--view-batches", choices=VIEW_BATCHES, default=None,
                   help="MPL: auto (default) = separate on a CPU, joint on CUDA; joint = all views in one batch "
                        "per model (official); separate = a pass per view (a quarter fewer FLOPs)")
    t.add_argument("--model", default=None, help="cnn, wrn-28-2, resnet18, resnet50, efficientnet_b0, convnext_tiny, "
                   "mobilenet_v3_small, mobilenet_v3_large or auto (MPL: the teacher; the student too unless "
                   "--student)")
    t.add_argument("--student", default=None, help="MPL: a different model for the student (e.g. a small one to "
                   "deploy)")
    t.add_argument("--weights", default=None, help="torchvision models: imagenet (default: ImageNet weights, "
                   f"downloaded once into data/weights/), none ({FROM_SCRATCH}), or a .safetensors / torch.save "
                   "file")
    t.add_argument("--student-weights", default=None, help="the student's, where it is another model")
    t.add_argument("--init-from", default=None, help="a checkpoint (or the folder a run wrote to) whose student "
                   "(or teacher: --init-role) starts this run's student: fine-tune it instead of training from "
                   "scratch (same model)")
    t.add_argument("--init-role", choices=INIT_ROLES, default=None,
                   help="which model of --init-from: student (default) or teacher (an MPL run's)")
    t.add_argument("--pretrained-lr-scale", type=float, default=None,
                   help="learning rate of a pretrained body relative to its new head (default 0.1)")
    t.add_argument("--image-size", type=int, default=None,
                   help="own images: the training size in pixels (default: from the images and the device)")
    t.add_argument("--width", type=int, default=None)
    t.add_argument("--max-unlabeled", type=int, default=None)
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    t.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training passes (about a minute to compile, then faster steps)")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CUDA and on CPUs with native bf16 (default on; --no-amp for fp32)")
    if not any(a.dest == "data_root" for a in t._actions):
        t.add_argument("--data-root", default="data")
    if not any(a.dest == "quiet" for a in t._actions):
        t.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args, build=build_run_config) -> RunConfig:
    """The run config the flags describe: the preset, then every flag given (config.OVERRIDES)."""
    flags = {key: getattr(args, key) for key in OVERRIDES if hasattr(args, key)}
    flags["seed"] = flags.get("seed") or 0
    flags["dataset"] = flags.get("dataset") or "fashion-mnist"
    return build(args.preset, **flags)


def cmd_train(args) -> int:
    import torch

    from mpl_core.data.sources import load_dataset
    from mpl_core.data.splits import make_split
    from mpl_core.engine.train import train
    from mpl_core.service.progress import TqdmProgress

    cfg = config_from_args(args)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ctx = _join_process_group(args)
    if args.workspace:
        return _train_in_workspace(args, cfg) if ctx is None or ctx.is_main else _follow(args)
    main = ctx is None or ctx.is_main
    from mpl_core.service.progress import ImportProgress
    from mpl_core.workspace.workspace import device_kind
    imported = ImportProgress(disable=args.quiet or not (ctx is None or ctx.is_main))
    dataset = _load_in_turn(lambda: load_dataset(cfg.data.dataset, args.data_root, image_size=cfg.data.image_size,
                                                 device_kind=device_kind(), on_progress=imported), ctx)
    split = make_split(dataset, cfg.data)
    _check_same_data(split, ctx)
    if main:
        procs = f" | {ctx.world_size} processes ({ctx.backend}), batch {cfg.train.batch_size} each" if ctx else ""
        print(f"{dataset.name}: {split.sizes()} | {cfg.algorithm.name} | {cfg.train.steps} steps{procs}",
              file=sys.stderr)
    with TqdmProgress(disable=args.quiet or not main) as bar:
        result = train(cfg, dataset, split, out_dir=args.out if main else None, on_progress=bar if main else None,
                       resume=not args.no_resume)
    if not main:
        return 0
    out = Path(args.out)
    (out / "result.json").write_text(json.dumps({"config": cfg.to_dict(), "metrics": result.metrics,
                                                 "stopped": result.stopped, "history": result.history}, indent=1))
    _print_metrics(result.metrics)
    return 0


def _join_process_group(args):
    """Under torchrun: join the other processes (None when this process trains alone)."""
    from mpl_core.engine import distributed
    return distributed.init(getattr(args, "device", "auto"))


def _load_in_turn(load, ctx):
    """Rank 0 loads (and downloads, if need be) first; the others then read what it left."""
    from mpl_core.engine import distributed
    if ctx is None or ctx.is_main:
        value = load()
        distributed.broadcast_object(True, ctx)
        return value
    distributed.broadcast_object(None, ctx)
    return load()


def _check_same_data(split, ctx) -> None:
    """Every rank must split the same data; a machine with another copy of it would train on nonsense."""
    from mpl_core.engine import distributed
    sizes = distributed.all_gather_objects(split.sizes(), ctx)
    if any(s != sizes[0] for s in sizes):
        raise MPLStudioError(f"the processes see different data ({sizes}); give every machine the same dataset")


def _follow(args) -> int:
    """Ranks other than 0 in a workspace: do this rank's part of rank 0's job, write nothing."""
    from mpl_core.service.work import follow
    follow(args.workspace, args.data_root)
    return 0


def _train_in_workspace(args, cfg: RunConfig) -> int:
    from mpl_core.service.work import recover, start_training
    from mpl_core.workspace.workspace import open_or_create_workspace
    ws = open_or_create_workspace(args.workspace, args.data_root, dataset=args.dataset,
                                  labels_per_class=args.labels_per_class, val_per_class=args.val_per_class,
                                  max_unlabeled=args.max_unlabeled, seed=args.seed, image_size=args.image_size)
    recover(ws)
    from mpl_core.service.progress import ImportProgress
    ws.dataset(ImportProgress(disable=args.quiet))
    split = ws.split()
    print(f"workspace {ws.name} | {ws.dataset().name}: {split.sizes()} | {cfg.algorithm.name}", file=sys.stderr)
    status = _run_job(args, lambda hook: start_training(ws, None if args.resume_run else cfg,
                                                        run_id=args.resume_run, on_progress=hook))
    print(f"run {status.run_id}: {status.state}")
    _print_metrics(status.result)
    return 0 if status.state == "done" else 3


def _run_job(args, start):
    """Start a job with a progress bar and wait for it (returns its JobStatus); Ctrl-C stops it cleanly."""
    from mpl_core.service.progress import TqdmProgress
    with TqdmProgress(disable=args.quiet) as bar:
        job = start(bar)
        try:
            while job.join(0.5).active:
                pass
        except KeyboardInterrupt:
            job.stop()
            job.join()
            print("stopped at your request; run the same command with --resume-run to continue", file=sys.stderr)
    status = job.status()
    if status.state == "failed":
        raise MPLStudioError(status.error or status.message)
    return status


def _workspace(args):
    from mpl_core.service.work import recover
    from mpl_core.workspace.workspace import open_workspace
    ws = open_workspace(args.workspace, args.data_root)
    recover(ws)
    return ws


def cmd_pseudo_label(args) -> int:
    from mpl_core.service.work import start_pseudo_labeling
    ctx = _join_process_group(args)
    if ctx is not None and not ctx.is_main:
        return _follow(args)
    ws = _workspace(args)
    status = _run_job(args, lambda hook: start_pseudo_labeling(ws, args.run, args.model, on_progress=hook))
    if status.state != "done":
        return 3
    r = status.result
    print(f"round {r['round']}: {r['count']} pseudo-labels from the {r['model']} of run {r['run_id']}")
    _print_threshold_table(ws)
    return 0


def _print_threshold_table(ws) -> None:
    from mpl_core.workspace.review import threshold_index
    index = threshold_index(ws)
    truth = " | true precision" if index.has_truth else ""
    print(f"| threshold | passed | coverage | est. precision | 90% interval | validation images{truth} |")
    print("|---|---|---|---|---|---|" + ("---|" if truth else ""))
    for row in index.sweep([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]):
        band = "-" if row["est_low"] != row["est_low"] else \
            f"{row['est_low'] * 100:.1f}–{row['est_high'] * 100:.1f}%"
        line = (f"| {row['threshold']:.2f} | {row['passed']} | {row['coverage'] * 100:.1f}% | "
                f"{_pct(row['est_precision'])} | {band} | {row['val_support']} |")
        print(line + (f" {_pct(row['true_precision'])} |" if truth else ""))


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v * 100:.1f}%"


def cmd_review(args) -> int:
    from mpl_core.workspace.review import decide_rows, select_by_threshold
    if args.per_class and args.accept_at_precision is None:
        raise MPLStudioError("--per-class goes with --accept-at-precision P")
    ws = _workspace(args)
    if args.undo:
        n = ws.store.undo_last(who=args.who if args.who != "cli" else None)
        print(f"undid {n} decision(s)")
        return 0
    rows = ws.store.pseudo_labels()
    if rows is None:
        raise MPLStudioError("no pseudo-labels yet: run python -m mpl_core pseudo-label first")
    classes = _class_ids(args.classes, ws.dataset().class_names) if args.classes else None
    above = args.accept_above
    if args.accept_at_precision is not None:
        above = _thresholds_at_precision(ws, args.accept_at_precision, args.per_class)
        if classes is not None:
            print("(the estimate covers every class that passes; only the --class ones are decided)")
    positions = select_by_threshold(rows, ws.store.current_decisions(), above=above,
                                    below=args.reject_below, classes=classes, include_decided=args.include_decided)
    action = "reject" if args.reject_below is not None else "accept"
    if not args.dry_run:
        decide_rows(ws, rows, positions, action, args.who)
    verb = "would " + action if args.dry_run else action + "ed"
    print(f"{verb} {len(positions)} pseudo-label(s) of round {rows.round}")
    print("decisions in force: " + ", ".join(f"{k} {v}" for k, v in ws.store.decision_counts().items()))
    return 0


def _thresholds_at_precision(ws, target: float, per_class: bool) -> list[float]:
    """The thresholds the demo's rule picks for target (per class or one for all), printed with
    what the validation images say of what passes them."""
    from mpl_core.workspace.calibration import aim_for
    from mpl_core.workspace.review import threshold_index
    if not 0.0 < target < 1.0:
        raise MPLStudioError(f"--accept-at-precision is a precision between 0 and 1 (e.g. 0.9), not {target}")
    aim = aim_for(threshold_index(ws), target, per_class)
    s, names = aim.stats, ws.dataset().class_names
    where = ", ".join(f"{names[c]} {t:.3f}" for c, t in enumerate(aim.thresholds)) if per_class else \
        f"{aim.thresholds[0]:.3f}"
    print(f"thresholds for an estimated {target * 100:.1f}%: {where}")
    band = "" if s.est_low != s.est_low else f" (90% interval {s.est_low * 100:.1f}–{s.est_high * 100:.1f}%)"
    print(f"estimated precision of what passes: {_pct(s.est_precision)}{band}, from {s.val_support} validation "
          f"image(s)" + (f"; true precision {_pct(s.true_precision)}" if s.true_precision is not None else ""))
    if aim.short_of_validation:
        few = ", ".join(f"{names[c]} {n}" for c, n in aim.short_of_validation.items())
        print(f"caution: few validation images are predicted as some classes ({few}); thresholds chosen on so few "
              "often fall short of P (docs/results.md, Per-class thresholds): one threshold, without --per-class, "
              "is safer")
    if aim.short:
        print(f"no threshold reaches it for {', '.join(names[c] for c in aim.short)}: the best estimate with enough "
              "validation images behind it instead (0.990 where too few pass)")
    elif not per_class and not aim.reached:
        print("no single threshold reaches it: the best estimate with at least 100 validation images behind it "
              "instead (0.990 where too few pass)")
    return aim.thresholds


def _class_ids(values: list[str], names: list[str]) -> list[int]:
    out = []
    for v in values:
        if v in names:
            out.append(names.index(v))
        elif v.isdigit() and int(v) < len(names):
            out.append(int(v))
        else:
            raise MPLStudioError(f"unknown class {v!r}; classes are: {', '.join(names)}")
    return out


def cmd_retrain(args) -> int:
    from mpl_core.service.work import start_retrain
    ctx = _join_process_group(args)
    if ctx is not None and not ctx.is_main:
        return _follow(args)
    ws = _workspace(args)
    cfg = config_from_args(args, build_retrain_config)
    status = _run_job(args, lambda hook: start_retrain(ws, cfg, on_progress=hook))
    r = status.result
    print(f"retrain run {status.run_id}: {status.state}; labels used {r.get('labels_used')} "
          f"(given {r.get('labels_given')}, accepted {r.get('labels_accepted')}, of them one by one "
          f"{r.get('labels_confirmed')}, human {r.get('labels_human')}, "
          f"rejected and left out {r.get('labels_rejected')})")
    _print_metrics(r)
    return 0 if status.state == "done" else 3


def cmd_export(args) -> int:
    from mpl_core.workspace.formats import export
    from mpl_core.workspace.label_studio import LOCAL_FILES_PREFIX
    ws = _workspace(args)
    path = export(ws, args.format, args.out, run_id=args.run, image_prefix=args.image_url_prefix or LOCAL_FILES_PREFIX)
    print(f"wrote {path}")
    if args.format == "label-studio":
        print(f"to load it into Label Studio with its images, follow {Path(path).parent / 'README.txt'}")
    return 0


def cmd_import(args) -> int:
    from mpl_core.workspace.label_studio import import_label_studio
    ws = _workspace(args)
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise MPLStudioError(f"cannot read {args.file}: {exc.strerror}") from None
    summary = import_label_studio(ws, data, who=args.who, dry_run=args.dry_run)
    for line in summary.lines():
        print(line)
    return 0


def cmd_attach(args) -> int:
    from mpl_core.workspace.attach import attach_checkpoint
    ws = _workspace(args)
    run_id = attach_checkpoint(ws, args.checkpoint)
    run = ws.store.run(run_id)
    print(f"run {run_id}: {run['status']}; {run['message']}")
    _print_metrics(run["metrics"])
    return 0


def cmd_status(args) -> int:
    """Each run with the model it hands back and its gain over the best earlier run (on validation)."""
    from mpl_core.service.lock import describe_holder, lock_is_held
    from mpl_core.workspace.results import handed_back, run_gains
    ws = _workspace(args)
    print(f"workspace {ws.name}: {ws.data.dataset}, {ws.data.labels_per_class} labels/class, seed {ws.data.seed}")
    if lock_is_held(ws.lock_path):
        print(f"job running: {describe_holder(ws.lock_path)}")
    runs = ws.store.runs()
    gains = run_gains(runs)
    for r in runs:
        role, _, acc = handed_back(r["metrics"])
        stage = gains.get(r["id"])
        gain = f"  {stage.gain * 100:+.2f} points over {stage.best_before}" if stage and stage.gain is not None else ""
        print(f"run {r['id']} {r['kind']:<8} {r['config']['algorithm']['name']:<12} {r['status']:<11} "
              f"{role} test_acc {_pct(acc)}{gain}  labels {r['metrics'].get('labels_used', '-')}  {r['message']}")
    for r in ws.store.rounds():
        print(f"pseudo-label round {r['round']}: {r['count']} from the {r['model']} of run {r['run_id']}")
    print("decisions: " + ", ".join(f"{k} {v}" for k, v in ws.store.decision_counts().items()))
    _print_pace(ws)
    return 0


def _print_pace(ws) -> None:
    """Each person's measured seconds a decision (see workspace/pace.py)."""
    from mpl_core.workspace import pace
    paces = pace.by_reviewer(ws.store.seen_saves())
    for who, p in {**paces, **({"everyone": pace.overall(paces)} if len(paces) > 1 else {})}.items():
        if p.per_decision:
            print(f"review pace, {who}: {p.summary()}, {p.seconds / 60:.1f} min in all")


def _print_metrics(metrics: dict) -> None:
    for key in ("test_acc", "teacher_test_acc", "val_acc", "teacher_val_acc", "val_acc_before_finetune"):
        if key in metrics:
            print(f"{key}: {metrics[key] * 100:.2f}%")
    if "teacher_val_acc" in metrics and "hands_back" in metrics:
        print(f"hands back: the {metrics['hands_back']} (the one ahead on validation)")


def cmd_evaluate(args) -> int:
    from mpl_core.data.sources import load_dataset
    from mpl_core.engine.checkpoint import latest_checkpoint
    from mpl_core.engine.inference import accuracy
    from mpl_core.engine.state import load_model, resolve_which
    from mpl_core.engine.train import pick_device

    path = Path(args.checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise MPLStudioError(f"no checkpoint in {path}")
        path = found
    device = pick_device(args.device)
    model, info = load_model(path, args.which, device)
    dataset = load_dataset(args.dataset or info["config"]["data"]["dataset"], args.data_root)
    if dataset.test is None or (dataset.test.labels < 0).any():
        raise MPLStudioError(f"{dataset.name} has no labeled test split to evaluate on")
    if dataset.class_names != info["class_names"]:
        raise MPLStudioError("the dataset's classes differ from the checkpoint's; pass the dataset it was trained on")
    acc = accuracy(model, dataset.test.images, dataset.test.labels, device)
    which = resolve_which(args.which, info)
    print(f"{which} test_acc: {acc * 100:.2f}% ({len(dataset.test)} images, step {info['step']})")
    return 0


def cmd_inspect(args) -> int:
    """One report per path; exit 1 if any is not usable."""
    import dataclasses

    from mpl_core.data.imagefolder import DEFAULT_LIMITS, inspect_image_folder
    from mpl_core.service.progress import ImportProgress
    from mpl_core.workspace.workspace import device_kind
    caps = {"max_files": args.max_files,
            "max_total_bytes": args.max_total_mb * 2**20 if args.max_total_mb else None}
    limits = dataclasses.replace(DEFAULT_LIMITS, **{k: v for k, v in caps.items() if v})
    unusable = 0
    for i, path in enumerate(args.paths):
        if i:
            print()
        report, _ = inspect_image_folder(path, image_size=args.image_size, limits=limits, device_kind=device_kind(),
                                         on_progress=ImportProgress(disable=not sys.stderr.isatty()))
        for line in report.summary_lines():
            print(line)
        if report.usable:
            print("usable: yes")
        else:
            unusable += 1
            print(f"usable: no: {report.problems[0]}")
            print(f"error: {path}: not usable: {report.problems[0]}", file=sys.stderr)
    return 1 if unusable else 0


_PARALLEL_COMMANDS = ("train", "pseudo-label", "retrain")  # the ones that use every torchrun process


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "inspect": cmd_inspect,
                "pseudo-label": cmd_pseudo_label, "review": cmd_review, "retrain": cmd_retrain,
                "export": cmd_export, "import": cmd_import, "status": cmd_status,
                "attach": cmd_attach}
    if args.command not in _PARALLEL_COMMANDS and os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, a one-process command (review, export, ...) runs once, on rank 0
    code = 1
    try:
        code = handlers[args.command](args)
    except MPLStudioError as exc:
        print(f"error: {_rank_prefix()}{exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        code = 130
    finally:
        if "torch.distributed" in sys.modules:
            from mpl_core.engine import distributed
            distributed.shutdown(ok=code == 0)
    return code


def _rank_prefix() -> str:
    """'rank 3: ' under torchrun, so that an error names the process it came from."""
    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
