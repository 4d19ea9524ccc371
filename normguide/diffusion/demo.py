"""The random-weight demo builds ``demo:<family>``: tiny Stable-Diffusion-architecture pipelines.

(Plain ``"demo"`` is NOT built here: it is the shipped TRAINED digits model, ``normguide.demo``,
loaded from the package's weights by ``loading.load_pipeline``. Its tokenizer comes from
``demo_tokenizer_files`` below, with its prompt words as single tokens.)

Nothing is downloaded. Every component is built from a config after ``torch.manual_seed`` (inside a
forked RNG, so the caller's random state is untouched), and the CLIP tokenizer's ``vocab.json`` /
``merges.txt`` are generated here (the 256-symbol byte-level alphabet of CLIP's BPE, each symbol also
as a word end ``</w>``, a handful of English merges, and CLIP's two special tokens). The same call
therefore gives bit-identical weights in every process on CPU.

The images are noise: the weights are random. These builds exist so that each family's code paths
(inversion, NAO seed planning, generation, manifests; SDXL's second text encoder, v-prediction) are
tested anywhere in seconds, with the same tensor shapes as a real checkpoint of that family.

Shapes: images 64 x 64 px, VAE scale factor 8 (as in real SD), latents/seeds (4, 8, 8), d = 256.

Seed norms (what the NAO planner downstream sees): a trained model's DDIM inversions land near the
chi shell |z| ≈ √d (16 here). A random epsilon-UNet is no denoiser: its ε̂ is small and unrelated to
z, so inversion does not carry z_0 out to the shell, and the sd1 / sd2 / sdxl demos give seeds of
norm ≈ 0.4–0.6 (about |z_0|), far inside it (measured, 50 steps). The sd2-v demo does behave like a trained model: a v-prediction net whose output v̂ is
near zero predicts ε̂ = σ_t·z_t, which is exactly the ideal denoiser for unit-variance Gaussian
latents, and the DDIM step with it is a norm-preserving rotation. With its VAE scaling factor set so
that latents have unit variance (as SD's own factor is chosen), sd2-v demo seeds come out with norm
≈ 15–17, on the shell (measured, 50 steps). (It used to be plain ``demo`` for that reason; the
trained digits model replaced it there.)

Smoothness: the UNet's output convolution is scaled by ``_UNET_OUT_SCALE`` after the seeded init.
With the default init a random UNet's noise prediction ε_θ(z, t) is O(1) and varies quickly with z,
so DDIM inversion does not close and its reconstruction error need not shrink with more steps
(measured on sd1 at scale 1: RMSE 0.47 / 0.72 / 0.39 at 2 / 10 / 50 steps; at 0.1: 0.019 / 0.014 /
0.004, and 0.001 at 200); a smaller output makes ε_θ a gentle, Lipschitz function of z, which is the regime DDIM inversion
assumes (and the one trained models are in), so the round trip converges as steps grow.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

DEMO_FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sd2-v", "sdxl")
DEMO_RESOLUTION = 64
DEMO_REVISION_FORMAT = "demo-{family}-v1"

# Fixed seeds, one per component, so that changing one component does not change the others.
_SEEDS = {"unet": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3}
_UNET_OUT_SCALE = 0.1
# Real SD checkpoints' factors for sd1/sd2/sdxl; for sd2-v the factor that gives this random VAE's
# latents unit variance (its posterior means have std ~0.032 on the test images: 0.18215 / 0.032 ≈ 5.5),
# which is how SD's own factor was chosen. See the module docstring for why only sd2-v gets it.
_VAE_SCALING = {"sd1": 0.18215, "sd2": 0.18215, "sd2-v": 5.5, "sdxl": 0.13025}
_TEXT_HIDDEN = 32
_TOKEN_LENGTH = 77  # CLIP's context length; the pipelines pad every prompt to it

# A few frequent English merges so that prompts do not tokenize to single bytes only.
# Order matters (BPE ranks); every merge joins two symbols that exist when it is applied.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n"), ("r", "e"), ("a", "t"),
    ("e", "n"), ("o", "r"), ("th", "e</w>"), ("o", "f</w>"), ("in", "g</w>"),
    ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"), ("an", "d</w>"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: each byte 0..255 maps to one printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lower-case ASCII word: start from its characters (the last with ``</w>``)
    and keep merging the adjacent pair of lowest rank, every occurrence left to right."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), pair) for pair in itertools.pairwise(symbols)]
        rank, best = min(pairs)
        if rank == len(ranks):
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def demo_tokenizer_files(words: Sequence[str] = ()) -> tuple[dict[str, int], list[str]]:
    """The demo tokenizer's vocabulary (token -> id) and BPE merges ("a b" lines), built locally.

    Layout follows CLIP: the 256 byte symbols, the same 256 as word ends, the merged tokens in merge
    order, then ``<|startoftext|>`` and ``<|endoftext|>`` last.

    ``words`` (lower-case ASCII letters): extra merges, appended after the base ones, that make each
    of these words ONE token (the trained digits demo passes its prompt words). For each word in
    turn, BPE with the merges so far splits it into pieces p0..pk; the merges (p0, p1),
    (p0p1, p2), ... are appended. The default (no words) is the random demos' tokenizer, unchanged.
    """
    alphabet = list(_bytes_to_unicode().values())
    merges = list(_MERGES)
    for word in words:
        if not word.isascii() or not word.isalpha() or not word.islower():
            raise ValueError(f"tokenizer words must be lower-case ASCII letters, got {word!r}")
        ranks = {pair: i for i, pair in enumerate(merges)}
        pieces = _bpe(word, ranks)
        head = pieces[0]
        for piece in pieces[1:]:
            merges.append((head, piece))
            head += piece
        if _bpe(word, {pair: i for i, pair in enumerate(merges)}) != [word + "</w>"]:
            raise AssertionError(f"demo tokenizer: could not make {word!r} a single token")
    tokens = alphabet + [s + "</w>" for s in alphabet]
    seen = set(tokens)
    for a, b in merges:
        if words and a + b in seen:  # a word's chain may re-create a token an earlier word made
            continue
        tokens.append(a + b)
        seen.add(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(set(tokens)) != len(tokens):  # a merge that re-creates an existing symbol
        raise AssertionError("demo tokenizer vocabulary has duplicates")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return vocab, [f"{a} {b}" for a, b in merges]


def build_demo_tokenizer(words: Sequence[str] = ()):
    """A ``CLIPTokenizer`` from ``demo_tokenizer_files(words)``, 77 tokens long, built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = demo_tokenizer_files(words)
    # Written to a temporary directory and loaded with from_pretrained: the one way to build it from
    # vocab.json/merges.txt that transformers 4.x and 5.x share.
    with tempfile.TemporaryDirectory(prefix="normguide-demo-tokenizer-") as tmp:
        root = Path(tmp)
        (root / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(root, local_files_only=True, model_max_length=_TOKEN_LENGTH)


def _text_config(vocab_size: int, *, hidden_act: str):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=_TOKEN_LENGTH,
        projection_dim=_TEXT_HIDDEN,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        # CLIP pools at the first <|endoftext|>; ids must agree with the tokenizer's.
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _unet(family: str):
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=DEMO_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
    )
    if family == "sd1":
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_TEXT_HIDDEN,
            attention_head_dim=8,
        )
    elif family in ("sd2", "sd2-v"):
        # SD 2.x: linear projections in the transformer blocks and per-block head dims.
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_TEXT_HIDDEN,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
        )
    elif family == "sdxl":
        # SDXL: two text encoders (hidden states concatenated), pooled text + 6 size/crop ids as
        # an extra embedding ("text_time").
        time_embed_dim = 8
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * _TEXT_HIDDEN,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=6 * time_embed_dim + _TEXT_HIDDEN,
        )
    else:  # pragma: no cover - guarded by build_demo_pipeline
        raise ValueError(family)
    with torch.no_grad():
        unet.conv_out.weight.mul_(_UNET_OUT_SCALE)
        unet.conv_out.bias.mul_(_UNET_OUT_SCALE)
    return unet


def _vae(family: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=DEMO_RESOLUTION,
        scaling_factor=_VAE_SCALING[family],
    )


def _scheduler(family: str):
    from diffusers import DDIMScheduler

    # The Stable Diffusion training schedule, with SD's own DDIM settings.
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="v_prediction" if family == "sd2-v" else "epsilon",
    )


def build_demo_pipeline(family: str):
    """Build the tiny demo pipeline of one SD family, deterministically, on CPU in float32.

    Args:
        family: ``"sd1"``, ``"sd2"``, ``"sd2-v"`` (v-prediction) or ``"sdxl"``.

    Returns:
        A ``StableDiffusionPipeline`` (or ``StableDiffusionXLPipeline`` for ``"sdxl"``) whose
        scheduler is a ``DDIMScheduler``; 64 x 64 px images, latents (4, 8, 8).
    """
    if family not in DEMO_FAMILIES:
        raise ValueError(f"family must be one of {DEMO_FAMILIES}, got {family!r}")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_demo_tokenizer()
    vocab_size = len(tokenizer)
    hidden_act = "quick_gelu" if family == "sd1" else "gelu"  # OpenAI CLIP vs OpenCLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEEDS["unet"])
        unet = _unet(family)
        torch.manual_seed(_SEEDS["vae"])
        vae = _vae(family)
        torch.manual_seed(_SEEDS["text_encoder"])
        text_encoder = CLIPTextModel(_text_config(vocab_size, hidden_act=hidden_act))
        if family == "sdxl":
            torch.manual_seed(_SEEDS["text_encoder_2"])
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab_size, hidden_act=hidden_act))

    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=_scheduler(family),
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=_scheduler(family),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    for module in (unet, vae, text_encoder) + ((text_encoder_2,) if family == "sdxl" else ()):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Text encoders and tokenizers for the flow-matching demo builds (families/sd3.py, families/flux.py) --

#: Words the demo T5 tokenizer knows as single pieces (every other character is a piece of its own).
_T5_WORDS: tuple[str, ...] = ("a", "photo", "of", "the", "handwritten", "digit", "and", "in")
DEMO_T5_LENGTH = 32  # the demo T5 tokenizer's model_max_length (real FLUX: 512, SD3: 256)


def clip_text_config(vocab_size: int, *, hidden_act: str = "gelu"):
    """The demo CLIP text-encoder config (hidden size 32, 2 layers), ids matching the demo tokenizer."""
    return _text_config(vocab_size, hidden_act=hidden_act)


def build_demo_t5_tokenizer():
    """A T5 (Unigram, SentencePiece-style "▁" word starts) fast tokenizer built in code, offline:
    pad 0, ``</s>`` 1, unk 2, "▁", the printable ASCII characters and a few prompt words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(chr(c), -1.0) for c in range(33, 127)]
    vocab += [("▁" + w, -0.5) for w in _T5_WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           model_max_length=DEMO_T5_LENGTH, extra_ids=0)


def t5_encoder_config(vocab_size: int):
    """A tiny T5 encoder config (d_model 32, 2 layers, 4 heads), ids matching ``build_demo_t5_tokenizer``."""
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def flow_demo_vae(latent_channels: int, resolution: int):
    """The flow demos' VAE: two levels (scale factor 2), no quant convs, FLUX's shift/scale factors."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=resolution,
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
