"""airbench94's parts in cifarlab: each checked on tiny data against what airbench does."""
import pytest
import torch
import torch.nn as nn

from cifarlab.classify import recipes
from cifarlab.classify.artifact import ImageClassifier, build_classifier, export_program, translated_views
from cifarlab.classify.augment import Augment, flip_plan
from cifarlab.classify.recipes import recipe_config
from cifarlab.classify.trainer import Lookahead, Trainer, init_from_data, lr_share
from cifarlab.data import load_images
from cifarlab.models import create_model
from cifarlab.models.classifiers import FrozenScaleBatchNorm

SMALL = {"widths": "8-8-8", "tta_translate": 1}


def tiny_airbench(folder, **given):
    """The airbench94 recipe at toy width on a tiny folder: every part, a few seconds."""
    config = recipe_config("airbench94", data=str(folder), model_args=SMALL, logger="none", **given)
    train_set = load_images(str(folder))
    model = build_classifier(config.model, config.model_args, train_set.classes, tta=config.tta)
    init_from_data(model, train_set.images)
    return Trainer(config, model, train_set, torch.device("cpu"))


# ----------------------------------------------------------------------------- lookahead


def test_a_lookahead_sync_moves_the_slow_weights_and_restarts_the_net_from_them():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    lookahead = Lookahead(net)                      # slow = 1
    with torch.no_grad():
        net.weight.fill_(3.0)                       # the fast weights moved to 3
    lookahead.sync(net, decay=0.75)                 # slow = 0.75 * 1 + 0.25 * 3
    assert net.weight.item() == 1.5 and lookahead.slow["weight"].item() == 1.5
    with torch.no_grad():
        net.weight.fill_(5.0)
    lookahead.finish(net)                           # the end of the run: the slow weights, unmoved
    assert net.weight.item() == 1.5


def test_lookahead_decay_follows_airbenchs_schedule():
    lookahead = Lookahead(nn.Linear(1, 1))
    assert lookahead.decay(0.0) == 0.0
    assert abs(lookahead.decay(0.5) - 0.95 ** 5 * 0.125) < 1e-12
    assert abs(lookahead.decay(1.0) - 0.95 ** 5) < 1e-12


def test_a_run_ends_on_the_lookahead_weights(tiny_folder):
    trainer = tiny_airbench(tiny_folder, epochs=2, batch_size=8)   # 4 steps an epoch, 8 in all
    while trainer.limits.epochs_left(trainer.epoch):
        trainer.train_epoch()
    assert trainer.step == trainer.total_steps == 8
    for name, value in trainer.model.state_dict().items():
        if name in trainer.lookahead.slow:
            assert torch.equal(value, trainer.lookahead.slow[name]), name


def test_under_a_time_budget_the_run_ends_on_the_lookahead_weights_when_the_clock_does(tiny_folder):
    trainer = tiny_airbench(tiny_folder, time_budget=100.0, batch_size=8)   # the clock is the limit
    assert trainer.total_steps is None
    trainer.epoch, trainer.elapsed = 1, 99.999                              # as if resumed near the end
    trainer.train_epoch()
    assert trainer.out_of_time and trainer.step == 1
    for name, value in trainer.model.state_dict().items():
        if name in trainer.lookahead.slow:
            assert torch.equal(value, trainer.lookahead.slow[name]), name


# ----------------------------------------------------------------------------- alternating flip


def test_alternating_flip_mirrors_a_fixed_half_in_even_epochs_and_the_rest_in_odd_ones():
    n = 64
    images = torch.rand(n, 3, 4, 4)
    augment = Augment("altflip", train_images=n, seed=3)
    plan = flip_plan(n, 3)
    assert 16 < int(plan.sum()) < 48
    index = torch.arange(n)
    for epoch in range(4):
        out = augment(images, torch.Generator(), index=index, epoch=epoch)
        mirrored = (out == images.flip(-1)).flatten(1).all(1)
        assert torch.equal(mirrored, plan ^ bool(epoch % 2)), epoch
    # by dataset position, not by place in the batch
    shuffled = torch.randperm(n)
    out = augment(images[shuffled], torch.Generator(), index=shuffled, epoch=0)
    assert torch.equal((out == images[shuffled].flip(-1)).flatten(1).all(1), plan[shuffled])


# ----------------------------------------------------------------------------- translate TTA


class Recorder(nn.Module):
    """A 'network' whose logits are the mean of each channel, and which keeps every view it sees."""

    def __init__(self):
        super().__init__()
        self.views = []

    def forward(self, x):
        self.views.append(x.clone())
        return x.mean((2, 3))


def test_translated_views_shift_by_one_pixel_with_a_reflected_border():
    x = torch.rand(2, 3, 32, 32)
    up_left, down_right = translated_views(x, 1)
    assert up_left.shape == down_right.shape == x.shape
    assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(down_right[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(up_left[..., 0, 1:], x[..., 1, :-1])            # reflected, not zero


def test_translate_tta_averages_six_views_with_airbenchs_weights():
    net = Recorder()
    model = ImageClassifier(net, ["a", "b", "c"], mean=(0, 0, 0), std=(1, 1, 1), tta=True, tta_translate=1).eval()
    x = torch.rand(5, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (5, 3) and len(net.views) == 6
    up_left, down_right = translated_views(x, 1)
    expected = [x, x.flip(-1), up_left, up_left.flip(-1), down_right, down_right.flip(-1)]
    for seen, view in zip(net.views, expected):
        assert torch.allclose(seen, view)
    weights = [1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 8]
    assert torch.allclose(logits, sum(w * v.mean((2, 3)) for w, v in zip(weights, expected)), atol=1e-6)
    model.train()
    net.views.clear()
    assert model(x).shape == (5, 3) and len(net.views) == 1            # no TTA while training


def test_the_check_after_each_epoch_scores_without_tta_and_leaves_the_final_score_its_views(tiny_folder):
    from cifarlab.classify.trainer import evaluate
    trainer = tiny_airbench(tiny_folder, batch_size=8, epochs=1)
    trainer.train_epoch()
    val_set, cpu = load_images(str(tiny_folder)), torch.device("cpu")
    views = []
    hook = trainer.model.net.register_forward_pre_hook(lambda module, args: views.append(len(args[0])))
    row = trainer.validate(val_set)
    assert sum(views) == len(val_set.images)                            # one pass: no mirror, no translate
    hook.remove()
    assert trainer.model.tta and trainer.model.tta_translate == 1       # the final score keeps its six views
    trainer.model.tta = False
    plain = evaluate(trainer.model, val_set.images, val_set.labels, cpu)
    assert row["val_accuracy"] == plain["accuracy"] and row["val_loss"] == pytest.approx(plain["loss"])


def test_translate_tta_survives_checkpoint_and_export(tmp_path):
    from cifarlab.classify.artifact import build_from_checkpoint, checkpoint
    model = build_classifier("fastnet", SMALL, ["a", "b"], tta=True).eval()
    assert model.tta_translate == 1
    again = build_from_checkpoint(checkpoint(model, "fastnet", SMALL, {}))
    x = torch.rand(3, 3, 32, 32)
    assert again.tta_translate == 1 and torch.allclose(again(x), model(x))
    program = torch.export.load(str(export_program(model, tmp_path / "model.pt2"))).module()
    assert torch.allclose(program(x), model(x), atol=1e-5)


# ----------------------------------------------------------------------------- network


def test_batchnorm_scale_stays_fixed_while_its_shift_learns(tiny_folder):
    trainer = tiny_airbench(tiny_folder, epochs=3, batch_size=8)         # the run (and lookahead) goes on
    norms = [m for m in trainer.model.modules() if isinstance(m, FrozenScaleBatchNorm)]
    shifts_before = [m.bias.detach().clone() for m in norms]
    trainer.train_epoch()
    for norm, before in zip(norms, shifts_before):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert not torch.equal(norm.bias, before)


def test_whitening_layer_output_is_white_on_the_data_it_was_fit_on():
    net = create_model("fastnet", task="classify", widths="8-8-8")
    g = torch.Generator().manual_seed(0)
    smooth = nn.functional.interpolate(torch.randn(200, 3, 8, 8, generator=g), size=32, mode="bilinear")
    images = smooth + 0.3 * torch.randn(200, 3, 32, 32, generator=g)     # neighbouring pixels correlate
    net.init_from_data(images)
    out = net.whiten(images) - net.whiten.bias.view(1, -1, 1, 1)
    half = out.shape[1] // 2
    assert torch.allclose(out[:, half:], -out[:, :half])                  # + and - filter pairs
    flat = out[:, :half].permute(0, 2, 3, 1).reshape(-1, half)
    second_moment = flat.T @ flat / len(flat)
    assert torch.allclose(second_moment, torch.eye(half), atol=0.05)     # eps keeps it just below 1


# ----------------------------------------------------------------------------- optimizer and schedule


def test_parameter_groups_are_airbenchs(tiny_folder):
    trainer = tiny_airbench(tiny_folder, epochs=4, batch_size=32)        # 1 step an epoch
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    config = trainer.config
    norm_shifts = {id(m.bias) for m in trainer.model.modules() if isinstance(m, FrozenScaleBatchNorm)}
    assert {id(p) for p in groups["shifts"]["params"]} == norm_shifts
    assert [p is trainer.model.net.whiten.bias for p in groups["whitening bias"]["params"]] == [True]
    assert groups["shifts"]["base_lr"] == 64 * groups["weights"]["base_lr"] == 64 * config.lr
    for g in groups.values():                                            # the same per-step decay everywhere
        assert abs(g["base_lr"] * g["weight_decay"] - config.lr * config.weight_decay) < 1e-12
    learning_rates, takes_gradients = [], []
    while trainer.limits.epochs_left(trainer.epoch):
        trainer.train_epoch()
        learning_rates.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
        takes_gradients.append(trainer.model.net.whiten.bias.grad is not None)
    assert [lr["whitening bias"] > 0 for lr in learning_rates] == [True, True, True, False]   # 3 epochs, then stops
    assert takes_gradients == [True, True, True, False]           # and stops taking gradients, as airbench's
    assert all(lr["weights"] > 0 for lr in learning_rates)


def test_a_whitening_bias_without_gradients_trains_exactly_as_one_at_lr_zero(tiny_folder, monkeypatch):
    """Stopping its gradient only saves work: the same seed ends on the same weights."""
    def trained(stop_gradients: bool) -> dict:
        torch.manual_seed(0)
        trainer = tiny_airbench(tiny_folder, epochs=5, batch_size=32, whiten_bias_epochs=2)
        if not stop_gradients:
            monkeypatch.setattr(trainer, "stop_finished_groups", lambda: None)
        while trainer.limits.epochs_left(trainer.epoch):
            trainer.train_epoch()
        return trainer.model.state_dict()
    stopped, at_lr_zero = trained(True), trained(False)
    assert all(torch.equal(stopped[k], at_lr_zero[k]) for k in stopped)


def test_airbench_schedule_warms_up_from_a_fifth_and_ends_at_seven_percent():
    assert abs(lr_share("onecycle", 0.0, 0.23, 0.07) - 0.2) < 1e-12
    assert abs(lr_share("onecycle", 0.23, 0.23, 0.07) - 1.0) < 1e-12
    assert abs(lr_share("onecycle", 1.0, 0.23, 0.07) - 0.07) < 1e-12
    assert lr_share("onecycle", 1.0, 0.23, 0.0) == 0.0                    # other recipes still end at 0


def test_the_training_method_is_ordinary_settings_any_recipe_can_take(tiny_folder):
    config = recipe_config("baseline", data=str(tiny_folder), model="fastnet", lookahead=True, final_lr=0.07,
                           shift_params="batchnorm",
                           whiten_bias_epochs=1, logger="none", epochs=2, batch_size=32)
    train_set = load_images(str(tiny_folder))
    model = build_classifier(config.model, {"widths": "8-8-8"}, train_set.classes, tta=True)
    init_from_data(model, train_set.images)
    trainer = Trainer(config, model, train_set, torch.device("cpu"))
    assert trainer.lookahead is not None
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["weights", "shifts", "whitening bias"]
    assert recipe_config("seed004").lookahead is False and recipe_config("seed004").final_lr == 0.0


def test_an_airbench94_config_from_before_the_settings_existed_keeps_airbenchs_method():
    from cifarlab.classify.config import METHOD_SETTINGS, ClassifyConfig
    old = {k: v for k, v in recipe_config("airbench94").to_dict().items() if k not in METHOD_SETTINGS}
    config = ClassifyConfig.from_dict(old)
    assert (config.lookahead, config.final_lr, config.shift_params, config.whiten_bias_epochs) == \
        (True, 0.07, "batchnorm", 3)
    other = ClassifyConfig.from_dict({**old, "recipe": "seed004"})   # other recipes never used them
    assert (other.lookahead, other.final_lr, other.shift_params, other.whiten_bias_epochs) == \
        (False, 0.0, "1-d", None)


def test_bad_training_method_settings_are_one_line_errors():
    import pytest
    from cifarlab.errors import CifarlabError
    with pytest.raises(CifarlabError, match=r"--final-lr must be in \[0, 1\)"):
        recipe_config("fast", final_lr=1.5)
    with pytest.raises(CifarlabError, match="shift_params must be one of 1-d, batchnorm"):
        recipe_config("fast", shift_params="all")


# ----------------------------------------------------------------------------- scaling to the data


def fake_folder(root, images: int):
    """Empty files are enough: the rule counts images by name, before anything is loaded."""
    for i in range(images):
        (root / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 10}" / f"{i}.png").touch()
    return root


def test_airbench94_keeps_its_hyperparameters_on_full_cifar10(capsys, monkeypatch):
    monkeypatch.setattr(recipes, "_said", set())
    config = recipe_config("airbench94")                                  # 45,000 training images
    assert (config.batch_size, config.lr, config.epochs) == (1024, 1.5, 10)
    assert abs(config.weight_decay - 0.0153 / 11.5) < 1e-15
    assert capsys.readouterr().err == ""


def test_airbench94_on_small_data_states_and_applies_its_rule(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipes, "_said", set())
    config = recipe_config("airbench94", data=str(fake_folder(tmp_path / "d", 5085)))   # the subset's size
    assert (config.batch_size, config.lr, config.epochs) == (128, 1.5 * 128 / 1024, 10)  # 4,577 // 128 = 35 steps
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "batch 1024 -> 128" in line and "lr 1.5 -> 0.1875" in line
    # even batch 64 leaves fewer than 32 steps: the epochs grow to keep 320 steps
    config = recipe_config("airbench94", data=str(fake_folder(tmp_path / "e", 1000)))   # 900 // 64 = 14 steps
    assert (config.batch_size, config.epochs) == (64, 23)
    assert "epochs 10 -> 23" in capsys.readouterr().err
    # what the user gives wins; the lr still follows a given batch
    config = recipe_config("airbench94", data=str(tmp_path / "d"), batch_size=256, epochs=3)
    assert (config.batch_size, config.lr, config.epochs) == (256, 0.375, 3)
    config = recipe_config("airbench94", data=str(tmp_path / "d"), batch_size=512, lr=0.7)
    assert (config.batch_size, config.lr) == (512, 0.7)


# ----------------------------------------------------------------------------- bfloat16 autocast


@pytest.mark.parametrize("amp, native, expected", [(True, True, torch.bfloat16), (True, False, torch.float32),
                                                   (False, True, torch.float32)])
def test_training_autocasts_to_bfloat16_only_when_asked_and_native(tiny_folder, monkeypatch, amp, native, expected):
    """On where the hardware has bfloat16 natively (CUDA, AVX512-BF16/AMX CPUs), off where it is emulated."""
    from cifarlab.classify import trainer as trainer_module
    monkeypatch.setattr(trainer_module, "native_bfloat16", lambda device: native)
    trainer = tiny_airbench(tiny_folder, amp=amp)
    conv = torch.nn.Conv2d(3, 4, 3)
    with trainer.autocast():
        assert conv(torch.rand(2, 3, 8, 8)).dtype == expected


def test_native_bfloat16_is_never_claimed_for_devices_without_it():
    from cifarlab.devices import native_bfloat16
    assert native_bfloat16(torch.device("meta")) is False


class CountingAugment:
    def __init__(self, augment):
        self.augment, self.sizes = augment, []

    def __call__(self, images, generator, **where):
        self.sizes.append(len(images))
        return self.augment(images, generator, **where)


def test_the_trainer_augments_several_batches_in_one_call_as_each_batch_would_be_alone(tiny_folder, monkeypatch):
    import cifarlab.classify.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "AUGMENT_IMAGES", 16)              # two batches of 8 a call
    trainer = tiny_airbench(tiny_folder, batch_size=8, augment="altflip")   # altflip draws nothing
    augment = trainer.augment
    trainer.augment = counting = CountingAugment(augment)
    order = torch.randperm(len(trainer.images), generator=torch.Generator().manual_seed(0))
    batches = list(trainer.batches(order))
    steps = trainer.steps_per_epoch
    assert [i for i, _, _ in batches] == list(range(steps)) and steps >= 3
    assert counting.sizes == [16] * (steps // 2) + [8] * (steps % 2)
    for i, images, labels in batches:
        index = order[i * 8:(i + 1) * 8]
        alone = augment(trainer.images[index].float() / 255, trainer.augment_generator, index=index, epoch=0)
        assert torch.equal(images, alone) and torch.equal(labels, trainer.labels[index])


def test_progressive_resizing_trains_on_smaller_images_early_and_full_size_after(tiny_folder):
    from torchvision.transforms.v2.functional import resize
    trainer = tiny_airbench(tiny_folder, batch_size=8, epochs=2, progressive="16:0.5")
    images = trainer.images[:8].float() / 255
    assert trainer.total_steps >= 4
    trainer.step = trainer.total_steps // 2 - 1                       # progress just under a half
    assert torch.equal(trainer.resized(images), resize(images, [16, 16], antialias=True))
    trainer.step = trainer.total_steps // 2 + 1
    assert trainer.resized(images) is images
    trainer.step = 0
    sizes = []
    trainer.net.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[-1]))
    trainer.train_epoch()
    trainer.train_epoch()
    assert sizes[0] == 16 and sizes[-1] == 32 and sorted(sizes) == sizes   # small first, full size to the end
    assert 0 <= trainer.validate(load_images(str(tiny_folder)))["val_accuracy"] <= 1   # evaluation: 32x32
