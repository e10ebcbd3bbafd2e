"""GPT-2's initialization, as nanoGPT and Hugging Face's ``GPT2PreTrainedNetwork`` write it.

Every weight, the token and position embeddings included, is N(0, 0.02^2); the residual
projections (each attention's output and each mlp's last layer, ``c_proj``) are
N(0, (0.02 / sqrt(2 L))^2) with L the number of blocks (``n_layer``), so that the 2 L
branches added to the residual stream sum to a variance that does not grow with depth.
Biases are 0 and LayerNorms 1 and 0, as built. It is also Megatron-LM's
``init_method_normal`` / ``scaled_init_method_normal`` without truncation.
"""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import depth_std, needs_branches, recipe
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme

STD = 0.02  # GPT2Config.initializer_range


def weight(site: Site) -> Scheme:
    """N(0, 0.02^2), and N(0, (0.02 / sqrt(2 L))^2) on the residual projections."""
    if site.role in RESIDUAL_OUT:
        return inits.normal(depth_std(STD, site.blocks))
    return inits.normal(STD)


def build() -> Scheme:
    return recipe("gpt2", {}, weight, needs=needs_branches("gpt2"))


FAMILY = Family(
    build,
    ({},),
    doc="every weight N(0, 0.02^2); residual projections (attn_out, mlp_out) "
    "N(0, (0.02/sqrt(2L))^2), L blocks",
    short="GPT2",
    paper="Radford, Wu, Child, Luan, Amodei, Sutskever. Language Models are Unsupervised "
    "Multitask Learners. 2019; nanoGPT model.py GPT._init_weights",
)
