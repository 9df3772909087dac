"""Episodes built from clusters instead of labels: CACTUs's task construction (Hsu et al. 2019, step 2b).

A *partition* assigns every unlabelled image to one of k clusters. An N-way K-shot episode takes
one partition, N of its clusters, and K + Q distinct images of each: the clusters play the part of
classes, labelled 0 .. N - 1 at random as usual. Clusters with fewer than K + Q images cannot fill
an episode and are dropped, as in the paper; a partition left with fewer than N clusters is never
chosen. :class:`PartitionTasks` has :class:`~metaedu.tasks.episodes.EpisodeSampler`'s interface
(``sample(tasks) -> Episodes``, ``n_way``, ``k_shot``, ``n_query``, ``generator``), so every
meta-learner of the course trains on it unchanged.

Shapes: ``images`` ``[N_img, C, H, W]`` (uint8 or float), ``assignments`` ``[P, N_img]`` cluster ids.
"""

from __future__ import annotations

import torch

from metaedu.data.base import to_float
from metaedu.runtime import get_device
from metaedu.tasks.episodes import Episodes


class PartitionTasks:
    """Draws N-way K-shot episodes whose classes are clusters of one of P partitions."""

    def __init__(self, images: torch.Tensor, assignments: torch.Tensor, n_way: int, k_shot: int, n_query: int = 1,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("n_query", n_query, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if assignments.dim() == 1:
            assignments = assignments[None]
        if assignments.dim() != 2 or assignments.shape[1] != images.shape[0]:
            raise ValueError(f"assignments must be [partitions, {images.shape[0]}] cluster ids (one per image), "
                             f"got shape {tuple(assignments.shape)}")
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.images = images.to(self.device)
        self.data = None  # no labelled image set behind these tasks
        self.clusters_per_partition = int(assignments.max()) + 1  # numbers (partition, cluster) pairs in ``classes``
        per_class = self.k_shot + self.n_query
        # per partition: a table [usable clusters, largest cluster] of image indices padded with -1
        self.tables: list[torch.Tensor] = []
        self.cluster_ids: list[torch.Tensor] = []
        self.dropped = []  # (clusters dropped, images in them) per partition
        for part in assignments.long():
            counts = torch.bincount(part)
            usable = torch.nonzero(counts >= per_class).flatten()
            self.dropped.append((int((counts > 0).sum()) - len(usable), int(counts[counts < per_class].sum())))
            if len(usable) < self.n_way:
                self.tables.append(torch.empty(0, 0, dtype=torch.long))
                self.cluster_ids.append(usable)
                continue
            table = torch.full((len(usable), int(counts[usable].max())), -1, dtype=torch.long)
            for row, c in enumerate(usable.tolist()):
                members = torch.nonzero(part == c).flatten()
                table[row, : len(members)] = members
            self.tables.append(table)
            self.cluster_ids.append(usable)
        self.usable_partitions = [p for p, ids in enumerate(self.cluster_ids) if len(ids) >= self.n_way]
        if not self.usable_partitions:
            most = max(len(ids) for ids in self.cluster_ids)
            raise ValueError(f"no partition has {self.n_way} clusters of at least k_shot + n_query = {per_class} "
                             f"images (the best has {most}); use fewer clusters, a smaller n_way, or fewer shots")

    @property
    def partitions(self) -> int:
        return len(self.tables)

    def sample_indices(self, tasks: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(partition ``[tasks]``, cluster ids ``[tasks, n_way]``, image indices ``[tasks, n_way, k + q]``)."""
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {tasks}")
        g, per_class = self.generator, self.k_shot + self.n_query
        chosen = torch.tensor(self.usable_partitions)[torch.randint(len(self.usable_partitions), (tasks,), generator=g)]
        clusters, picks = [], []
        for p in chosen.tolist():
            table = self.tables[p]
            rows = torch.randperm(len(table), generator=g)[: self.n_way]  # N distinct clusters
            sizes = (table[rows] >= 0).sum(1)  # [n_way]
            keys = torch.rand(self.n_way, table.shape[1], generator=g)
            keys[torch.arange(table.shape[1]) >= sizes[:, None]] = 2.0  # padding sorts last
            cols = keys.argsort(1)[:, :per_class]  # K + Q distinct members of each cluster
            picks.append(torch.gather(table[rows], 1, cols))
            clusters.append(self.cluster_ids[p][rows])
        return chosen, torch.stack(clusters), torch.stack(picks)

    def sample(self, tasks: int = 1) -> Episodes:
        """Draw ``tasks`` episodes at once (the layout of :class:`~metaedu.tasks.episodes.Episodes`)."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        partition, clusters, idx = self.sample_indices(tasks)
        x = to_float(self.images[idx.to(self.device)])  # [tasks, n_way, k + q, C, H, W]
        labels = torch.arange(n, device=self.device)
        shape = x.shape[3:]
        return Episodes(
            x_support=x[:, :, :k].reshape(tasks, n * k, *shape),
            y_support=labels.repeat_interleave(k).expand(tasks, -1).contiguous(),
            x_query=x[:, :, k:].reshape(tasks, n * q, *shape),
            y_query=labels.repeat_interleave(q).expand(tasks, -1).contiguous(),
            classes=partition[:, None] * self.clusters_per_partition + clusters,  # [tasks, n_way], unique over partitions
            n_way=n, k_shot=k, n_query=q,
        )

    def __iter__(self):
        while True:
            yield self.sample()
