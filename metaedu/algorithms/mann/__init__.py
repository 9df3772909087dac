"""Memory-augmented neural network with least-recently-used access (Santoro et al. 2016).

Paper: A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap,
"Meta-Learning with Memory-Augmented Neural Networks", ICML 2016.

The network reads a MANN episode (:mod:`metaedu.tasks.sequences`): at step t the image x_t
and the previous label y_{t-1}. A controller (an LSTM, or a feedforward layer) turns its input
into a state h_t, from which it emits a key k_t for each head; an external memory is written
and read with that key by the paper's six equations; the class scores come from [h_t, r_t],
and the read vector r_t is also fed to the controller at step t + 1. Read in this order:

* :mod:`~metaedu.algorithms.mann.memory`: the LRUA memory, equations 1-6 of one step;
* :mod:`~metaedu.algorithms.mann.networks`: the MANN (``MANN.step`` is one time step; ``forward``
  the same, faster, over an episode) and the LSTM and feedforward baselines;
* :mod:`~metaedu.algorithms.mann.experiment`: settings, episode streams and training;
* :mod:`~metaedu.algorithms.mann.scoring`: the loss, and the accuracy at the k-th instance of a class
  (with the nearest-neighbour baseline).

Symbols -> names: k_t = ``keys`` ``[B, H, M]``; alpha = ``gate`` ``[B, H]``; gamma =
``settings.gamma``; M_t = ``memory`` ``[B, N, M]``; w^r, w^w = ``read_w``, ``write_w``
``[B, H, N]``; w^u = ``usage`` ``[B, N]``; w^lu = ``least_used`` ``[B, N]``; n = ``read_heads``
= H; N = ``memory_slots``; M = ``memory_size``.

Everything is importable from here (``from metaedu.algorithms import mann``; ``mann.lrua_step``,
``mann.MANN``, ``mann.train_model``, ...).
"""

from metaedu.algorithms.mann.experiment import (
    MODELS,
    MANNSettings,
    build_model,
    make_optimizer,
    make_sampler,
    pretrain_encoder,
    train_model,
)
from metaedu.algorithms.mann.memory import (
    MemoryState,
    clear_least_used,
    cosine_similarity,
    initial_state,
    least_used_weights,
    lrua_step,
    read_memory,
    read_weights,
    update_usage,
    write_memory,
    write_weights,
)
from metaedu.algorithms.mann.networks import MANN, FeedforwardBaseline, LSTMBaseline, MANNState
from metaedu.algorithms.mann.scoring import (
    INSTANCES,
    correct_steps,
    evaluate,
    instance_accuracies,
    instance_accuracy,
    nearest_earlier_labels,
    nearest_neighbour_predict,
    predict_characters,
    predictor,
    sequence_loss,
)

__all__ = [
    "INSTANCES",
    "MODELS",
    "MANNSettings",
    "build_model",
    "correct_steps",
    "evaluate",
    "instance_accuracies",
    "instance_accuracy",
    "make_optimizer",
    "make_sampler",
    "nearest_earlier_labels",
    "nearest_neighbour_predict",
    "predict_characters",
    "predictor",
    "pretrain_encoder",
    "sequence_loss",
    "train_model",
    "MemoryState",
    "clear_least_used",
    "cosine_similarity",
    "initial_state",
    "least_used_weights",
    "lrua_step",
    "read_memory",
    "read_weights",
    "update_usage",
    "write_memory",
    "write_weights",
    "MANN",
    "FeedforwardBaseline",
    "LSTMBaseline",
    "MANNState",
]
