"""Stable Diffusion 3 / 3.5: ``StableDiffusion3Pipeline`` (MMDiT, two CLIP encoders and a T5).

Flow matching (see ``flow.py``): seeds are the pipeline's ``latents`` as given (no packing, no
scaling), classifier-free guidance with an empty negative prompt, as the pipeline runs it.
The demo ``demo:sd3`` is a random-weight build made offline: 16 x 16 px, seeds (4, 8, 8), d = 256.
"""

from __future__ import annotations

import torch

from normguide.diffusion.families.base import register
from normguide.diffusion.families.flow import FlowConditioning, FlowFamily, damp_output, dynamic_shift_mu, frozen

DEMO_RESOLUTION = 16
_SEEDS = {"transformer": 10, "vae": 11, "text_encoder": 12, "text_encoder_2": 13, "text_encoder_3": 14}


class StableDiffusion3Family(FlowFamily):
    pipeline_classes = ("StableDiffusion3Pipeline",)
    names = ("sd3",)
    demo_names = ("sd3",)
    guidance = "cfg"

    def geometry(self, pipe):
        side = int(pipe.transformer.config.sample_size)
        return side * self.vae_scale(pipe), (int(pipe.transformer.config.in_channels), side, side)

    def max_sequence_length(self, pipe) -> int:
        tok = getattr(pipe, "tokenizer_3", None)
        return min(256, int(tok.model_max_length)) if tok is not None else 256

    def set_timesteps(self, model, sched, n: int) -> None:
        kwargs = {}
        if sched.config.get("use_dynamic_shifting", None):
            kwargs["mu"] = dynamic_shift_mu(model, sched, model.pipe.transformer.config.patch_size, max_shift=1.16)
        sched.set_timesteps(n, device=model.device, **kwargs)

    def encode_prompt(self, model, prompt: str, guidance_scale: float) -> FlowConditioning:
        guided = guidance_scale > 1.0
        embeds, neg, pooled, neg_pooled = model.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=model.device, num_images_per_prompt=1,
            do_classifier_free_guidance=guided, max_sequence_length=self.max_sequence_length(model.pipe))
        if guided:
            embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        return FlowConditioning({"encoder_hidden_states": embeds, "pooled_projections": pooled}, guidance_scale, guided)

    def transformer_call(self, model, x, timestep, kwargs):
        return model.pipe.transformer(hidden_states=x, timestep=timestep, return_dict=False, **kwargs)[0]

    def build_demo(self, name: str):
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
        from transformers import CLIPTextModelWithProjection, T5EncoderModel

        from normguide.diffusion.demo import (
            build_demo_t5_tokenizer,
            build_demo_tokenizer,
            clip_text_config,
            flow_demo_vae,
            t5_encoder_config,
        )

        clip_tok, t5_tok = build_demo_tokenizer(), build_demo_t5_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEEDS["transformer"])
            transformer = SD3Transformer2DModel(
                sample_size=DEMO_RESOLUTION // 2, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
                out_channels=4)
            damp_output(transformer)
            torch.manual_seed(_SEEDS["vae"])
            vae = flow_demo_vae(4, DEMO_RESOLUTION)
            torch.manual_seed(_SEEDS["text_encoder"])
            te1 = CLIPTextModelWithProjection(clip_text_config(len(clip_tok)))
            torch.manual_seed(_SEEDS["text_encoder_2"])
            te2 = CLIPTextModelWithProjection(clip_text_config(len(clip_tok)))
            torch.manual_seed(_SEEDS["text_encoder_3"])
            te3 = T5EncoderModel(t5_encoder_config(len(t5_tok)))
        pipe = StableDiffusion3Pipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=te1, tokenizer=clip_tok,
            text_encoder_2=te2, tokenizer_2=clip_tok, text_encoder_3=te3, tokenizer_3=t5_tok, transformer=transformer)
        return frozen(pipe, transformer, vae, te1, te2, te3)


FAMILY = register(StableDiffusion3Family())
