"""The dataset card of a published unitcoder dataset: YAML header, funnel, picture, provenance."""

from dataset_card.card import funnel_plot, render_card

__all__ = ["funnel_plot", "render_card"]
