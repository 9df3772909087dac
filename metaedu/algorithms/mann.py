"""Memory-augmented neural network with least-recently-used access (Santoro et al. 2016).

Paper: A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap,
"Meta-Learning with Memory-Augmented Neural Networks", ICML 2016.

The network reads a MANN episode (:mod:`metaedu.tasks.sequences`): at step t the
image x_t and the previous label y_{t-1}. A controller (an LSTM, or a
feedforward layer) turns its input into a state h_t, from which it emits a key
k_t for each head. An external memory M (``memory_slots`` rows of
``memory_size`` numbers) is written and read with that key, in this order at
each step t:

1. write weights, a gated mix of the previous read weights and the least-used slots:
   w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}
2. before writing, the least-used slot (smallest w^u_{t-1}) is set to zero, then
   M_t(i) = M_{t-1}(i) + w^w_t(i) k_t                                  for every slot i
3. read weights by a softmax over cosine similarity:
   K(k, M(i)) = k . M(i) / (||k|| ||M(i)||),   w^r_t(i) = exp K(k_t, M_t(i)) / sum_j exp K(k_t, M_t(j))
4. the read vector r_t = sum_i w^r_t(i) M_t(i)
5. usage decays and adds this step's reads and writes:
   w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t
6. least-used weights: w^lu_t(i) = 1 if w^u_t(i) <= m(w^u_t, n) else 0, where m(v, n) is the
   n-th smallest entry of v and n the number of reads (heads)

The class scores come from [h_t, r_t]; r_t is also fed to the controller at
step t + 1. With several heads every head has its own key, gate and read/write
weights; step 5 sums the heads' weights, and step 6 marks the n least-used
slots for all heads (exactly as in the equations above).

Symbols -> names: k_t = ``keys`` ``[B, H, M]``; alpha = ``gate`` ``[B, H]``;
gamma = ``settings.gamma``; M_t = ``memory`` ``[B, N, M]``; w^r, w^w = ``read_w``,
``write_w`` ``[B, H, N]``; w^u = ``usage`` ``[B, N]``; w^lu = ``least_used`` ``[B, N]``;
n = ``read_heads`` = H; N = ``memory_slots``; M = ``memory_size``.

Two details the equations leave open, fixed here: when usages tie, the slots
with the lower index count as less used (so exactly n slots are marked; at the
start, when every usage is zero, slots 0 .. n-1); the memory starts as a small
constant (1e-6) so that cosine similarity is defined.

Two options, both off by default (the paper's equations), for short training
runs: ``key_strength=True`` adds the Neural Turing Machine's sharpening,
softmax(beta_t K), with beta_t >= 1 emitted by the controller (its bias starts at beta ~ 5, so
that reads are fairly sharp from the first update);
``write_vector=True`` writes a second controller output a_t,
M_t(i) = M_{t-1}(i) + w^w_t(i) a_t, so that what is stored (the previous image
bound to the label that just arrived) need not equal what is looked up (the
current image). Without it the key read at step t is the one just written.

Two more quick-mode departures, also off in ``full()``: ``encoder="conv4"`` feeds features of a fixed
Conv4 pretrained on the background classes instead of pixels, and ``train_per_class`` < ``per_class``
trains on shorter episodes than the test episodes (more updates for the same CPU time).

Baselines on the same sequences: an LSTM alone, a feedforward network (no
recurrence: it can only guess), and the nearest neighbour on pixels among the
images whose labels have already been shown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.checkpoints import resolve
from metaedu.evaluation import Score, mean_ci
from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import check_settings, evaluation_mode, seeded
from metaedu.tasks.episodes import check_rotations
from metaedu.tasks.sequences import Sequences, SequenceSampler
from metaedu.training import History, train

#: Instances at which the paper reports accuracy.
INSTANCES = (1, 2, 3, 4, 5, 10)


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
    checkpoint: bool = False  # save under cache_dir() and resume an interrupted run (full() turns it on)

    @classmethod
    def quick(cls) -> "MANNSettings":
        """A 2-core CPU in lecture time: a fixed pretrained Conv4 encoder instead of pixels, training episodes
        of 5 images per class, a small memory, one head, sharpened reads, a separate write vector, Adam.
        Every choice here that is not the paper's is chosen on meta-validation alphabets (never evaluation)."""
        return cls(train_per_class=5, image_size=10, rotations=(0,), hidden=96, memory_slots=32, memory_size=32,
                   read_heads=1, key_strength=True, write_vector=True, baseline_hidden=96, optimizer="adam",
                   lr=3e-3, batch=16, steps=900, baseline_steps=900, encoder="conv4", encoder_hidden=32)

    @classmethod
    def full(cls) -> "MANNSettings":
        """The paper's setting on a GPU: 100,000 episodes of 20 x 20 images, 128 x 40 memory, 4 heads."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("per_class", "train_per_class", "image_size", "hidden", "memory_slots",
                                       "memory_size", "read_heads", "baseline_hidden", "lr", "grad_clip", "batch",
                                       "steps", "baseline_steps", "eval_episodes", "encoder_hidden", "encoder_epochs"),
                       choices={"label_length": (1, 5), "controller": ("lstm", "feedforward"),
                                "optimizer": ("rmsprop", "adam"), "encoder": ("pixels", "conv4")})
        if self.n_classes < 2:
            raise ValueError(f"MANNSettings.n_classes must be at least 2, got {self.n_classes!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"MANNSettings.gamma (usage decay) must lie in [0, 1], got {self.gamma!r}")
        if self.read_heads > self.memory_slots:
            raise ValueError(f"MANNSettings.read_heads={self.read_heads} needs at least as many memory slots, "
                             f"got memory_slots={self.memory_slots}")
        check_rotations(self.rotations)


# --------------------------------------------------------------------------- memory operations


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """K(k, M(i)) for every head and slot: ``keys [B, H, M]``, ``memory [B, N, M]`` -> ``[B, H, N]``."""
    dots = torch.bmm(keys, memory.transpose(1, 2))  # [B, H, N]
    norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)  # [B, H, N]
    return dots / norms.clamp_min(eps)


def read_weights(keys: torch.Tensor, memory: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
    """w^r(i) = softmax_i K(k, M(i)) (times beta when given, ``[B, H]``) -> ``[B, H, N]``."""
    similarity = cosine_similarity(keys, memory)
    if strength is not None:
        similarity = similarity * strength.unsqueeze(-1)
    return torch.softmax(similarity, dim=-1)


def read_memory(read_w: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """r = sum_i w^r(i) M(i): ``[B, H, N]``, ``[B, N, M]`` -> ``[B, H, M]``."""
    return torch.bmm(read_w, memory)


def update_usage(usage: torch.Tensor, read_w: torch.Tensor, write_w: torch.Tensor, gamma: float) -> torch.Tensor:
    """w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t (heads summed): -> ``[B, N]``."""
    return gamma * usage + read_w.sum(1) + write_w.sum(1)


def least_used_weights(usage: torch.Tensor, n: int) -> torch.Tensor:
    """w^lu(i) = 1 for the ``n`` slots of smallest usage (ties: lower index first), else 0: ``[B, N]``."""
    if not 1 <= n <= usage.shape[-1]:
        raise ValueError(f"cannot mark the {n} least-used slots of a memory with {usage.shape[-1]} slots")
    if n == 1:  # argmin returns the first (lowest-index) smallest entry
        return F.one_hot(usage.detach().argmin(dim=-1), usage.shape[-1]).to(usage.dtype)
    # a stable sort keeps equal usages in index order
    smallest = torch.sort(usage.detach(), dim=-1, stable=True).indices[..., :n]  # [B, n]
    return torch.zeros_like(usage).scatter_(-1, smallest, 1.0)


def write_weights(gate: torch.Tensor, prev_read_w: torch.Tensor, prev_least_used: torch.Tensor) -> torch.Tensor:
    """w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}: ``gate [B, H]`` -> ``[B, H, N]``."""
    g = torch.sigmoid(gate).unsqueeze(-1)  # [B, H, 1]
    return g * prev_read_w + (1 - g) * prev_least_used.unsqueeze(1)


def clear_least_used(memory: torch.Tensor, prev_usage: torch.Tensor) -> torch.Tensor:
    """Zero the row of the least-used slot (smallest w^u_{t-1}, lowest index on ties): ``[B, N, M]``."""
    slot = prev_usage.detach().argmin(dim=-1)  # [B], the first smallest on ties
    return memory.index_put((torch.arange(memory.shape[0], device=memory.device), slot),
                            memory.new_zeros(()))  # out of place: the old memory stays intact for autograd


def write_memory(memory: torch.Tensor, write_w: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """M_t(i) = M_{t-1}(i) + sum_heads w^w_t(i) k_t: -> ``[B, N, M]``."""
    return torch.baddbmm(memory, write_w.transpose(1, 2), keys)


@dataclass
class MemoryState:
    """What the memory carries from one step to the next."""

    memory: torch.Tensor  # [B, N, M]
    usage: torch.Tensor  # [B, N]  w^u_{t-1}
    read_w: torch.Tensor  # [B, H, N]  w^r_{t-1}
    least_used: torch.Tensor  # [B, N]  w^lu_{t-1}


def initial_state(batch: int, slots: int, size: int, heads: int, device=None, init: float = 1e-6,
                  dtype=None) -> MemoryState:
    """Memory filled with a small constant, no usage, no previous read."""
    usage = torch.zeros(batch, slots, device=device, dtype=dtype)
    return MemoryState(
        memory=torch.full((batch, slots, size), init, device=device, dtype=dtype),
        usage=usage,
        read_w=torch.zeros(batch, heads, slots, device=device, dtype=dtype),
        least_used=least_used_weights(usage, heads),
    )


def lrua_step(state: MemoryState, keys: torch.Tensor, gate: torch.Tensor, gamma: float,
              strength: torch.Tensor | None = None,
              values: torch.Tensor | None = None) -> tuple[MemoryState, torch.Tensor, torch.Tensor]:
    """One step of the LRUA memory (steps 1-6 of the module docstring).

    Args: ``keys [B, H, M]``, ``gate [B, H]`` (alpha, before the sigmoid), ``strength [B, H]`` or None,
    ``values [B, H, M]``: what is written (the keys themselves when None, as in the paper).
    Returns: the new state, the read vectors ``[B, H, M]`` and the write weights ``[B, H, N]``.
    """
    heads = keys.shape[1]
    write_w = write_weights(gate, state.read_w, state.least_used)  # 1. [B, H, N]
    memory = clear_least_used(state.memory, state.usage)  # 2. [B, N, M]
    memory = write_memory(memory, write_w, keys if values is None else values)
    read_w = read_weights(keys, memory, strength)  # 3. [B, H, N]
    reads = read_memory(read_w, memory)  # 4. [B, H, M]
    usage = update_usage(state.usage, read_w, write_w, gamma)  # 5. [B, N]
    least_used = least_used_weights(usage, heads)  # 6. [B, N]
    return MemoryState(memory, usage, read_w, least_used), reads, write_w


# --------------------------------------------------------------------------- networks


class MANN(nn.Module):
    """Controller + LRUA memory + softmax output, run over a whole episode.

    ``forward(inputs [B, T, I])`` -> logits ``[B, T, L * S]``; with ``record=True`` also a dict of
    ``[B, T, ...]`` tensors: ``read_w``, ``write_w`` ``[B, T, H, N]``, ``usage`` ``[B, T, N]``,
    ``memory`` ``[B, T, N, M]`` (after the step's write), ``gate`` ``[B, T, H]`` (sigma(alpha)).
    """

    def __init__(self, input_size: int, output_size: int, hidden: int = 200, memory_slots: int = 128,
                 memory_size: int = 40, read_heads: int = 4, gamma: float = 0.95, controller: str = "lstm",
                 key_strength: bool = False, write_vector: bool = False) -> None:
        super().__init__()
        if controller not in ("lstm", "feedforward"):
            raise ValueError(f"controller must be 'lstm' or 'feedforward', got {controller!r}")
        if read_heads > memory_slots:
            raise ValueError(f"read_heads={read_heads} needs at least as many memory slots, got {memory_slots}")
        self.slots, self.size, self.heads, self.gamma = memory_slots, memory_size, read_heads, gamma
        self.controller_kind = controller
        in_size = input_size + read_heads * memory_size  # x_t, y_{t-1}, r_{t-1}
        if controller == "lstm":
            self.controller = nn.LSTMCell(in_size, hidden)
        else:
            self.controller = nn.Sequential(nn.Linear(in_size, hidden), nn.Tanh())
        self.hidden = hidden
        self.key = nn.Linear(hidden, read_heads * memory_size)
        self.gate = nn.Linear(hidden, read_heads)
        self.strength = nn.Linear(hidden, read_heads) if key_strength else None
        if self.strength is not None:  # start from fairly sharp reads, beta = 1 + softplus(4) ~ 5
            nn.init.constant_(self.strength.bias, 4.0)
        self.add = nn.Linear(hidden, read_heads * memory_size) if write_vector else None
        self.out = nn.Linear(hidden + read_heads * memory_size, output_size)

    def forward(self, inputs: torch.Tensor, record: bool = False):
        B, T, I = inputs.shape
        H, M, n_hidden = self.heads, self.size, self.hidden
        state = initial_state(B, self.slots, M, H, device=inputs.device, dtype=inputs.dtype)
        reads = inputs.new_zeros(B, H * M)  # r_0
        # The controller's input is [x_t, y_{t-1}, r_{t-1}]. The x, y part is known for every step in
        # advance, so its share of the first layer is computed for the whole episode in one product;
        # only the r_{t-1} (and, for the LSTM, h_{t-1}) share is left inside the loop. Same function.
        if self.controller_kind == "lstm":
            cell = self.controller
            pre = F.linear(inputs, cell.weight_ih[:, :I], cell.bias_ih + cell.bias_hh)  # [B, T, 4 hidden]
            recurrent = torch.cat([cell.weight_ih[:, I:], cell.weight_hh], dim=1).t()  # [H M + hidden, 4 hidden]
            h = c = inputs.new_zeros(B, n_hidden)
        else:
            layer = self.controller[0]
            pre = F.linear(inputs, layer.weight[:, :I], layer.bias)  # [B, T, hidden]
            recurrent = layer.weight[:, I:].t()  # [H M, hidden]
        # the heads' outputs (keys, gates, strengths, write vectors) from h_t in one product
        parts = [self.key, self.gate] + [m for m in (self.strength, self.add) if m is not None]
        head_w = torch.cat([m.weight for m in parts]).t()  # [hidden, sum of sizes]
        head_b = torch.cat([m.bias for m in parts])
        sizes = [m.out_features for m in parts]
        hs, all_reads = [], []
        trace = {"read_w": [], "write_w": [], "usage": [], "memory": [], "gate": []}
        for t in range(T):
            if self.controller_kind == "lstm":
                gates = torch.addmm(pre[:, t], torch.cat([reads, h], dim=-1), recurrent)  # [B, 4 hidden]
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)  # [B, hidden]
            else:
                h = torch.tanh(torch.addmm(pre[:, t], reads, recurrent))
            emitted = torch.addmm(head_b, h, head_w).split(sizes, dim=-1)
            keys = torch.tanh(emitted[0]).view(B, H, M)  # k_t [B, H, M]
            gate = emitted[1]  # alpha [B, H]
            strength = 1 + F.softplus(emitted[2]) if self.strength is not None else None
            values = torch.tanh(emitted[-1]).view(B, H, M) if self.add is not None else None
            state, r, write_w = lrua_step(state, keys, gate, self.gamma, strength, values)  # a_t [B, H, M] or k_t
            reads = r.flatten(1)  # [B, H * M]
            hs.append(h)
            all_reads.append(reads)
            if record:
                for name, value in (("read_w", state.read_w), ("write_w", write_w), ("usage", state.usage),
                                    ("memory", state.memory), ("gate", torch.sigmoid(gate))):
                    trace[name].append(value.detach())
        logits = self.out(torch.cat([torch.stack(hs, 1), torch.stack(all_reads, 1)], dim=-1))  # [B, T, L * S]
        if record:
            return logits, {name: torch.stack(v, 1) for name, v in trace.items()}
        return logits


class LSTMBaseline(nn.Module):
    """An LSTM with a softmax output on the same inputs: ``[B, T, I]`` -> ``[B, T, L * S]``."""

    def __init__(self, input_size: int, output_size: int, hidden: int = 200) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(inputs)[0])


class FeedforwardBaseline(nn.Module):
    """Two hidden layers applied to each step alone: it has no way to remember a binding."""

    def __init__(self, input_size: int, output_size: int, hidden: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, output_size))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)


MODELS = ("mann", "lstm", "feedforward")


def build_model(kind: str, settings: MANNSettings, sampler: SequenceSampler, device=None) -> nn.Module:
    """``kind`` in ``MODELS``, sized for the sampler's inputs and labels; its initial weights depend on
    ``settings.seed`` only (the global random state is left as it was)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}: expected one of {MODELS}")
    out = sampler.label_length * sampler.label_size
    with seeded(settings.seed):
        if kind == "mann":
            model = MANN(sampler.input_size, out, settings.hidden, settings.memory_slots, settings.memory_size,
                         settings.read_heads, settings.gamma, settings.controller, settings.key_strength,
                         settings.write_vector)
        elif kind == "lstm":
            model = LSTMBaseline(sampler.input_size, out, settings.baseline_hidden)
        else:
            model = FeedforwardBaseline(sampler.input_size, out, settings.baseline_hidden)
    return model.to(device if device is not None else sampler.device)


def make_sampler(settings: MANNSettings, data, device="cpu", seed: int | None = None, encoder=None,
                 training: bool = False) -> SequenceSampler:
    """The episode stream of these settings over ``data`` (a :class:`ClassImageSet`).

    With ``settings.encoder == "conv4"`` pass the ``encoder`` from :func:`pretrain_encoder`.
    ``training=True``: episodes of ``settings.train_per_class`` images per class, else ``per_class``.
    """
    if settings.encoder == "conv4" and encoder is None:
        raise ValueError("settings.encoder='conv4' needs encoder=pretrain_encoder(settings, background_data)")
    if settings.encoder == "pixels" and encoder is not None:
        raise ValueError("an encoder was given but settings.encoder='pixels'")
    per_class = settings.train_per_class if training else settings.per_class
    return SequenceSampler(data, settings.n_classes, per_class, settings.image_size, settings.label_length,
                           settings.rotations, device=device, seed=settings.seed if seed is None else seed,
                           encoder=encoder)


def pretrain_encoder(settings: MANNSettings, background, device="cpu", progress: bool = True):
    """A fixed image encoder ``[n, C, H, W] -> [n, D]``: Conv4 trained as an ordinary classifier of all
    ``background`` classes (:func:`metaedu.algorithms.transfer.pretrain_classifier`), head dropped.

    A quick-mode simplification, not the paper: the networks then only have to learn the binding,
    not to see. Train it on background classes only, so that evaluation classes stay unseen.
    """
    from metaedu.algorithms.transfer import TransferSettings, pretrain_classifier

    # the classifier's size and length come from these settings (quick or full); the rest is TransferSettings'
    ts = replace(TransferSettings(), hidden=settings.encoder_hidden, epochs=settings.encoder_epochs,
                 checkpoint=settings.checkpoint)
    net, _ = pretrain_classifier(background, ts, device=device, seed=settings.seed, progress=progress)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.features(images).flatten(1)  # [n, D]

    encode.network = net
    return encode


# --------------------------------------------------------------------------- loss, predictions, scores


def sequence_loss(logits: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """Cross-entropy of every label character at every step, summed over characters, averaged over steps."""
    B, T, L = seq.targets.shape
    per_char = logits.view(B, T, L, seq.label_size)
    return F.cross_entropy(per_char.flatten(0, 2), seq.targets.flatten(), reduction="sum") / (B * T)


def predict_characters(logits: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """The most likely character of each label position: ``[B, T, L * S]`` -> ``[B, T, L]``."""
    B, T, L = seq.targets.shape
    return logits.view(B, T, L, seq.label_size).argmax(-1)


def correct_steps(predicted: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """A step counts as correct when every character of its label is right: ``[B, T]`` bool."""
    return (predicted == seq.targets).all(-1)


def nearest_neighbour_predict(seq: Sequences, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label of the closest earlier image (Euclidean, on pixels) whose label has been shown.

    At step t the labels y_1 .. y_{t-1} are known, so the candidates are x_1 .. x_{t-1}.
    At step 1 nothing is known and the guess is a uniformly random label. Returns ``[B, T, L]``.
    """
    B, T, L = seq.targets.shape
    earlier = torch.ones(T, T, dtype=torch.bool, device=seq.x.device).tril(-1)  # s < t
    predicted = nearest_neighbour(seq.x, seq.targets, seq.x, "euclidean", allowed=earlier)  # [B, T, L]
    guess = torch.randint(seq.label_size, (B, L), generator=generator).to(seq.targets.device)
    predicted[:, 0] = guess
    return predicted


def instance_accuracy(correct: torch.Tensor, instance: torch.Tensor, instances=INSTANCES) -> dict[int, torch.Tensor]:
    """Per-episode accuracy (%) at each instance number: ``{k: [B]}``.

    ``correct`` and ``instance`` are ``[B, T]``; an episode's accuracy at instance k is the
    share of the steps showing a class for the k-th time that were answered correctly.
    """
    out = {}
    for k in instances:
        at_k = (instance == k).float()  # [B, T]
        count = at_k.sum(1)
        if (count == 0).any():
            raise ValueError(f"instance {k} does not occur in every episode (are there {k} images per class?)")
        out[k] = (correct.float() * at_k).sum(1) / count * 100
    return out


@torch.no_grad()
def evaluate(predict, sampler: SequenceSampler, n_episodes: int, batch: int = 50,
             instances=INSTANCES) -> dict[int, Score]:
    """Accuracy with its 95% interval at each instance, over ``n_episodes`` test episodes.

    ``predict(seq)`` returns the predicted characters ``[B, T, L]`` (see :func:`predictor`).
    """
    if max(instances) > sampler.per_class:
        raise ValueError(f"instance {max(instances)} needs per_class >= {max(instances)}, got {sampler.per_class}")
    per_episode: dict[int, list[torch.Tensor]] = {k: [] for k in instances}
    remaining = n_episodes
    while remaining > 0:
        seq = sampler.sample(min(batch, remaining))
        acc = instance_accuracy(correct_steps(predict(seq), seq), seq.instance, instances)
        for k in instances:
            per_episode[k].append(acc[k].cpu())
        remaining -= seq.episodes
    return {k: mean_ci(torch.cat(v)) for k, v in per_episode.items()}


def predictor(model: nn.Module):
    """``seq -> predicted characters`` for a trained network (evaluation mode, no gradients)."""

    def predict(seq: Sequences) -> torch.Tensor:
        with torch.no_grad(), evaluation_mode(model):
            return predict_characters(model(seq.inputs), seq)

    return predict


# --------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, settings: MANNSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=settings.lr)
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr)
    raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {settings.optimizer!r}")


def train_model(model: nn.Module, sampler: SequenceSampler, settings: MANNSettings, n_steps: int,
                checkpoint: str | Path | bool | None = None, progress: bool = True, desc: str = "MANN") -> History:
    """Meta-train ``model`` on fresh episodes from ``sampler`` with :func:`metaedu.training.train`.

    Every update draws ``settings.batch`` new episodes (new classes, labels and order), so the
    weights cannot store any class-label binding: the binding has to happen inside an episode.
    Logged: ``loss`` and ``accuracy`` (all steps) and ``acc_2nd`` (second instances), in %.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, f"mann_{type(model).__name__}", settings, model, n_steps, sampler.episodes.data,
                         sampler.episodes.generator, sampler.generator,
                         (sampler.n_classes, sampler.per_class, sampler.label_length))
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
            return {"loss": loss.detach(), "accuracy": correct.mean() * 100,
                    "acc_2nd": (correct * second).sum() / second.sum() * 100}

    state = {"model": model, "opt": opt, "sampler": sampler.episodes.generator, "order": sampler.generator}
    return train(step, n_steps, state=state, checkpoint=checkpoint, progress=progress, desc=desc)
