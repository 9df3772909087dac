"""The MANN lecture's experiment: settings, episode streams, training, and accuracy per instance.

Every update draws fresh episodes (new classes, labels and order), so the weights cannot store a
class-label binding; the binding has to happen inside an episode. Accuracy is reported per
*instance*: the 1st, 2nd, ... time a class is seen in an episode (:data:`INSTANCES`, the
paper's). The nearest neighbour among the images whose labels have already been shown is the
non-learning baseline.

Two quick-mode departures, off in ``full()``: ``encoder="conv4"`` feeds features of a fixed Conv4
pretrained on the background classes instead of pixels (:func:`pretrain_encoder`), and
``train_per_class`` < ``per_class`` trains on shorter episodes than the test episodes (more
updates for the same CPU time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from metaedu.algorithms.mann.networks import MANN, FeedforwardBaseline, LSTMBaseline
from metaedu.algorithms.mann.scoring import INSTANCES, correct_steps, predict_characters, sequence_loss  # noqa: F401
from metaedu.checkpoints import resolve
from metaedu.runtime import check_settings, seeded
from metaedu.tasks.episodes import check_rotations
from metaedu.tasks.sequences import SequenceSampler
from metaedu.training import History, train

#: Instances at which the paper reports accuracy.


@dataclass
class MANNSettings:
    """Hyper-parameters of the MANN lecture (episodes, the network, training, evaluation)."""

    n_classes: int = 5  # classes per episode
    per_class: int = 10  # images of each class in a test episode (episode length n_classes * per_class)
    train_per_class: int = 10  # images of each class in a training episode (shorter: cheaper updates)
    image_size: int = 20  # images resized to image_size x image_size and flattened
    label_length: int = 1  # 1: one-hot labels; 5: the paper's five-character strings
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # rotated characters as extra classes
    controller: str = "lstm"  # "lstm" or "feedforward"
    hidden: int = 200  # controller units
    memory_slots: int = 128  # N, rows of the memory
    memory_size: int = 40  # M, length of a memory row (and of a key)
    read_heads: int = 4  # H, keys per step (the n of the least-used weights)
    gamma: float = 0.95  # usage decay
    key_strength: bool = False  # sharpen reads by a learned beta >= 1 (NTM), not in the paper
    write_vector: bool = False  # write a separate vector a_t instead of the read key k_t (see the docstring)
    baseline_hidden: int = 200  # units of the LSTM and feedforward baselines
    optimizer: str = "rmsprop"  # "rmsprop" (the paper) or "adam"
    lr: float = 1e-4  # learning rate
    grad_clip: float = 10.0  # gradient-norm clip
    batch: int = 16  # episodes per update
    steps: int = 6250  # updates of MANN (16 x 6250 = the paper's 100,000 episodes)
    baseline_steps: int = 6250  # updates of each baseline
    eval_episodes: int = 1000  # test episodes for the instance-accuracy table
    seed: int = 0  # seeds the samplers and the initial weights
    encoder: str = "pixels"  # "pixels" (the paper) or "conv4": a fixed Conv4 pretrained as a plain classifier
    encoder_hidden: int = 64  # Conv4 filters per block of that classifier (encoder="conv4" only)
    encoder_epochs: int = 2  # epochs of that classifier over the background images (encoder="conv4" only)
    encoder_batch: int = 128  # images per step of that classifier (encoder="conv4" only)
    encoder_lr: float = 1e-3  # its Adam step size (encoder="conv4" only)
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "MANNSettings":
        """A 2-core CPU in lecture time: a fixed pretrained Conv4 encoder instead of pixels, training episodes
        of 5 images per class, a small memory, one head, sharpened reads, a separate write vector, Adam.
        The number of updates (800 for MANN and for each baseline) is set by the lecture's CPU minute, not tuned;
        every other choice here that is not the paper's is chosen on meta-validation alphabets (never evaluation);
        the encoder's one epoch of batches of 64 at step 2e-3 gives a nearest neighbour there about as good as
        two epochs of 128 at 1e-3, in half the time."""
        return cls(
            train_per_class=5,
            image_size=10,
            rotations=(0,),
            hidden=96,
            memory_slots=32,
            memory_size=32,
            read_heads=1,
            key_strength=True,
            write_vector=True,
            baseline_hidden=96,
            optimizer="adam",
            lr=3e-3,
            batch=16,
            steps=800,
            baseline_steps=800,
            encoder="conv4",
            encoder_hidden=32,
            encoder_epochs=1,
            encoder_batch=64,
            encoder_lr=2e-3,
        )

    @classmethod
    def full(cls) -> "MANNSettings":
        """The paper's setting on a GPU: 100,000 episodes of 20 x 20 images, 128 x 40 memory, 4 heads."""
        return cls(checkpoint=True)

    @classmethod
    def reference(cls) -> "MANNSettings":
        """The reference checkpoint (``metaedu pretrain mann``): the paper's task and network (5 classes x 10
        images of 20 x 20 pixels, an LSTM of 200, a 128 x 40 memory, 4 heads), trained for as long as a time
        budget allows (about 5 GPU-minutes, not the paper's 100,000 episodes of 16). Departures, for that
        budget: 128 episodes per update (the 50 sequential steps are launch-bound on a GPU, so an update of 128
        episodes costs about what one of 16 does: ``benchmarks/mann_reference_batch.py``) and Adam at 1e-3;
        the written vector and the read strength as in quick mode. The LSTM baseline gets as many updates."""
        return cls(write_vector=True, key_strength=True, optimizer="adam", lr=1e-3, batch=128, steps=100_000,
                   baseline_steps=100_000, eval_episodes=500)

    def __post_init__(self) -> None:
        check_settings(
            self,
            positive=(
                "per_class",
                "train_per_class",
                "image_size",
                "hidden",
                "memory_slots",
                "memory_size",
                "read_heads",
                "baseline_hidden",
                "lr",
                "grad_clip",
                "batch",
                "steps",
                "baseline_steps",
                "eval_episodes",
                "encoder_hidden",
                "encoder_epochs",
                "encoder_batch",
                "encoder_lr",
            ),
            choices={
                "label_length": (1, 5),
                "controller": ("lstm", "feedforward"),
                "optimizer": ("rmsprop", "adam"),
                "encoder": ("pixels", "conv4"),
            },
        )
        if self.n_classes < 2:
            raise ValueError(f"MANNSettings.n_classes must be at least 2, got {self.n_classes!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"MANNSettings.gamma (usage decay) must lie in [0, 1], got {self.gamma!r}")
        if self.read_heads > self.memory_slots:
            raise ValueError(
                f"MANNSettings.read_heads={self.read_heads} needs at least as many memory slots, "
                f"got memory_slots={self.memory_slots}"
            )
        check_rotations(self.rotations)


MODELS = ("mann", "lstm", "feedforward")


def build_model(kind: str, settings: MANNSettings, sampler: SequenceSampler, device=None) -> nn.Module:
    """``kind`` in ``MODELS``, sized for the sampler's inputs and labels; its initial weights depend on
    ``settings.seed`` only (the global random state is left as it was)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}: expected one of {MODELS}")
    out = sampler.label_length * sampler.label_size
    with seeded(settings.seed):
        if kind == "mann":
            model = MANN(
                sampler.input_size,
                out,
                settings.hidden,
                settings.memory_slots,
                settings.memory_size,
                settings.read_heads,
                settings.gamma,
                settings.controller,
                settings.key_strength,
                settings.write_vector,
            )
        elif kind == "lstm":
            model = LSTMBaseline(sampler.input_size, out, settings.baseline_hidden)
        else:
            model = FeedforwardBaseline(sampler.input_size, out, settings.baseline_hidden)
    return model.to(device if device is not None else sampler.device)


def make_sampler(
    settings: MANNSettings, data, device="cpu", seed: int | None = None, encoder=None, training: bool = False
) -> SequenceSampler:
    """The episode stream of these settings over ``data`` (a :class:`ClassImageSet`).

    With ``settings.encoder == "conv4"`` pass the ``encoder`` from :func:`pretrain_encoder`.
    ``training=True``: episodes of ``settings.train_per_class`` images per class, else ``per_class``.
    """
    if settings.encoder == "conv4" and encoder is None:
        raise ValueError("settings.encoder='conv4' needs encoder=pretrain_encoder(settings, background_data)")
    if settings.encoder == "pixels" and encoder is not None:
        raise ValueError("an encoder was given but settings.encoder='pixels'")
    per_class = settings.train_per_class if training else settings.per_class
    return SequenceSampler(
        data,
        settings.n_classes,
        per_class,
        settings.image_size,
        settings.label_length,
        settings.rotations,
        device=device,
        seed=settings.seed if seed is None else seed,
        encoder=encoder,
    )


def pretrain_encoder(settings: MANNSettings, background, device="cpu", progress: bool = True):
    """A fixed image encoder ``[n, C, H, W] -> [n, D]``: Conv4 trained as an ordinary classifier of all
    ``background`` classes (:func:`metaedu.algorithms.transfer.pretrain_classifier`), head dropped.

    A quick-mode simplification, not the paper: the networks then only have to learn the binding,
    not to see. Train it on background classes only, so that evaluation classes stay unseen.
    """
    from metaedu.algorithms.transfer import TransferSettings, pretrain_classifier

    # the classifier's size and length come from these settings (quick or full); the rest is TransferSettings'
    ts = replace(
        TransferSettings(),
        hidden=settings.encoder_hidden,
        epochs=settings.encoder_epochs,
        batch_size=settings.encoder_batch,
        lr=settings.encoder_lr,
        checkpoint=settings.checkpoint,
    )
    net, _ = pretrain_classifier(background, ts, device=device, seed=settings.seed, progress=progress)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.features(images).flatten(1)  # [n, D]

    encode.network = net
    return encode


# --------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, settings: MANNSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=settings.lr)
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr)
    raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {settings.optimizer!r}")


def train_model(
    model: nn.Module,
    sampler: SequenceSampler,
    settings: MANNSettings,
    n_steps: int,
    checkpoint: str | Path | bool | None = None,
    progress: bool = True,
    desc: str = "MANN",
    max_seconds: float | None = None,
) -> History:
    """Meta-train ``model`` on fresh episodes from ``sampler`` with :func:`metaedu.training.train`.

    Every update draws ``settings.batch`` new episodes (new classes, labels and order), so the
    weights cannot store any class-label binding: the binding has to happen inside an episode.
    Logged: ``loss`` and ``accuracy`` (all steps) and ``acc_2nd`` (second instances), in %.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    ``max_seconds``: stop after the update that uses up this much time (``History.steps_done`` says how far).
    """
    checkpoint = resolve(
        checkpoint,
        f"mann_{type(model).__name__}",
        settings,
        model,
        n_steps,
        sampler.episodes.data,
        sampler.episodes.generator,
        sampler.generator,
        (sampler.n_classes, sampler.per_class, sampler.label_length),
    )
    opt = make_optimizer(model, settings)

    def step(i: int) -> dict:
        seq = sampler.sample(settings.batch)
        logits = model(seq.inputs)
        loss = sequence_loss(logits, seq)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        with torch.no_grad():
            correct = correct_steps(predict_characters(logits, seq), seq).float()
            second = (seq.instance == 2).float()
            return {
                "loss": loss.detach(),
                "accuracy": correct.mean() * 100,
                "acc_2nd": (correct * second).sum() / second.sum() * 100,
            }

    state = {"model": model, "opt": opt, "sampler": sampler.episodes.generator, "order": sampler.generator}
    return train(step, n_steps, state=state, checkpoint=checkpoint, progress=progress, desc=desc,
                 max_seconds=max_seconds)
