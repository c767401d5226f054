import pytest

from mpl_core.config import OVERRIDES, RunConfig, override
from mpl_core.errors import MPLStudioError
from mpl_core.presets import (
    DEMO_BUDGET_S,
    DEMO_MU,
    DEMO_REVIEW_STEPS,
    DEMO_START_ROLE,
    FINETUNE_ROUND_LR,
    PRESETS,
    RETRAIN_LR,
    RETRAIN_MIXUP,
    RETRAIN_STEPS_FACTOR,
    RETRAIN_TRUSTED_SHARE,
    build_retrain_config,
    build_run_config,
    demo_plan,
)
from mpl_core.service.cli import build_parser, config_from_args


def test_override_sets_the_named_fields_and_keeps_the_rest():
    cfg = override(RunConfig(), steps=7, seed=3, threshold=None, algorithm="uda")
    assert cfg.train.steps == 7 and cfg.train.seed == 3 and cfg.data.seed == 3
    assert cfg.algorithm.name == "uda" and cfg.algorithm.threshold == 0.6  # None kept the default: UDA's
    assert cfg.train.lr == RunConfig().train.lr


def test_override_refuses_unknown_settings_and_bad_values():
    with pytest.raises(MPLStudioError, match="unknown setting"):
        override(RunConfig(), stepz=3)
    with pytest.raises(MPLStudioError, match="threshold must be between 0 and 1"):
        override(RunConfig(), threshold=1.5)
    with pytest.raises(MPLStudioError, match="labeled_view must be one of weak, strong"):
        override(RunConfig(), labeled_view="noisy")
    assert override(RunConfig(), labeled_view="strong").algorithm.labeled_view == "strong"
    with pytest.raises(MPLStudioError, match="pseudo_label_view must be one of weak, strong"):
        override(RunConfig(), pseudo_label_view="both")
    assert override(RunConfig(), pseudo_label_view="strong").algorithm.pseudo_label_view == "strong"


def test_the_command_line_and_the_train_page_build_the_same_config():
    args = build_parser().parse_args(["train", "--preset", "quick-demo", "--algorithm", "uda", "--steps", "50",
                                      "--lr", "0.02", "--seed", "4", "--view-batches", "separate", "--no-amp",
                                      "--pseudo-label-view", "strong"])
    from_flags = config_from_args(args)
    # What app_pages/train.py passes for the same choices.
    from_page = build_run_config("quick-demo", algorithm="uda", steps=50, threshold=None, feedback_sign="derivation",
                                 view_batches="separate", pseudo_label_view="strong", lr=0.02, seed=4, device="auto",
                                 compile=False, amp=False)
    assert from_flags.to_dict() == from_page.to_dict()
    assert from_flags.model.width == PRESETS["quick-demo"]["model"]["width"]


def test_every_override_names_a_real_field():
    fields = RunConfig().to_dict()
    for targets in OVERRIDES.values():
        for section, name in targets:
            assert name in fields[section]


def test_a_new_algorithm_gets_its_own_default_threshold_unless_one_is_given():
    mpl = build_run_config(algorithm="mpl")
    assert override(mpl, algorithm="pseudo_label").algorithm.threshold == 0.95
    assert override(mpl, algorithm="pseudo_label", threshold=0.8).algorithm.threshold == 0.8
    assert override(override(mpl, threshold=0.7), steps=5).algorithm.threshold == 0.7  # same algorithm: kept


def test_a_supervised_retrain_round_trains_longer_unless_its_steps_are_given():
    steps = PRESETS["quick-demo"]["train"]["steps"]
    assert build_retrain_config("quick-demo", algorithm="supervised").train.steps == steps * RETRAIN_STEPS_FACTOR
    assert build_retrain_config("quick-demo", algorithm="supervised", steps=50).train.steps == 50
    assert build_retrain_config("quick-demo", algorithm="uda").train.steps == steps  # measured only for supervised
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--preset", "quick-demo",
                                      "--algorithm", "supervised"])
    assert config_from_args(args, build_retrain_config).train.steps == steps * RETRAIN_STEPS_FACTOR


def test_a_supervised_round_from_scratch_mixes_up_unless_told():
    assert build_retrain_config("quick-demo", algorithm="supervised").algorithm.mixup is RETRAIN_MIXUP is True
    assert build_retrain_config("quick-demo", algorithm="supervised", mixup=False).algorithm.mixup is False
    assert build_retrain_config("quick-demo", algorithm="supervised", init_from="r").algorithm.mixup is False
    assert build_retrain_config("quick-demo", algorithm="uda").algorithm.mixup is False  # measured for supervised
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--no-mixup"])
    assert config_from_args(args, build_retrain_config).algorithm.mixup is False
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--init-from", "r", "--mixup"])
    assert config_from_args(args, build_retrain_config).algorithm.mixup is True
    with pytest.raises(MPLStudioError, match="mixup is for supervised rounds"):
        build_retrain_config("quick-demo", algorithm="uda", mixup=True)
    assert demo_plan(seed=0).full_retrain.algorithm.mixup and not demo_plan(seed=0).retrain.algorithm.mixup


def test_a_round_from_scratch_with_mixup_learns_at_its_own_rate_unless_told():
    default_lr = build_run_config("quick-demo").train.lr
    assert build_retrain_config("quick-demo", algorithm="supervised").train.lr == RETRAIN_LR == 0.1 != default_lr
    assert build_retrain_config("quick-demo", algorithm="supervised", lr=0.03).train.lr == 0.03
    # measured with mixup only: without it, and for other algorithms, the preset's rate
    assert build_retrain_config("quick-demo", algorithm="supervised", mixup=False).train.lr == default_lr
    assert build_retrain_config("quick-demo", algorithm="supervised", init_from="r", mixup=True).train.lr == \
        FINETUNE_ROUND_LR  # a fine-tuning round keeps its own rate, mixup or not
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--preset", "quick-demo"])
    assert config_from_args(args, build_retrain_config).train.lr == RETRAIN_LR
    assert demo_plan(seed=0).full_retrain.train.lr == RETRAIN_LR


def test_a_round_that_fine_tunes_keeps_the_preset_steps_at_its_own_rate():
    steps = PRESETS["quick-demo"]["train"]["steps"]
    tuned = build_retrain_config("quick-demo", algorithm="supervised", init_from="runs/0001")
    assert (tuned.train.steps, tuned.train.lr, tuned.model.init_from) == (steps, FINETUNE_ROUND_LR, "runs/0001")
    assert build_retrain_config("quick-demo", algorithm="supervised", init_from="r", lr=0.1).train.lr == 0.1
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--preset", "quick-demo", "--init-from", "r"])
    assert config_from_args(args, build_retrain_config).train.lr == FINETUNE_ROUND_LR
    assert config_from_args(args, build_retrain_config).model.init_role == "student"  # the default
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--init-from", "r", "--init-role", "teacher"])
    assert config_from_args(args, build_retrain_config).model.init_role == "teacher"
    with pytest.raises(MPLStudioError, match="init_role must be one of student, teacher"):
        build_retrain_config("quick-demo", algorithm="supervised", init_from="r", init_role="ema")


def test_the_demo_plan_halves_mu_and_fine_tunes_on_the_preset_steps():
    plan = demo_plan(seed=3)
    assert plan.train.train.mu == DEMO_MU < PRESETS["quick-demo"]["train"].get("mu", RunConfig().train.mu)
    assert plan.train.algorithm.name == "mpl" and plan.retrain.algorithm.name == "supervised" and plan.fine_tune
    assert plan.retrain.train.steps == PRESETS["quick-demo"]["train"]["steps"]
    assert plan.retrain.train.lr == FINETUNE_ROUND_LR and plan.train.train.seed == plan.retrain.train.seed == 3
    # the retrain fine-tunes the MPL teacher; the review round goes on from the retrain's own model
    assert (plan.retrain.model.init_role, plan.review.model.init_role) == (DEMO_START_ROLE, "student") == \
        ("teacher", "student")
    assert plan.start_args()["fine_tune"] is True
    # the review round goes on from the retrain for fewer steps; both draw half their batches from people's labels
    assert plan.start_args()["review_cfg"] is plan.review and plan.review.train.steps == DEMO_REVIEW_STEPS
    assert plan.retrain.train.trusted_share == plan.review.train.trusted_share == RETRAIN_TRUSTED_SHARE > 0
    # where it fits the budget, the Rounds page's default round from scratch replaces the fine-tuning one
    full = plan.start_args()["full_retrain_cfg"]
    assert full is plan.full_retrain and not full.model.init_from and full.train.trusted_share == RETRAIN_TRUSTED_SHARE
    assert full.train.steps == RETRAIN_STEPS_FACTOR * PRESETS["quick-demo"]["train"]["steps"]
    assert (full.model.name, full.model.width) == (plan.review.model.name, plan.review.model.width)
    assert plan.start_args()["budget_s"] == DEMO_BUDGET_S == 180


def test_a_supervised_round_draws_its_share_from_the_labels_people_gave_unless_told():
    assert build_retrain_config("quick-demo", algorithm="supervised").train.trusted_share == RETRAIN_TRUSTED_SHARE
    assert build_retrain_config("quick-demo", algorithm="supervised", trusted_share=0).train.trusted_share == 0
    assert build_retrain_config("quick-demo", algorithm="uda").train.trusted_share == 0  # measured for supervised
    args = build_parser().parse_args(["retrain", "--workspace", "w", "--trusted-share", "0.25"])
    assert config_from_args(args, build_retrain_config).train.trusted_share == 0.25
    args = build_parser().parse_args(["retrain", "--workspace", "w"])
    assert config_from_args(args, build_retrain_config).train.trusted_share == RETRAIN_TRUSTED_SHARE
    with pytest.raises(MPLStudioError, match="trusted_share"):
        build_retrain_config("quick-demo", algorithm="supervised", trusted_share=1.5)


def test_a_demo_that_fine_tunes_refuses_another_model_before_it_trains(tiny_workspace):
    from mpl_core.service.demo import start_demo
    plan = demo_plan()
    plan.retrain.model.width = plan.train.model.width * 2
    with pytest.raises(MPLStudioError, match="retrain model to be the teacher's"):
        start_demo(tiny_workspace, plan.train, plan.retrain, fine_tune=True)
    plan = demo_plan()
    plan.review.model.width = plan.train.model.width * 2  # the review round's model too
    with pytest.raises(MPLStudioError, match="retrain model to be the teacher's"):
        start_demo(tiny_workspace, plan.train, plan.retrain, review_cfg=plan.review, fine_tune=True)
    plan.retrain.model.init_role = "student"
    with pytest.raises(MPLStudioError, match="retrain model to be the student's"):
        start_demo(tiny_workspace, plan.train, plan.retrain, review_cfg=plan.review, fine_tune=True)
    plan = demo_plan()
    plan.full_retrain.model.width = plan.train.model.width * 2  # the review round goes on from it
    with pytest.raises(MPLStudioError, match="models must be the same"):
        args = plan.start_args()
        start_demo(tiny_workspace, args.pop("cfg"), **args)
    plan = demo_plan()
    plan.full_retrain.model.init_from = str(tiny_workspace.root)  # "from scratch" must be so
    with pytest.raises(MPLStudioError, match="must not start from a checkpoint"):
        args = plan.start_args()
        start_demo(tiny_workspace, args.pop("cfg"), **args)
    assert tiny_workspace.store.runs() == []


def test_a_run_saved_before_the_pseudo_label_view_goes_on_with_the_strong_view():
    from mpl_core.engine.state import check_compatible
    from mpl_core.presets import build_run_config
    old = RunConfig().to_dict()
    del old["algorithm"]["pseudo_label_view"]  # what runs saved before the field existed look like
    assert RunConfig.from_dict(old).algorithm.pseudo_label_view == "strong"  # what they computed with
    assert RunConfig.from_dict(RunConfig().to_dict()).algorithm.pseudo_label_view == "weak"
    check_compatible({"config": old}, RunConfig.from_dict(old))  # the app resumes with the stored config
    with pytest.raises(MPLStudioError, match="algorithm.pseudo_label_view='strong'"):
        check_compatible({"config": old}, RunConfig())  # the command line with today's default: refused
    with pytest.raises(MPLStudioError, match="train.batch_size=32"):  # the former cpu-10min batch
        check_compatible({"config": RunConfig().to_dict()}, build_run_config("cpu-10min"))
