"""FLUX.1: ``FluxPipeline`` (MMDiT with single-stream blocks, CLIP pooled text + T5).

Flow matching (see ``flow.py``). What differs from SD3:
- **Packing.** The pipeline takes user ``latents`` already packed into 2x2 patches,
  (B, (h/2)(w/2), 4C), and uses them unchanged; seeds are stored unpacked (C, h, w) and packed
  here (``pack``, the pipeline's own ``_pack_latents``) around each transformer call. Norms are
  invariant to packing (a permutation).
- **Guidance.** Guidance-distilled checkpoints (FLUX.1-dev, ``guidance_embeds=True``) take the
  scale as an input embedding: one pass, no negative prompt (``guidance = "embedded"``); FLUX.1
  schnell (``guidance_embeds=False``) ignores it. No true CFG is run.
- **Sigmas.** ``linspace(1, 1/n, n)``, shifted by ``mu`` from the token count where the
  scheduler uses dynamic shifting, exactly as the pipeline sets them.
The demo ``demo:flux`` is a random-weight, guidance-embedded build made offline: 16 x 16 px,
seeds (4, 8, 8) packed to (16, 16), d = 256.
"""

from __future__ import annotations

import numpy as np
import torch

from normguide.diffusion.families.base import register
from normguide.diffusion.families.flow import FlowConditioning, FlowFamily, damp_output, dynamic_shift_mu, frozen

DEMO_RESOLUTION = 16
_SEEDS = {"transformer": 20, "vae": 21, "text_encoder": 22, "text_encoder_2": 23}


class FluxFamily(FlowFamily):
    pipeline_classes = ("FluxPipeline",)
    names = ("flux",)
    demo_names = ("flux",)
    guidance = "embedded"

    def geometry(self, pipe):
        scale = self.vae_scale(pipe)
        side = int(pipe.vae.config.sample_size)
        latent = 2 * (side // (scale * 2))
        return side, (int(pipe.transformer.config.in_channels) // 4, latent, latent)

    def pack(self, latents, model):
        b, c, h, w = latents.shape
        return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)

    def unpack(self, latents, model):
        c, h, w = model.seed_shape
        b = latents.shape[0]
        return latents.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def max_sequence_length(self, pipe) -> int:
        return min(512, int(pipe.tokenizer_2.model_max_length))

    def set_timesteps(self, model, sched, n: int) -> None:
        sigmas = np.linspace(1.0, 1 / n, n)
        if sched.config.get("use_flow_sigmas", False):
            sigmas = None
        mu = dynamic_shift_mu(model, sched, 2, max_shift=1.15)
        if sigmas is None:
            sched.set_timesteps(n, device=model.device, mu=mu)
        else:
            sched.set_timesteps(sigmas=sigmas, device=model.device, mu=mu)

    def encode_prompt(self, model, prompt: str, guidance_scale: float) -> FlowConditioning:
        pipe = model.pipe
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=model.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length(pipe))
        kwargs = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids}
        if pipe.transformer.config.guidance_embeds:
            kwargs["guidance"] = torch.full([1], guidance_scale, device=model.device, dtype=torch.float32)
        return FlowConditioning(kwargs, guidance_scale, guided=False)

    def transformer_call(self, model, x, timestep, kwargs):
        _, h, w = model.seed_shape
        img_ids = model.pipe._prepare_latent_image_ids(x.shape[0], h // 2, w // 2, model.device, x.dtype)
        kwargs = dict(kwargs)
        kwargs.setdefault("guidance", None)
        out = model.pipe.transformer(hidden_states=self.pack(x, model), timestep=timestep / 1000, img_ids=img_ids,
                                     return_dict=False, **kwargs)[0]
        return self.unpack(out, model)

    def build_demo(self, name: str):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

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
            transformer = FluxTransformer2DModel(
                patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                guidance_embeds=True)
            damp_output(transformer)
            torch.manual_seed(_SEEDS["vae"])
            vae = flow_demo_vae(4, DEMO_RESOLUTION)
            torch.manual_seed(_SEEDS["text_encoder"])
            te1 = CLIPTextModel(clip_text_config(len(clip_tok)))
            torch.manual_seed(_SEEDS["text_encoder_2"])
            te2 = T5EncoderModel(t5_encoder_config(len(t5_tok)))
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=te1, tokenizer=clip_tok,
                            text_encoder_2=te2, tokenizer_2=t5_tok, transformer=transformer)
        return frozen(pipe, transformer, vae, te1, te2)


FAMILY = register(FluxFamily())
