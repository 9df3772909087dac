"""Image sets embedded once by a fixed encoder, so that many episodes cost only the comparison.

Because the embedding of one image does not depend on the episode it appears in
(batch norm in evaluation mode), a whole test split can be put through the
network once (:func:`embed_set`) and test episodes drawn from the embeddings
with the usual :class:`~metaedu.tasks.episodes.EpisodeSampler`: hundreds of
test episodes then cost only the cheap comparison, not the CNN. The result is
an :class:`EmbeddedSet`, a class-indexed set whose "images" are ``[N, D, 1, 1]``
embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from metaedu.data.base import ClassImageSet, to_float
from metaedu.runtime import evaluation_mode


class EmbeddedSet(ClassImageSet):
    """A class-indexed set whose "images" are embeddings ``[N, D, 1, 1]`` made by one encoder.

    An :class:`~metaedu.tasks.episodes.EpisodeSampler` draws episodes from it as
    from images; ``encoder`` remembers which network made the embeddings, so
    that a model never scores another model's features by mistake.
    """

    encoder: nn.Module | None = None


@torch.no_grad()
def embed_set(encoder, data: ClassImageSet, device: str | torch.device = "cpu", batch: int = 1000) -> EmbeddedSet:
    """Embed every image of ``data`` once with ``encoder`` (a module, run in evaluation mode, or any
    function ``[n, C, H, W] -> [n, D]``); keep labels and groups."""
    if isinstance(data, EmbeddedSet):
        raise ValueError(f"{data.name} is already embedded; pass the image set")
    if not callable(encoder):
        raise ValueError(f"encoder must be a module or a function [n, C, H, W] -> [n, D], got {type(encoder).__name__}")
    chunks = []
    with evaluation_mode(encoder):  # a module runs in evaluation mode; a plain function as it is
        for start in range(0, len(data.targets), batch):
            x = to_float(data.images[start : start + batch]).to(device)
            chunks.append(encoder(x))  # [batch, D]
    z = torch.cat(chunks)  # [N, D]
    out = EmbeddedSet(
        images=z[:, :, None, None],
        targets=data.targets,
        class_names=list(data.class_names),
        groups=list(data.groups),
        name=f"{data.name} (embedded)",
    )
    out.encoder = encoder
    return out
