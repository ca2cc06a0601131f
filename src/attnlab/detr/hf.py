"""DAC for Hugging Face's Deformable DETR: :class:`DacDeformableDetr` wraps a transformers
``DeformableDetrForObjectDetection`` (with box refinement; two-stage or not) and, while training, runs
the model's own decoder a second time as DAC's C-decoder (DAC-DETR Sec. 3.2).

The O-pass is the model's forward, untouched. Two hooks, present only during a training forward, read
what the C-pass needs from it: the decoder's inputs (encoder memory and mask, positional queries,
initial reference points, level shapes, valid ratios) and layer 0's query after its self-attention and
norm. The C-pass then replays each decoder layer's cross-attention, norm and FFN (the same modules) on
its own queries, with no self-attention, and its own reference-box trajectory refined by the same
``bbox_embed`` heads and detached between layers, as the decoder does; its layer-i boxes and logits come
from the model's heads of layer i. No parameter is added; in eval mode :meth:`DacDeformableDetr.forward`
is the wrapped model's forward, and :meth:`DacDeformableDetr.save_pretrained` is the wrapped model's.

The training loss is attnlab's :func:`~attnlab.detr.losses.detr_loss` (Hungarian one-to-one on every
O-decoder layer; the one-to-many assigner on every C-decoder layer, divided by 3x the objects), so every
option of :class:`~attnlab.detr.losses.LossConfig` applies. The decoder layout replayed here is checked
when wrapping (:func:`check_layout`): a transformers version that lays the decoder out otherwise is one
line, not a silently different C-decoder.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import DeformableDetrForObjectDetection
from transformers.models.deformable_detr import modeling_deformable_detr as hf_detr

from ..core.errors import AttnlabError
from .losses import LossConfig, detr_loss, layer_loss
from .matching import hungarian_match, pad_targets
from .variants import hf_size_problem

#: The decoder-layer parts the C-pass calls (transformers 5's ``DeformableDetrDecoderLayer``).
LAYER_PARTS = ("self_attn", "self_attn_layer_norm", "encoder_attn", "encoder_attn_layer_norm", "mlp",
               "final_layer_norm")
#: The decoder's keyword inputs the C-pass reuses (``DeformableDetrModel.forward`` passes them by name).
DECODER_INPUTS = ("inputs_embeds", "encoder_hidden_states", "encoder_attention_mask",
                  "object_queries_position_embeddings", "reference_points", "spatial_shapes",
                  "spatial_shapes_list", "level_start_index", "valid_ratios")


def _layout_error(problem: str) -> AttnlabError:
    return AttnlabError(f"transformers {transformers.__version__}: {problem}; attnlab.detr.hf replays the Deformable "
                        "DETR decoder of transformers 5.x (post-norm layers: self_attn, cross-attention encoder_attn, "
                        "mlp) -- install a transformers 5 release")


def check_layout(model: nn.Module) -> None:
    """Raise a one-line :class:`AttnlabError` unless ``model`` is a ``DeformableDetrForObjectDetection``
    with box refinement whose decoder this module knows how to replay (parts, input names, and a
    numerical replay of one layer against its own forward)."""
    if not isinstance(model, DeformableDetrForObjectDetection):
        raise AttnlabError(f"DAC wraps a transformers DeformableDetrForObjectDetection, got {type(model).__name__}")
    if not model.config.with_box_refine:
        raise AttnlabError("DAC needs Deformable DETR with box refinement (its C-decoder refines its own boxes): "
                           "build the model with with_box_refine=True")
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or getattr(decoder, "bbox_embed", None) is None:
        raise _layout_error("model.model.decoder has no layers ModuleList with a bbox_embed")
    missing = sorted({p for layer in layers for p in LAYER_PARTS if not hasattr(layer, p)})
    if missing:
        raise _layout_error(f"the decoder layers have no {', '.join(missing)}")
    names = set(inspect.signature(decoder.forward).parameters)
    absent = [n for n in DECODER_INPUTS if n not in names]
    if absent:
        raise _layout_error(f"the decoder's forward takes no {', '.join(absent)}")
    if not _replay_matches(model):
        raise _layout_error("a decoder layer's forward differs from its self-attention + cross_attention_ffn replay")


@torch.no_grad()
def _replay_matches(model: DeformableDetrForObjectDetection) -> bool:
    """Run decoder layer 0 on small random inputs, once by its own forward and once as this module
    replays it (self-attention, add & norm, then :func:`cross_attention_ffn`); True when they agree."""
    layer, cfg = model.model.decoder.layers[0], model.config
    gen = torch.Generator().manual_seed(0)
    param = next(layer.parameters())
    levels, n_q = cfg.num_feature_levels, 3
    shapes_list = [(2, 2)] * levels
    inputs = {"spatial_shapes": torch.tensor(shapes_list, device=param.device),
              "spatial_shapes_list": shapes_list,
              "level_start_index": torch.arange(levels, device=param.device) * 4,
              "encoder_hidden_states": _rand(gen, (1, 4 * levels, cfg.d_model), param),
              "encoder_attention_mask": torch.ones(1, 4 * levels, dtype=torch.bool, device=param.device)}
    hidden, pos = _rand(gen, (1, n_q, cfg.d_model), param), _rand(gen, (1, n_q, cfg.d_model), param)
    ref = (torch.rand(1, n_q, levels, 4, generator=gen) * 0.5 + 0.25).to(param)
    was_training = layer.training
    layer.eval()
    try:
        own = layer(hidden, pos, ref, inputs["spatial_shapes"], shapes_list, inputs["level_start_index"],
                    inputs["encoder_hidden_states"], inputs["encoder_attention_mask"])
        after_self = layer.self_attn_layer_norm(hidden + layer.self_attn(hidden_states=hidden,
                                                                        position_embeddings=pos)[0])
        replay = cross_attention_ffn(layer, after_self, pos, ref, inputs)
    except (TypeError, AttributeError, RuntimeError, ValueError):
        return False
    finally:
        layer.train(was_training)
    return isinstance(own, Tensor) and own.shape == replay.shape and torch.allclose(own, replay, atol=1e-5, rtol=1e-4)


def _rand(gen: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.randn(*shape, generator=gen).to(like)


def cross_attention_ffn(layer: nn.Module, hidden: Tensor, pos: Tensor, ref_input: Tensor,
                        inputs: dict[str, Any]) -> Tensor:
    """A decoder layer after its self-attention: deformable cross-attention, dropout, add & norm, FFN,
    add & norm, as ``DeformableDetrDecoderLayer.forward`` runs them (the gathering step, DAC Sec. 3.2)."""
    attended, _ = layer.encoder_attn(hidden_states=hidden, attention_mask=inputs["encoder_attention_mask"],
                                     encoder_hidden_states=inputs["encoder_hidden_states"],
                                     encoder_attention_mask=inputs["encoder_attention_mask"],
                                     position_embeddings=pos, reference_points=ref_input,
                                     spatial_shapes=inputs["spatial_shapes"],
                                     spatial_shapes_list=inputs["spatial_shapes_list"],
                                     level_start_index=inputs["level_start_index"])
    hidden = layer.encoder_attn_layer_norm(hidden + nn.functional.dropout(attended, p=layer.dropout,
                                                                          training=layer.training))
    return layer.final_layer_norm(hidden + layer.mlp(hidden))


def scaled_reference(ref: Tensor, valid_ratios: Tensor) -> Tensor:
    """Reference points per level, scaled by the valid ratios, as the decoder feeds them to a layer."""
    ratios = torch.cat([valid_ratios, valid_ratios], -1) if ref.shape[-1] == 4 else valid_ratios
    return ref[:, :, None] * ratios[:, None]


def refine(head: nn.Module, hidden: Tensor, ref: Tensor) -> Tensor:
    """Iterative box refinement (Deformable DETR Sec. 4.1 / A.4): ``sigmoid(head(hidden) + inverse_sigmoid(ref))``;
    a 2-d reference refines the centre only."""
    delta = head(hidden)
    if ref.shape[-1] == 4:
        return (delta + hf_detr.inverse_sigmoid(ref)).sigmoid()
    return torch.cat((delta[..., :2] + hf_detr.inverse_sigmoid(ref), delta[..., 2:]), -1).sigmoid()


class DacDeformableDetr(nn.Module):
    """DAC-DETR training around a ``DeformableDetrForObjectDetection``; zero parameters of its own.

    ``forward(pixel_values, pixel_mask)``: in eval mode, the wrapped model's output, as is. In training
    mode, a dict of per-layer predictions ``logits [L, B, Q, C]`` and ``boxes [L, B, Q, 4]`` (normalised
    cxcywh) of the O-decoder, and with ``dac`` also ``c_logits``/``c_boxes`` of the C-decoder: what
    :meth:`loss` (attnlab's :func:`~attnlab.detr.losses.detr_loss`) takes.
    """

    def __init__(self, model: DeformableDetrForObjectDetection, dac: bool = True):
        super().__init__()
        check_layout(model)
        self.model = model
        self.dac = dac

    @property
    def config(self) -> Any:
        return self.model.config

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's ``save_pretrained``: the checkpoint does not know about DAC."""
        return self.model.save_pretrained(*args, **kwargs)

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> Any:
        if not self.training:
            return self.model(pixel_values, pixel_mask=pixel_mask)
        with self._capture() as seen:
            out = self.model(pixel_values, pixel_mask=pixel_mask)
        absent = [n for n in DECODER_INPUTS[1:] if n not in seen.get("inputs", {})]
        if absent:
            raise _layout_error(f"the decoder was called without {', '.join(absent)} by name")
        hidden = out.intermediate_hidden_states
        refs = [out.init_reference_points] + list(out.intermediate_reference_points.unbind(1))  # each layer's input
        logits, boxes = zip(*(self._heads(i, hidden[:, i], refs[i]) for i in range(hidden.shape[1])), strict=True)
        result = {"logits": torch.stack(logits), "boxes": torch.stack(boxes)}
        if out.enc_outputs_class is not None:                      # two-stage: the encoder's proposals
            result["enc_logits"], result["enc_boxes"] = out.enc_outputs_class, out.enc_outputs_coord_logits.sigmoid()
        if self.dac:
            result["c_logits"], result["c_boxes"] = self._c_decoder(seen["inputs"], seen["after_self_attn"])
        return result

    def loss(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], cfg: LossConfig = LossConfig(),
             num_objects: float | None = None, sample_key: tuple[int, ...] = (0,)) -> tuple[Tensor, dict[str, float]]:
        """attnlab's DETR loss on the training outputs (``targets``: ``labels``, normalised cxcywh ``boxes``;
        the rest as :func:`~attnlab.detr.losses.detr_loss` takes them). Two-stage adds the encoder proposals' loss:
        class-agnostic, Hungarian-matched, the layers' weights (Deformable DETR A.4; transformers' own loss
        leaves the proposals untrained)."""
        total, parts = detr_loss(outputs, targets, cfg, num_objects, sample_key)
        if "enc_logits" in outputs:
            labels, gt_boxes, valid = pad_targets(targets)
            agnostic = torch.zeros_like(labels)
            n_obj = max(float(valid.sum()), 1.0) if num_objects is None else num_objects
            match = hungarian_match(outputs["enc_logits"], outputs["enc_boxes"], agnostic, gt_boxes, valid)
            w = {"cls": cfg.cls_weight, "l1": cfg.l1_weight, "giou": cfg.giou_weight}
            for k, v in layer_loss(outputs["enc_logits"], outputs["enc_boxes"], agnostic, gt_boxes, match, n_obj,
                                   cfg).items():
                total = total + w[k] * v
                parts[f"enc_{k}"] = float(v.detach())
            if not torch.isfinite(total):
                raise FloatingPointError(f"non-finite loss {float(total.detach())}")
        return total, parts

    def _heads(self, i: int, hidden: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """Layer i's class logits and boxes, from the model's heads of layer i (as its forward computes them)."""
        return self.model.class_embed[i](hidden), refine(self.model.bbox_embed[i], hidden, ref)

    def _c_decoder(self, inputs: dict[str, Any], first: Tensor) -> tuple[Tensor, Tensor]:
        """DAC's C-decoder: layer 0 starts from the O-decoder's query after layer 0's self-attention
        (shared, as in the official code); no self-attention after; own reference boxes, detached
        between layers; the same positional queries."""
        decoder = self.model.model.decoder
        hidden, ref, pos = first, inputs["reference_points"], inputs["object_queries_position_embeddings"]
        logits, boxes = [], []
        for i, layer in enumerate(decoder.layers):
            hidden = cross_attention_ffn(layer, hidden, pos, scaled_reference(ref, inputs["valid_ratios"]), inputs)
            lg, bx = self._heads(i, hidden, ref)
            logits.append(lg)
            boxes.append(bx)
            ref = refine(decoder.bbox_embed[i], hidden, ref).detach()
        return torch.stack(logits), torch.stack(boxes)

    @contextmanager
    def _capture(self) -> Iterator[dict[str, Any]]:
        """Hooks for one training forward: the decoder's keyword inputs and layer 0's query after its
        self-attention and norm."""
        seen: dict[str, Any] = {}
        decoder = self.model.model.decoder

        def inputs_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen["inputs"] = kwargs

        def first_hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            seen.setdefault("after_self_attn", output)

        handles = [decoder.register_forward_pre_hook(inputs_hook, with_kwargs=True)]
        if self.dac:
            handles.append(decoder.layers[0].self_attn_layer_norm.register_forward_hook(first_hook))
        try:
            yield seen
        finally:
            for h in handles:
                h.remove()


class HfDetector(DacDeformableDetr):
    """:class:`DacDeformableDetr` with the native detector's interface, for ``attnlab detr train --arch
    hf-deformable``: ``forward(images, mask)`` (``mask`` True on padding) returns per-layer ``logits`` and
    ``boxes`` (and the C-decoder's while training with DAC); in eval mode the model's final-layer
    predictions as a one-layer stack, all that evaluation reads."""

    def forward(self, images: Tensor, mask: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        out = super().forward(images, (~mask).long())
        if self.training:
            return out
        return {"logits": out.logits[None], "boxes": out.pred_boxes[None]}


def tiny_config(num_classes: int, model: dict[str, Any], two_stage: bool) -> Any:
    """A randomly initialised Deformable DETR (box refinement; ``two_stage`` optional) sized by attnlab's
    model options: ``d_model`` (a multiple of 32: the input projections' GroupNorm), ``n_heads``,
    ``enc_layers``, ``dec_layers``, ``ffn_dim``, ``num_queries``, ``dropout``, ``deformable_points``,
    ``deformable_levels`` (0: Deformable DETR's 4) and a basic-block ResNet whose stages 2-4 have
    ``backbone_channels`` channels (``ResNetConfig``; no timm, no download)."""
    from transformers import DeformableDetrConfig, ResNetConfig

    c = {"d_model": 64, "n_heads": 4, "enc_layers": 1, "dec_layers": 3, "ffn_dim": 128, "num_queries": 16,
         "backbone_channels": (32, 64, 96), "dropout": 0.0, "deformable_levels": 0, "deformable_points": 4, **model}
    problem = hf_size_problem(c)
    if problem:
        raise AttnlabError(problem)
    ch = list(c["backbone_channels"])
    backbone = ResNetConfig(embedding_size=ch[0], hidden_sizes=[ch[0], *ch], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage2", "stage3", "stage4"])
    return DeformableDetrConfig(
        backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, num_labels=num_classes,
        d_model=c["d_model"], encoder_layers=c["enc_layers"], decoder_layers=c["dec_layers"],
        encoder_attention_heads=c["n_heads"], decoder_attention_heads=c["n_heads"], encoder_ffn_dim=c["ffn_dim"],
        decoder_ffn_dim=c["ffn_dim"], num_queries=c["num_queries"], two_stage_num_proposals=c["num_queries"],
        num_feature_levels=c["deformable_levels"] or 4, encoder_n_points=c["deformable_points"],
        decoder_n_points=c["deformable_points"], dropout=c["dropout"], with_box_refine=True, two_stage=two_stage)


def build_detector(num_classes: int, model: dict[str, Any], two_stage: bool = False,
                   from_pretrained: str | None = None) -> HfDetector:
    """The ``hf-deformable`` detector: a local ``save_pretrained`` folder (its architecture; the class head
    resized to ``num_classes`` when it differs), or :func:`tiny_config`; DAC when ``model["dac"]``."""
    from pathlib import Path

    if from_pretrained is None:
        hf_model = DeformableDetrForObjectDetection(tiny_config(num_classes, model, two_stage))
    else:
        folder = Path(from_pretrained)
        if not (folder / "config.json").is_file():
            raise AttnlabError(f"--from-pretrained {folder}: not a save_pretrained folder (needs config.json and "
                               "the weights; a hub checkpoint lies in your cache: models--ORG--NAME/snapshots/REV)")
        try:
            hf_model = DeformableDetrForObjectDetection.from_pretrained(
                folder, local_files_only=True, ignore_mismatched_sizes=True,
                id2label={i: f"LABEL_{i}" for i in range(num_classes)},
                label2id={f"LABEL_{i}": i for i in range(num_classes)})
        except ImportError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AttnlabError(f"--from-pretrained {folder} needs a package that is not installed ({first}); "
                               "install it (SenseTime's checkpoints have a timm backbone: pip install timm)") from None
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AttnlabError(f"--from-pretrained {folder}: transformers cannot load it ({first}); give the folder "
                               "save_pretrained wrote (config.json and model.safetensors)") from None
        if hf_model.config.two_stage != two_stage:
            its = hf_model.config.two_stage
            raise AttnlabError(f"--from-pretrained {folder} is {'' if its else 'not '}two-stage; "
                               f"{'add' if its else 'drop'} --two-stage")
    train_backbone_stages(hf_model)
    return HfDetector(hf_model, dac=bool(model.get("dac", False)))


def train_backbone_stages(hf_model) -> None:
    """Make stages 2-4 of a transformers ResNet backbone trainable, as ``DeformableDetrConvEncoder`` means to (and
    does for timm's ResNet: ``layer2``-``layer4``): transformers 5.24's name test looks for ``stage.1``-``stage.3``
    while transformers' ResNet names them ``stages.1``-``stages.3``, so it froze the whole backbone. The stem and
    stage 1 stay frozen, as in Deformable DETR."""
    import re

    config = hf_model.config
    backbone_type = getattr(config.backbone_config, "model_type", "")
    if getattr(config, "use_timm_backbone", False) or "resnet" not in backbone_type:
        return
    for name, parameter in hf_model.model.backbone.model.named_parameters():
        if re.match(r"encoder\.stages\.[123]\.", name):
            parameter.requires_grad_(True)
