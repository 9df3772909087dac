"""Pictures of characters and episodes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def _as_numpy(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
        if img.max() > 1.0:
            img = img / 255.0
    img = np.asarray(img)
    return img[0] if img.ndim == 3 else img


def show_images(images, titles=None, ncols: int | None = None, size: float = 1.2, title: str | None = None):
    """A grid of images (ink dark on white); returns the figure."""
    images = list(images)
    n = len(images)
    ncols = ncols or min(n, 10)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_as_numpy(images[i]), cmap="gray_r", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def glyph_gallery(data, n_alphabets: int = 6, n_characters: int = 6, n_drawers: int = 4, side: str = "background", seed: int = 0):
    """Alphabets (rows) x characters x drawers in one mosaic: how the data set is organised.

    ``data`` is a :class:`metaedu.data.glyphs.GlyphAlphabets`. Each row is an alphabet;
    each block of ``n_drawers`` images is one character drawn by different people.
    """
    rng = np.random.default_rng(seed)
    names = data.alphabet_names(side)
    chosen = rng.choice(len(names), size=min(n_alphabets, len(names)), replace=False)
    side_px, gap = data.size, max(2, data.size // 7)
    block = n_drawers * side_px + gap
    mosaic = np.zeros((len(chosen) * (side_px + gap), n_characters * block))
    for row, a in enumerate(chosen):
        members = [i for i, name in enumerate(data.alphabets) if name == names[a]]
        chars = rng.choice(members, size=min(n_characters, len(members)), replace=False)
        for c, char in enumerate(chars):
            for d in range(n_drawers):
                y, x = row * (side_px + gap), c * block + d * side_px
                mosaic[y : y + side_px, x : x + side_px] = data.images[char, d] / 255.0
    fig, ax = plt.subplots(figsize=(n_characters * n_drawers * 0.42 + 3.0, len(chosen) * 0.62 + 0.8))
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * (side_px + gap) - gap / 2 for r in range(len(chosen))], [names[a] for a in chosen], fontsize=13)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{side} alphabets: {n_characters} characters each, drawn by {n_drawers} of the 20 drawers", fontsize=14)
    fig.tight_layout()
    return fig


def show_episode(x_support, y_support, x_query, y_query, n_way: int, max_query: int = 2, predictions=None):
    """One episode: a row per class, support images then query images (red title: wrong prediction)."""
    x_support, x_query = x_support.cpu(), x_query.cpu()
    y_support, y_query = y_support.cpu(), y_query.cpu()
    k_shot = int((y_support == 0).sum())
    cols = k_shot + max_query
    fig, axes = plt.subplots(n_way, cols, figsize=(cols * 1.1 + 0.6, n_way * 1.1), squeeze=False)
    for label in range(n_way):
        sup = x_support[y_support == label]
        qi = torch.nonzero(y_query == label).flatten()[:max_query]
        for j in range(cols):
            ax = axes[label, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j < len(sup):
                ax.imshow(_as_numpy(sup[j]), cmap="gray_r", vmin=0, vmax=1)
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_edgecolor("#c0392b")
                    spine.set_linewidth(2)
            elif j - k_shot < len(qi):
                q = qi[j - k_shot]
                ax.imshow(_as_numpy(x_query[q]), cmap="gray_r", vmin=0, vmax=1)
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_edgecolor("#2c7a3f")
                    spine.set_linewidth(2)
                if predictions is not None:
                    p = int(predictions[q])
                    ax.set_title(f"pred {p}", fontsize=9, color="#2c7a3f" if p == label else "#c0392b")
            else:
                ax.axis("off")
        axes[label, 0].set_ylabel(f"class {label}", rotation=0, ha="right", va="center", fontsize=10)
    axes[0, 0].set_title("support", fontsize=10, loc="left")
    if max_query:
        axes[0, k_shot].set_title("query" if predictions is None else axes[0, k_shot].get_title(), fontsize=10)
    fig.suptitle(f"{n_way}-way {k_shot}-shot episode: support (red) and query (green)", fontsize=11)
    fig.tight_layout()
    return fig
