"""Preprocessing parity with the Qwen2-VL processor math (docs/method.md §3.3-A, §5 item 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from stream_r1.reward.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    PreprocessOptions,
    patch_rows_to_grid,
    patchify,
    preprocess_frames,
    select_frames,
    smart_resize,
)


def test_smart_resize_matches_library_and_recipe() -> None:
    assert smart_resize(480, 832, 28, 3136, 200704) == (336, 588)
    for h, w in [(480, 832), (32, 32), (720, 1280), (100, 3000), (57, 90), (1080, 1920)]:
        for lo, hi in [(3136, 200704), (784, 3136), (56 * 56, 28 * 28 * 1280)]:
            assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2100)


def _numpy_video_patchify(video: np.ndarray) -> np.ndarray:
    """The library's Qwen2VLVideoProcessor.patchify path (view + permute with a batch axis), in numpy."""
    b, t, c, h, w = video.shape
    gt, gh, gw = t // 2, h // 14, w // 14
    p = video.reshape(b, gt, 2, c, gh // 2, 2, 14, gw // 2, 2, 14)
    p = p.transpose(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return p.reshape(b, gt * gh * gw, c * 2 * 14 * 14)


def test_patchify_equals_processor_math() -> None:
    x = torch.randn(6, 3, 56, 84, generator=torch.Generator().manual_seed(0))
    ours = patchify(x)
    ref = _numpy_video_patchify(x.numpy()[None])[0]
    assert ours.shape == (3 * 4 * 6, 1176)
    np.testing.assert_array_equal(ours.numpy(), ref)


def test_patchify_equals_library_image_patchify_on_static_video() -> None:
    # The library's own (torchvision-free) patchify: a still image is a 2-frame video of identical frames.
    frame = torch.randn(3, 56, 112, generator=torch.Generator().manual_seed(1))
    lib, gh, gw = Qwen2VLImageProcessorPil().patchify(frame.numpy(), patch_size=14, merge_size=2, temporal_patch_size=2)
    assert (gh, gw) == (4, 8)
    np.testing.assert_array_equal(patchify(frame.expand(2, -1, -1, -1)).numpy(), lib)


def test_patch_rows_to_grid_undoes_merge_order() -> None:
    t, h, w = 2, 4, 6
    grid = torch.arange(t * h * w, dtype=torch.float32).reshape(t, h, w)
    # Put each patch's grid value into its rows through the real patchify: x value = patch id everywhere.
    x = grid.repeat_interleave(2, 0).repeat_interleave(14, 1).repeat_interleave(14, 2)
    rows = patchify(x.unsqueeze(1).expand(-1, 3, -1, -1)).mean(dim=1)
    torch.testing.assert_close(patch_rows_to_grid(rows, (t, h, w)), grid)
    assert not torch.equal(rows.reshape(t, h, w), grid)  # the naive reshape is scrambled


def test_preprocess_values_shapes_and_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    frames = (torch.rand(5, 3, 28, 56, generator=g) * 2.4 - 1.2).requires_grad_(True)  # some values outside [-1,1]
    video = preprocess_frames(frames, PreprocessOptions(min_pixels=784, max_pixels=3136))
    assert video.frame_indices == (0, 1, 2, 3)  # odd T: the last frame is dropped
    assert video.x.shape == (4, 3, 28, 56) and video.grid_thw == (2, 2, 4) and video.num_video_tokens == 4
    assert CLIP_MEAN == tuple(OPENAI_CLIP_MEAN) and CLIP_STD == tuple(OPENAI_CLIP_STD)
    v01 = np.clip((frames.detach().numpy()[:4] + 1) / 2, 0, 1)  # no resize at 28x56: only rescale + normalise
    ref = (v01 - np.array(OPENAI_CLIP_MEAN)[:, None, None]) / np.array(OPENAI_CLIP_STD)[:, None, None]
    np.testing.assert_allclose(video.x.detach().numpy(), ref, rtol=1e-5, atol=1e-6)
    video.x.sum().backward()  # differentiable back to the decoded frames
    assert frames.grad is not None and float(frames.grad[:4].abs().sum()) > 0 and float(frames.grad[4].abs().sum()) == 0


def test_preprocess_resizes_480x832_to_336x588() -> None:
    frames = torch.rand(2, 3, 480, 832) * 2 - 1
    video = preprocess_frames(frames)
    assert video.x.shape == (2, 3, 336, 588) and video.grid_thw == (1, 24, 42)
    v = video.x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    assert float(v.min()) >= -1e-6 and float(v.max()) <= 1 + 1e-6  # clamped to [0, 1] after bicubic


def test_frame_selection_modes() -> None:
    assert select_frames(81, PreprocessOptions()) == tuple(range(80))
    assert select_frames(20, PreprocessOptions()) == tuple(range(20))
    fps2 = select_frames(81, PreprocessOptions(frames="fps2", video_fps=16.0))
    assert len(fps2) == 10 and fps2[0] == 0 and fps2[-1] == 80  # 81/16*2 = 10.1 -> 10 frames
    assert select_frames(21, PreprocessOptions(frames="fps2")) == (0, 7, 13, 20)  # floor of 4 frames
    with pytest.raises(ValueError, match="2 frames"):
        select_frames(1, PreprocessOptions())
