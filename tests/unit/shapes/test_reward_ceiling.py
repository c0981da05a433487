"""The Spearman ceiling that tied labels put on untied scores (the world's MQ labels are mostly tied at 1)."""

from __future__ import annotations

import random

import pytest

from stream_r1.shapes.reward import rank_correlation, spearman_ceiling


def test_the_ceiling_is_what_a_perfect_untied_ordering_reaches() -> None:
    rng = random.Random(0)
    labels = [1.0] * 40 + [0.0] * 5 + [rng.random() for _ in range(11)]
    rng.shuffle(labels)
    perfect = [y + 1e-6 * rng.random() for y in labels]  # the right order, ties broken at random
    assert rank_correlation(perfect, labels) == pytest.approx(spearman_ceiling(labels), abs=1e-12)
    assert spearman_ceiling(labels) < 0.8  # 40 of 56 tied: far below 1
    assert spearman_ceiling([rng.random() for _ in range(20)]) == pytest.approx(1.0)
