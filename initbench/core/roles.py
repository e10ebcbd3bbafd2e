"""What a parameter does in its network (its role), and where a weight sits (a :class:`Site`).

Recipes such as GPT-2's or muP give each role its own distribution and scale: the residual
projections of block l, the readout, the embeddings. Each architecture names the role of
every parameter it has (:mod:`initbench.archs`); any other module gets roles from its
layers' types and names (:func:`initbench.core.targets.init_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES: dict[str, str] = {
    "embedding": "maps the input into the network's width: a token embedding, an input "
    "layer, a stem",
    "position": "a learned position embedding",
    "query": "attention's query projection",
    "key": "attention's key projection",
    "value": "attention's value projection",
    "attn_out": "attention's output projection, which writes into the residual stream",
    "mlp_in": "the first layer of a feed-forward branch",
    "mlp_out": "the last layer of a feed-forward residual branch, which writes into the "
    "residual stream",
    "hidden": "a layer of a plain stack of layers (no residual branch)",
    "readout": "the last layer: features to outputs (classes, next-token logits)",
    "recurrent": "a recurrent layer's hidden-to-hidden weight",
    "norm": "a normalization's scale or shift (kept at 1 and 0)",
    "bias": "a layer's bias (zero, or drawn with the grid's bias variance)",
    "gate": "a residual branch's multiplier (ReZero's and SkipInit's alpha, Fixup's "
    "scale): 1 and not trained unless a scheme sets it",
    "skip": "the residual stream's multiplier where a branch joins it (DeepNorm's alpha): "
    "1 unless a scheme sets it; never trained",
    "shift": "a scalar bias of a residual branch (Fixup's): 0 and not trained unless a "
    "scheme sets it",
}
WEIGHT_ROLES = (
    "embedding",
    "position",
    "query",
    "key",
    "value",
    "attn_out",
    "mlp_in",
    "mlp_out",
    "hidden",
    "readout",
    "recurrent",
)
RESIDUAL_OUT = ("attn_out", "mlp_out")  # the layers that write a branch into the stream
ATTENTION = ("query", "key", "value", "attn_out")  # an attention's projections
SETTING_ROLES = ("gate", "skip", "shift")  # scalars of residual branches that schemes may set
SETTING_DEFAULTS = {"gate": 1.0, "skip": 1.0, "shift": 0.0}


@dataclass(frozen=True)
class Site:
    """Where a weight (or a branch's scalar) sits: what a recipe reads to choose its value.

    Attributes:
        role: one of :data:`ROLES`.
        shape: the weight's shape (``()`` for a scalar).
        block: the residual block it belongs to, 0-based (None outside blocks).
        blocks: the network's residual blocks (0: a plain stack).
        width: the network's width (hidden units, channels, model dimension); None where
            the network does not say (any module's).
        heads: an attention projection's heads (None for other weights, or where the
            module does not say).
        branches: the network's residual branches (the weights that write into the
            residual stream: 2 per transformer block, 1 per resmlp block).
        lookup: an embedding table (``nn.Embedding``: rows looked up, not a matrix
            product), of shape ``(entries, width)``.
    """

    role: str
    shape: tuple[int, ...]
    block: int | None = None
    blocks: int = 0
    width: int | None = None
    heads: int | None = None
    branches: int = 0
    lookup: bool = False

    @property
    def fan_in(self) -> int:
        return fans(self.shape)[0]

    @property
    def fan_out(self) -> int:
        return fans(self.shape)[1]


def fans(shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape, as torch.nn.init computes them."""
    receptive = 1
    for size in shape[2:]:
        receptive *= size
    return shape[1] * receptive, shape[0] * receptive
