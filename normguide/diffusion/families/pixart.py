"""PixArt-Σ (and -α): ``PixArtSigmaPipeline`` / ``PixArtAlphaPipeline`` (a DiT with a T5 text
encoder, ε-prediction with learned variance).

A DDPM-family model like SD, so it is sampled and inverted by DDIM (η = 0) built from the
checkpoint's scheduler config (real checkpoints ship DPM-Solver; loading replaces it, as for SD),
with classifier-free guidance against the T5 encoding of an empty negative prompt, as the
pipeline runs it. The transformer's learned-variance half is dropped (the pipeline does the same).
Seeds are used as z_T as given (DDIM's ``init_noise_sigma`` is 1); no packing.
The demo ``demo:pixart`` is a random-weight build made offline: 16 x 16 px, seeds (4, 8, 8).
"""

from __future__ import annotations

import inspect

import torch

from normguide.diffusion.families.base import register
from normguide.diffusion.families.flow import FlowConditioning, FlowFamily, damp_output, frozen

DEMO_RESOLUTION = 16
_SEEDS = {"transformer": 30, "vae": 31, "text_encoder": 32}


class PixArtFamily(FlowFamily):
    """Reuses the flow families' batching, prompt and decoding plumbing with DDIM steps instead
    of flow-matching ones (``sample`` / ``invert_latents`` are overridden)."""

    pipeline_classes = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    names = ("pixart",)
    demo_names = ("pixart",)
    guidance = "cfg"
    inverters = ("ddim",)
    default_inverter = "ddim"
    sampler = "DDIM (eta 0)"

    def prepare(self, pipe) -> None:
        from normguide.diffusion.loading import use_ddim

        use_ddim(pipe)

    def geometry(self, pipe):
        side = int(pipe.transformer.config.sample_size)
        return side * self.vae_scale(pipe), (int(pipe.transformer.config.in_channels), side, side)

    def init_noise_sigma(self, model, num_inference_steps: int) -> float:
        return float(model.pipe.scheduler.init_noise_sigma)

    def max_sequence_length(self, pipe) -> int:
        """The pipeline's default (Σ: 300 tokens, α: 120), capped by the tokenizer's own length."""
        default = 120 if type(pipe).__name__ == "PixArtAlphaPipeline" else 300
        return min(default, int(pipe.tokenizer.model_max_length))

    def encode_prompt(self, model, prompt: str, guidance_scale: float) -> FlowConditioning:
        guided = guidance_scale > 1.0
        embeds, mask, neg, neg_mask = model.pipe.encode_prompt(
            prompt, do_classifier_free_guidance=guided, negative_prompt="", num_images_per_prompt=1,
            device=model.device, clean_caption=False, max_sequence_length=self.max_sequence_length(model.pipe))
        if guided:
            embeds, mask = torch.cat([neg, embeds]), torch.cat([neg_mask, mask])
        return FlowConditioning({"encoder_hidden_states": embeds, "encoder_attention_mask": mask}, guidance_scale, guided)

    def transformer_call(self, model, x, timestep, kwargs):
        out = model.pipe.transformer(x, timestep=timestep, added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                                     return_dict=False, **kwargs)[0]
        if model.pipe.transformer.config.out_channels // 2 == x.shape[1]:
            out = out.chunk(2, dim=1)[0]  # learned sigma: keep the noise prediction
        return out

    def batch_timestep(self, model, t, rows):
        """An integer timestep (0-d tensor) as the pipeline feeds it, one per row."""
        return t.reshape(1).to(model.device).expand(rows)

    def _schedulers(self, model, n: int):
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        config = dict(model.pipe.scheduler.config)
        keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
        forward = DDIMScheduler.from_config(config)
        inverse = DDIMInverseScheduler.from_config({k: v for k, v in config.items() if k in keys})
        forward.set_timesteps(n, device=model.device)
        inverse.set_timesteps(n, device=model.device)
        return forward, inverse

    def sample(self, model, cond, x, num_inference_steps, solver="ddim", rowwise=False):
        forward, _ = self._schedulers(model, num_inference_steps)
        for t in forward.timesteps:
            x = forward.step(self.velocity(model, cond, x, t, rowwise), t, x, eta=0.0, return_dict=False)[0]
        return x

    def invert_latents(self, model, cond, z0, num_inference_steps, solver="ddim", rowwise=False):
        _, inverse = self._schedulers(model, num_inference_steps)
        x = z0
        for t in inverse.timesteps:
            x = inverse.step(self.velocity(model, cond, x, t, rowwise), t, x).prev_sample
        return x

    def encode(self, model, x):
        vae = model.pipe.vae
        z = vae.encode(x.to(model.device, next(vae.encoder.parameters()).dtype)).latent_dist.mean.float()
        return z * vae.config.scaling_factor

    def vae_input(self, model, z):
        return z.to(model.device).float() / model.pipe.vae.config.scaling_factor  # no shift (the pipeline's)

    @staticmethod
    def model_calls(solver: str, steps: int) -> int:
        return steps

    def build_demo(self, name: str):
        from diffusers import AutoencoderKL, DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
        from transformers import T5EncoderModel

        from normguide.diffusion.demo import build_demo_t5_tokenizer, t5_encoder_config

        t5_tok = build_demo_t5_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEEDS["transformer"])
            transformer = PixArtTransformer2DModel(
                sample_size=DEMO_RESOLUTION // 2, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
                caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
                activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                norm_elementwise_affine=False, norm_eps=1e-6)
            damp_output(transformer)
            torch.manual_seed(_SEEDS["vae"])
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                                latent_channels=4, norm_num_groups=4, sample_size=DEMO_RESOLUTION, scaling_factor=0.13025)
            torch.manual_seed(_SEEDS["text_encoder"])
            te = T5EncoderModel(t5_encoder_config(len(t5_tok)))
        scheduler = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
        pipe = PixArtSigmaPipeline(tokenizer=t5_tok, text_encoder=te, vae=vae, transformer=transformer, scheduler=scheduler)
        return frozen(pipe, transformer, vae, te)


FAMILY = register(PixArtFamily())
