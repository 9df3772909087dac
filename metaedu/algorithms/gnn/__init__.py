"""Few-shot learning with graph neural networks (Garcia & Bruna, ICLR 2018).

An episode becomes a graph: one node per image, support and query alike, and the network reads
the query's class off its node after a few rounds of message passing. The paper, in order:

1. **Node features** (:func:`node_features`): x_i^(0) = (phi(x_i), h(l_i)), the image embedding
   phi (a :class:`~metaedu.nn.backbones.Conv4`) next to a label vector h: one-hot for a labelled
   support image, uniform 1/K over the K classes for an unlabelled image and for a query.
2. **Learned edge features** (:class:`EdgeFunction`), recomputed before every layer k:
   A~^(k)_ij = softmax_j( MLP_theta~( |x_i^(k) - x_j^(k)| ) ), over the nodes j != i that send.
3. **Graph convolution** (:class:`GraphConv`): with the operator family {I, A~^(k)},
   Gc(x^(k)) = rho( x^(k) theta_I + A~^(k) x^(k) theta_A ) (rho a leaky ReLU), and, as in the
   authors' code, the new features are appended to the old: x^(k+1) = [x^(k), Gc(x^(k))].
4. A last adjacency and graph convolution without rho give K class scores per node; the loss is
   the cross-entropy of the query nodes' scores (:func:`episode_loss`).
5. **Semi-supervised**: unlabelled support images are nodes with a uniform label vector; the
   "labelled only" baseline leaves them out of the graph (:func:`prepare`).
6. **Active learning**: after the first layer, a softmax attention over the unlabelled nodes,
   Attention = softmax(g(x^(1)_{1..r})), picks one whose label is revealed (sampled in training,
   the arg-max at test time). Its label slot becomes the true one-hot times w / sg(w), which is 1
   in value and carries the attention's gradient (the slide's w h(l) has the same direction of
   gradient but shrinks the revealed label by w).

Special cases (the slides, :func:`siamese_adjacency` and :func:`prototype_adjacency`): a single
propagation with A~ = softmax(-||phi(x_i) - phi(x_j)||) reads off the nearest support image
(a Siamese network's rule), and A~^(0)_ij = 1/q for l_i = l_j followed by a softmax over negative
squared distances gives a Prototypical Network's probabilities.

**Our one structural choice.** Query nodes receive messages but send none: nodes are ordered
[support (labelled and unlabelled); queries], the first S send, and every adjacency is
``[tasks, nodes, S]``. Many queries then share one graph without seeing each other (no
transduction), which makes training far cheaper; with a single query, as in the paper, the only
difference is that the support nodes do not hear the query. The authors' code also puts batch
norm after each linear map of the edge MLP and of the graph convolutions; we leave it out, so a
node's output depends on its own episode only.

Symbols -> names: phi = ``GNN.encoder``, K = ``n_way``, h = :func:`label_vectors`, A~ = the
output of :class:`EdgeFunction`, theta_I and theta_A = the two halves of ``GraphConv.theta``,
g = ``GNN.attention``, r = the unlabelled nodes, q = ``k_shot``.
"""


from metaedu.algorithms.gnn.graph import (
    EdgeFunction,
    GraphConv,
    label_vectors,
    masked_softmax,
    node_features,
    propagate,
    prototype_adjacency,
    prototypical_as_gnn,
    receives_from,
    siamese_adjacency,
    siamese_as_gnn,
)
from metaedu.algorithms.gnn.model import (
    CHOICES,
    GNN,
    UNLABELLED,
    GNNSettings,
    SemiSupervisedGNNSettings,
    TwentyWayGNNSettings,
    episode_loss,
)
from metaedu.algorithms.gnn.training import build, episode_accuracies, episode_logits, prepare, train_gnn

__all__ = [
    "CHOICES", "GNN", "UNLABELLED", "EdgeFunction", "GNNSettings", "GraphConv", "SemiSupervisedGNNSettings",
    "TwentyWayGNNSettings", "build", "episode_accuracies", "episode_logits", "episode_loss", "label_vectors",
    "masked_softmax", "node_features", "prepare", "propagate", "prototype_adjacency", "prototypical_as_gnn",
    "receives_from", "siamese_adjacency", "siamese_as_gnn", "train_gnn",
]
