"""The prompt VideoReward was trained with, wrapped in the Qwen2-VL chat template (docs/method.md §2.2).

The rubric text reproduces VideoAlign's ``detailed_special`` template (KwaiVGI/VideoAlign
``prompt_template.py``) character for character: the reward head reads the hidden states at the
three special tokens, so any drift in the surrounding text changes the scores.
"""

from __future__ import annotations

REWARD_AXES: tuple[str, str, str] = ("VQ", "MQ", "TA")
"""Reward axes in the order the rm_head outputs them (VideoAlign ``eval_dim``)."""

REWARD_TOKENS: dict[str, str] = {"VQ": "<|VQ_reward|>", "MQ": "<|MQ_reward|>", "TA": "<|TA_reward|>"}
"""The special tokens VideoAlign adds to the Qwen2 tokenizer (ids 151657-151659 in the real one)."""

TEMPLATE_NAME = "detailed_special"
"""The only template this implementation supports (VideoReward's ``prompt_template_type``)."""

VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SYSTEM_PROMPT = "You are a helpful assistant."
"""Default system message the Qwen2-VL chat template inserts when none is given."""

# Trailing spaces of the original text are written as {sp1}/{sp2} (filled in below) so that
# linters cannot strip them.
_RUBRIC_RAW = """
You are tasked with evaluating a generated video based on three distinct criteria: Visual Quality, \
Motion Quality, and Text Alignment. Please provide a rating from 0 to 10 for each of the three categories, \
with 0 being the worst and 10 being the best. Each evaluation should be independent of the others.

**Visual Quality:**{sp2}
Evaluate the overall visual quality of the video, with a focus on static factors. The following \
sub-dimensions should be considered:
- **Reasonableness:** The video should not contain any significant biological or logical errors, such as \
abnormal body structures or nonsensical environmental setups.
- **Clarity:** Evaluate the sharpness and visibility of the video. The image should be clear and easy to \
interpret, with no blurring or indistinct areas.
- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual \
elements (e.g., hair, clothing, shadows).
- **Aesthetic and Creativity:** Assess the artistic aspects of the video, including the color scheme, \
composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense \
of harmony and balance.
- **Safety:** The video should not contain harmful or inappropriate content, such as political, violent, \
or adult material. If such content is present, the image quality and satisfaction score should be the \
lowest possible.{sp1}

Please provide the ratings of Visual Quality: <|VQ_reward|>
END

**Motion Quality:**{sp2}
Assess the dynamic aspects of the video, with a focus on dynamic factors. Consider the following \
sub-dimensions:
- **Stability:** Evaluate the continuity and stability between frames. There should be no sudden, \
unnatural jumps, and the video should maintain stable attributes (e.g., no fluctuating colors, textures, \
or missing body parts).
- **Naturalness:** The movement should align with physical laws and be realistic. For example, clothing \
should flow naturally with motion, and facial expressions should change appropriately (e.g., blinking, \
mouth movements).
- **Aesthetic Quality:** The movement should be smooth and fluid. The transitions between different \
motions or camera angles should be seamless, and the overall dynamic feel should be visually pleasing.
- **Fusion:** Ensure that elements in motion (e.g., edges of the subject, hair, clothing) blend naturally \
with the background, without obvious artifacts or the feeling of cut-and-paste effects.
- **Clarity of Motion:** The video should be clear and smooth in motion. Pay attention to any areas where \
the video might have blurry or unsteady sections that hinder visual continuity.
- **Amplitude:** If the video is largely static or has little movement, assign a low score for motion \
quality.

Please provide the ratings of Motion Quality: <|MQ_reward|>
END

**Text Alignment:**{sp2}
Assess how well the video matches the textual prompt across the following sub-dimensions:
- **Subject Relevance** Evaluate how accurately the subject(s) in the video (e.g., person, animal, object) \
align with the textual description. The subject should match the description in terms of number, \
appearance, and behavior.
- **Motion Relevance:** Evaluate if the dynamic actions (e.g., gestures, posture, facial expressions like \
talking or blinking) align with the described prompt. The motion should match the prompt in terms of type, \
scale, and direction.
- **Environment Relevance:** Assess whether the background and scene fit the prompt. This includes checking \
if real-world locations or scenes are accurately represented, though some stylistic adaptation is \
acceptable.{sp2}
- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well \
the video adheres to this style.
- **Camera Movement Relevance:** Check if the camera movements (e.g., following the subject, focus shifts) \
are consistent with the expected behavior from the prompt.

Textual prompt - {text_prompt}
Please provide the ratings of Text Alignment: <|TA_reward|>
END
"""
RUBRIC = _RUBRIC_RAW.format(sp1=" ", sp2="  ", text_prompt="{text_prompt}")


def build_reward_text(prompt: str) -> str:
    """The ``detailed_special`` rubric with the generation prompt filled in.

    Args:
        prompt: The text prompt the video was generated from.

    Returns:
        The rubric text; contains each reward token exactly once when ``prompt`` contains none.

    Raises:
        TypeError: ``prompt`` is not a string.
        ValueError: ``prompt`` itself contains a reward or vision special token.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}; pass the generation prompt text")
    for token in (*REWARD_TOKENS.values(), VIDEO_PAD, VISION_START, VISION_END, IM_START, IM_END):
        if token in prompt:
            raise ValueError(
                f"prompt contains the special token {token!r}, which would corrupt the reward read-out; "
                "remove it from the prompt"
            )
    return RUBRIC.format(text_prompt=prompt)


def build_chat_text(prompt: str, num_video_tokens: int) -> str:
    """The full model input text: Qwen2-VL chat template, video placeholder before the rubric.

    This is what ``processor.apply_chat_template`` (``add_generation_prompt=True``) followed by the
    processor's expansion of ``<|video_pad|>`` into one token per merged video patch produces.

    Args:
        prompt: The generation prompt.
        num_video_tokens: Merged video tokens ``t * (h/2) * (w/2)`` the ViT emits.

    Returns:
        The chat text with ``num_video_tokens`` copies of ``<|video_pad|>``.

    Raises:
        ValueError: ``num_video_tokens`` < 1.
    """
    if num_video_tokens < 1:
        raise ValueError(f"num_video_tokens={num_video_tokens} must be >= 1 (the video needs at least one token)")
    user = f"{VISION_START}{VIDEO_PAD * num_video_tokens}{VISION_END}{build_reward_text(prompt)}"
    return f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"


def build_short_text(prompt: str, num_video_tokens: int) -> str:
    """A cheap model input without the system prompt and rubric: the video, the prompt, then the reward tokens.

    About 25 tokens instead of ~790 for a small video; the shapes world's reward recipe trains on it first
    (stream_r1.shapes.reward), then on :func:`build_chat_text`. Not a VideoAlign input.

    Raises:
        ValueError: ``num_video_tokens`` < 1.
    """
    if num_video_tokens < 1:
        raise ValueError(f"num_video_tokens={num_video_tokens} must be >= 1 (the video needs at least one token)")
    rewards = " ".join(REWARD_TOKENS[a] for a in REWARD_AXES)
    return f"{IM_START}user\n{VISION_START}{VIDEO_PAD * num_video_tokens}{VISION_END}{prompt} {rewards}{IM_END}"
